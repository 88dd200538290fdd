"""The latency protocol (SPEC section 6): every setting and its default, written once.

The stage's flags (``latency.dataset``), the shell scripts, the report's re-measurement and the
search's finalist measurement all take their defaults from ``Protocol``; none repeats them.

Two versions can be measured (``version``, the ``protocol`` field of every record):

* ``baf-latency-3`` (the default): **paired runs**. Each of an arch's ``runs`` timed runs is paired
  with a run of a *reference* model of the same backend, the order alternating (arch, reference / reference, arch,
  ...), after ``warmup`` untimed runs of the arch (the reference stays built and warm for the whole
  run). Its latency is the median of the per-pair ratios arch / reference times the reference's
  latency at the table's start (the table's *unit*); a slowdown that spans a pair cancels in its
  ratio. Models are built cheaply (``latency.backends``: no random initialisation). The clock is the
  thread's CPU time when ``threads`` is 1 (time spent descheduled does not count), wall time else.
* ``baf-latency-2``: the previous protocol -- ``runs`` timed runs spread over ``rounds`` rounds
  over chunks of ``interleave`` archs with an anchor, reference checkpoints, and re-measurement of
  suspect archs (``latency.session``). Kept so that its tables stay comparable and its cost can be
  measured against the new one; its tables are read as before.

Both time batch ``batch_size`` x ``seq_len`` tokens of one fixed token id, ``threads`` intra-op
threads (inter-op 1), the garbage collector off while timing, no sleep anywhere.
"""

from __future__ import annotations

import dataclasses

from utils import UserError

PAIRED = "baf-latency-3"
ROUNDS = "baf-latency-2"
PROTOCOL_VERSION = PAIRED  # what the stage measures unless told otherwise
VERSIONS = (PAIRED, ROUNDS)
TIMERS = ("wall", "cpu")
DRIFT_CORRECTIONS = ("anchor", "none")
# The original's input: every token is id 9333 (a plain word piece in the BERT uncased vocab).
ORIGINAL_TOKEN_ID = 9333

# Settings every version uses, and each version's own (what its records carry and what must agree
# between the records of one table).
COMMON_FIELDS = ("warmup", "runs", "timer", "threads", "batch_size", "seq_len", "vocab_size",
                 "max_position_embeddings", "seed")
