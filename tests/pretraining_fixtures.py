"""Self-made fixtures for the stage 1-2 tests: a tiny WordPiece vocab and a tiny corpus, so the
tests run without ../shared/data (which the real-data tests read when present)."""

from __future__ import annotations

import contextlib
import os
import random

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
SHARED_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-uncased-vocab.txt")
SHARED_CORPUS = os.path.join(SHARED_DATA, "corpus")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("the a an of and to in is was it he she they we you that this with for on at by from as but not "
         "king queen castle forest wolf girl boy mother father old young little great good bad dark light "
         "went came said saw found took gave ran walked looked called lived told asked thought knew "
         "day night time way house door tree water fire bread gold stone bird fox bear river road").split()
PIECES = ["##s", "##ed", "##ing", "##ly", "##er", "##est", "##n", "##y"]
PUNCT = list(".,;:!?'\"-()")
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


def write_vocab(path: str) -> list[str]:
    """A small uncased WordPiece vocab: specials, words, suffix pieces, punctuation, letters."""
    tokens = SPECIALS + WORDS + PIECES + PUNCT + LETTERS + ["##" + letter for letter in LETTERS]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(tokens) + "\n")
    return tokens


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) + rng.choice(["", "", "", "s", "ed", "ing"]) for _ in range(rng.randint(3, 14))]
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice([".", ".", "!", "?", ", said the fox."])


def write_corpus(directory: str, documents: int = 6, seed: int = 0) -> list[str]:
    """``documents`` text files of varied shape: blank lines, long lines, CRLF endings."""
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for index in range(documents):
        lines = []
        for _ in range(rng.randint(15, 40)):
            kind = rng.random()
            if kind < 0.1:
                lines.append("")  # blank line
            elif kind < 0.2:
                lines.append(" ".join(_sentence(rng) for _ in range(8)))  # a long paragraph
            else:
                lines.append("  " + _sentence(rng) + "  ")
        newline = "\r\n" if index == 1 else "\n"
        path = os.path.join(directory, f"doc_{index:02d}.txt")
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(newline.join(lines) + newline)
        paths.append(path)
    return paths


def tiny_space_args() -> list[str]:
    """A search space small enough for second-long training tests (supernet L2/H32/F64/Q32/A2)."""
    return ["--space", "demo_supernet", "--layer_num_space", "1", "2", "--hidden_size_space", "16", "32", "16",
            "--intermediate_size_space", "32", "64", "32", "--head_num_space", "2", "2", "1",
            "--qkv_size_space", "16", "32", "16"]


def changed_outside_step(before_dir: str, after_dir: str, archs: list[dict], mlm: bool = True,
                         kd: bool = False) -> tuple[int, int, int]:
    """Compare two consecutive checkpoints of a run around one optimizer step that trained
    ``archs``: returns ``(entries outside every arch's slices, how many of those changed bit-wise
    in value or optimizer state, how many entries inside changed in value)``."""
    import torch
    from safetensors.torch import load_file

    from pretraining.checkpointing import load_training_state
    from pretraining.step import optimizer_parameter_names
    from pretraining.sliced_updates import step_regions
    from transformer.checkpoint import load_supernet

    def bits(tensor):
        return tensor.contiguous().view(torch.int32) if tensor.dtype == torch.float32 else tensor

    model = load_supernet(before_dir)
    regions = step_regions(model, archs, mlm, kd)
    weights = [load_file(os.path.join(d, "model.safetensors")) for d in (before_dir, after_dir)]
    states = [load_training_state(d)["optimizer"]["state"] for d in (before_dir, after_dir)]
    outside_total = changed_outside = changed_inside = 0
    for index, name in enumerate(optimizer_parameter_names(model)):
        shape = weights[0][name].shape
        used = regions[name].full_mask().reshape(shape) if name in regions else torch.zeros(shape, dtype=torch.bool)
        pairs = [(weights[0][name], weights[1][name])]
        for key, value in states[1].get(index, {}).items():
            if torch.is_tensor(value) and value.shape == shape:  # exp_avg, exp_avg_sq, bias corrections
                pairs.append((states[0].get(index, {}).get(key, torch.zeros_like(value)), value))
        moved = torch.zeros(shape, dtype=torch.bool)
        for old, new in pairs:
            moved |= bits(old) != bits(new)
        outside_total += int((~used).sum())
        changed_outside += int((moved & ~used).sum())
        changed_inside += int((bits(pairs[0][0]) != bits(pairs[0][1]))[used].sum())
    return outside_total, changed_outside, changed_inside


@contextlib.contextmanager
def lock_held_by_another_process(directory: str):
    """A second process holding ``utils.output_lock(directory)`` for the block; yields its pid."""
    import subprocess
    import sys
    import textwrap

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {root!r})
        from utils import output_lock
        with output_lock({str(directory)!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
