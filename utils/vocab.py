"""The BERT vocab file: one token per line, in id order (what ``tokenizers`` and BERT write)."""

from __future__ import annotations

from utils.cli import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

__all__ = ["SPECIAL_TOKENS", "load_vocab"]


def load_vocab(path: str) -> list[str]:
    """Tokens in id order, one per line (the format ``tokenizers`` and BERT use)."""
    with open(path, encoding="utf-8", errors="strict") as handle:
        try:
            tokens = [line.rstrip("\n").rstrip("\r") for line in handle]
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: vocab is not UTF-8 ({err.reason})") from None
    while tokens and not tokens[-1]:
        tokens.pop()
    if not tokens:
        raise UserError(f"{path}: vocab file is empty")
    missing = [token for token in SPECIAL_TOKENS if token not in set(tokens)]
    if missing:
        raise UserError(f"{path}: vocab lacks the special token(s) {', '.join(missing)}")
    return tokens
