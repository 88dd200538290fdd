"""The statistics every claim of the report rests on: a mean with its spread and n, and a
difference of two means with a 95 % confidence interval (Welch). A difference whose interval
contains zero -- or whose sides have a single seed each, so that no spread is known -- is
"within noise", never a gain."""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean over seeds: ``mean``, sample ``std`` (ddof 1; 0 for one value), ``n``, min and max."""

    mean: float
    std: float
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, values) -> "Estimate":
        values = np.asarray([float(v) for v in values], dtype=np.float64)
        if values.size == 0:
            raise ValueError("an estimate needs at least one value")
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
        return cls(float(values.mean()), std, int(values.size), float(values.min()), float(values.max()))

    def to_dict(self, scale: float = 1.0) -> dict:
        return {"mean": self.mean * scale, "std": self.std * scale, "n": self.n, "min": self.low * scale,
                "max": self.high * scale}

    def text(self, scale: float = 100.0, digits: int = 1) -> str:
        """``61.3 ± 1.2 (n=3)`` (points when ``scale`` = 100); ``(n=1)`` without a spread."""
        if self.n == 1:
            return f"{self.mean * scale:.{digits}f} (n=1)"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f} (n={self.n})"


class _Verdict:
    """The verdict of a difference ``diff`` with a 95 % half-width (None: no spread is known)."""

    diff: float
    half_width: float | None

    @property
    def verdict(self) -> str:
        """``gain`` / ``loss`` only when the interval excludes zero; else ``within noise``."""
        if self.half_width is None or abs(self.diff) <= self.half_width:
            return "within noise"
        return "gain" if self.diff > 0 else "loss"


@dataclasses.dataclass(frozen=True)
class Difference(_Verdict):
    """``a - b`` with its 95 % confidence half-width (Welch-Satterthwaite), and the verdict."""

    diff: float
    half_width: float | None  # None: a side has a single seed, no spread is known
    n_a: int
    n_b: int

    def to_dict(self, scale: float = 100.0) -> dict:
        return {"diff": self.diff * scale, "ci95_half_width": None if self.half_width is None else self.half_width * scale,
                "n_a": self.n_a, "n_b": self.n_b, "verdict": self.verdict}

    def text(self, scale: float = 100.0, unit: str = "points") -> str:
        if self.half_width is None:
            return (f"{self.diff * scale:+.1f} {unit} (single seed on a side: no spread, so within noise "
                    "by this report's rule)")
        return (f"{self.diff * scale:+.1f} ± {self.half_width * scale:.1f} {unit} (95 % CI, Welch; n = {self.n_a} "
                f"and {self.n_b})")


def t_quantile_975(df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def difference(a: Estimate, b: Estimate) -> Difference:
    """``a - b`` and its Welch 95 % interval; a side with n = 1 has no spread (half-width None)."""
    diff = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return Difference(diff, None, a.n, b.n)
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    if se == 0:  # identical seeds on both sides: any nonzero difference is exact
        return Difference(diff, 0.0, a.n, b.n)
    df = (va + vb) ** 2 / ((va**2 / (a.n - 1) if va else 0.0) + (vb**2 / (b.n - 1) if vb else 0.0))
    return Difference(diff, t_quantile_975(df) * se, a.n, b.n)


@dataclasses.dataclass(frozen=True)
class PairedDifference(_Verdict):
    """``a - b`` seed by seed over the seeds both sides share, with a paired 95 % interval (t, n - 1
    degrees of freedom): a seed fixes a fine-tune's data order and head, so its luck is partly common
    to the two archs and cancels in the pair."""

    diff: float
    half_width: float | None  # None: fewer than two shared seeds
    seeds: tuple[int, ...]

    def to_dict(self, scale: float = 100.0) -> dict:
        return {"diff": self.diff * scale, "ci95_half_width": None if self.half_width is None else self.half_width * scale,
                "seeds": list(self.seeds), "verdict": self.verdict}

    def text(self, scale: float = 100.0, unit: str = "points") -> str:
        if self.half_width is None:
            return f"{self.diff * scale:+.1f} {unit} (paired by seed: fewer than two shared seeds)"
        return (f"{self.diff * scale:+.1f} ± {self.half_width * scale:.1f} {unit} (95 % CI, paired by seed; "
                f"n = {len(self.seeds)})")


def paired_difference(a: dict, b: dict) -> PairedDifference | None:
    """``a - b`` over the seeds in both ``{seed: value}`` maps (None when they share none)."""
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        return None
    diffs = np.asarray([float(a[seed]) - float(b[seed]) for seed in seeds])
    if len(seeds) < 2:
        return PairedDifference(float(diffs.mean()), None, seeds)
    half = t_quantile_975(len(seeds) - 1) * float(diffs.std(ddof=1)) / math.sqrt(len(seeds))
    return PairedDifference(float(diffs.mean()), half, seeds)

