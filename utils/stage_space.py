"""How a stage picks its space, by one rule for every stage (``stage_space``): the ``--space`` flag, else
the space the supernet records for the stage's role, else the predictor's, else the stage's default,
with the original's range flags on top; and the coverage checks between spaces (a search space
against the supernet's sampler or a predictor's latency grid)."""

from __future__ import annotations

import argparse
import dataclasses

from utils.cli import UserError
from utils.space import Grid, SearchSpace
from utils.space_catalog import SPACE_FAMILIES, SPACES, family_of, predictor_space, resolve_space

def _qkv_grid(space: SearchSpace) -> Grid:
    return space.hidden_size if space.qkv_size is None else space.qkv_size


def uncovered_dimensions(inner: SearchSpace, outer: SearchSpace, slack_steps: int = 0) -> list[str]:
    """The dimensions along which ``inner`` selects values outside the [min, max] range of
    ``outer`` -- e.g. a search space against the supernet's sampler (slices never trained) or
    against a predictor's latency grid (sizes never measured). ``slack_steps`` widens ``outer``'s
    width dimensions (hidden, FFN, qkv) by that many of its own grid steps at each end (a
    predictor may extrapolate one step: the paper searches FFN up to 1024 on a latency grid that
    stops at 1016); layer and head counts are never extrapolated. Empty when covered."""
    problems = []
    for label, mine, theirs, widens in (("layers", inner.layer_num, outer.layer_num, False),
                                        ("hidden", inner.hidden_size, outer.hidden_size, True),
                                        ("FFN", inner.intermediate_size, outer.intermediate_size, True),
                                        ("heads", inner.num_attention_heads, outer.num_attention_heads, False),
                                        ("qkv", _qkv_grid(inner), _qkv_grid(outer), True)):
        slack = slack_steps * theirs.step if widens else 0  # never an extra layer or head count
        if mine.start < theirs.start - slack or mine.stop > theirs.stop + slack:
            problems.append(f"{label} {mine.start}..{mine.stop} vs {theirs.start}..{theirs.stop}")
    return problems


def outside_ranges(arch: dict, space: SearchSpace, slack_steps: int = 0) -> list[str]:
    """The dimensions along which ``arch`` takes a value outside ``space``'s [min, max] ranges (e.g. a
    slice the supernet's sampler never trained); empty when inside. See ``uncovered_dimensions``."""
    return uncovered_dimensions(SearchSpace.spanning(arch), space, slack_steps)


def add_space_arguments(parser: argparse.ArgumentParser, default: str | None, role: str | None = None) -> None:
    """The space flags shared by every stage: ``--space`` (a named space, a family or a JSON space
    file) plus the original's range overrides. ``default=None``: the stage takes the space
    recorded in the artefact it reads."""
    group = parser.add_argument_group("search space")
    source = (f"default {default}" if default else "default: the space recorded in the artefact this stage reads")
    group.add_argument("--space", default=default,
                       help=f"a family ({', '.join(SPACE_FAMILIES)}), a space ({', '.join(SPACES)}) or a JSON "
                            f"space file; {source}")
    for flag, what in (("--layer_num_space", "layer count"), ("--hidden_size_space", "hidden size"),
                       ("--intermediate_size_space", "FFN size"), ("--head_num_space", "attention heads"),
                       ("--qkv_size_space", "qkv size ('tied' = equal to hidden)")):
        group.add_argument(flag, nargs="+", metavar="V", default=None,
                           help=f"override the {what} grid: MIN MAX [STEP]")
    parser.set_defaults(_space_role=role)


RANGE_FLAGS = (("layer_num_space", "layer_num"), ("hidden_size_space", "hidden_size"),
               ("intermediate_size_space", "intermediate_size"), ("head_num_space", "num_attention_heads"),
               ("qkv_size_space", "qkv_size"))


def space_from_args(args: argparse.Namespace, base: SearchSpace | None = None) -> SearchSpace | None:
    """The space selected by ``add_space_arguments`` flags: ``--space`` (resolved for the stage's
    role), else ``base`` (the artefact's), with the range overrides applied. None when neither."""
    role = getattr(args, "_space_role", None)
    space = resolve_space(args.space, role) if getattr(args, "space", None) else base
    return apply_range_flags(args, space)


def stage_space(role: str, args=None, supernet: dict[str, SearchSpace] | None = None, supernet_name: str = "",
                predictor: dict | None = None, predictor_name: str = "",
                default: str | None = None) -> tuple[SearchSpace | None, str]:
    """``(space, where it came from)`` for a stage playing ``role`` (search, latency, supernet), by one
    rule: ``args.space`` (a name, family or file, resolved for the role), else ``supernet[role]`` (the
    spaces a supernet records), else the predictor's (the family its metadata records), else
    ``default``; then the range flags of ``args`` (``add_space_arguments``). ``(None, "")`` when none."""
    spec = getattr(args, "space", None) if args is not None else None
    if spec:
        space, source = resolve_space(spec, role), f"--space {spec}"
    elif supernet and supernet.get(role) is not None:
        space, source = supernet[role], f"the supernet {supernet_name}"
    elif predictor and _predictor_role(predictor, role, predictor_name)[0] is not None:
        space, source = _predictor_role(predictor, role, predictor_name)
    elif default:
        space, source = resolve_space(default, role), f"the default {default}"
    else:
        space, source = None, ""
    return apply_range_flags(args, space), source


def _predictor_role(metadata: dict, role: str, name: str) -> tuple[SearchSpace | None, str]:
    """The space for ``role`` of the family a predictor's table recorded, else of its latency space's
    named family."""
    family = metadata.get("space_family")
    if isinstance(family, dict) and isinstance(family.get(role), dict):
        return SearchSpace.from_dict(family[role]), f"the predictor {name}"
    trained = predictor_space(metadata)
    named = (family_of(trained) or {}).get(role)
    return (named, f"the predictor's {trained.name} family") if named is not None else (None, "")


def apply_range_flags(args, space: SearchSpace | None) -> SearchSpace | None:
    """``space`` with the range overrides of ``args`` (``--hidden_size_space MIN MAX [STEP]`` ...)."""
    overrides = [flag for flag, _ in RANGE_FLAGS if getattr(args, flag, None) is not None]
    if space is None:
        if overrides:
            raise UserError(f"--{overrides[0]}: a range override needs a base space (--space NAME or a space file)")
        return None
    changes = {}
    for flag, field in RANGE_FLAGS:
        values = getattr(args, flag, None)
        if values is None:
            continue
        if field == "qkv_size" and values == ["tied"]:
            changes[field] = None
            continue
        try:
            numbers = [int(v) for v in values]
        except ValueError:
            raise UserError(f"--{flag}: expected integers MIN MAX [STEP], got {' '.join(values)}") from None
        if len(numbers) not in (2, 3):
            raise UserError(f"--{flag}: expected MIN MAX [STEP], got {len(numbers)} value(s)")
        old = getattr(space, field)
        step = numbers[2] if len(numbers) == 3 else (old.step if old is not None else 1)
        try:
            changes[field] = Grid(numbers[0], numbers[1], step)
        except UserError as err:
            raise UserError(f"--{flag}: {err}") from None
    if changes:
        space = dataclasses.replace(space, name=f"{space.name}+custom", **changes)
    return space
