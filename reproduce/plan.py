"""The plan ``script/reproduce_paper.sh`` prints before it starts: every stage it will run, what
the stage reads and writes, how much work it is (steps, archs, candidates, searches) and how long
that should take here, extrapolated from the timing probe (``RUN/probe/probe.json``).

    python -m reproduce.plan NAME=VALUE ...        (the script's resolved variables)

Writes ``RUN/plan.json`` and ``RUN/plan.txt`` and prints the text. An estimate is the probe's
per-unit cost times the stage's units (plus the fixed overheads the probe saw); it does not know
about data-parallel overheads, thermal drift or another job sharing the machine: read it as
"within a factor of about 2". Without a probe (PROBE=0) only the units are printed.
"""

from __future__ import annotations

import json
import math
import os
import sys

from reproduce.probe import PROBE_JSON
from reproduce.settings import Settings, stage_table
from utils import UserError, atomic_write, get_space


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _count_lines(path: str) -> int | None:
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def _mnli_sizes(glue_dir: str) -> dict:
    """Examples per MNLI file (a GLUE file's header line not counted; the header-less samples have none)."""
    sizes = {}
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        count = _count_lines(os.path.join(glue_dir, name))
        if count is not None:
            with open(os.path.join(glue_dir, name), encoding="utf-8", errors="replace") as handle:
                first = handle.readline().split("\t")
            headerless = len(first) == 3 and first[0] in ("entailment", "neutral", "contradiction")
            count -= 0 if headerless else 1
        sizes[name] = count
    return sizes


def _eval_arg(settings: Settings, flag: str) -> int | None:
    words = settings.words("EVAL_ARGS")
    for index, word in enumerate(words[:-1]):
        if word == flag:
            try:
                return int(words[index + 1])
            except ValueError:
                return None
    return None


def _corpus_bytes(raw_dir: str) -> int | None:
    if not os.path.isdir(raw_dir):
        return None
    return sum(entry.stat().st_size for entry in os.scandir(raw_dir)
               if entry.is_file() and not entry.name.startswith("."))


def pretraining_overhead(probe: dict | None) -> float:
    """Seconds of a pre-training invocation that are not steps (start-up, teacher loading, the final
    save), from the probe's wall time less its steps."""
    info = (probe or {}).get("pretrain") or {}
    wall = ((probe or {}).get("seconds") or {}).get("pretrain")
    if not wall or not info.get("steps"):
        return 0.0
    steps_s = (info.get("first_step_seconds") or 0.0) + (info["steps"] - 1) * (info.get("seconds_per_step") or 0.0)
    return max(wall - steps_s, 0.0)


def latency_archs(settings: Settings) -> int:
    sample = settings.int("SAMPLE", 0)
    grid = get_space("paper_latency").size()
    return min(sample, grid) if sample > 0 else grid


