"""The demo NLI task, written in the GLUE MNLI TSV layout.

A premise states facts about people (``demo.world``: one value per slot, facts positive or
negative); the hypothesis is one fact about one person's slot:

  entailment     the premise settles the hypothesis as true (the same fact, or, for a negative
                 hypothesis, another value or the same negation);
  contradiction  the premise settles it as false (the negation, or another value);
  neutral        the premise leaves that person's slot open.

The label and the hypothesis are drawn independently first and the premise is built to fit,
with its surface counts (facts, negations, mentions) drawn independently of the label, so the
hypothesis alone, or the premise alone, says nothing about the label (bag-of-words baselines
are at chance; see benchmarks/bench_demo_task.py).

Three difficulty levels (``TASK_LEVELS``):

  1  one person, one fact: the label needs the premise's slot compared with the hypothesis'
     slot (different slot -> neutral) and the two polarities compared (a negation flips the
     label) -- a composition across the two sentences. Its sentences are *plain*: no sentence
     openers and one phrasing per genre (the genre's first), so that what is learned is the
     composition, not the wording: with openers and two phrasings per genre a fine-tune of 4000
     examples left the same arch anywhere between 0.55 and 0.81 over three seeds (BENCHMARKS.md,
     "the demo task"). The slot comparison is many small skills since the world has nine slots
     (36 pairs to tell apart, ``demo.world``), which spreads the seeds less than the former five
     slots' 10 big ones (BENCHMARKS.md, "where the seeds disagree"). The corpus keeps every
     opener and phrasing.
  2  two people, two or three facts: also *binding* (which person holds which value) and
     contradictions by another value.
  3  three people, four or five facts: binding among distractors; the hypothesis value and
     person always occur in the premise whatever the label, so word overlap does not help.

Levels 2 and 3 stay at chance for every demo sub-model within the demo's fine-tuning budget
(measured; docs/demo.md); they are there for longer runs.
"""

from __future__ import annotations

import dataclasses
import random

from demo.world import (
    MATCHED_GENRES,
    MISMATCHED_GENRES,
    NAMES,
    SLOTS,
    SLOT_VALUES,
    Fact,
    Genre,
    clause,
    label_of,
    other_value,
    render_facts,
)

LABELS = ("contradiction", "entailment", "neutral")  # the GLUE MNLI processor's label order
PAIR_SUFFIX = {"entailment": "e", "neutral": "n", "contradiction": "c"}

# The GLUE MNLI headers: train.tsv has one annotator label, dev_*.tsv five (12 and 16 columns).
_COMMON = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
           "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
MNLI_TRAIN_HEADER = tuple(_COMMON + ["label1", "gold_label"])
MNLI_DEV_HEADER = tuple(_COMMON + ["label1", "label2", "label3", "label4", "label5", "gold_label"])


@dataclasses.dataclass(frozen=True)
class TaskShape:
    """How the premises look. Each count is drawn independently of the label."""

    people: tuple[int, int] = (3, 3)          # people per premise (the hypothesis person + others)
    facts: tuple[int, int] = (4, 5)           # facts per premise
    negatives: tuple[int, int] = (1, 2)       # negative facts per premise
    person_mentions: tuple[int, int] = (1, 2) # facts about the hypothesis person
    value_mentions: tuple[int, int] = (1, 2)  # facts carrying the hypothesis value (when possible)
    value_always_present: bool = True         # the hypothesis value occurs in every premise
    slot_mentions: int = 2                    # facts in the hypothesis slot
    neutral_negative_key_prob: float = 0.25   # a neutral premise rules out another value of that slot
    other_value_key_prob: float = 0.5         # a contradiction of "X v" states another value (else "X not v")
    plain: bool = False                       # no sentence openers, one phrasing per genre (its first)


TASK_LEVELS = {
    1: TaskShape(people=(1, 1), facts=(1, 1), negatives=(0, 1), person_mentions=(1, 1), value_mentions=(0, 0),
                 value_always_present=False, neutral_negative_key_prob=0.0, other_value_key_prob=0.0, plain=True),
    2: TaskShape(people=(2, 2), facts=(2, 3), negatives=(0, 1), person_mentions=(1, 2), value_mentions=(1, 1),
                 slot_mentions=1),
    3: TaskShape(),
}


