"""The demo pre-training corpus: one UTF-8 text file per document (the BookCorpus convention
that ``generate_data.py`` reads), one paragraph per line.

A document is a few paragraphs (one per line); each paragraph is a small scene in one genre: two
or three people, facts about them (positive and negative), then sentences that draw conclusions
from those facts with a verdict phrase --
"so anna lives in rome .", "it is false that ben has a cat .", "nobody knows if carl is a
pilot .". Predicting a masked value, "not" or verdict word there needs the same binding of
values to people that the NLI task needs, so MLM pre-training on this corpus helps the task.
"""

from __future__ import annotations

import os
import random

from demo.world import (GENRES, NAMES, SLOT_VALUES, SLOTS, Fact, clause, label_of, other_value, render_facts,
                        sample_person)

# Verdict phrases per label of the concluding statement (same words in every genre).
VERDICTS = {
    "entailment": ("so {c} .", "that means {c} .", "clearly {c} ."),
    "contradiction": ("it is false that {c} .", "it is not true that {c} .", "nobody thinks that {c} ."),
    "neutral": ("nobody knows if {c} .", "we do not know whether {c} .", "it is unclear if {c} ."),
}


def sample_scene(rng: random.Random) -> str:
    """One paragraph: facts about two or three people, then a few conclusions with verdicts."""
    genre = GENRES[rng.choice(sorted(GENRES))]
    people = rng.sample(NAMES, rng.randint(2, 3))
    truth = {person: sample_person(rng) for person in people}
    stated: list[Fact] = []
    for person in people:
        for slot in rng.sample(SLOTS, 2):
            if rng.random() < 0.75:
                stated.append(Fact(person, slot, truth[person][slot], True))
            else:
                stated.append(Fact(person, slot, other_value(slot, truth[person][slot], rng), False))
    rng.shuffle(stated)
    sentences = render_facts(stated, genre, rng)
    for _ in range(rng.randint(2, 3)):
        person, slot = rng.choice(people), rng.choice(SLOTS)
        value = truth[person][slot] if rng.random() < 0.5 else rng.choice(SLOT_VALUES[slot])
        statement = Fact(person, slot, value, rng.random() < 0.7)
        verdict = label_of(stated, statement)
        sentences.append(rng.choice(VERDICTS[verdict]).format(c=clause(statement, genre, rng)))
    return " ".join(sentences)


def sample_document(rng: random.Random) -> str:
    """A few scenes, one per line (a line is a paragraph, as in BookCorpus). A scene is short
    (about 50 WordPiece tokens), so pre-training sequences of 128 tokens hold whole scenes."""
    return "\n".join(sample_scene(rng) for _ in range(rng.randint(2, 6))) + "\n"


def write_corpus(directory: str, rng: random.Random, target_bytes: int) -> tuple[int, int]:
    """Write documents ``doc_00000.txt`` ... until ``target_bytes`` are written.

    Returns (number of documents, bytes written)."""
    os.makedirs(directory, exist_ok=True)
    total = count = 0
    while total < target_bytes:
        text = sample_document(rng).encode("utf-8")
        with open(os.path.join(directory, f"doc_{count:05d}.txt"), "wb") as handle:
            handle.write(text)
        total += len(text)
        count += 1
    return count, total
