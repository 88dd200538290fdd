"""The synthetic "world" shared by the demo corpus and the demo NLI task.

People have exactly one value in each of nine *slots* (job, home city, pet, car colour,
instrument, food, drink, language, hobby). Text states facts about them, positive ("anna lives
in rome") or negative ("anna does not live in rome"). Because every slot holds one value per
person, the facts settle some statements, refute others and leave the rest open -- which is
exactly what entailment / contradiction / neutral need.

Genres are registers of the same world: each genre words the slots with its own subset of
phrasings and its own sentence openers. The NLI train and dev_matched splits use the matched
genres, dev_mismatched the mismatched ones; the corpus uses all of them, so MLM pre-training
has seen every phrasing (as BookCorpus has seen the words of every MNLI genre).
"""

from __future__ import annotations

import dataclasses
import random

NAMES = (
    "anna ben carl dora emma fred gina hugo ida jack kate leo mia nick olga paul rosa sam tina umar "
    "vera walt yuri zoe adam bella chris diana eric fiona greg helen ivan julia kevin laura mark nina "
    "oscar petra ralph sofia tom victor wanda alex beth colin daisy ethan grace henry iris jonas lily "
    "max nora otto ruby"
).split()

# Nine slots since data version 3: a level-1 fine-tune's score counts the slot pairs it has learned to
# tell apart, and with five slots (10 pairs of ~4 points each, learned at seed-dependent steps) one-layer
# archs were bimodal across seeds; 36 smaller pairs spread the seeds less (BENCHMARKS.md, "where the
# seeds disagree").
SLOT_VALUES = {
    "job": ("baker farmer doctor teacher pilot singer painter sailor tailor miner nurse lawyer cook driver "
            "guard hunter judge poet potter smith dancer writer banker barber builder clerk fisher gardener "
            "jeweler mason").split(),
    "city": ("paris rome oslo cairo lima delhi tokyo dublin vienna madrid berlin london athens prague warsaw "
             "lisbon sydney boston denver dallas quebec nairobi seoul manila havana bogota riga porto kyiv "
             "milan").split(),
    "pet": ("cat dog horse parrot rabbit goat snake turtle hamster pony donkey lizard mouse owl frog duck goose "
            "pig sheep ferret").split(),
    "car": "red blue green yellow black white purple orange brown pink gray silver golden".split(),
    "instrument": "piano violin guitar drums flute harp cello trumpet banjo organ".split(),
    "food": "rice bread fish soup pasta salad cheese eggs beans plums".split(),
    "drink": "tea coffee milk juice water wine beer cocoa cider lemonade".split(),
    "language": "french german spanish polish greek hindi arabic dutch swedish turkish".split(),
    "hobby": "stamps coins shells maps stones cards buttons badges tickets postcards".split(),
}
SLOTS = tuple(SLOT_VALUES)

# Three phrasings per slot: (positive predicate, negative predicate); {v} is the value, {a} its article.
PHRASINGS = {
    "job": (("is {a} {v}", "is not {a} {v}"), ("works as {a} {v}", "does not work as {a} {v}"),
            ("is employed as {a} {v}", "is not employed as {a} {v}")),
    "city": (("lives in {v}", "does not live in {v}"), ("is from {v}", "is not from {v}"),
             ("resides in {v}", "does not reside in {v}")),
    "pet": (("has {a} {v}", "does not have {a} {v}"), ("owns {a} {v}", "does not own {a} {v}"),
            ("keeps {a} {v}", "does not keep {a} {v}")),
    "car": (("drives {a} {v} car", "does not drive {a} {v} car"), ("has {a} {v} car", "does not have {a} {v} car"),
            ("owns {a} {v} car", "does not own {a} {v} car")),
    "instrument": (("plays the {v}", "does not play the {v}"), ("can play the {v}", "cannot play the {v}"),
                   ("practices the {v}", "never practices the {v}")),
    "food": (("eats {v}", "does not eat {v}"), ("likes to eat {v}", "does not like to eat {v}"),
             ("cooks {v}", "never cooks {v}")),
    "drink": (("drinks {v}", "does not drink {v}"), ("likes to drink {v}", "does not like to drink {v}"),
              ("orders {v}", "never orders {v}")),
    "language": (("speaks {v}", "does not speak {v}"), ("can speak {v}", "cannot speak {v}"),
                 ("studies {v}", "never studies {v}")),
    "hobby": (("collects {v}", "does not collect {v}"), ("likes to collect {v}", "does not like to collect {v}"),
              ("gathers {v}", "never gathers {v}")),
}