class _Probe:
    """The timing probe's figures (``RUN/probe/probe.json``), each part empty when not probed."""

    def __init__(self, probe: dict | None):
        self.raw = probe or {}
        self.pretrain, self.latency = self.raw.get("pretrain") or {}, self.raw.get("latency") or {}
        self.finetune, self.shards = self.raw.get("finetune") or {}, self.raw.get("shards") or {}
        self.seconds = self.raw.get("seconds") or {}

    def latency_seconds(self, archs: int) -> float | None:
        if not self.latency.get("seconds_per_arch"):
            return None
        every = self.latency.get("reference_every") or 50
        timed = lambda n: n * self.latency["seconds_per_arch"] + (2 + n // every) * self.latency["checkpoint_seconds"]
        # start-up (imports, building the references), capped: the probe may have waited for another latency job
        overhead = min(max(self.seconds.get("latency", 0.0) - timed(1), 0.0), 60.0)
        return overhead + timed(archs)


def build_plan(settings: Settings, probe: dict | None) -> dict:
    s, measured = settings, _Probe(probe)
    stages = {row["stage"]: dict(row) for row in stage_table(s)}
    if "inputs" in stages:
        stages["inputs"].update(units="teacher (110 M parameters), stand-in MNLI, corpus links", estimate_s=20.0)
    manifest, tokens = _plan_shards(s, measured, stages)
    _plan_pretraining(s, probe, measured, stages, manifest, tokens)
    _plan_latency(s, measured, stages)
    searches = _plan_searches(s, measured, stages)
    if "report" in stages:
        evaluated = len(searches) * (s.int("GEN_SIZE") + s.int("GENERATIONS") * s.int("POPULATION"))
        seconds = measured.latency_seconds(evaluated)
        stages["report"].update(units=f"up to {evaluated} evaluated archs re-measured in fp32 and int8",
                                estimate_s=(seconds + 30) if seconds else None)

    ordered = [stages[name] for name in s.stages if name in stages]
    for row in ordered:  # a finished stage is skipped by a re-run with the same settings
        row["done"] = os.path.isfile(s.path("stages", f"{row['stage']}.done"))
        if row["done"]:
            row["estimate_s"] = 0.0
    known = [row.get("estimate_s") for row in ordered]
    total = sum(value for value in known if value is not None) if any(v is not None for v in known) else None
    return {"run_dir": s.run_dir, "smoke": s.smoke, "stages": ordered, "total_estimate_s": total,
            "complete_estimate": all(value is not None for value in known),
            "probe": {"device": (probe or {}).get("device"), "seconds": (probe or {}).get("seconds")} if probe else None}


def _plan_shards(s: Settings, measured: _Probe, stages: dict) -> tuple[dict | None, float | None]:
    """The shards stage's row; returns the shards' manifest (when they exist) and the corpus's tokens."""
    manifest_path = s.path("shards", "data_manifest.json")
    manifest = None
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    corpus = _corpus_bytes(s.get("RAW_DIR"))
    tokens = float(manifest["tokens"]) if manifest else None
    if tokens is None and s.get("CORPUS_TOKENS"):  # a stated corpus size (the benchmark's full-scale estimate)
        tokens = s.float("CORPUS_TOKENS")
    if tokens is None and corpus and measured.shards.get("tokens_per_byte"):
        tokens = corpus * measured.shards["tokens_per_byte"]
    if "shards" in stages:
        row = stages["shards"]
        if manifest:
            row.update(units=f"{manifest['tokens'] / 1e6:.1f} M tokens in {manifest['sequences']} sequences (done)",
                       estimate_s=0.0)
        else:
            shards = measured.shards
            rate = (shards.get("bytes", 0) / shards["seconds"]) if shards.get("seconds") else None
            workers = max(1, s.int("NUM_WORKERS", os.cpu_count() or 1))
            row.update(units=(f"{corpus / 1e6:.1f} MB of text" if corpus else "? MB of text")
                       + (f" (~{tokens / 1e6:.1f} M tokens)" if tokens else ""),
                       estimate_s=corpus / (rate * workers) if corpus and rate else None)
    return manifest, tokens


def _plan_pretraining(s: Settings, probe: dict | None, measured: _Probe, stages: dict, manifest: dict | None,
                      tokens: float | None) -> None:
    batch, seq, nproc = s.int("BATCH_SIZE"), s.int("MAX_SEQ_LENGTH"), max(1, s.int("NPROC", 1))
    accumulation = max(1, s.int("ACC_STEPS", 1))
    pretrain_probe, shards_probe = measured.pretrain, measured.shards
    if "pretrain" in stages:
        from pretraining.quality import DEFAULT_HELDOUT_FRACTION

        max_steps, epochs = s.int("MAX_STEPS", -1), s.int("EPOCHS", 1)
        sequences = None
        if manifest:
            sequences = manifest["sequences"]
        elif tokens and shards_probe.get("sequences"):
            sequences = tokens / (shards_probe["tokens"] / shards_probe["sequences"])
        if max_steps > 0:
            steps = max_steps
            how = f"{steps} steps (MAX_STEPS)"
        elif sequences:
            per_epoch = math.ceil(sequences * (1 - DEFAULT_HELDOUT_FRACTION) / (batch * nproc * accumulation))
            steps = epochs * per_epoch
            how = (f"{steps:,} steps = {epochs} epochs x {per_epoch:,} ({sequences:,.0f} sequences / (batch {batch} x "
                   f"{nproc} process(es) x {accumulation} accumulation))")
        else:
            steps, how = None, f"{epochs} epochs of the shards (size unknown until the shards exist)"
        per_step = pretrain_probe.get("seconds_per_step")
        same_shape = pretrain_probe.get("batch_size") == batch and pretrain_probe.get("max_seq_length") == seq
        overhead = pretraining_overhead(probe)
        stages["pretrain"].update(
            units=f"{how}, batch {batch} x seq {seq}" + (f", {nproc} GPUs (torchrun)" if nproc > 1 else ""),
            estimate_s=overhead + steps * per_step * accumulation if steps and per_step and same_shape else None,
            per_unit=(f"{per_step:.2f} s/step (probe, 1 process) + {overhead:.0f} s start-up and final save; "
                      "the sub-model quality report and data-parallel overheads not included") if per_step else None)
    if "paper_step" in stages:
        steps = s.int("PAPER_STEPS", 3)
        per_step = pretrain_probe.get("seconds_per_step")
        scale = 12 * 512 / max(1, (pretrain_probe.get("batch_size") or 1) * (pretrain_probe.get("max_seq_length") or 1))
        stages["paper_step"].update(units=f"{steps} steps, batch 12 x seq 512",
                                    estimate_s=(pretraining_overhead(probe) + steps * per_step * scale)
                                    if per_step else None,
                                    per_unit="the probe's step x the ratio of tokens; attention grows faster" if per_step
                                    else None)


def _plan_latency(s: Settings, measured: _Probe, stages: dict) -> None:
    archs = latency_archs(s)
    if "latency" in stages:
        if s.get("LATENCY_TABLES") == "authors":
            stages["latency"].update(units="14,250 archs each, measured by the authors (read, not measured)",
                                     estimate_s=0.0)
        else:
            which = f"a seeded sample of {archs}" if s.int("SAMPLE", 0) > 0 else f"all {archs:,}"
            latency_probe = measured.latency
            stages["latency"].update(
                units=f"{which} archs of paper_latency x fp32 + int8, {s.int('INFER_CNT')} runs each, 1 thread",
                estimate_s=measured.latency_seconds(archs),
                per_unit=(f"{latency_probe['seconds_per_arch']:.2f} s/arch (both backends) + "
                          f"{latency_probe['checkpoint_seconds']:.1f} s per reference checkpoint"
                          if latency_probe.get("seconds_per_arch") else None))
    if "predictors" in stages:
        stages["predictors"].update(units="2 predictors", estimate_s=60.0, per_unit="about 30 s each (BENCHMARKS.md)")


def _finetune_seconds(s: Settings, measured: _Probe) -> tuple[float | None, int | None]:
    """``(seconds per candidate fine-tune, training examples)`` from the probe and MNLI's sizes."""
    sizes = _mnli_sizes(s.get("GLUE_DIR")) if os.path.isdir(s.get("GLUE_DIR")) else {}
    if s.get("MNLI_SIZES"):  # "TRAIN DEV_MATCHED DEV_MISMATCHED": stated sizes instead of GLUE_DIR's
        counts = [int(word) for word in s.words("MNLI_SIZES")]
        sizes = dict(zip(("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"), counts))
    train = sizes.get("train.tsv")
    max_train = _eval_arg(s, "--max_train_examples")
    if train is not None and max_train:
        train = min(train, max_train)
    dev_m, dev_mm = sizes.get("dev_matched.tsv"), sizes.get("dev_mismatched.tsv")
    max_eval = _eval_arg(s, "--max_eval_examples")
    if max_eval and dev_m is not None:
        dev_m, dev_mm = min(dev_m, max_eval), min(dev_mm or 0, max_eval)
    finetune_probe = measured.finetune
    if not (finetune_probe.get("train_seconds_per_1k_examples") and train is not None and dev_m is not None):
        return None, train
    from glue.tasks import get_task

    hp = get_task("mnli").hparams
    batch_ft = _eval_arg(s, "--train_batch_size") or hp.train_batch_size
    eval_step = _eval_arg(s, "--eval_step") or hp.eval_step
    epochs = s.float("NUM_TRAIN_EPOCHS", 1.0)
    steps_ft = math.ceil(train / batch_ft) * epochs
    evaluations = math.ceil(steps_ft / eval_step)
    fp32 = finetune_probe.get("eval_fp32_seconds_per_1k_examples") or 0.0
    int8 = finetune_probe.get("eval_int8_seconds_per_1k_examples") or 0.0
    return (train * epochs * finetune_probe["train_seconds_per_1k_examples"]
            + evaluations * dev_m * fp32 + (dev_m + (dev_mm or 0)) * (fp32 + int8)) / 1000.0, train


def _plan_searches(s: Settings, measured: _Probe, stages: dict) -> list[str]:
    """The searches stage's row; returns the searches' names."""
    budgets = s.budgets
    auto = budgets == ["auto"]
    searches = s.searches(["<auto>"] * max(1, len(s.words("BUDGET_PERCENTILES"))) if auto else budgets)
    per_search = s.candidates_per_search()
    if "searches" not in stages:
        return searches
    candidate_s, train = _finetune_seconds(s, measured)
    total = len(searches) * per_search
    jobs = max(1, min(s.int("JOBS", 1), len(searches)))
    # each evaluator invocation (first generation, every later one, the final re-evaluation) starts up once
    startup = max(measured.seconds.get("finetune", 0.0) - (measured.finetune.get("seconds_per_candidate") or 0.0), 0.0)
    invocations = len(searches) * (2 + s.int("GENERATIONS"))
    budget_text = ("budgets chosen after the latency stage at the int8 table's percentiles "
                   f"{' '.join(s.words('BUDGET_PERCENTILES'))}" if auto else f"budgets {' '.join(budgets)} ms")
    stages["searches"].update(
        units=(f"{len(searches)} searches ({budget_text}; TYPES {' '.join(s.types)}"
               f"{' + random' if s.flag('RANDOM_BASELINE') else ''}) x {per_search} candidates "
               f"(GEN_SIZE {s.int('GEN_SIZE')} + GENERATIONS {s.int('GENERATIONS')} x POPULATION "
               f"{s.int('POPULATION')} + TOP_K {s.int('TOP_K')} x (seeds {len(s.seeds)} - 1)) = {total} fine-tunes"
               f" of {train if train is not None else '?'} MNLI examples, {jobs} at a time"),
        estimate_s=(total * candidate_s + invocations * startup) / jobs if candidate_s else None,
        per_unit=(f"{candidate_s:.0f} s per fine-tune + {startup:.0f} s per evaluator start, {invocations} starts"
                  if candidate_s else None))
    stages["searches"]["searches"] = searches
    stages["searches"]["candidates_per_search"] = per_search
    return searches


def render(plan: dict, settings: Settings) -> str:
    probe = plan["probe"]
    lines = [f"Plan of script/reproduce_paper.sh (RUN_DIR={plan['run_dir']}{', SMOKE=1' if plan['smoke'] else ''}):"]
    if probe:
        spent = sum((probe.get("seconds") or {}).values())
        lines.append(f"  estimates: extrapolated from a {spent:.0f}-s timing probe on {probe['device']} "
                     "(RUN_DIR/probe/probe.json); read them as within a factor of about 2")
    else:
        lines.append("  estimates: none (PROBE=0); units only")
    for number, row in enumerate(plan["stages"], start=1):
        lines.append(f"  [{number}] {row['stage']}: {row['what']}")
        if row.get("reads"):
            lines.append(f"      reads:  {', '.join(str(path) for path in row['reads'] if path)}")
        if row.get("writes"):
            lines.append(f"      writes: {', '.join(str(path) for path in row['writes'] if path)}")
        if row.get("units"):
            lines.append(f"      work:   {row['units']}")
        if row.get("done"):
            lines.append("      time:   done before (RUN_DIR/stages/%s.done); skipped unless its settings changed"
                         % row["stage"])
            continue
        estimate = human_seconds(row.get("estimate_s")) if probe or row.get("estimate_s") == 0.0 else "?"
        lines.append(f"      time:   ~{estimate}" + (f" ({row['per_unit']})" if row.get("per_unit") else ""))
    if plan["total_estimate_s"] is not None and probe:
        partial = "" if plan["complete_estimate"] else " (stages marked ? not included)"
        lines.append(f"  total: ~{human_seconds(plan['total_estimate_s'])}{partial}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        settings = Settings.parse(argv)
        probe = None
        path = settings.path("probe", PROBE_JSON)
        if settings.flag("PROBE") and os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                probe = json.load(handle)
        plan = build_plan(settings, probe)
        text = render(plan, settings)
        os.makedirs(settings.run_dir, exist_ok=True)
        with atomic_write(settings.path("plan.json")) as handle:
            json.dump(plan, handle, indent=2, sort_keys=True)
            handle.write("\n")
        with atomic_write(settings.path("plan.txt")) as handle:
            handle.write(text)
        print(text, end="")
    except UserError as err:
        print(f"reproduce_paper.sh: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
