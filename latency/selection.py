"""Which archs a latency run measures: a seeded sample of a space's grid or an arch file (off-grid
archs welcome, checked against the space's ranges only when a space is given), every one a plain
Hugging Face BERT, in a seeded shuffled order (slow machine drift becomes noise instead of a bias
shared by neighbouring archs) or the original's grid order, optionally one shard of several."""

from __future__ import annotations

import random

from utils import UserError, check_arch_schema, iter_arch_lines, read_arch_file

ORDERS = ("shuffled", "grid")
SPACE_OVERRIDES = ("layer_num_space", "hidden_size_space", "intermediate_size_space", "head_num_space",
                   "qkv_size_space")


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise UserError(f"--shard: expected I/N such as 0/4, got {value!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {value}: need 0 <= I < N")
    return index, count


def explicit_space(args) -> bool:
    return args.space is not None or any(getattr(args, flag, None) is not None for flag in SPACE_OVERRIDES)


def check_in_ranges(space, arch: dict, where: str) -> None:
    """An arch of ``--arch_file`` inside ``space``'s ranges (not necessarily on its grid)."""
    def check(field, value, grid):
        if grid is not None and not grid.start <= value <= grid.stop:
            raise UserError(f"{where}: {field}={value} is outside the {space.name} space's range "
                            f"{grid.start}..{grid.stop}")

    check("sample_layer_num", arch["sample_layer_num"], space.layer_num)
    check("sample_hidden_size", arch["sample_hidden_size"], space.hidden_size)
    for field, grid in (("sample_intermediate_sizes", space.intermediate_size),
                        ("sample_num_attention_heads", space.num_attention_heads), ("sample_qkv_sizes", space.qkv_size)):
        for value in arch[field]:
            check(field, value, grid)
    if space.qkv_size is None:
        for qkv in arch["sample_qkv_sizes"]:
            if qkv != arch["sample_hidden_size"]:
                raise UserError(f"{where}: sample_qkv_sizes={qkv} must equal sample_hidden_size="
                                f"{arch['sample_hidden_size']} in the {space.name} space (qkv tied to hidden)")


def select_archs(args, space, space_given: bool) -> list[dict]:
    """The archs of this run, in measurement order (before sharding and resume)."""
    from transformer.hf_converter import check_hf_compatible

    if args.arch_file:
        archs = read_arch_file(args.arch_file, allow_duplicates=False)
        if not archs:
            raise UserError(f"--arch_file {args.arch_file}: no archs in the file")
        places = [f"{args.arch_file}:{number}" for number, _, _ in iter_arch_lines(args.arch_file)]
        for arch, place in zip(archs, places):
            check_arch_schema(arch, where=place)
            if space_given:
                check_in_ranges(space, arch, place)
    else:
        archs = list(space.grid())
        if args.sample is not None:
            if not 1 <= args.sample <= len(archs):
                raise UserError(f"--sample {args.sample}: the {space.name} space has {len(archs)} archs")
            archs = random.Random(args.seed).sample(archs, args.sample)
        places = [f"the {space.name} space"] * len(archs)
    for arch, place in zip(archs, places):
        try:
            check_hf_compatible(arch)  # the timed model is a plain HF BERT
        except UserError as err:
            raise UserError(f"{place}: {err}") from None
    if args.order == "shuffled":
        archs = archs[:]
        random.Random(f"order-{args.seed}").shuffle(archs)
    return archs
