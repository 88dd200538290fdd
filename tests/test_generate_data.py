"""Stage 1: generate_data.py -- tokenising, packing, shard format, determinism, bad input."""

from __future__ import annotations

import glob
import json
import os
import pickle

import pytest

import generate_data
from pretraining.shard_index import MANIFEST_NAME, ShardIndex
from pretraining.shards import GenerateSettings, generate_shards, pack_lines
from pretraining.tokenizing import CachedEncoder, build_tokenizer, split_lines
from pretraining_fixtures import SHARED_CORPUS, SHARED_VOCAB, lock_held_by_another_process, write_corpus, write_vocab
from utils import LOCK_NAME, UserError, run_cli


@pytest.fixture()
def corpus(tmp_path):
    vocab = str(tmp_path / "vocab.txt")
    tokens = write_vocab(vocab)
    raw = str(tmp_path / "raw")
    write_corpus(raw)
    return raw, vocab, tokens


def read_shards(directory):
    """All shard files' lines as token lists, in generation order (round-robin undone)."""
    paths = sorted(glob.glob(os.path.join(directory, "train_doc_tokens_ngrams_*.json")),
                   key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
    per_shard = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            per_shard.append([json.loads(line)["tokens"] for line in handle])
    ordered = []
    for row in range(max(len(s) for s in per_shard)):
        for shard in per_shard:
            if row < len(shard):
                ordered.append(shard[row])
    return ordered


def shard_bytes(directory):
    return {os.path.basename(p): open(p, "rb").read()
            for p in glob.glob(os.path.join(directory, "train_doc_tokens_ngrams_*.json"))}


def cli(argv):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(generate_data.main, argv)
    return exit_info.value.code


# --------------------------------------------------------------------------------------
# Packing
# --------------------------------------------------------------------------------------


def test_pack_lines_greedy_with_long_line_pieces_and_short_tail_dropped():
    lines = [[1, 2], [3, 4], [5], [6, 7, 8, 9, 10, 11, 12], [13]]
    assert pack_lines(lines, budget=5) == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13]]
    # A chunk shorter than 3 tokens is dropped, as in the original.
    assert pack_lines([[1, 2, 3, 4], [5, 6]], budget=5) == [[1, 2, 3, 4]]
    assert pack_lines([[1, 2, 3], [4, 5]], budget=5) == [[1, 2, 3, 4, 5]]


def test_split_lines_matches_text_mode_line_ends():
    assert split_lines("a b\r\n\r\n  c  \rd\n\n e \x0c f") == ["a b", "c", "d", "e \x0c f"]