@dataclasses.dataclass(frozen=True)
class Example:
    premise: str
    hypothesis: str
    label: str
    genre: str


def _key_fact(label: str, hyp: Fact, rng: random.Random, shape: TaskShape) -> Fact | None:
    """The fact about the hypothesis person and slot that makes ``label`` true (None: nothing).

    The neutral rate of a negative key (0.25) equals the rate at which entailment and
    contradiction premises get one, so the polarity of that fact is no tell on its own."""
    person, slot, value = hyp.entity, hyp.slot, hyp.value
    if label == "neutral":
        if rng.random() < shape.neutral_negative_key_prob:
            return Fact(person, slot, other_value(slot, value, rng), False)
        return None
    if (label == "entailment") == hyp.positive:
        return Fact(person, slot, value, True)  # entails "X v" / contradicts "X not v"
    if rng.random() < shape.other_value_key_prob:  # contradicts "X v" / entails "X not v":
        return Fact(person, slot, other_value(slot, value, rng), True)  # another value,
    return Fact(person, slot, value, False)     # or the negation


def sample_example(rng: random.Random, genre: Genre, shape: TaskShape = TASK_LEVELS[1]) -> Example:
    """One example. The label and hypothesis are drawn first; the premise is then planned so that
    its surface counts (facts, negations, mentions of the hypothesis person, value and slot) have
    the same distribution under every label, and only the binding decides."""
    if shape.plain:
        genre = plain_genre(genre)
    label = rng.choice(LABELS)
    people = rng.sample(NAMES, rng.randint(*shape.people))
    person, others = people[0], people[1:]
    slot = rng.choice(SLOTS)
    hyp = Fact(person, slot, rng.choice(SLOT_VALUES[slot]), positive=rng.random() < 0.5)
    key = _key_fact(label, hyp, rng, shape)

    # Plan (person, slot, value) triples first, polarities after; every pair is used once.
    planned: list[tuple[str, str, str]] = []
    used = {(someone, slot) for someone in people}  # the slot's facts are all planned here
    # Other people's facts in the hypothesis slot, some carrying the hypothesis value.
    slot_people = rng.sample(others, min(len(others), shape.slot_mentions - (key is not None)))
    key_carries = key is not None and key.value == hyp.value
    carrying = max(rng.randint(*shape.value_mentions) - key_carries,
                   1 if shape.value_always_present and not key_carries else 0)
    for index, other in enumerate(slot_people):
        value = hyp.value if index < carrying else other_value(slot, hyp.value, rng)
        planned.append((other, slot, value))
    # The hypothesis person's other facts, then everyone else at least once, then any pair.
    for _ in range(rng.randint(*shape.person_mentions) - (key is not None)):
        planned.append(_free_triple(rng, [person], used))
    for other in others:
        if not any(entry[0] == other for entry in planned):
            planned.append(_free_triple(rng, [other], used))
    n_facts = max(rng.randint(*shape.facts), len(planned) + (key is not None))
    while len(planned) + (key is not None) < n_facts:
        planned.append(_free_triple(rng, others or people, used))

    # Polarities: the premise has a fixed number of negatives whatever the key's polarity.
    negatives = rng.randint(*shape.negatives) - (key is not None and not key.positive)
    negative_at = set(rng.sample(range(len(planned)), min(max(negatives, 0), len(planned))))
    facts = [Fact(*entry, positive=index not in negative_at) for index, entry in enumerate(planned)]
    if key is not None:
        facts.append(key)
    rng.shuffle(facts)
    if label_of(facts, hyp) != label:  # the construction above is the spec; this guards it
        raise AssertionError(f"demo NLI generator produced a wrong label for {facts} / {hyp}")
    premise = " ".join(render_facts(facts, genre, rng))
    hypothesis = clause(hyp, genre, rng) + " ."
    return Example(premise, hypothesis, label, genre.name)


