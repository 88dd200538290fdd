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

Tokenising (the vocabulary, the tokenizer, the worker processes) is in ``pretraining.tokenizing``;
the shards' names and their lazy reading (``ShardIndex``) in ``pretraining.shard_index``.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Iterable, Iterator, Sequence

from pretraining.documents import DocumentRule, DocumentSplitter, list_corpus_files
from pretraining.shard_index import MANIFEST_NAME, SHARD_PATTERN, SHARD_TEMPLATE, VOCAB_NAME  # noqa: F401 (re-exported)
from pretraining.tokenizing import file_sha256, ordered_map
from utils import UserError, atomic_write, get_logger, load_vocab, output_lock  # noqa: F401 (re-exported)

logger = get_logger(__name__)

MIN_TOKENS = 3  # the original drops sequences shorter than this
FORMAT_VERSION = 1
_STAGING_PREFIX = ".generate_data."


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


def _commit_shards(output_dir: str, new_paths: list[str], old_paths: list[str], vocab_file: str, stats: dict) -> None:
    """Move the staged shards in (each rename is atomic), remove stale extra shards, write the manifest last."""
    new_names = {os.path.basename(path) for path in new_paths}
    for path in new_paths:
        os.replace(path, os.path.join(output_dir, os.path.basename(path)))
    for path in old_paths:
        if os.path.basename(path) not in new_names:
            os.unlink(path)
    with atomic_write(os.path.join(output_dir, VOCAB_NAME), "wb") as handle, open(vocab_file, "rb") as source:
        shutil.copyfileobj(source, handle)  # the exact vocab the shards' tokens come from
    with atomic_write(os.path.join(output_dir, MANIFEST_NAME)) as handle:
        json.dump(stats, handle, indent=2, sort_keys=True)
        handle.write("\n")


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
            for results in ordered_map(tasks, settings.num_workers, vocab_file, settings.do_lower_case,
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
        _commit_shards(output_dir, writer.paths, old, vocab_file, stats)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if undecodable_docs:
        logger.warning("%d document(s) held bytes that are not UTF-8; they were replaced by U+FFFD", undecodable_docs)
    logger.info("%d documents (%d file(s); a document ends at %s) -> %d sequences, %d tokens in %d shards "
                "(%.0f tokens/s)", stats["documents"], len(documents), rule.describe(), stats["sequences"],
                stats["tokens"], settings.num_shards, stats["tokens_per_second"])
    return stats