def reference_sequences(raw, vocab, budget):
    """An independent model of the spec: the slow Python tokenizer, line by line, greedy packing."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    tokenizer = BertTokenizerLegacy(vocab, do_lower_case=True)
    sequences = []
    for path in sorted(glob.glob(os.path.join(raw, "*"))):
        with open(path, encoding="utf-8") as handle:
            lines = [tokenizer.tokenize(line.strip()) for line in handle if line.strip()]
        chunk = []
        for line in lines:
            if len(chunk) + len(line) <= budget:
                chunk += line
                continue
            if len(chunk) >= 3:
                sequences.append(chunk)
            while len(line) > budget:
                sequences.append(line[:budget])
                line = line[budget:]
            chunk = list(line)
        if len(chunk) >= 3:
            sequences.append(chunk)
    return sequences


def test_shards_match_slow_tokenizer_and_leave_room_for_cls_sep(corpus, tmp_path):
    raw, vocab, _ = corpus
    out = str(tmp_path / "shards")
    stats = generate_shards(raw, out, vocab, GenerateSettings(max_seq_len=24, do_lower_case=True, num_shards=3,
                                                              num_workers=1), progress=False)
    sequences = read_shards(out)
    assert sequences == reference_sequences(raw, vocab, budget=22)
    assert max(len(s) for s in sequences) == 22  # max_seq_len - 2: [CLS] and [SEP] are added later
    assert stats["sequences"] == len(sequences) and stats["tokens"] == sum(map(len, sequences))
    assert stats["shard_sequences"] == [len(s) for s in _per_shard_counts(out)]
    assert sorted(os.listdir(out)) == sorted([f"train_doc_tokens_ngrams_{i}.json" for i in range(3)]
                                             + [MANIFEST_NAME, "vocab.txt", LOCK_NAME])  # the writer's lock file


def _per_shard_counts(out):
    return [open(os.path.join(out, f"train_doc_tokens_ngrams_{i}.json")).readlines() for i in range(3)]


def test_output_is_identical_for_any_worker_count_and_block_size(corpus, tmp_path):
    raw, vocab, _ = corpus
    outputs = []
    for index, (workers, block) in enumerate(((1, 1 << 20), (1, 64), (2, 200))):
        out = str(tmp_path / f"out{index}")
        generate_shards(raw, out, vocab, GenerateSettings(max_seq_len=32, do_lower_case=True, num_shards=4,
                                                          num_workers=workers, block_bytes=block), progress=False)
        outputs.append(shard_bytes(out))
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(outputs[0]) == 4 and all(outputs[0].values())


def test_undecodable_bytes_are_replaced_not_fatal(corpus, tmp_path):
    raw, vocab, _ = corpus
    with open(os.path.join(raw, "zz_binary.txt"), "wb") as handle:
        handle.write(b"the king \xff\xfe went to the castle and the queen said \xc3 hello\n")
    stats = generate_shards(raw, str(tmp_path / "out"), vocab,
                            GenerateSettings(max_seq_len=64, do_lower_case=True, num_shards=2, num_workers=1),
                            progress=False)
    assert stats["documents_with_undecodable_bytes"] == 1
    sequences = read_shards(str(tmp_path / "out"))
    # U+FFFD is dropped by BERT's text cleaning, so the words around the bad bytes survive.
    assert ["the", "king", "went", "to", "the", "castle", "and", "the", "queen", "said"] in [s[:10] for s in sequences]


def test_rerun_is_a_no_op_and_other_settings_need_overwrite(corpus, tmp_path):
    raw, vocab, _ = corpus
    out = str(tmp_path / "out")
    args = ["--train_corpus", raw, "--output_dir", out, "--bert_model", vocab, "--do_lower_case",
            "--max_seq_len", "32", "--num_shards", "2", "--num_workers", "1", "--no_progress"]
    assert cli(args) == 0
    before = shard_bytes(out)
    mtimes = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(out, "*"))}
    assert cli(args) == 0  # same inputs and settings: nothing rewritten
    assert {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(out, "*"))} == mtimes
    changed = [a if a != "32" else "48" for a in args]
    assert cli(changed) == 2  # other settings, no --overwrite: refused, old shards intact
    assert shard_bytes(out) == before
    assert cli([a if a != "2" else "1" for a in changed] + ["--overwrite"]) == 0
    assert sorted(shard_bytes(out)) == ["train_doc_tokens_ngrams_0.json"]  # stale shard 1 removed
    assert not glob.glob(os.path.join(out, ".generate_data.*"))  # no staging left behind


@pytest.mark.parametrize("case", ["empty_dir", "no_text", "missing_vocab", "vocab_without_specials", "no_such_path"])
def test_bad_input_is_one_line_and_keeps_existing_shards(corpus, tmp_path, capsys, case):
    raw, vocab, _ = corpus
    out = str(tmp_path / "out")
    assert cli(["--train_corpus", raw, "--output_dir", out, "--bert_model", vocab, "--num_workers", "1",
                "--no_progress", "--do_lower_case"]) == 0
    before = shard_bytes(out)
    capsys.readouterr()
    bad_raw, bad_vocab = raw, vocab
    if case == "empty_dir":
        bad_raw = str(tmp_path / "empty")
        os.makedirs(bad_raw)
    elif case == "no_text":
        bad_raw = str(tmp_path / "blank")
        os.makedirs(bad_raw)
        for name, text in (("a.txt", "\n\n   \n"), ("b.txt", "")):
            with open(os.path.join(bad_raw, name), "w") as handle:
                handle.write(text)
    elif case == "missing_vocab":
        bad_vocab = str(tmp_path / "nope" / "vocab.txt")
    elif case == "vocab_without_specials":
        bad_vocab = str(tmp_path / "plain_vocab.txt")
        with open(bad_vocab, "w") as handle:
            handle.write("a\nb\n")
    elif case == "no_such_path":  # (a single text file is a corpus now: pretraining/documents.py)
        bad_raw = os.path.join(raw, "doc_00.txt", "nothing")
    code = cli(["--train_corpus", bad_raw, "--output_dir", out, "--bert_model", bad_vocab, "--num_workers", "1",
                "--no_progress", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "error:" in err and "Traceback" not in err
    assert shard_bytes(out) == before
    assert not glob.glob(os.path.join(out, ".generate_data.*"))


def test_a_second_copy_is_refused_in_one_line_and_leaves_the_first_ones_staging(corpus, tmp_path, capsys):
    """Two generate_data.py on one directory: the second names the holder and exits 2 instead of
    deleting the first one's staging directory (which made the first die with a traceback)."""
    raw, vocab, _ = corpus
    out = tmp_path / "out"
    live_staging = out / ".generate_data.live1234"
    live_staging.mkdir(parents=True)
    args = ["--train_corpus", raw, "--output_dir", str(out), "--bert_model", vocab, "--num_workers", "1",
            "--no_progress", "--do_lower_case"]
    with lock_held_by_another_process(out) as pid:
        code = cli(args)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and f"in use by pid {pid}" in err and "Traceback" not in err
        assert live_staging.is_dir() and not shard_bytes(out)
    assert cli(args) == 0  # the holder is gone: its staging is stale now and is cleared
    assert not live_staging.exists() and len(shard_bytes(out)) == 28


