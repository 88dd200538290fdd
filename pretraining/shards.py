"""Training shards: raw text -> ``train_doc_tokens_ngrams_{i}.json`` and back, lazily.

Writing (``generate_shards``), the original's format and packing with its defects fixed:

* the corpus is a directory of text files or one text file; every file of a directory is one
  document (BookCorpus convention) unless a document rule splits files (``pretraining.documents``:
  a run of blank lines, a maximum length; a single file is split at blank lines by default);
  files are read as UTF-8 with undecodable bytes replaced (U+FFFD), never fatal;
* each non-blank stripped line is tokenised with the fast (Rust) WordPiece tokenizer of the
  ``tokenizers`` library; it gives the same tokens as the original's Python ``BertTokenizer``;
* lines are packed greedily per document into sequences of at most ``max_seq_len - 2`` tokens,
  leaving room for the [CLS]/[SEP] that batching adds (the original left none); a line longer
  than that is cut into full-length pieces instead of being truncated; sequences shorter than
  3 tokens are dropped, as in the original;
* sequences go round-robin into ``num_shards`` files, one ``{"tokens": [...]}`` JSON line each.

Work is split into blocks of about ``block_bytes`` of text (cut at line ends, so a big document
becomes several blocks) that worker processes tokenise; the main process packs them in input
order, so the output is identical whatever the number of workers or the block size, and memory
stays bounded by a few blocks in flight. Shards are written into a hidden staging directory and
renamed into place only when every shard is complete.

Reading (``ShardIndex``): one pass finds each line's byte offset; a line is read (``os.pread``)
and parsed only when training asks for it, so a corpus far larger than RAM trains fine.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Iterable, Iterator, Sequence

import numpy as np

from pretraining.documents import DocumentRule, DocumentSplitter, lines_with_blanks, list_corpus_files
from utils import SPECIAL_TOKENS, UserError, atomic_write, get_logger, load_vocab, output_lock  # noqa: F401 (re-exported)

logger = get_logger(__name__)

SHARD_TEMPLATE = "train_doc_tokens_ngrams_{}.json"
SHARD_PATTERN = re.compile(r"^train_doc_tokens_ngrams_(\d+)\.json$")
MANIFEST_NAME = "data_manifest.json"
VOCAB_NAME = "vocab.txt"
MIN_TOKENS = 3  # the original drops sequences shorter than this
FORMAT_VERSION = 1
_STAGING_PREFIX = ".generate_data."


# --------------------------------------------------------------------------------------
# Vocabulary and tokenizer
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Work plan: documents cut into blocks at line ends
# --------------------------------------------------------------------------------------


def list_documents(corpus_dir: str, flag: str = "--train_corpus") -> list[str]:
    """The corpus's files in generation order (``pretraining.documents.list_corpus_files``)."""
    return list_corpus_files(corpus_dir, flag)


@dataclasses.dataclass(frozen=True)
class Segment:
    """Bytes ``[start, end)`` of document number ``doc``, cut at a line end."""

    doc: int
    path: str
    start: int
    end: int


def _segments(doc: int, path: str, block_bytes: int) -> Iterator[Segment]:
    size = os.path.getsize(path)
    start = 0
    with open(path, "rb") as handle:
        while start < size:
            end = min(size, start + block_bytes)
            if end < size:
                handle.seek(end)
                rest = handle.readline()  # extend to the end of the current line
                end += len(rest)
            yield Segment(doc, path, start, end)
            start = end


def plan_tasks(documents: Sequence[str], block_bytes: int) -> Iterator[list[Segment]]:
    """Group segments into tasks of about ``block_bytes`` (small documents share a task)."""
    task, size = [], 0
    for doc, path in enumerate(documents):
        for segment in _segments(doc, path, block_bytes):
            task.append(segment)
            size += segment.end - segment.start
            if size >= block_bytes:
                yield task
                task, size = [], 0
    if task:
        yield task


# --------------------------------------------------------------------------------------
# Worker side: tokenise a task
# --------------------------------------------------------------------------------------

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


def tokenize_task(task: list[Segment]) -> list[TokenizedSegment]:
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


