"""A synthetic machine for the latency stage: a clock that advances by a known latency law each time
a model runs, with slowdowns injected per time, per build or per round, so the protocol's
statistics, re-measurement, drift control and resume can be checked with exact numbers."""

from __future__ import annotations

import collections

import pytest

from latency import backends, measure
from utils import arch_key, run_cli


@pytest.fixture
def private_timing_slot(tmp_path, monkeypatch):
    """This test's own machine-wide timing slot (import it with ``autouse`` semantics: see
    ``pytestmark`` in the test modules)."""
    monkeypatch.setenv("BAF_TIMING_LOCK_DIR", str(tmp_path / "timing_slot"))


def stage(argv, expect=0):
    """The PyTorch latency stage in this process; asserts its exit code."""
    import inference_time_evaluation_quant as torch_stage

    with pytest.raises(SystemExit) as info:
        run_cli(torch_stage.main, argv)
    assert info.value.code == expect
    return info.value.code

# a 2 x 2 x 5 grid (lines of 5 FFN sizes); auto references: L2/H96/F256 (anchor), L1/H64/F192, L2/H96/F320
GRID = ["--space", "demo_latency", "--layer_num_space", "1", "2", "--hidden_size_space", "64", "96", "32",
        "--intermediate_size_space", "128", "384", "64", "--head_num_space", "4", "4"]
# the tests written for protocol baf-latency-2 (rounds, anchor, re-measurement) pin it; PAIRED for baf-latency-3
SMALL_MODEL = ["--vocab_size", "128", "--max_seq_length", "16", "--max_position_embeddings", "32"]
PROTOCOL = ["--protocol", "baf-latency-2"] + SMALL_MODEL + ["--infer_cnt", "8", "--warmup", "1", "--no_progress"]
PAIRED = SMALL_MODEL + ["--infer_cnt", "6", "--warmup", "1", "--no_progress"]


def law_ms(arch: dict, backend: str = "torch_fp32") -> float:
    """Affine in FFN size on every (layers, hidden) line; int8 a little faster."""
    layers, hidden, ffn = arch["sample_layer_num"], arch["sample_hidden_size"], arch["sample_intermediate_sizes"][0]
    fp32 = 0.3 + layers * (0.1 + 2e-5 * hidden * ffn + 3e-5 * hidden * hidden + 1e-3 * hidden)
    return fp32 if backend == "torch_fp32" else 0.7 * fp32 + 0.2


class FakeMachine:
    """Replaces ``latency.measure.CLOCK`` and ``latency.backends.prepare_backends``.

    * ``speed(t)``: the machine's slowdown factor at synthetic time ``t`` (seconds);
    * ``per_build[arch_key]``: factors of that arch's 1st, 2nd, ... build (a slow first measurement);
    * ``per_call[arch_key]``: ``f(build, call) -> factor`` for finer injections (a slow round);
    * ``build_step``: the speed rises by this much at every build (drift along the run).
    """

    def __init__(self, speed=None, build_step: float = 0.0):
        self.t = 0.0
        self.speed = speed or (lambda t: 1.0)
        self.build_step = build_step
        self.builds = collections.Counter()
        self.total_builds = 0
        self.per_build: dict[str, list[float]] = {}
        self.per_call: dict[str, object] = {}

    # the clock
    def wall(self) -> float:
        return self.t

    def cpu(self) -> float:
        return self.t

    def factor(self) -> float:
        return self.speed(self.t) * (1 + self.build_step * self.total_builds)

    def prepare_backends(self, arch, names, protocol, **_options):
        key = arch_key(arch)
        build = self.builds[key]
        self.builds[key] += 1
        self.total_builds += 1
        slow = self.per_build.get(key, [])
        build_factor = slow[build] if build < len(slow) else 1.0
        out = {}
        for backend in names:
            calls = [0]

            def run(backend=backend, calls=calls):
                extra = self.per_call[key](build, calls[0]) if key in self.per_call else 1.0
                calls[0] += 1
                self.t += law_ms(arch, backend) * self.factor() * build_factor * extra / 1e3

            out[backend] = backends.Prepared(run=run, info={"linear_modules": 6 * arch["sample_layer_num"] + 1,
                                                            "converted_linear": 0, "prepare_s": 0.0})
        return out

    def install(self, monkeypatch) -> "FakeMachine":
        monkeypatch.setattr(measure, "CLOCK", self)
        monkeypatch.setattr(backends, "prepare_backends", self.prepare_backends)
        return self


def round_of_call(call: int, warmup: int, per_round: list[int]) -> int | None:
    """Which round's timed runs a model's ``call``-th run (0-based) belongs to (``None``: untimed)."""
    position = call
    for index, runs in enumerate(per_round):
        untimed = warmup if index == 0 else 1
        if position < untimed:
            return None
        position -= untimed
        if position < runs:
            return index
        position -= runs
    return None
