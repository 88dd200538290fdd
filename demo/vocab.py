"""A lower-case WordPiece vocab trained on the demo corpus with the ``tokenizers`` library.

Special tokens come first, at ids 0..4: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 (the
``tokenizers`` default order, not bert-base-uncased's 0/100/101/102/103). [PAD]=0 matches
``SuperBertConfig.pad_token_id``; every other stage looks tokens up by name in vocab.txt.
"""

from __future__ import annotations

import os

from utils import SPECIAL_TOKENS


def continuation_pieces(tokenizer, files: list[str], prefix: str = "##") -> list[str]:
    """``##c`` for every character that occurs inside a word (after the tokenizer's own
    normalisation and pre-tokenisation), sorted."""
    words = set()
    for path in files:
        with open(path, encoding="utf-8") as handle:
            words.update(handle.read().split())
    chars = set()
    for word in words:
        for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(word)):
            chars.update(piece[1:])
    return [prefix + char for char in sorted(chars)]


def train_wordpiece_vocab(files: list[str], output_dir: str, vocab_size: int, min_frequency: int = 2) -> str:
    """Train on ``files`` and write ``output_dir/vocab.txt``; returns its path.

    The trainer stops early when the corpus has no more pairs to merge, so the vocab can be
    smaller than ``vocab_size`` (the demo world has a few hundred distinct words).

    Determinism: ``tokenizers`` (0.23) creates the ``##c`` continuation pieces in hash-map order,
    and merges with equal counts are ordered by piece id, so two runs on the same text can give
    different vocabs (huggingface/tokenizers issue 1794). Registering every ``##c`` up front,
    in sorted order, fixes their ids and makes the result reproducible; they stay ordinary
    entries of vocab.txt (ids 5.., right after the special tokens)."""
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(lowercase=True, strip_accents=True, clean_text=True)
    files = sorted(files)
    pieces = continuation_pieces(tokenizer, files)
    tokenizer.train(files=files, vocab_size=vocab_size, min_frequency=min_frequency,
                    special_tokens=list(SPECIAL_TOKENS) + pieces, show_progress=False, wordpieces_prefix="##")
    os.makedirs(output_dir, exist_ok=True)
    tokenizer.save_model(output_dir)
    path = os.path.join(output_dir, "vocab.txt")
    with open(path, encoding="utf-8") as handle:
        head = [line.rstrip("\n") for _, line in zip(range(len(SPECIAL_TOKENS)), handle)]
    if tuple(head) != SPECIAL_TOKENS:
        raise RuntimeError(f"{path}: special tokens are {head}, expected {list(SPECIAL_TOKENS)} at ids 0..4")
    return path