@dataclasses.dataclass(frozen=True)
class Genre:
    """A register: which phrasings (indices into PHRASINGS) it uses, and its sentence openers."""

    name: str
    phrasings: tuple[int, ...]
    openers: tuple[str, ...]


MATCHED_GENRES = (
    Genre("town", (0, 1), ("", "", "in town ,", "people say")),
    Genre("diary", (0, 1), ("", "", "today i learned that", "i know that")),
)
MISMATCHED_GENRES = (
    Genre("letters", (1, 2), ("", "", "as you know ,", "i must tell you that")),
    Genre("records", (0, 2), ("", "", "the records show that", "it is noted that")),
)
GENRES = {genre.name: genre for genre in MATCHED_GENRES + MISMATCHED_GENRES}


@dataclasses.dataclass(frozen=True)
class Fact:
    """``entity`` has (positive) or has not (negative) ``value`` in ``slot``."""

    entity: str
    slot: str
    value: str
    positive: bool = True


def predicate(fact: Fact, genre: Genre, rng: random.Random) -> str:
    positive, negative = PHRASINGS[fact.slot][rng.choice(genre.phrasings)]
    article = "an" if fact.value[0] in "aeiou" else "a"
    return (positive if fact.positive else negative).format(v=fact.value, a=article)


def clause(fact: Fact, genre: Genre, rng: random.Random) -> str:
    return f"{fact.entity} {predicate(fact, genre, rng)}"


def render_facts(facts: list[Fact], genre: Genre, rng: random.Random, joint_prob: float = 0.3) -> list[str]:
    """Sentences for ``facts`` in their order; two adjacent facts about the same person are
    sometimes joined ("anna is a baker and lives in rome"), so a value can sit far from its name."""
    sentences = []
    index = 0
    while index < len(facts):
        fact = facts[index]
        opener = rng.choice(genre.openers)
        text = clause(fact, genre, rng)
        nxt = facts[index + 1] if index + 1 < len(facts) else None
        if nxt is not None and nxt.entity == fact.entity and rng.random() < joint_prob:
            text += f" and {predicate(nxt, genre, rng)}"
            index += 1
        sentences.append(f"{opener} {text} .".strip())
        index += 1
    return sentences


def label_of(facts: list[Fact], hypothesis: Fact) -> str:
    """The gold label of ``hypothesis`` given ``facts`` under the one-value-per-slot rule."""
    about = [f for f in facts if f.entity == hypothesis.entity and f.slot == hypothesis.slot]
    known = {f.value for f in about if f.positive}
    excluded = {f.value for f in about if not f.positive}
    if len(known) > 1 or known & excluded:
        raise ValueError(f"inconsistent facts about {hypothesis.entity}/{hypothesis.slot}: {about}")
    if known:
        holds = hypothesis.value in known
    elif hypothesis.value in excluded:
        holds = False
    else:
        return "neutral"
    return "entailment" if holds == hypothesis.positive else "contradiction"


def sample_person(rng: random.Random) -> dict[str, str]:
    """A full assignment of one value per slot."""
    return {slot: rng.choice(values) for slot, values in SLOT_VALUES.items()}


def other_value(slot: str, value: str, rng: random.Random) -> str:
    while True:
        candidate = rng.choice(SLOT_VALUES[slot])
        if candidate != value:
            return candidate
