#!/usr/bin/env python
"""A search's steps in one process: the command line behind ``script/search.sh`` (one step) and
``script/run_search.sh`` (the whole search). Settings come from the environment (see
``bash script/search.sh --help``); every input is checked before a step writes anything.

    python run_search.py cand|rand|fast|eval|evol|rescore|final [TYPE] [LATENCY_CONSTRAINT] [DATA_DIR] [TASK_NAME]
    python run_search.py all           # cand -> first generation -> eval -> GENERATIONS x (evol|rand, eval)
                                       # [-> rescore, with RESCORE_TOP] -> final
    python run_search.py generations   # GENERATIONS x (evol|rand, eval), from FIRST_GENERATION_INDEX

The environment becomes one ``search.plan.SearchPlan``; ``search.chain.SearchRun`` builds the search's
``SearchConfig`` and its evaluator once and runs the steps on them (``search.methods.run_method``,
``evaluation.evaluate.Evaluator``): starting Python, torch and transformers once saves several seconds
a step, and the task's data is read and tokenised once.
"""

from __future__ import annotations

import os
import sys

from latency.predictor.lock import reading
from search.chain import SearchRun
from search.plan import OPS, plan_from_env
from utils import UserError, run_cli

ROOT = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    op, positional = argv[0], argv[1:5]
    if op in ("all", "generations"):
        plan = plan_from_env(dict(os.environ), ROOT, None, positional)
        with reading([plan.predictor]):  # nobody rewrites the predictor while the search reads it
            SearchRun(plan).run(op)
        return 0
    if op not in OPS:
        raise UserError(f"OP must be one of {', '.join(OPS)}, all or generations, got {op!r} (see --help)")
    plan = plan_from_env(dict(os.environ), ROOT, op, positional)
    with reading([plan.predictor]):
        run = SearchRun(plan)
        run.check((op,))
        run.step(op)
    return 0


if __name__ == "__main__":
    run_cli(main)