def test_output_dir_that_is_a_file_is_one_line(corpus, tmp_path, capsys):
    raw, vocab, _ = corpus
    target = tmp_path / "file"
    target.write_text("keep me")
    code = cli(["--train_corpus", raw, "--output_dir", str(target), "--bert_model", vocab, "--num_workers", "1",
                "--no_progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "exists and is not a directory" in err and "--output_dir" in err
    assert target.read_text() == "keep me"


TRICKY_LINES = [
    "The  King\tsaid:\u00a0«Hello»,  world!!", "caf\u00e9 cafe\u0301 na\u00efve \u0301x", "\u039f\u0394\u039f\u03a3 \u03a3 \u03c3\u03c2",
    "\u5e74\u524d the\u4e2d\u6587 x", "ctrl\x1cchars\x0bhere \x7f del", "a" * 150 + " short", "(quoted) 'word' -- dash...",
    "tab\tseparated\tvalues and\u2009thin\u3000ideographic space", "\ufeffbom start \ufffd replacement",
]


def direct_fragments(tokenizer, vocab, lines):
    """The plain tokenizer, line by line, as JSON fragments (what CachedEncoder must reproduce)."""
    out = []
    for encoding in tokenizer.encode_batch(lines, add_special_tokens=False):
        if encoding.ids:
            out.append((len(encoding.ids), ", ".join(json.dumps(vocab[i]) for i in encoding.ids)))
    return out


@pytest.mark.parametrize("lower", [True, False])
def test_chunk_memo_equals_the_plain_tokenizer(corpus, lower):
    _, vocab_file, vocab = corpus
    tokenizer = build_tokenizer(vocab_file, do_lower_case=lower)
    encoder = CachedEncoder(tokenizer, vocab, max_entries=5)  # tiny memo: the clearing path runs too
    lines = TRICKY_LINES + [line.strip() for line in open(os.path.join(corpus[0], "doc_03.txt")) if line.strip()]
    for start in range(0, len(lines), 7):  # several calls: later ones hit the memo
        batch = lines[start: start + 7]
        counts, fragments = encoder.encode_lines(batch)
        assert list(zip(counts, fragments)) == direct_fragments(tokenizer._tokenizer, vocab, batch)


@pytest.mark.skipif(not os.path.isfile(SHARED_VOCAB) or not os.path.isdir(SHARED_CORPUS),
                    reason="shared data absent")
def test_chunk_memo_equals_the_plain_tokenizer_on_real_text_and_tricky_lines():
    from utils import load_vocab

    vocab = load_vocab(SHARED_VOCAB)
    for lower in (True, False):
        tokenizer = build_tokenizer(SHARED_VOCAB, do_lower_case=lower)
        encoder = CachedEncoder(tokenizer, vocab)
        for path in [None] + sorted(glob.glob(os.path.join(SHARED_CORPUS, "*", "*"))):
            if path is None:
                lines = TRICKY_LINES
            else:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    lines = split_lines(handle.read())[:2000]
            counts, fragments = encoder.encode_lines(lines)
            assert list(zip(counts, fragments)) == direct_fragments(tokenizer._tokenizer, vocab, lines), path


# --------------------------------------------------------------------------------------
# Lazy reading
# --------------------------------------------------------------------------------------


def test_shard_index_reads_lines_lazily_and_names_a_bad_line(corpus, tmp_path):
    raw, vocab, _ = corpus
    out = str(tmp_path / "out")
    generate_shards(raw, out, vocab, GenerateSettings(max_seq_len=32, do_lower_case=True, num_shards=2,
                                                      num_workers=1), progress=False)
    index = ShardIndex.from_directory(out)
    expected = []
    for shard in range(2):
        with open(os.path.join(out, f"train_doc_tokens_ngrams_{shard}.json")) as handle:
            expected += [json.loads(line)["tokens"] for line in handle]
    assert len(index) == len(expected)
    assert [index.tokens(i) for i in range(len(index))] == expected
    clone = pickle.loads(pickle.dumps(index))  # what a DataLoader worker gets
    assert clone.tokens(len(index) - 1) == expected[-1]

    # Corrupt line 3 of shard 1 (after a blank line, which the index skips but line numbers count).
    path = os.path.join(out, "train_doc_tokens_ngrams_1.json")
    lines = open(path).read().splitlines(keepends=True)
    lines[1] = "\n" + lines[1][: len(lines[1]) // 2] + "\n"
    with open(path, "w") as handle:
        handle.writelines(lines)
    index = ShardIndex.from_directory(out)
    assert len(index) == len(expected)
    bad = index.offsets[1] + 1
    with pytest.raises(UserError, match=r"train_doc_tokens_ngrams_1\.json:3: not valid JSON"):
        index.tokens(int(bad))


def test_shard_index_without_shards_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="holds no train_doc_tokens_ngrams"):
        ShardIndex.from_directory(str(tmp_path))


# --------------------------------------------------------------------------------------
# Real data (skipped when ../shared/data is absent)
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isfile(SHARED_VOCAB) or not os.path.isdir(SHARED_CORPUS),
                    reason="shared data absent")
def test_fast_tokenizer_equals_slow_bert_tokenizer_on_real_text():
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    slow = BertTokenizerLegacy(SHARED_VOCAB, do_lower_case=True)
    fast = build_tokenizer(SHARED_VOCAB, do_lower_case=True)._tokenizer
    checked = 0
    for path in sorted(glob.glob(os.path.join(SHARED_CORPUS, "*", "*"))):
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = split_lines(handle.read())[:300]
        got = [[fast.id_to_token(i) for i in encoding.ids]
               for encoding in fast.encode_batch_fast(lines, add_special_tokens=False)]
        assert got == [slow.tokenize(line) for line in lines], path
        checked += len(lines)
    assert checked > 600
