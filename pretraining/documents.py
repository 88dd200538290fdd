"""What a document of the corpus is: a file, or a piece of one cut by the document rule.

Pre-training packs a document's lines into sequences and never packs across documents. The
corpus is a directory of text files or a single text file (``--train_corpus``):

* by default every file of a directory is one document (the BookCorpus convention), and a single
  file is split at blank lines (Google BERT's ``create_pretraining_data`` convention: "documents
  are delimited by empty lines");
* ``blank_lines`` K: a run of K or more blank lines (lines holding only whitespace) ends a
  document; 0 never splits a file. A Project Gutenberg book has one blank line between
  paragraphs and more between chapters or tales: K = 2 (or 4, ...) keeps paragraphs together;
* ``max_chars`` N: a document is also cut before a line that would take it past N characters
  (of its non-blank lines, stripped; a single longer line stays whole and is one document);
* a file always ends a document.

The rule is applied to the stream of lines, so the result does not depend on how the work is cut
into blocks or shared among processes. ``split_documents`` is the pure reference used by tests.
"""

from __future__ import annotations

import dataclasses
import os

from utils import UserError, os_problem

__all__ = ["DocumentRule", "DocumentSplitter", "lines_with_blanks", "list_corpus_files", "resolve_rule",
           "split_documents"]


@dataclasses.dataclass(frozen=True)
class DocumentRule:
    blank_lines: int = 0  # a run of this many blank lines or more ends a document (0: never)
    max_chars: int = 0  # cut before a line that takes a document past this many characters (0: no limit)

    @property
    def active(self) -> bool:
        return bool(self.blank_lines or self.max_chars)

    def describe(self) -> str:
        parts = ["the end of its file"]
        if self.blank_lines:
            parts.append(f"{self.blank_lines} or more blank line(s)")
        if self.max_chars:
            parts.append(f"{self.max_chars} characters")
        return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]


def list_corpus_files(corpus: str, flag: str = "--train_corpus") -> list[str]:
    """The corpus's files: ``corpus`` itself when it is a file, else the regular, non-hidden
    files at the top level of the directory, sorted (deterministic)."""
    if os.path.isfile(corpus):
        return [corpus]
    if not os.path.isdir(corpus):
        raise UserError(f"{flag}: {corpus}: no such file or directory (a text file, or a directory of them)")
    files = []
    for entry in os.scandir(corpus):
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_file():
                files.append(entry.path)
        except OSError as err:  # a link loop, no permission: one line naming the document
            raise UserError(f"{flag}: {entry.path}: cannot read the document ({os_problem(err)})") from None
    files.sort()
    if not files:
        raise UserError(f"{flag}: {corpus} holds no files (a text file, or a directory of them)")
    return files


def resolve_rule(corpus: str, blank_lines: int | None, max_chars: int | None) -> DocumentRule:
    """The rule for ``corpus``: ``blank_lines`` None means 1 for a single file, 0 for a directory."""
    if blank_lines is None:
        blank_lines = 1 if os.path.isfile(corpus) else 0
    if blank_lines < 0:
        raise UserError(f"--split_at_blank_lines must be >= 0, got {blank_lines}")
    if max_chars is not None and max_chars < 0:
        raise UserError(f"--max_document_chars must be >= 0, got {max_chars}")
    return DocumentRule(blank_lines, max_chars or 0)


def lines_with_blanks(text: str) -> tuple[list[str], list[int], int]:
    """The non-blank lines of ``text`` (stripped), the number of blank lines just before each, and
    the number of blank lines after the last one. Line ends as in Python's text mode."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    raw = text.split("\n")
    if raw and raw[-1] == "":
        raw.pop()  # the line end of the last line, not a blank line
    lines, before, run = [], [], 0
    for line in raw:
        stripped = line.strip()
        if stripped:
            lines.append(stripped)
            before.append(run)
            run = 0
        else:
            run += 1
    return lines, before, run


class DocumentSplitter:
    """The rule applied to a stream of lines, block after block: ``starts_document`` says whether a
    line begins a new document; ``end_block`` carries a run of blank lines into the next block."""

    def __init__(self, rule: DocumentRule):
        self.rule = rule
        self.documents = 0
        self.new_file()

    def new_file(self) -> None:
        self.carry, self.chars, self.has_text = 0, 0, False

    def starts_document(self, blank_before: int, chars: int) -> bool:
        """Account for a line; True when it starts a new document after text of the same file."""
        blanks, self.carry = blank_before + self.carry, 0
        rule = self.rule
        cut = self.has_text and ((rule.blank_lines and blanks >= rule.blank_lines)
                                 or (rule.max_chars and self.chars + chars > rule.max_chars))
        if cut or not self.has_text:
            self.documents += 1
            self.chars = 0
        self.chars += chars
        self.has_text = True
        return bool(cut)

    def end_block(self, trailing_blanks: int, had_lines: bool) -> None:
        self.carry = trailing_blanks if had_lines else self.carry + trailing_blanks


def split_documents(text: str, rule: DocumentRule) -> list[list[str]]:
    """One file's documents as lists of stripped non-blank lines (the reference of the rule)."""
    lines, before, trailing = lines_with_blanks(text)
    splitter, documents = DocumentSplitter(rule), []
    for line, blanks in zip(lines, before):
        if splitter.starts_document(blanks, len(line)) or not documents:
            documents.append([])
        documents[-1].append(line)
    return documents
