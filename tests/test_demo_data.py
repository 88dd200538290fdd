"""The embedded demo's data: layout, GLUE MNLI headers, labels, determinism, no-op re-runs,
atomicity and the WordPiece vocab (demo_data.py, demo/)."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys

import pytest

from demo import MANIFEST_NAME, DemoDataParams, build_demo_data, read_manifest
from demo import build as demo_build
from demo.nli import LABELS, MNLI_DEV_HEADER, MNLI_TRAIN_HEADER, TASK_LEVELS, sample_example, sample_examples
from demo.vocab import SPECIAL_TOKENS
from demo.world import MATCHED_GENRES, MISMATCHED_GENRES, NAMES, SLOT_VALUES, Fact, label_of
from utils import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = DemoDataParams(seed=7, corpus_mb=0.04, num_train=90, num_dev=30, vocab_size=400)
VALUE_WORDS = {value for values in SLOT_VALUES.values() for value in values}
NAME_WORDS = set(NAMES)


def tree_digest(root: str) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                digests[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return digests


def read_tsv(path: str) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    assert lines[-1] == ""  # newline-terminated
    rows = [line.split("\t") for line in lines[:-1]]
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("demo") / "data")
    build_demo_data(root, TINY)
    return root


def test_layout_and_glue_mnli_headers(tiny):
    assert sorted(os.listdir(tiny)) == sorted(["corpus", "MNLI", "vocab", MANIFEST_NAME])
    docs = sorted(os.listdir(os.path.join(tiny, "corpus")))
    assert docs[0] == "doc_00000.txt" and docs == [f"doc_{i:05d}.txt" for i in range(len(docs))]
    corpus_bytes = sum(os.path.getsize(os.path.join(tiny, "corpus", d)) for d in docs)
    assert 0.04e6 <= corpus_bytes < 0.04e6 + 2000  # stops at the first document past the target
    for doc in docs[:5]:
        with open(os.path.join(tiny, "corpus", doc), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        assert lines and all(line.strip() for line in lines)

    expected_genres = {"train": {g.name for g in MATCHED_GENRES}, "dev_matched": {g.name for g in MATCHED_GENRES},
                       "dev_mismatched": {g.name for g in MISMATCHED_GENRES}}
    pairs = {}
    for split, genres in expected_genres.items():
        header, rows = read_tsv(os.path.join(tiny, "MNLI", f"{split}.tsv"))
        dev = split != "train"
        assert tuple(header) == (MNLI_DEV_HEADER if dev else MNLI_TRAIN_HEADER)
        assert len(header) == (16 if dev else 12)
        assert header[:10] == ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                               "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
        assert header[-1] == "gold_label"
        assert len(rows) == (TINY.num_dev if dev else TINY.num_train)
        assert all(len(row) == len(header) for row in rows)
        assert {row[3] for row in rows} == genres
        for row in rows:
            assert row[-1] in LABELS
            assert row[10:-1] == [row[-1]] * (5 if dev else 1)  # annotator labels agree with gold
            assert row[2] == row[1] + row[-1][0]  # pairID = promptID + e/n/c, as in MNLI
            assert row[4].replace("(", "").replace(")", "").split() == row[8].split()  # the parse covers sentence1
        assert [int(row[0]) for row in rows] == list(range(len(rows)))
        pairs[split] = {(row[8], row[9]) for row in rows}
    assert not pairs["train"] & (pairs["dev_matched"] | pairs["dev_mismatched"])


def test_project_glue_reader_reads_the_task(tiny):
    from glue.tasks import read_split

    mnli = os.path.join(tiny, "MNLI")
    train = read_split("mnli", mnli, "train")
    assert len(train) == TINY.num_train
    assert len(read_split("mnli", mnli, "matched")) == len(read_split("mnli-mm", mnli, "mismatched")) == TINY.num_dev
    assert {example.label for example in train} == set(LABELS)


def test_vocab_has_special_tokens_and_covers_the_text(tiny):
    from tokenizers import BertWordPieceTokenizer

    vocab_file = os.path.join(tiny, "vocab", "vocab.txt")
    with open(vocab_file, encoding="utf-8") as handle:
        tokens = handle.read().splitlines()
    assert tuple(tokens[:5]) == SPECIAL_TOKENS
    assert len(tokens) == len(set(tokens)) and len(tokens) <= TINY.vocab_size
    assert read_manifest(tiny)["stats"]["vocab_entries"] == len(tokens)
    tokenizer = BertWordPieceTokenizer(vocab_file, lowercase=True)
    unk = tokenizer.token_to_id("[UNK]")
    texts = []
    for doc in sorted(os.listdir(os.path.join(tiny, "corpus")))[:20]:
        with open(os.path.join(tiny, "corpus", doc), encoding="utf-8") as handle:
            texts.extend(handle.read().splitlines())
    _, rows = read_tsv(os.path.join(tiny, "MNLI", "dev_mismatched.tsv"))
    texts.extend(row[8] + " " + row[9] for row in rows)
    ids = [i for encoding in tokenizer.encode_batch(texts, add_special_tokens=False) for i in encoding.ids]
    assert len(ids) > 5000
    assert ids.count(unk) / len(ids) < 0.001
    # frequent words of the world are whole tokens, not pieces
    assert {"lives", "not", "the", "car"} <= set(tokens)


def test_same_seed_same_bytes_other_seed_other_data(tiny, tmp_path):
    again = str(tmp_path / "again")
    build_demo_data(again, TINY)
    assert tree_digest(again) == tree_digest(tiny)
    other = str(tmp_path / "other")
    build_demo_data(other, DemoDataParams(**{**TINY.__dict__, "seed": 8}))
    digest = tree_digest(other)
    assert digest["MNLI/train.tsv"] != tree_digest(tiny)["MNLI/train.tsv"]
    assert digest["corpus/doc_00000.txt"] != tree_digest(tiny)["corpus/doc_00000.txt"]


def test_rerun_is_a_noop_and_other_params_need_overwrite(tmp_path):
    root = str(tmp_path / "data")
    first = build_demo_data(root, TINY)
    before = tree_digest(root)
    manifest_mtime = os.stat(os.path.join(root, MANIFEST_NAME)).st_mtime_ns
    assert build_demo_data(root, TINY) == first
    assert os.stat(os.path.join(root, MANIFEST_NAME)).st_mtime_ns == manifest_mtime
    assert tree_digest(root) == before

    changed = DemoDataParams(**{**TINY.__dict__, "num_train": 45})
    with pytest.raises(UserError, match=r"num_train=90 -> 45.*--overwrite"):
        build_demo_data(root, changed)
    assert tree_digest(root) == before  # nothing clobbered

    open(os.path.join(root, "keep.txt"), "w").close()  # not ours: survives an overwrite
    build_demo_data(root, changed, overwrite=True)
    _, rows = read_tsv(os.path.join(root, "MNLI", "train.tsv"))
    assert len(rows) == 45
    assert read_manifest(root)["params"]["num_train"] == 45
    assert os.path.exists(os.path.join(root, "keep.txt"))
    assert not [name for name in os.listdir(root) if name.startswith(".demo_staging")]


def test_failure_leaves_previous_data_untouched(tmp_path, monkeypatch):
    root = str(tmp_path / "data")
    build_demo_data(root, TINY)
    before = tree_digest(root)

    def broken(*args, **kwargs):
        raise RuntimeError("killed while training the vocab")

    monkeypatch.setattr(demo_build, "train_wordpiece_vocab", broken)
    with pytest.raises(RuntimeError):
        build_demo_data(root, DemoDataParams(**{**TINY.__dict__, "seed": 9}), overwrite=True)
    assert tree_digest(root) == before
    assert sorted(os.listdir(root)) == sorted(["corpus", "MNLI", "vocab", MANIFEST_NAME])

    fresh = str(tmp_path / "fresh")
    with pytest.raises(RuntimeError):
        build_demo_data(fresh, TINY)
    assert os.listdir(fresh) == []  # no half-made data, no manifest


def test_existing_outputs_without_manifest_are_not_clobbered(tmp_path):
    root = tmp_path / "data"
    (root / "MNLI").mkdir(parents=True)
    (root / "MNLI" / "train.tsv").write_text("mine\n")
    with pytest.raises(UserError, match="no demo_manifest.json"):
        build_demo_data(str(root), TINY)
    assert (root / "MNLI" / "train.tsv").read_text() == "mine\n"


def test_label_rule_on_hand_written_premises():
    facts = [Fact("anna", "job", "baker"), Fact("ben", "city", "rome"), Fact("anna", "city", "oslo", False)]
    assert label_of(facts, Fact("anna", "job", "baker")) == "entailment"
    assert label_of(facts, Fact("anna", "job", "pilot")) == "contradiction"
    assert label_of(facts, Fact("anna", "job", "pilot", False)) == "entailment"
    assert label_of(facts, Fact("anna", "job", "baker", False)) == "contradiction"
    assert label_of(facts, Fact("ben", "job", "baker")) == "neutral"  # binding: the baker is anna
    assert label_of(facts, Fact("anna", "city", "rome")) == "neutral"  # only oslo is ruled out
    assert label_of(facts, Fact("anna", "city", "oslo")) == "contradiction"
    assert label_of(facts, Fact("anna", "city", "oslo", False)) == "entailment"
    with pytest.raises(ValueError):
        label_of(facts + [Fact("anna", "job", "pilot")], Fact("anna", "job", "cook"))


@pytest.mark.parametrize("level", sorted(TASK_LEVELS))
def test_generated_examples_are_balanced_and_hypothesis_only_is_at_chance(level):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    examples = sample_examples(random.Random(level), MATCHED_GENRES, 3000, shape=TASK_LEVELS[level])
    counts = {label: sum(e.label == label for e in examples) for label in LABELS}
    assert all(900 <= count <= 1100 for count in counts.values()), counts
    train, test = examples[:2000], examples[2000:]
    vectorizer = CountVectorizer(token_pattern=r"[^ ]+").fit([e.hypothesis for e in train])
    model = LogisticRegression(max_iter=2000).fit(vectorizer.transform([e.hypothesis for e in train]),
                                                  [e.label for e in train])
    accuracy = model.score(vectorizer.transform([e.hypothesis for e in test]), [e.label for e in test])
    assert accuracy < 0.40, accuracy


def _value(hypothesis: str) -> str:
    return next(word for word in hypothesis.split() if word in VALUE_WORDS)


def test_level_1_one_fact_decides_by_slot_and_polarity():
    """Level 1: a one-fact premise about the hypothesis person; same slot and value unless neutral."""
    for example in sample_examples(random.Random(1), MATCHED_GENRES, 600, shape=TASK_LEVELS[1]):
        premise = example.premise.split()
        assert example.premise.count(" .") == 1  # one sentence
        assert example.hypothesis.split()[0] in premise  # about the same person
        assert (_value(example.hypothesis) in premise) == (example.label != "neutral")


def test_level_1_is_plain_no_openers_one_phrasing_per_genre():
    """Level 1 in plain sentences: each sentence is the person then its genre's first phrasing of a
    slot (positive or negative), so premise and hypothesis differ only where the label says."""
    from demo.world import PHRASINGS

    def slot_of(sentence: str, phrasing: int) -> str:
        words = sentence.split()
        assert words[0] in NAME_WORDS and words[-1] == ".", sentence  # no opener
        body = " ".join(words[1:-1])
        slots = [slot for slot, forms in PHRASINGS.items()
                 if any(body.startswith(form.split(" {")[0] + " ") for form in forms[phrasing])]
        assert slots, (phrasing, sentence)
        return slots[0]

    for genres in (MATCHED_GENRES, MISMATCHED_GENRES):
        for example in sample_examples(random.Random(7), genres, 400, shape=TASK_LEVELS[1]):
            phrasing = next(g for g in genres if g.name == example.genre).phrasings[0]
            same_slot = slot_of(example.premise, phrasing) == slot_of(example.hypothesis, phrasing)
            assert same_slot == (example.label != "neutral"), example


def test_level_3_words_of_the_hypothesis_occur_in_the_premise_whatever_the_label():
    """Level 3: the person and the value occur in every premise, so overlap is no shortcut."""
    for example in sample_examples(random.Random(3), MATCHED_GENRES, 600, shape=TASK_LEVELS[3]):
        premise = example.premise.split()
        assert example.hypothesis.split()[0] in premise
        assert _value(example.hypothesis) in premise
        assert len({w for w in premise if w in NAME_WORDS}) == 3


def test_sample_example_is_deterministic():
    first = [sample_example(random.Random(5), MISMATCHED_GENRES[0]) for _ in range(3)]
    second = [sample_example(random.Random(5), MISMATCHED_GENRES[0]) for _ in range(3)]
    assert first == second


def test_cli_help_errors_and_noop(tmp_path):
    script = os.path.join(REPO, "demo_data.py")
    help_run = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=REPO)
    assert help_run.returncode == 0 and "--output_dir" in help_run.stdout

    out = str(tmp_path / "cli")
    flags = ["--output_dir", out, "--seed", "3", "--corpus_mb", "0.02", "--num_train", "30", "--num_dev", "12",
             "--vocab_size", "300"]
    made = subprocess.run([sys.executable, script, *flags], capture_output=True, text=True, cwd=REPO)
    assert made.returncode == 0, made.stderr
    before = tree_digest(out)
    again = subprocess.run([sys.executable, script, *flags], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert tree_digest(out) == before

    for bad, needle in ((["--num_dev", "5"], "--overwrite"), (["--num_train", "0"], "--num_train must be positive")):
        run = subprocess.run([sys.executable, script, *flags, *bad], capture_output=True, text=True, cwd=REPO)
        assert run.returncode == 2
        errors = [line for line in run.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and needle in errors[0] and "Traceback" not in run.stderr
    assert tree_digest(out) == before


def test_output_dir_that_is_a_file_is_one_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    run = subprocess.run([sys.executable, os.path.join(REPO, "demo_data.py"), "--output_dir", str(target),
                          "--corpus_mb", "0.02", "--num_train", "30", "--num_dev", "12", "--vocab_size", "300"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "--output_dir" in errors[0] and "exists and is not a directory" in errors[0]
    assert target.read_text() == "keep me"