def _ordered_map(tasks: Iterable[list[Segment]], num_workers: int, vocab_file: str,
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


# --------------------------------------------------------------------------------------
# Main side: packing and writing
# --------------------------------------------------------------------------------------


class Packer:
    """Greedy packing of one document's lines into sequences of at most ``budget`` tokens.

    A line is ``(fragment, count)``: its JSON-encoded tokens joined by ", " and their number.
    ``emit(fragments, count)`` receives each finished sequence.
    """

    def __init__(self, budget: int, emit, min_tokens: int = MIN_TOKENS):
        if budget < min_tokens:
            raise UserError(f"--max_seq_len leaves {budget} tokens per sequence, fewer than {min_tokens}")
        self.budget, self.emit, self.min_tokens = budget, emit, min_tokens
        self.pieces: list[str] = []
        self.length = 0
        self.dropped = 0  # sequences shorter than min_tokens

    def add_line(self, fragment: str, count: int) -> None:
        if self.length + count <= self.budget:
            self.pieces.append(fragment)
            self.length += count
            return
        self.end_document()
        if count > self.budget:  # a line longer than a sequence: full-length pieces
            # WordPiece tokens hold no whitespace, so their JSON never contains ", ".
            tokens = fragment.split(", ")
            while len(tokens) > self.budget:
                self.emit([", ".join(tokens[: self.budget])], self.budget)
                tokens = tokens[self.budget:]
            fragment, count = ", ".join(tokens), len(tokens)
        if count:
            self.pieces, self.length = [fragment], count

    def end_document(self) -> None:
        if self.length >= self.min_tokens:
            self.emit(self.pieces, self.length)
        elif self.length:
            self.dropped += 1
        self.pieces, self.length = [], 0


def pack_lines(lines: Iterable[Sequence[int]], budget: int, min_tokens: int = MIN_TOKENS) -> list[list[int]]:
    """Pack one document's token-id lines (a pure-function view of ``Packer``, for tests)."""
    out: list[list[int]] = []
    packer = Packer(budget, lambda pieces, count: out.append(json.loads("[" + ", ".join(pieces) + "]")), min_tokens)
    for line in lines:
        if len(line):
            packer.add_line(", ".join(str(int(i)) for i in line), len(line))
    packer.end_document()
    return out


class ShardWriter:
    """Round-robin JSON-lines writer over ``num_shards`` files in a staging directory."""

    def __init__(self, directory: str, num_shards: int):
        self.directory = directory
        self.paths = [os.path.join(directory, SHARD_TEMPLATE.format(i)) for i in range(num_shards)]
        self.handles = [open(path, "w", encoding="utf-8") for path in self.paths]
        self.counts = [0] * num_shards
        self.sequences = 0
        self.tokens = 0

    def write(self, fragments: list[str], count: int) -> None:
        shard = self.sequences % len(self.handles)
        self.handles[shard].write('{"tokens": [' + ", ".join(fragments) + "]}\n")
        self.counts[shard] += 1
        self.sequences += 1
        self.tokens += count

    def close(self) -> None:
        for handle in self.handles:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()


@dataclasses.dataclass
class GenerateSettings:
    max_seq_len: int = 512
    do_lower_case: bool = False
    num_shards: int = 28
    num_workers: int = 4
    block_bytes: int = 1 << 18
    documents: DocumentRule = DocumentRule()  # what a document is, besides a file


def _fingerprint(documents: Sequence[str], vocab_file: str, settings: GenerateSettings) -> str:
    """Identity of a run's inputs and settings (file names, sizes, mtimes; the vocab's content)."""
    digest = hashlib.sha256()
    payload = {"format": FORMAT_VERSION, "max_seq_len": settings.max_seq_len,
               "do_lower_case": settings.do_lower_case, "num_shards": settings.num_shards,
               "vocab_sha256": file_sha256(vocab_file)}
    if settings.documents.active:  # (absent when inactive: shards made before the rule existed stay valid)
        payload["documents"] = dataclasses.asdict(settings.documents)
    digest.update(json.dumps(payload, sort_keys=True).encode())
    for path in documents:
        stat = os.stat(path)
        digest.update(f"{os.path.basename(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def existing_shards(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, name) for name in os.listdir(directory) if SHARD_PATTERN.match(name))


def _read_manifest(directory: str) -> dict | None:
    path = os.path.join(directory, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError):
        return None


def generate_shards(corpus_dir: str, output_dir: str, vocab_file: str, settings: GenerateSettings,
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Tokenise, pack and write the shards; returns the run's statistics (also in the manifest).

    A re-run with the same inputs and settings finds the manifest and does nothing. Existing
    shards from other inputs/settings are replaced only with ``overwrite``. Nothing in
    ``output_dir`` changes unless the whole run succeeds.
    """
    if settings.num_shards < 1:
        raise UserError(f"--num_shards must be at least 1, got {settings.num_shards}")
    if settings.max_seq_len < MIN_TOKENS + 2:
        raise UserError(f"--max_seq_len must be at least {MIN_TOKENS + 2} ([CLS] + {MIN_TOKENS} tokens + [SEP])")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"--output_dir {output_dir}: exists and is not a directory")
    vocab = load_vocab(vocab_file)
    documents = list_documents(corpus_dir)
    fingerprint = _fingerprint(documents, vocab_file, settings)
    # One writer per shards directory: a second copy is refused in one line naming the holder
    # (it would otherwise delete this one's staging directory as "stale").
    with output_lock(output_dir, "shards directory (--output_dir)"):
        return _generate_locked(documents, output_dir, vocab_file, vocab, fingerprint, settings, overwrite, progress,
                                corpus_dir)


def _generate_locked(documents: list[str], output_dir: str, vocab_file: str, vocab: list[str], fingerprint: str,
                     settings: GenerateSettings, overwrite: bool, progress: bool, corpus_dir: str) -> dict:
    """``generate_shards`` once the inputs are checked and the output lock is held."""
    from utils.progress import progress as progress_bar

    old = existing_shards(output_dir)
    manifest = _read_manifest(output_dir)
    if old and manifest and manifest.get("fingerprint") == fingerprint and len(old) == settings.num_shards:
        logger.info("%s already holds the shards of these inputs and settings; nothing to do", output_dir)
        return manifest
    if old and not overwrite:
        raise UserError(f"--output_dir: {output_dir} already holds {len(old)} shard(s) from other inputs or "
                        "settings; pass --overwrite to replace them")

    for stale in glob.glob(os.path.join(output_dir, _STAGING_PREFIX + "*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run (we hold the lock: not a live one's)
    staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=output_dir)
    started = time.perf_counter()
    try:
        writer = ShardWriter(staging, settings.num_shards)
        packer = Packer(settings.max_seq_len - 2, writer.write)
        total_bytes = sum(os.path.getsize(path) for path in documents)
        lines = undecodable_docs = 0
        current_doc, doc_undecodable = None, False
        rule = settings.documents
        splitter = DocumentSplitter(rule) if rule.active else None
        tasks = plan_tasks(documents, settings.block_bytes)
        with progress_bar(total=total_bytes, unit="B", unit_scale=True, desc="tokenising", enabled=progress) as bar:
            for results in _ordered_map(tasks, settings.num_workers, vocab_file, settings.do_lower_case,
                                        with_blanks=rule.active):
                for segment in results:
                    if segment.doc != current_doc:
                        packer.end_document()
                        undecodable_docs += doc_undecodable
                        current_doc, doc_undecodable = segment.doc, False
                        if splitter:
                            splitter.new_file()
                    doc_undecodable |= segment.undecodable
                    add_line = packer.add_line
                    if splitter:  # the document rule decides, line by line, where a document ends
                        starts = splitter.starts_document
                        for fragment, count, blanks, chars in zip(segment.fragments, segment.counts,
                                                                  segment.blank_before, segment.chars):
                            if starts(blanks, chars):
                                packer.end_document()
                            if count:
                                add_line(fragment, count)
                        splitter.end_block(segment.trailing_blanks, bool(segment.counts))
                    else:
                        for fragment, count in zip(segment.fragments, segment.counts):
                            add_line(fragment, count)
                    lines += segment.lines
                    bar.update(segment.nbytes)
        packer.end_document()
        undecodable_docs += doc_undecodable
        writer.close()
        if writer.sequences == 0:
            raise UserError(f"--train_corpus: {corpus_dir}: no text ({len(documents)} file(s), no sequence of "
                            f"at least {MIN_TOKENS} tokens)")
        seconds = time.perf_counter() - started
        stats = {
            "format": FORMAT_VERSION, "fingerprint": fingerprint, "corpus": os.path.abspath(corpus_dir),
            "files": len(documents), "documents": splitter.documents if splitter else len(documents),
            "document_rule": dataclasses.asdict(rule), "documents_with_undecodable_bytes": undecodable_docs,
            "lines": lines, "sequences": writer.sequences, "tokens": writer.tokens,
            "dropped_short_sequences": packer.dropped, "shard_sequences": writer.counts,
            "max_seq_len": settings.max_seq_len, "max_tokens_per_sequence": settings.max_seq_len - 2,
            "do_lower_case": settings.do_lower_case, "num_shards": settings.num_shards,
            "vocab_size": len(vocab), "vocab_sha256": file_sha256(vocab_file),
            "seconds": round(seconds, 3), "tokens_per_second": round(writer.tokens / max(seconds, 1e-9), 1),
        }
        # Commit: shards first (each rename is atomic), stale extra shards removed, manifest last.
        new_names = {os.path.basename(path) for path in writer.paths}
        for path in writer.paths:
            os.replace(path, os.path.join(output_dir, os.path.basename(path)))
        for path in old:
            if os.path.basename(path) not in new_names:
                os.unlink(path)
        with atomic_write(os.path.join(output_dir, VOCAB_NAME), "wb") as handle, open(vocab_file, "rb") as source:
            shutil.copyfileobj(source, handle)  # the exact vocab the shards' tokens come from
        with atomic_write(os.path.join(output_dir, MANIFEST_NAME)) as handle:
            json.dump(stats, handle, indent=2, sort_keys=True)
            handle.write("\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if undecodable_docs:
        logger.warning("%d document(s) held bytes that are not UTF-8; they were replaced by U+FFFD", undecodable_docs)
    logger.info("%d documents (%d file(s); a document ends at %s) -> %d sequences, %d tokens in %d shards "
                "(%.0f tokens/s)", stats["documents"], len(documents), rule.describe(), stats["sequences"],
                stats["tokens"], settings.num_shards, stats["tokens_per_second"])
    return stats


# --------------------------------------------------------------------------------------
# Lazy reading
# --------------------------------------------------------------------------------------


def find_shards(directory: str, flag: str = "--pregenerated_data") -> list[str]:
    """The shard files of ``directory`` in shard-number order."""
    if not os.path.isdir(directory):
        raise UserError(f"{flag}: {directory}: no such directory")
    named = [(int(SHARD_PATTERN.match(name).group(1)), name) for name in os.listdir(directory)
             if SHARD_PATTERN.match(name)]
    if not named:
        raise UserError(f"{flag}: {directory} holds no {SHARD_TEMPLATE.format('{i}')} shards "
                        "(run generate_data.py first)")
    return [os.path.join(directory, name) for _, name in sorted(named)]


def _line_starts(path: str, chunk: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Start and end byte offsets of the non-empty lines of ``path`` (one binary pass)."""
    newline_positions = []
    offset = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            newline_positions.append(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + offset)
            offset += len(block)
    ends = np.concatenate(newline_positions) if newline_positions else np.zeros(0, dtype=np.int64)
    ends = ends.astype(np.int64)
    if offset and (len(ends) == 0 or ends[-1] != offset - 1):
        ends = np.append(ends, offset)  # a last line without a newline
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64) if len(ends) else ends
    keep = ends > starts  # drop blank lines
    return starts[keep], ends[keep]


class ShardIndex:
    """Random access to the sequences of a set of shards without loading them.

    ``tokens(i)`` reads and parses only line ``i`` (global order: shard 0's lines, then shard
    1's, ...). A line that is not a ``{"tokens": [...]}`` JSON object raises a ``UserError``
    naming the file and line. File descriptors are opened per process (DataLoader workers).
    """

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)
        self.starts, self.ends = [], []
        for path in self.paths:
            starts, ends = _line_starts(path)
            self.starts.append(starts)
            self.ends.append(ends)
        counts = np.array([len(s) for s in self.starts], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(counts)))
        self._fds: dict[int, int] = {}
        self._pid = None
        if self.offsets[-1] == 0:
            raise UserError(f"{os.path.dirname(self.paths[0]) or '.'}: the shards hold no sequences")

    @classmethod
    def from_directory(cls, directory: str, flag: str = "--pregenerated_data") -> "ShardIndex":
        return cls(find_shards(directory, flag))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fds"], state["_pid"] = {}, None  # descriptors do not travel to other processes
        return state

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():
            self._fds, self._pid = {}, os.getpid()
        if shard not in self._fds:
            self._fds[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return self._fds[shard]

    def locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return shard, index - int(self.offsets[shard])

    def _line_number(self, shard: int, local: int) -> int:
        """1-based line number in the file (blank lines count), for error messages."""
        start = int(self.starts[shard][local])
        with open(self.paths[shard], "rb") as handle:
            return handle.read(start).count(b"\n") + 1

    def tokens(self, index: int) -> list[str]:
        shard, local = self.locate(index)
        start, end = int(self.starts[shard][local]), int(self.ends[shard][local])
        raw = os.pread(self._fd(shard), end - start, start)
        where = lambda: f"{self.paths[shard]}:{self._line_number(shard, local)}"  # noqa: E731
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8"
            raise UserError(f"{where()}: not valid JSON ({reason})") from None
        tokens = record.get("tokens") if isinstance(record, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
            raise UserError(f'{where()}: expected {{"tokens": [strings]}}')
        return tokens

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
