"""The settings of one ``script/reproduce_paper.sh`` run, as the script resolved them.

The script owns every default; it hands the resolved variables to the Python helpers as
``NAME=VALUE`` arguments (``Settings.parse``), and the helpers name those same variables in their
messages. The stages, their order and the files each reads and writes are defined here once
(``stage_table``), for the plan and for the tests.
"""

from __future__ import annotations

import dataclasses
import os

from quantize_utils import DEPLOYED, SCHEMES
from utils import UserError

STAGE_ORDER = ("inputs", "shards", "pretrain", "paper_step", "latency", "predictors", "searches", "report")
SMOKE_ONLY = ("inputs", "paper_step")
# The names of the fp32 and int8 schemes' files, as the registry (quantize_utils.SCHEMES) owns them.
_FP32, _INT8 = SCHEMES["torch_fp32"], SCHEMES["torch_dynamic_int8"]
TYPES = tuple(scheme.short for scheme in DEPLOYED)
FP32_TABLE, INT8_TABLE = _FP32.table_name, _INT8.table_name
AUTHORS_FP32, AUTHORS_INT8 = _FP32.legacy_table, _INT8.legacy_table
PREDICTOR_FP32, PREDICTOR_INT8 = _FP32.predictor_file, _INT8.predictor_file


@dataclasses.dataclass
class Settings:
    values: dict

    @classmethod
    def parse(cls, pairs) -> "Settings":
        values = {}
        for pair in pairs:
            name, sep, value = pair.partition("=")
            if not sep or not name:
                raise UserError(f"expected NAME=VALUE, got {pair!r}")
            values[name] = value
        return cls(values)

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def int(self, name: str, default: int = 0) -> int:
        value = self.values.get(name, "")
        if value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise UserError(f"{name} must be an integer, got {value!r}") from None

    def float(self, name: str, default: float = 0.0) -> float:
        value = self.values.get(name, "")
        if value == "":
            return default
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{name} must be a number, got {value!r}") from None

    def words(self, name: str) -> list[str]:
        return self.values.get(name, "").split()

    def flag(self, name: str) -> bool:
        return self.values.get(name, "0") == "1"

    # ----- derived
    @property
    def smoke(self) -> bool:
        return self.flag("SMOKE")

    @property
    def run_dir(self) -> str:
        return self.get("RUN_DIR")

    def path(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    @property
    def stages(self) -> list[str]:
        """The stages this invocation runs, in order (STAGES; the smoke-only ones only with SMOKE=1)."""
        wanted = self.words("STAGES") or ["all"]
        known = [s for s in STAGE_ORDER if self.smoke or s not in SMOKE_ONLY]
        if wanted == ["all"]:
            return known
        for name in wanted:
            if name not in STAGE_ORDER:
                raise UserError(f"STAGES: unknown stage {name!r}; choose from {' '.join(known)} (or all)")
            if name not in known:
                raise UserError(f"STAGES: {name} is a SMOKE=1 stage")
        return [s for s in known if s in wanted]

    @property
    def budgets(self) -> list[str]:
        return self.words("BUDGETS")

    @property
    def types(self) -> list[str]:
        return self.words("TYPES")

    @property
    def seeds(self) -> list[str]:
        return self.words("SEEDS")

    @property
    def latency_tables(self) -> tuple[str, str]:
        """(fp32, int8) table paths the predictors train on."""
        if self.get("LATENCY_TABLES") == "authors":
            return (os.path.join(self.get("AUTHORS_TABLES"), AUTHORS_FP32),
                    os.path.join(self.get("AUTHORS_TABLES"), AUTHORS_INT8))
        return self.path("latency", FP32_TABLE), self.path("latency", INT8_TABLE)

    def searches(self, budgets: list[str] | None = None) -> list[str]:
        """The search names (cands/<name>.*), as script/search.sh names them."""
        names = []
        for budget in budgets if budgets is not None else self.budgets:
            for kind in self.types:
                names.append(f"kd_{kind}_{budget}")
            if self.flag("RANDOM_BASELINE"):
                names.append(f"kd_ptq_{budget}_random")
        return names

    def candidates_per_search(self) -> int:
        """GEN_SIZE + GENERATIONS x POPULATION + the final re-evaluation's TOP_K x (seeds - 1)."""
        return (self.int("GEN_SIZE") + self.int("GENERATIONS") * self.int("POPULATION")
                + self.int("TOP_K") * max(len(self.seeds) - 1, 0))


def stage_table(settings: Settings) -> list[dict]:
    """Every stage of the chain: its name, what it does, what it reads and what it writes."""
    s = settings
    fp32_table, int8_table = s.latency_tables
    budgets = ("budgets from the int8 table's percentiles " + " ".join(s.words("BUDGET_PERCENTILES"))
               if s.budgets == ["auto"] else f"{' '.join(s.budgets) or '?'} ms")
    predictors = [s.path("conf_datasets", PREDICTOR_FP32), s.path("conf_datasets", PREDICTOR_INT8)]
    rows = [
        {"stage": "inputs", "what": "smoke inputs from SHARED_DATA: random bert-base-shaped teacher, stand-in MNLI, "
                                    "corpus links",
         "reads": [s.get("SHARED_DATA")],
         "writes": [s.get("TEACHER_MODEL"), s.get("GLUE_DIR"), s.get("RAW_DIR")]},
        {"stage": "shards", "what": "corpus -> training shards (script/generate_data.sh)",
         "reads": [s.get("RAW_DIR"), s.get("BERT_MODEL")], "writes": [s.path("shards")]},
        {"stage": "pretrain", "what": "KD supernet pre-training (script/pre_training.sh, SPACE=paper)",
         "reads": [s.path("shards"), s.get("TEACHER_MODEL")] + ([s.get("STUDENT_MODEL")] if s.get("STUDENT_MODEL") else []),
         "writes": [s.path("supernet", "final")]},
        {"stage": "paper_step", "what": "pre-training steps at the paper's batch 12 x seq 512 (per-step cost, peak "
                                        "memory)",
         "reads": [s.path("shards"), s.get("TEACHER_MODEL")], "writes": [s.path("paper_step")]},
        {"stage": "latency",
         "what": ("the authors' tables, read unchanged" if s.get("LATENCY_TABLES") == "authors" else
                  "fp32 and int8 latency tables of the paper grid on this CPU (script/lat_dataset_gen.sh)"),
         "reads": [s.get("AUTHORS_TABLES")] if s.get("LATENCY_TABLES") == "authors" else [],
         "writes": [] if s.get("LATENCY_TABLES") == "authors" else [fp32_table, int8_table]},
        {"stage": "predictors", "what": "fp32 and int8 latency predictors (script/train_lat_predictor.sh)",
         "reads": [fp32_table, int8_table], "writes": predictors},
        {"stage": "searches", "what": f"search on MNLI at {budgets} for TYPES={' '.join(s.types)}"
                                      f"{' + int8 random baseline' if s.flag('RANDOM_BASELINE') else ''}, "
                                      "final seed re-evaluation (script/run_search.sh)",
         "reads": [s.path("supernet", "final"), s.get("GLUE_DIR")] + predictors,
         "writes": [s.path("cands"), s.path("output")]},
        {"stage": "report", "what": "re-measured latency of every evaluated arch, tables, plots (script/report.sh)",
         "reads": [s.path("cands"), s.path("output")] + predictors,
         "writes": [s.path("report", "report.md"), s.path("latency_evaluated")]},
    ]
    chosen = s.stages
    return [row for row in rows if row["stage"] in chosen]
