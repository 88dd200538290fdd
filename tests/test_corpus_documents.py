"""generate_data.py on a corpus as it comes (issue 24): one large text file, or a directory of them,
split into documents by the documented rule (pretraining/documents.py): a run of K blank lines, a
maximum length, the end of a file. A single-file corpus gives exactly the shards of the same text
written one file per document."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess

import pytest

from pretraining.documents import DocumentRule, lines_with_blanks, resolve_rule, split_documents
from pretraining.shards import MANIFEST_NAME, GenerateSettings, generate_shards
from pretraining_fixtures import SHARED_CORPUS, SHARED_VOCAB, WORDS, write_vocab
from test_generate_data import cli, read_shards, reference_sequences, shard_bytes
from test_pretraining_scripts import run_script

GRIMM = os.path.join(SHARED_CORPUS, "grimm-tales", "tales.txt")


def test_the_rule_on_a_small_text():
    text = "a b\n\nc\r\n \t \n\n\nd\n\n\n\ne e\nf\n\n"
    assert lines_with_blanks(text) == (["a b", "c", "d", "e e", "f"], [0, 1, 3, 3, 0], 1)
    assert split_documents(text, DocumentRule(1)) == [["a b"], ["c"], ["d"], ["e e", "f"]]
    assert split_documents(text, DocumentRule(2)) == [["a b", "c"], ["d"], ["e e", "f"]]
    assert split_documents(text, DocumentRule(4)) == [["a b", "c", "d", "e e", "f"]]
    assert split_documents(text, DocumentRule(0)) == [["a b", "c", "d", "e e", "f"]]
    # at most 4 characters: cut before the line that would pass them; a longer line stays whole
    assert split_documents("ab\ncd\nef\nghijkl\nm\n", DocumentRule(0, 4)) == [["ab", "cd"], ["ef"], ["ghijkl"], ["m"]]
    assert split_documents("ab\ncd\n\nef\n", DocumentRule(1, 4)) == [["ab", "cd"], ["ef"]]


def test_defaults_a_file_splits_at_blank_lines_a_directory_does_not(tmp_path):
    (tmp_path / "one.txt").write_text("x\n")
    assert resolve_rule(str(tmp_path / "one.txt"), None, 0) == DocumentRule(1, 0)
    assert resolve_rule(str(tmp_path), None, 0) == DocumentRule(0, 0)
    assert resolve_rule(str(tmp_path), 3, 100) == DocumentRule(3, 100)


def make_documents(count: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [[" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) + "." for _ in range(rng.randint(1, 6))]
            for _ in range(count)]


def write_one_file(path, documents, separators, crlf=False):
    """``documents`` joined by ``separators[i]`` blank lines (some holding spaces), one file."""
    newline = "\r\n" if crlf else "\n"
    parts = []
    for index, lines in enumerate(documents):
        if index:
            parts.extend([" " * (j % 2) for j in range(separators[index - 1])])
        parts.extend(lines)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(newline.join(parts) + newline)
    return str(path)


def write_one_file_per_document(directory, documents):
    os.makedirs(directory, exist_ok=True)
    for index, lines in enumerate(documents):
        with open(os.path.join(directory, f"doc_{index:04d}.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    return str(directory)


def merge(documents, separators, threshold):
    """The documents a blank-line threshold leaves: neighbours closer than ``threshold`` join."""
    merged = [list(documents[0])]
    for lines, blanks in zip(documents[1:], separators):
        if blanks >= threshold:
            merged.append(list(lines))
        else:
            merged[-1].extend(lines)
    return merged


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    vocab = str(root / "vocab.txt")
    write_vocab(vocab)
    documents = make_documents(40, seed=3)
    rng = random.Random(4)
    separators = [rng.choice([1, 1, 2, 3, 5]) for _ in documents[1:]]
    assert {1, 2, 3, 5} <= set(separators)
    path = write_one_file(root / "corpus.txt", documents, separators, crlf=True)
    return {"root": root, "vocab": vocab, "documents": documents, "separators": separators, "path": path}


@pytest.mark.parametrize("threshold", [1, 2, 3])
def test_a_single_file_becomes_the_documented_documents(single_file, tmp_path, threshold):
    ws = single_file
    expected = merge(ws["documents"], ws["separators"], threshold)
    assert split_documents(open(ws["path"], encoding="utf-8", newline="").read(), DocumentRule(threshold)) == expected
    settings = GenerateSettings(max_seq_len=48, do_lower_case=True, num_shards=3, num_workers=1,
                                documents=DocumentRule(threshold))
    stats = generate_shards(ws["path"], str(tmp_path / "shards"), ws["vocab"], settings, progress=False)
    assert stats["files"] == 1 and stats["documents"] == len(expected)
    assert stats["document_rule"] == {"blank_lines": threshold, "max_chars": 0}
    # the same text written one file per document, through the slow Python tokenizer: the same sequences
    per_document = write_one_file_per_document(tmp_path / "docs", expected)
    assert read_shards(str(tmp_path / "shards")) == reference_sequences(per_document, ws["vocab"], budget=46)


def test_blocks_and_workers_do_not_move_a_document_boundary(single_file, tmp_path):
    """Blank-line runs and the length rule straddle blocks (1 byte: every line its own block; 64 bytes);
    2 workers; the same bytes."""
    ws = single_file
    outputs = []
    for workers, block in ((1, 1 << 20), (2, 64), (2, 1)):
        out = str(tmp_path / f"w{workers}_b{block}")
        settings = GenerateSettings(max_seq_len=40, do_lower_case=True, num_shards=2, num_workers=workers,
                                    block_bytes=block, documents=DocumentRule(2, 300))
        generate_shards(ws["path"], out, ws["vocab"], settings, progress=False)
        outputs.append(shard_bytes(out))
    assert outputs[0] == outputs[1] == outputs[2]
    expected = split_documents(open(ws["path"], encoding="utf-8", newline="").read(), DocumentRule(2, 300))
    assert len(expected) > len(merge(ws["documents"], ws["separators"], 2))  # the length rule cut some
    per_document = write_one_file_per_document(tmp_path / "docs", expected)
    assert read_shards(str(tmp_path / "w2_b64")) == reference_sequences(per_document, ws["vocab"], budget=38)


def test_a_directory_of_large_files_is_split_too(single_file, tmp_path):
    ws = single_file
    raw = tmp_path / "raw"
    raw.mkdir()
    half = len(ws["documents"]) // 2
    write_one_file(raw / "a.txt", ws["documents"][:half], ws["separators"][:half - 1])
    write_one_file(raw / "b.txt", ws["documents"][half:], ws["separators"][half:])
    settings = GenerateSettings(max_seq_len=48, do_lower_case=True, num_shards=2, num_workers=1,
                                documents=DocumentRule(1))
    stats = generate_shards(str(raw), str(tmp_path / "shards"), ws["vocab"], settings, progress=False)
    assert stats["files"] == 2 and stats["documents"] == len(ws["documents"])
    per_document = write_one_file_per_document(tmp_path / "docs", ws["documents"])
    assert read_shards(str(tmp_path / "shards")) == reference_sequences(per_document, ws["vocab"], budget=46)
    # without a rule each file is one document (the BookCorpus convention, unchanged)
    stats = generate_shards(str(raw), str(tmp_path / "plain"), ws["vocab"],
                            GenerateSettings(max_seq_len=48, do_lower_case=True, num_shards=2, num_workers=1),
                            progress=False)
    assert stats["files"] == stats["documents"] == 2 and stats["document_rule"] == {"blank_lines": 0, "max_chars": 0}


def test_cli_and_script_take_a_single_file(single_file, tmp_path):
    ws = single_file
    out = tmp_path / "cli"
    assert cli(["--train_corpus", ws["path"], "--bert_model", ws["vocab"], "--output_dir", str(out),
                "--max_seq_len", "48", "--num_shards", "2", "--num_workers", "1", "--do_lower_case"]) == 0
    manifest = json.load(open(out / MANIFEST_NAME))
    assert manifest["documents"] == len(ws["documents"]) and manifest["document_rule"]["blank_lines"] == 1
    # another rule is other shards: refused without --overwrite, named in one line
    assert cli(["--train_corpus", ws["path"], "--bert_model", ws["vocab"], "--output_dir", str(out),
                "--max_seq_len", "48", "--num_shards", "2", "--num_workers", "1", "--do_lower_case",
                "--split_at_blank_lines", "2"]) == 2
    assert cli(["--train_corpus", ws["path"], "--bert_model", ws["vocab"], "--output_dir", str(tmp_path / "bad"),
                "--split_at_blank_lines", "-1"]) == 2
    done = run_script("generate_data.sh", {"RAW_DIR": ws["path"], "BERT_MODEL": ws["vocab"], "MAX_SEQ_LEN": "48",
                                           "GENERATED_DIR": str(tmp_path / "script"), "NUM_SHARDS": "2",
                                           "NUM_WORKERS": "1", "SPLIT_AT_BLANK_LINES": "3"})
    assert done.returncode == 0, done.stderr
    manifest = json.load(open(tmp_path / "script" / MANIFEST_NAME))
    assert manifest["documents"] == len(merge(ws["documents"], ws["separators"], 3))
    assert manifest["document_rule"] == {"blank_lines": 3, "max_chars": 0}


@pytest.mark.skipif(not (os.path.isfile(GRIMM) and os.path.isfile(SHARED_VOCAB)), reason="shared data absent")
def test_a_real_book_split_into_its_tales(tmp_path):
    """Grimm's Fairy Tales (Project Gutenberg, CRLF, a BOM): paragraphs 1 blank line apart, tales 4 or more."""
    text = open(GRIMM, encoding="utf-8", newline="").read()
    tales = split_documents(text, DocumentRule(4))
    paragraphs = split_documents(text, DocumentRule(1))
    assert 55 <= len(tales) <= 70 and len(paragraphs) > 2000
    settings = GenerateSettings(max_seq_len=128, do_lower_case=True, num_shards=4, num_workers=2,
                                documents=DocumentRule(4))
    stats = generate_shards(GRIMM, str(tmp_path / "shards"), SHARED_VOCAB, settings, progress=False)
    assert stats["documents"] == len(tales) and stats["files"] == 1
    # the same tales written one file per document, without a rule: byte-identical shards
    os.makedirs(tmp_path / "tales")
    for index, lines in enumerate(tales):
        (tmp_path / "tales" / f"tale_{index:03d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plain = GenerateSettings(max_seq_len=128, do_lower_case=True, num_shards=4, num_workers=2)
    generate_shards(str(tmp_path / "tales"), str(tmp_path / "per_tale"), SHARED_VOCAB, plain, progress=False)
    assert shard_bytes(str(tmp_path / "shards")) == shard_bytes(str(tmp_path / "per_tale"))
    shutil.rmtree(tmp_path / "tales")