def plain_genre(genre: Genre) -> Genre:
    """The genre without sentence openers and with its first phrasing only (``TaskShape.plain``)."""
    return Genre(genre.name, genre.phrasings[:1], ("",))


def _free_triple(rng: random.Random, people: list[str], used: set) -> tuple[str, str, str]:
    """A (person, slot, value) whose (person, slot) pair is not yet used; marks it used."""
    free = [(p, s) for p in people for s in SLOTS if (p, s) not in used]
    who, slot = rng.choice(free)
    used.add((who, slot))
    return who, slot, rng.choice(SLOT_VALUES[slot])


def sample_examples(rng: random.Random, genres: tuple[Genre, ...], count: int,
                    exclude: set[tuple[str, str]] | None = None, shape: TaskShape = TASK_LEVELS[1]) -> list[Example]:
    """``count`` distinct examples, genres in turn; pairs in ``exclude`` (e.g. train) are skipped."""
    seen = set(exclude or ())
    examples = []
    while len(examples) < count:
        example = sample_example(rng, genres[len(examples) % len(genres)], shape)
        pair = (example.premise, example.hypothesis)
        if pair in seen:
            continue
        seen.add(pair)
        examples.append(example)
    return examples


def make_splits(rng: random.Random, num_train: int, num_dev: int, shape: TaskShape = TASK_LEVELS[1],
                num_dev_mismatched: int | None = None) -> dict[str, list[Example]]:
    """train and dev_matched from the matched genres, dev_mismatched (``num_dev_mismatched``, default
    ``num_dev`` examples) from the others; no example repeats within or across the splits (checked)."""
    train = sample_examples(rng, MATCHED_GENRES, num_train, shape=shape)
    seen = {(e.premise, e.hypothesis) for e in train}
    matched = sample_examples(rng, MATCHED_GENRES, num_dev, exclude=seen, shape=shape)
    seen |= {(e.premise, e.hypothesis) for e in matched}
    mismatched = sample_examples(rng, MISMATCHED_GENRES, num_dev if num_dev_mismatched is None else num_dev_mismatched,
                                 exclude=seen, shape=shape)
    splits = {"train": train, "dev_matched": matched, "dev_mismatched": mismatched}
    pairs = [(e.premise, e.hypothesis) for examples in splits.values() for e in examples]
    if len(set(pairs)) != len(pairs):  # the construction above is the spec; this guards it
        raise AssertionError("demo NLI generator repeated an example across its splits")
    return splits


# --------------------------------------------------------------------------------------
# GLUE MNLI TSV layout
# --------------------------------------------------------------------------------------


def binary_parse(text: str) -> str:
    """A right-branching binary bracketing of the words (a stand-in for MNLI's parser output)."""
    words = text.split()
    out = words[-1]
    for word in reversed(words[:-1]):
        out = f"( {word} {out} )"
    return out


def constituency_parse(text: str) -> str:
    return "(ROOT (S " + " ".join(f"(X {word})" for word in text.split()) + "))"


def mnli_rows(examples: list[Example], dev: bool, prompt_offset: int = 0) -> list[list[str]]:
    """Rows in the GLUE MNLI column order (the header is ``MNLI_DEV_HEADER`` / ``MNLI_TRAIN_HEADER``)."""
    rows = []
    for index, example in enumerate(examples):
        prompt_id = prompt_offset + index
        labels = [example.label] * (5 if dev else 1)  # synthetic annotators all agree
        rows.append([str(index), str(prompt_id), f"{prompt_id}{PAIR_SUFFIX[example.label]}", example.genre,
                     binary_parse(example.premise), binary_parse(example.hypothesis),
                     constituency_parse(example.premise), constituency_parse(example.hypothesis),
                     example.premise, example.hypothesis, *labels, example.label])
    return rows


def write_mnli_tsv(path: str, examples: list[Example], dev: bool, prompt_offset: int = 0) -> None:
    header = MNLI_DEV_HEADER if dev else MNLI_TRAIN_HEADER
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("\t".join(header) + "\n")
        for row in mnli_rows(examples, dev, prompt_offset):
            handle.write("\t".join(row) + "\n")

