"""A search space (SPEC section 3) as data: grids, validation of an arch against them, seeded
sampling, enumeration, mutation and crossover. The named spaces, their families and the records
artefacts keep of them are in ``utils.space_catalog``; how a stage picks its space, in
``utils.stage_space``."""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Iterator

from utils.arch import ArchError, check_arch_schema, is_homogeneous, make_arch
from utils.cli import UserError

# --------------------------------------------------------------------------------------
# Search spaces
# --------------------------------------------------------------------------------------


# Far beyond any BERT (the paper's finest grid has 225 values, its widest dimension 1024), yet small
# enough that enumerating, sampling or building a model from a grid cannot exhaust memory.
MAX_GRID_VALUES = 10_000
MAX_GRID_VALUE = 100_000


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

    @classmethod
    def spanning(cls, arch: dict) -> "SearchSpace":
        """The smallest space holding ``arch``: each dimension spans its per-layer min..max."""
        def span(values):
            return Grid(min(values), max(values))
        return cls("arch", span([arch["sample_layer_num"]]), span([arch["sample_hidden_size"]]),
                   span(arch["sample_intermediate_sizes"]), span(arch["sample_num_attention_heads"]),
                   span(arch["sample_qkv_sizes"]))

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
