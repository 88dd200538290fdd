"""Search spaces (SPEC section 3) as data: grids, the named spaces and their families (search,
latency and supernet role), JSON space files, the records artefacts keep of their spaces
(``space.json``), coverage checks, seeded sampling, enumeration, mutation and crossover, and the
``--space`` flags every stage shares."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
from typing import Any, Iterator

from utils.arch import ArchError, check_arch_schema, is_homogeneous, make_arch
from utils.cli import UserError
from utils.files import atomic_write, load_json_file

# --------------------------------------------------------------------------------------
# Search spaces
# --------------------------------------------------------------------------------------


# Far beyond any BERT (the paper's finest grid has 225 values, its widest dimension 1024), yet small
# enough that enumerating, sampling or building a model from a grid cannot exhaust memory.
MAX_GRID_VALUES = 10_000
MAX_GRID_VALUE = 100_000


@dataclasses.dataclass(frozen=True)
class Grid:
    """An inclusive integer grid ``start..stop`` with ``step`` (the original's range flags)."""

    start: int
    stop: int
    step: int = 1

    def __post_init__(self):
        if self.step < 1 or self.start > self.stop or self.start < 1:
            raise UserError(f"bad grid {self.start}..{self.stop} step {self.step}")
        count = (self.stop - self.start) // self.step + 1
        if count > MAX_GRID_VALUES or self.stop > MAX_GRID_VALUE:  # checked before any list of values is built
            raise UserError(f"grid {self.start}..{self.stop} step {self.step} has {count:,} values up to {self.stop:,}; "
                            f"a dimension has at most {MAX_GRID_VALUES:,} values, each at most {MAX_GRID_VALUE:,}")

    @property
    def values(self) -> list[int]:
        return list(range(self.start, self.stop + 1, self.step))

    def __contains__(self, value: int) -> bool:
        return self.start <= value <= self.stop and (value - self.start) % self.step == 0

    def describe(self) -> str:
        return f"{self.start}..{self.stop} step {self.step}" if self.start != self.stop else f"{self.start}"

    def index(self, value: int) -> int:
        return (value - self.start) // self.step

    def clamp_index(self, index: int) -> int:
        return max(0, min(len(self.values) - 1, index))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A homogeneous BERT search space. ``qkv_size=None`` ties qkv to hidden (the paper's KD
    search and latency grid); otherwise qkv is searched independently on its own grid."""

    name: str
    layer_num: Grid
    hidden_size: Grid
    intermediate_size: Grid
    num_attention_heads: Grid
    qkv_size: Grid | None = None

    # ----- validation
    def validate(self, arch: Any, where: str = "") -> dict:
        """Schema check plus membership; one-line ``ArchError`` naming the bad field."""
        arch = check_arch_schema(arch, where)
        prefix = f"{where}: " if where else ""

        def check(field: str, value: int, grid: Grid):
            if value not in grid:
                raise ArchError(f"{prefix}{field}={value} is outside the {self.name} space ({grid.describe()})")

        check("sample_layer_num", arch["sample_layer_num"], self.layer_num)
        check("sample_hidden_size", arch["sample_hidden_size"], self.hidden_size)
        if not is_homogeneous(arch):
            raise ArchError(f"{prefix}per-layer sizes differ across layers; the {self.name} space is homogeneous")
        check("sample_intermediate_sizes", arch["sample_intermediate_sizes"][0], self.intermediate_size)
        check("sample_num_attention_heads", arch["sample_num_attention_heads"][0], self.num_attention_heads)
        qkv = arch["sample_qkv_sizes"][0]
        if self.qkv_size is None:
            if qkv != arch["sample_hidden_size"]:
                raise ArchError(f"{prefix}sample_qkv_sizes={qkv} must equal sample_hidden_size="
                                f"{arch['sample_hidden_size']} in the {self.name} space (qkv tied to hidden)")
        else:
            check("sample_qkv_sizes", qkv, self.qkv_size)
        return arch

    def contains(self, arch: dict) -> bool:
        try:
            self.validate(arch)
        except ArchError:
            return False
        return True

    # ----- genes: the homogeneous arch as a tuple of grid values
    def _qkv_choices(self, hidden: int, heads: int) -> list[int]:
        if self.qkv_size is None:
            return [hidden] if hidden % heads == 0 else []
        return [q for q in self.qkv_size.values if q % heads == 0]

    def _make(self, layers: int, hidden: int, ffn: int, heads: int, qkv: int) -> dict:
        return make_arch(layers, hidden, ffn, heads, qkv)

    # ----- enumeration and sampling
    def grid(self) -> Iterator[dict]:
        """Every arch of the space, in the original's nested order L -> hidden -> FFN (-> heads -> qkv)."""
        for layers in self.layer_num.values:
            for hidden in self.hidden_size.values:
                for ffn in self.intermediate_size.values:
                    for heads in self.num_attention_heads.values:
                        for qkv in self._qkv_choices(hidden, heads):
                            yield self._make(layers, hidden, ffn, heads, qkv)

    def size(self) -> int:
        return sum(1 for _ in self.grid())

    def sample(self, rng: random.Random) -> dict:
        """Draw each dimension uniformly and independently (heads that do not divide qkv are redrawn)."""
        for _ in range(1000):
            layers = rng.choice(self.layer_num.values)
            hidden = rng.choice(self.hidden_size.values)
            ffn = rng.choice(self.intermediate_size.values)
            heads = rng.choice(self.num_attention_heads.values)
            choices = self._qkv_choices(hidden, heads)
            if choices:
                return self._make(layers, hidden, ffn, heads, rng.choice(choices))
        raise UserError(f"the {self.name} space has no arch whose heads divide its qkv size")

    def largest(self) -> dict:
        heads = self.num_attention_heads.values[-1]
        hidden = self.hidden_size.values[-1]
        qkv = hidden if self.qkv_size is None else max(self._qkv_choices(hidden, heads))
        return self._make(self.layer_num.stop, hidden, self.intermediate_size.values[-1], heads, qkv)

    def smallest(self) -> dict:
        heads = self.num_attention_heads.values[0]
        hidden = self.hidden_size.values[0]
        qkv = hidden if self.qkv_size is None else min(self._qkv_choices(hidden, heads))
        return self._make(self.layer_num.start, hidden, self.intermediate_size.values[0], heads, qkv)

    # ----- evolution helpers
    def mutate(self, arch: dict, rng: random.Random, prob: float = 0.25) -> dict:
        """The original's mutation: layer index +-1 w.p. ``prob``, hidden index +-1 w.p. 2*prob,
        FFN index offset in -2..2 w.p. 2*prob, qkv (when searched) offset in -2..2 w.p. prob.
        Heads are re-drawn w.p. prob when the space has more than one choice. Indices are clamped."""
        arch = self.validate(arch)
        layers_i = self.layer_num.index(arch["sample_layer_num"])
        hidden_i = self.hidden_size.index(arch["sample_hidden_size"])
        ffn_i = self.intermediate_size.index(arch["sample_intermediate_sizes"][0])
        heads = arch["sample_num_attention_heads"][0]
        qkv = arch["sample_qkv_sizes"][0]
        if rng.random() < prob:
            layers_i = self.layer_num.clamp_index(layers_i + rng.choice((-1, 0, 1)))
        if rng.random() < 2 * prob:
            hidden_i = self.hidden_size.clamp_index(hidden_i + rng.choice((-1, 0, 1)))
        if rng.random() < 2 * prob:
            ffn_i = self.intermediate_size.clamp_index(ffn_i + rng.choice((-2, -1, 0, 1, 2)))
        if len(self.num_attention_heads.values) > 1 and rng.random() < prob:
            heads = rng.choice(self.num_attention_heads.values)
        hidden = self.hidden_size.values[hidden_i]
        if self.qkv_size is None:
            qkv = hidden
        else:
            qkv_i = self.qkv_size.index(qkv)
            if rng.random() < prob:
                qkv_i = self.qkv_size.clamp_index(qkv_i + rng.choice((-2, -1, 0, 1, 2)))
            qkv = self.qkv_size.values[qkv_i]
        if qkv % heads:
            choices = self._qkv_choices(hidden, heads)
            if not choices:
                return arch  # no valid qkv for these heads: keep the parent unchanged
            qkv = min(choices, key=lambda q: abs(q - qkv))
        return self._make(self.layer_num.values[layers_i], hidden, self.intermediate_size.values[ffn_i], heads, qkv)

    def crossover(self, first: dict, second: dict, rng: random.Random) -> dict:
        """Uniform crossover: each gene (layers, hidden, FFN, heads, qkv) from either parent."""
        first, second = self.validate(first), self.validate(second)

        def pick(getter):
            return getter(first if rng.random() < 0.5 else second)

        layers = pick(lambda a: a["sample_layer_num"])
        hidden = pick(lambda a: a["sample_hidden_size"])
        ffn = pick(lambda a: a["sample_intermediate_sizes"][0])
        heads = pick(lambda a: a["sample_num_attention_heads"][0])
        qkv = hidden if self.qkv_size is None else pick(lambda a: a["sample_qkv_sizes"][0])
        if qkv % heads:
            qkv = min(self._qkv_choices(hidden, heads) or [qkv], key=lambda q: abs(q - qkv))
        child = self._make(layers, hidden, ffn, heads, qkv)
        return child if self.contains(child) else first

    # ----- (de)serialisation
    def to_dict(self) -> dict:
        def grid(g):
            return None if g is None else [g.start, g.stop, g.step]
        return {"name": self.name, "layer_num": grid(self.layer_num), "hidden_size": grid(self.hidden_size),
                "intermediate_size": grid(self.intermediate_size),
                "num_attention_heads": grid(self.num_attention_heads), "qkv_size": grid(self.qkv_size)}

    @classmethod
    def from_dict(cls, data: dict) -> "SearchSpace":
        def grid(value):
            return None if value is None else Grid(*value)
        return cls(name=data["name"], layer_num=grid(data["layer_num"]), hidden_size=grid(data["hidden_size"]),
                   intermediate_size=grid(data["intermediate_size"]),
                   num_attention_heads=grid(data["num_attention_heads"]), qkv_size=grid(data.get("qkv_size")))


def sample_arch(space: SearchSpace, seed: int) -> dict:
    """Seeded draw that does not touch the global RNG. Pass e.g. ``seed=global_step`` so that
    every distributed rank draws the same arch at the same step."""
    return space.sample(random.Random(seed))


# The spaces, as data (SPEC section 3). Every stage picks one by name with --space.
SPACES: dict[str, SearchSpace] = {
    space.name: space
    for space in (
        # Evolutionary search, KD setting: qkv tied to hidden, 12 heads.
        SearchSpace("paper_search", Grid(1, 5), Grid(144, 528, 12), Grid(128, 1024, 32), Grid(12, 12)),
        # The original latency table grid: 5 x 38 x 75 = 14,250 archs.
        SearchSpace("paper_latency", Grid(1, 5), Grid(120, 564, 12), Grid(128, 1016, 12), Grid(12, 12)),
        # The original's KD pre-training sampler: qkv independent of hidden. Its qkv starts at 144
        # (the original: 180) so that every qkv paper_search selects (qkv = hidden >= 144) is trained.
        SearchSpace("paper_supernet", Grid(1, 5), Grid(128, 564, 4), Grid(128, 1024, 4), Grid(12, 12),
                    Grid(144, 528, 12)),
        # The embedded demo (SPEC 9): small enough for minutes on 2 cores, yet wide enough that
        # dynamic int8 pays off (below hidden ~256 its per-Linear overhead makes int8 *slower*).
        # The search space is finer than the latency grid (same ranges, hidden 2x and FFN 4x the steps:
        # 756 archs, 636 of them off the 120-arch table), so the demo's predicted-vs-measured check is
        # held out, and each demo budget's window holds 40+ candidates for a real search.
        SearchSpace("demo_search", Grid(1, 4), Grid(192, 448, 32), Grid(256, 1536, 64), Grid(4, 4)),
        SearchSpace("demo_latency", Grid(1, 4), Grid(192, 448, 64), Grid(256, 1536, 256), Grid(4, 4)),
        SearchSpace("demo_supernet", Grid(1, 4), Grid(192, 448, 32), Grid(256, 1536, 64), Grid(4, 4),
                    Grid(192, 448, 32)),
    )
}


# The three roles a space plays, one per stage family: the supernet's sampler (pre-training), the
# latency grid (tables, predictor) and the search space (searcher, evaluator). A *space family* names
# one space per role; the named ones below, or a JSON file (``load_space_file``).
SPACE_ROLES = ("search", "latency", "supernet")
SPACE_FAMILIES: dict[str, dict[str, str]] = {
    "paper": {"search": "paper_search", "latency": "paper_latency", "supernet": "paper_supernet"},
    "demo": {"search": "demo_search", "latency": "demo_latency", "supernet": "demo_supernet"},
}
# What an artefact directory (a supernet) records about the spaces it was made for.
SPACE_FILE = "space.json"


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise UserError(f"--space: unknown space {name!r}; choose one of {', '.join(SPACES)}") from None


def family_of(space: SearchSpace | None) -> dict[str, SearchSpace] | None:
    """The named family a named space belongs to (``paper_supernet`` -> the ``paper`` spaces)."""
    if space is None:
        return None
    for roles in SPACE_FAMILIES.values():
        if space.name in roles.values() and SPACES.get(space.name) == space:
            return {role: SPACES[name] for role, name in roles.items()}
    return None


def _space_from_json(data: Any, name: str, where: str) -> SearchSpace:
    if not isinstance(data, dict):
        raise UserError(f"{where}: a space must be a JSON object with layer_num, hidden_size, intermediate_size, "
                        "num_attention_heads[, qkv_size] as [start, stop, step]")
    fields = ("layer_num", "hidden_size", "intermediate_size", "num_attention_heads")
    missing = [field for field in fields if field not in data]
    if missing:
        raise UserError(f"{where}: missing {', '.join(missing)} (each [start, stop, step])")
    unknown = sorted(set(data) - set(fields) - {"qkv_size", "name"})
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}")
    grids = {}
    for field in fields + ("qkv_size",):
        value = data.get(field)
        if field == "qkv_size" and value in (None, "tied"):
            grids[field] = None
            continue
        if (not isinstance(value, list) or len(value) not in (2, 3)
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise UserError(f"{where}: {field} must be [start, stop] or [start, stop, step] of integers, got {value!r}")
        try:
            grids[field] = Grid(*value)
        except UserError as err:
            raise UserError(f"{where}: {field}: {err}") from None
    return SearchSpace(name=str(data.get("name") or name), layer_num=grids["layer_num"],
                       hidden_size=grids["hidden_size"], intermediate_size=grids["intermediate_size"],
                       num_attention_heads=grids["num_attention_heads"], qkv_size=grids["qkv_size"])


def load_space_file(path: str | os.PathLike) -> dict[str, SearchSpace]:
    """A space file: one space (``{"layer_num": [1, 5], ...}``, used for every role) or a family
    (``{"name": "mine", "search": {...}, "latency": {...}, "supernet": {...}}``, any subset of roles).
    Grids are ``[start, stop, step]``; ``"qkv_size": null`` (or absent) ties qkv to hidden.
    Returns ``{role: space}``; a single space is returned under the key ``"*"``."""
    path = os.fspath(path)
    data = load_json_file(path, "JSON space file")  # missing, a directory, encoding, depth, number size: one line
    stem = os.path.splitext(os.path.basename(path))[0]
    if isinstance(data, dict) and any(role in data for role in SPACE_ROLES):
        unknown = sorted(set(data) - set(SPACE_ROLES) - {"name", "description"})
        if unknown:
            raise UserError(f"{path}: unknown key(s) {', '.join(unknown)}; a space family has {', '.join(SPACE_ROLES)}")
        family = str(data.get("name") or stem)
        return {role: _space_from_json(data[role], f"{family}_{role}", f"{path}: {role}")
                for role in SPACE_ROLES if role in data}
    return {"*": _space_from_json(data, stem, path)}


def resolve_space(spec: str, role: str | None = None, flag: str = "--space") -> SearchSpace:
    """The space ``spec`` names for ``role``: a named space (``paper_search``), a family
    (``paper``, ``demo``: its space for ``role``) or a JSON space file (see ``load_space_file``)."""
    if spec in SPACES:
        return SPACES[spec]
    if spec in SPACE_FAMILIES:
        if role is None:
            raise UserError(f"{flag} {spec}: a space family; this stage needs one space")
        return SPACES[SPACE_FAMILIES[spec][role]]
    if spec.endswith(".json") or os.path.sep in spec or os.path.exists(spec):
        roles = load_space_file(spec)
        if "*" in roles:
            return roles["*"]
        if role is None or role not in roles:
            raise UserError(f"{flag} {spec}: the file has no '{role}' space (it has {', '.join(roles)})")
        return roles[role]
    raise UserError(f"{flag}: unknown space {spec!r}; choose a family ({', '.join(SPACE_FAMILIES)}), a space "
                    f"({', '.join(SPACES)}) or a JSON space file")


def space_record(roles: dict[str, SearchSpace]) -> dict:
    """The JSON an artefact stores about its spaces: ``{role: space.to_dict()}``."""
    return {role: space.to_dict() for role, space in roles.items() if space is not None}


def spaces_from_record(record: Any, where: str) -> dict[str, SearchSpace]:
    if not isinstance(record, dict):
        raise UserError(f"{where}: not a space record")
    return {role: _space_from_json(data, data.get("name") or role, f"{where}: {role}")
            for role, data in record.items() if role in SPACE_ROLES}


def write_space_record(directory: str | os.PathLike, roles: dict[str, SearchSpace]) -> str:
    """``<directory>/space.json`` (atomic): the spaces an artefact was made for."""
    path = os.path.join(os.fspath(directory), SPACE_FILE)
    with atomic_write(path) as handle:
        json.dump(space_record(roles), handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def read_space_record(directory: str | os.PathLike) -> dict[str, SearchSpace]:
    """The spaces ``<directory>/space.json`` records (empty when the directory has none)."""
    path = os.path.join(os.fspath(directory), SPACE_FILE)
    if not os.path.isfile(path):
        return {}
    data = load_json_file(path, "space record")  # encoding, depth, number size: one line
    return spaces_from_record(data, path)


def roles_for(space: SearchSpace, role: str) -> dict[str, SearchSpace]:
    """What an artefact made with ``space`` in ``role`` records: its family when it is a named
    space, else just that role."""
    family = family_of(space)
    return dict(family) if family is not None else {role: space}


def recorded_roles(spec: str | None, role: str, space: SearchSpace) -> dict[str, SearchSpace]:
    """What an artefact made in ``role`` with ``space`` (resolved from ``--space spec``) records:
    the whole family when ``spec`` names one (a named family or a family file), with this role's
    actual space (range overrides included); else the named space's family; else just the role."""
    roles: dict[str, SearchSpace] = {}
    if spec in SPACE_FAMILIES:
        roles = {r: SPACES[name] for r, name in SPACE_FAMILIES[spec].items()}
    elif spec and spec not in SPACES and (spec.endswith(".json") or os.path.exists(spec)):
        roles = {r: s for r, s in load_space_file(spec).items() if r != "*"}
    if not roles:
        roles = dict(family_of(space) or {})
    roles[role] = space
    return roles


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
