"""Tokenising the corpus for the shards: the vocabulary file, the fast (Rust) WordPiece tokenizer of
the ``tokenizers`` library configured like the original's ``BertTokenizer``, and the worker side of
``pretraining.shards.generate_shards`` (a block of text -> token counts and JSON fragments per line,
in worker processes, results in input order)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
from typing import Iterable, Iterator, Sequence

from pretraining.shard_index import VOCAB_NAME
from utils import UserError, load_vocab


def resolve_vocab(path: str, flag: str = "--bert_model") -> str:
    """``path`` may be a vocab.txt file or a directory holding one (a BERT checkpoint dir)."""
    if not path:
        raise UserError(f"{flag}: no vocabulary given")
    if os.path.isdir(path):
        candidate = os.path.join(path, VOCAB_NAME)
        if not os.path.isfile(candidate):
            raise UserError(f"{flag}: directory {path} has no {VOCAB_NAME}")
        return candidate
    if not os.path.isfile(path):
        raise UserError(f"{flag}: {path}: no such vocab file or directory (models are never downloaded)")
    return path


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_tokenizer(vocab_file: str, do_lower_case: bool):
    """The fast WordPiece tokenizer configured like the original's ``BertTokenizer``
    (clean text, CJK spacing, lower-casing and accent stripping iff ``do_lower_case``)."""
    from tokenizers import BertWordPieceTokenizer

    return BertWordPieceTokenizer(vocab_file, lowercase=do_lower_case, strip_accents=None, clean_text=True,
                                  handle_chinese_chars=True, wordpieces_prefix="##")


def split_lines(text: str) -> list[str]:
    """Non-blank stripped lines, with the line ends of Python's text mode (\\n, \\r\\n, \\r)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [stripped for line in text.split("\n") if (stripped := line.strip())]


class CachedEncoder:
    """Lines -> (token count, JSON fragment) through the fast tokenizer, memoised per chunk.

    The fragment of a line is its tokens JSON-encoded and joined by ", ", so a shard line is
    ``'{"tokens": [' + ", ".join(fragments) + ']}'`` -- byte-identical to ``json.dumps`` of the
    token list, with all per-token work done here, in the worker processes.

    BERT's text cleaning, lower-casing, accent stripping, punctuation splitting and WordPiece
    never look across a space (U+0020), so the tokens of a line are the concatenated tokens of
    its space-separated chunks: each distinct chunk ("word," / "the") is tokenised once and looked
    up afterwards. Chunks holding other whitespace (tabs, NBSP...) go through the tokenizer
    whole, so the result is exactly the tokenizer's (the tests and the benchmark compare it with
    the slow Python tokenizer on real text). The memo is cleared past ``max_entries``.
    """

    def __init__(self, tokenizer, vocab: Sequence[str], max_entries: int = 500_000):
        self.tokenizer = tokenizer._tokenizer  # the Rust tokenizer: skips the Python wrapper
        self.encoded = [json.dumps(token) for token in vocab]
        self.max_entries = max_entries
        self.fragments: dict[str, str] = {}
        self.sizes: dict[str, int] = {}

    def encode_lines(self, lines: Sequence[str], keep_empty: bool = False) -> tuple[list[int], list[str]]:
        """Token count and fragment of every line that has at least one token (of every line,
        with count 0 and fragment "", when ``keep_empty``)."""
        fragments, sizes, encoded = self.fragments, self.sizes, self.encoded
        if len(fragments) > self.max_entries:
            fragments.clear()
            sizes.clear()
        chunked = [line.split(" ") for line in lines]
        missing = list(set(itertools.chain.from_iterable(chunked)).difference(fragments))
        if missing:
            for chunk, encoding in zip(missing, self.tokenizer.encode_batch_fast(missing, add_special_tokens=False)):
                fragments[chunk] = ", ".join([encoded[i] for i in encoding.ids])
                sizes[chunk] = len(encoding.ids)
        counts, line_fragments = [], []
        for chunks in chunked:  # per line; the per-chunk work runs in C (map/filter/join)
            count = sum(map(sizes.__getitem__, chunks))
            if count:
                counts.append(count)
                line_fragments.append(", ".join(filter(None, map(fragments.__getitem__, chunks))))
            elif keep_empty:
                counts.append(0)
                line_fragments.append("")
        return counts, line_fragments


_WORKER_ENCODER: CachedEncoder | None = None
_WORKER_BLANKS = False  # a document rule is active: report blank lines and every line's length


def _init_worker(vocab_file: str, do_lower_case: bool, with_blanks: bool = False) -> None:
    global _WORKER_ENCODER, _WORKER_BLANKS
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # processes give the parallelism
    _WORKER_ENCODER = CachedEncoder(build_tokenizer(vocab_file, do_lower_case), load_vocab(vocab_file))
    _WORKER_BLANKS = with_blanks


@dataclasses.dataclass
class TokenizedSegment:
    doc: int
    nbytes: int
    lines: int  # non-blank lines read
    counts: list[int]  # tokens per line that has tokens
    fragments: list[str]  # those lines' JSON fragments
    undecodable: bool
    # with a document rule: every non-blank line is listed (count 0 when it has no token), with
    # the blank lines before it and its length; trailing_blanks follow the last one
    blank_before: list[int] | None = None
    chars: list[int] | None = None
    trailing_blanks: int = 0


def tokenize_task(task: list) -> list[TokenizedSegment]:
    """Tokenise a task's segments (``pretraining.shards.Segment``: bytes of a document cut at line ends)."""
    results = []
    for segment in task:
        with open(segment.path, "rb") as handle:
            handle.seek(segment.start)
            data = handle.read(segment.end - segment.start)
        try:
            text, undecodable = data.decode("utf-8"), False
        except UnicodeDecodeError:
            text, undecodable = data.decode("utf-8", errors="replace"), True
        if _WORKER_BLANKS:
            from pretraining.documents import lines_with_blanks

            lines, before, trailing = lines_with_blanks(text)
            counts, fragments = _WORKER_ENCODER.encode_lines(lines, keep_empty=True)
            results.append(TokenizedSegment(segment.doc, len(data), len(lines), counts, fragments, undecodable,
                                            before, [len(line) for line in lines], trailing))
            continue
        lines = split_lines(text)
        counts, fragments = _WORKER_ENCODER.encode_lines(lines)
        results.append(TokenizedSegment(segment.doc, len(data), len(lines), counts, fragments, undecodable))
    return results


def _start_method() -> str:
    """``fork`` on Linux: workers are up in a fraction of a second, where ``spawn`` costs about a
    second of interpreter start-up. The children only run ``tokenize_task`` (file reads and the
    tokenizer), so threads of the parent (tqdm's monitor, torch's pool) hold no lock they need.
    Elsewhere (macOS, Windows) ``spawn``, the platform's safe choice."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def ordered_map(tasks: Iterable[list], num_workers: int, vocab_file: str,
                do_lower_case: bool, with_blanks: bool = False) -> Iterator[list[TokenizedSegment]]:
    """``map(tokenize_task, tasks)`` over worker processes, in order, with a bounded number of
    tasks in flight (``Pool.imap`` would read the whole task list and queue unbounded results)."""
    if num_workers <= 1:
        _init_worker(vocab_file, do_lower_case, with_blanks)
        yield from map(tokenize_task, tasks)
        return
    context = multiprocessing.get_context(_start_method())
    with context.Pool(num_workers, initializer=_init_worker,
                      initargs=(vocab_file, do_lower_case, with_blanks)) as pool:
        pending: collections.deque = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(tokenize_task, (task,)))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