VERSION_FIELDS = {
    PAIRED: COMMON_FIELDS,
    ROUNDS: COMMON_FIELDS + ("rounds", "interleave", "drift_correction", "reference_every",
                             "max_round_spread_pct", "max_residual_pct", "stable_pct", "remeasure_cap",
                             "drift_threshold_pct"),
}
# Defaults that depend on the version (the others are the dataclass defaults below).
VERSION_DEFAULTS = {PAIRED: {"warmup": 2, "runs": 24}, ROUNDS: {"warmup": 5, "runs": 20, "timer": "wall"}}
DEFAULT_ROUNDS = 4  # baf-latency-2: rounds unless fewer runs are asked for
# The stage's flag for each setting (error messages name the flag a user types).
FLAGS = {"warmup": "--warmup", "timer": "--timer", "threads": "--threads", "batch_size": "--batch_size",
         "seq_len": "--max_seq_length", "vocab_size": "--vocab_size",
         "max_position_embeddings": "--max_position_embeddings", "seed": "--seed", "runs": "--infer_cnt",
         "rounds": "--rounds", "interleave": "--interleave",
         "drift_correction": "--drift_correction", "reference_every": "--reference_every",
         "max_round_spread_pct": "--max_round_spread_pct", "max_residual_pct": "--max_residual_pct",
         "stable_pct": "--stable_pct", "remeasure_cap": "--remeasure_cap",
         "drift_threshold_pct": "--drift_threshold_pct"}


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How one latency is measured; the fields of its version are written into every record.
    ``warmup``, ``runs`` and ``timer`` left ``None`` take their version's default, ``rounds``
    ``min(4, runs)``."""

    version: str = PROTOCOL_VERSION
    warmup: int | None = None  # untimed runs of an arch before its timed ones
    runs: int | None = None  # timed runs of an arch (baf-latency-3: each paired with a reference run)
    timer: str | None = None  # clock of the headline: wall (perf_counter) or cpu (thread CPU time)
    threads: int = 1
    batch_size: int = 1
    seq_len: int = 128
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    seed: int = 0  # seed of the weights (their values do not change the kernels' speed)
    # baf-latency-2: the timed runs in rounds over chunks, anchor, references, re-measurement
    rounds: int | None = None
    interleave: int = 8
    drift_correction: str = "anchor"
    reference_every: int = 50  # archs between two reference checkpoints
    max_round_spread_pct: float = 8.0  # a measurement whose rounds differ more is suspect
    max_residual_pct: float = 5.0  # an arch further from its FFN line's robust fit is suspect
    stable_pct: float = 2.0  # two measurements of an arch that agree this well settle it
    remeasure_cap: int = 2  # re-measure passes at most (so re-measurements per arch at most)
    drift_threshold_pct: float = 5.0  # references drifting more flag the table

    def __post_init__(self):
        if self.version not in VERSIONS:
            raise UserError(f"--protocol: unknown protocol {self.version!r}; choose one of {', '.join(VERSIONS)}")
        defaults = VERSION_DEFAULTS[self.version]
        for field in ("warmup", "runs"):
            if getattr(self, field) is None:
                object.__setattr__(self, field, defaults[field])
        if self.rounds is None:
            object.__setattr__(self, "rounds", max(1, min(DEFAULT_ROUNDS, self.runs)))
        if self.timer is None:
            object.__setattr__(self, "timer", defaults.get("timer") or ("cpu" if self.threads == 1 else "wall"))
        self._check()

    def _check(self) -> None:
        for field, low in (("warmup", 0), ("runs", 1), ("rounds", 1), ("interleave", 1),
                           ("threads", 1), ("batch_size", 1), ("seq_len", 1), ("vocab_size", 2),
                           ("reference_every", 1), ("remeasure_cap", 0)):
            value = getattr(self, field)
            if value < low:
                raise UserError(f"{FLAGS[field]} must be >= {low}, got {value}")
        for field in ("max_round_spread_pct", "max_residual_pct", "stable_pct", "drift_threshold_pct"):
            if not getattr(self, field) > 0:
                raise UserError(f"{FLAGS[field]} must be > 0, got {getattr(self, field)}")
        if self.timer not in TIMERS:
            raise UserError(f"--timer: unknown timer {self.timer!r}; choose one of {', '.join(TIMERS)}")
        if self.drift_correction not in DRIFT_CORRECTIONS:
            raise UserError(f"--drift_correction: unknown mode {self.drift_correction!r}; "
                            f"choose one of {', '.join(DRIFT_CORRECTIONS)}")
        if self.timer == "cpu" and self.threads != 1:
            raise UserError("--timer cpu measures the calling thread only; it needs --threads 1")
        if self.rounds > self.runs:
            raise UserError(f"--rounds {self.rounds} is more than --infer_cnt {self.runs} timed runs")
        if self.seq_len > self.max_position_embeddings:
            raise UserError(f"--max_seq_length {self.seq_len} exceeds --max_position_embeddings "
                            f"{self.max_position_embeddings}")

    @property
    def paired(self) -> bool:
        return self.version == PAIRED

    @property
    def fields(self) -> tuple[str, ...]:
        """The settings of this protocol's version (the ones its records carry)."""
        return VERSION_FIELDS[self.version]

    @property
    def token_id(self) -> int:
        """The input token: the original's id 9333, or the last id of a smaller (demo) vocab."""
        return ORIGINAL_TOKEN_ID if ORIGINAL_TOKEN_ID < self.vocab_size else self.vocab_size - 1

    @property
    def runs_per_round(self) -> list[int]:
        base, extra = divmod(self.runs, self.rounds)
        return [base + (1 if index < extra else 0) for index in range(self.rounds)]

    @property
    def model_build(self) -> str:
        """``cheap`` (no random initialisation; ``latency.backends``) for paired runs, ``full`` before."""
        return "cheap" if self.paired else "full"

    def to_record(self) -> dict:
        record = {field: getattr(self, field) for field in self.fields}
        record.update(protocol=self.version, token_id=self.token_id, gc_during_timing="disabled",
                      clock_wall="time.perf_counter", clock_cpu="time.thread_time")
        if self.paired:
            record["model_build"] = self.model_build
        return record

    @classmethod
    def from_record(cls, record: dict, **overrides) -> "Protocol":
        """The protocol a table's record was measured with (its version's fields), with overrides."""
        version = record.get("protocol")
        if version not in VERSIONS:
            raise UserError(f"{record.get('_where', 'a latency record')}: measured with protocol {version!r}, which "
                            f"cannot be measured again here (choose one of {', '.join(VERSIONS)})")
        values = {field: record[field] for field in VERSION_FIELDS[version] if record.get(field) is not None}
        values.update(overrides)
        return cls(version=version, **values)


def default_of(field: str, version: str = PROTOCOL_VERSION):
    """The default of one setting under ``version`` (for ``--help`` texts and documentation)."""
    return getattr(Protocol(version=version), field)


def flag_version_errors(given: dict, version: str) -> None:
    """One line when a setting of the other version was given (``given``: field -> value)."""
    for field, value in given.items():
        if value is not None and field not in VERSION_FIELDS[version]:
            owner = next(v for v in VERSIONS if field in VERSION_FIELDS[v])
            raise UserError(f"{FLAGS[field]} is a setting of protocol {owner}; this run measures with {version} "
                            f"(--protocol {owner} to use it)")
