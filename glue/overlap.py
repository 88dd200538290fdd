"""Dev examples that are also training examples: a dev set that repeats training scores memory, not
skill. A few repeats are natural (GLUE's own STS-B dev set shares 6 of its 1,500 pairs with its
training set): one warning line. More than ``MAX_OVERLAP_FRACTION`` of a dev split is refused in one
line naming the file, the count and the first repeated line, before any training."""

from __future__ import annotations

import os
from typing import Sequence

from glue.tasks import Example, TaskSpec
from utils import UserError, get_logger

logger = get_logger(__name__)

MAX_OVERLAP_FRACTION = 0.01


def _pair(example: Example) -> tuple[str, str | None]:
    return example.text_a.strip(), None if example.text_b is None else example.text_b.strip()


def check_dev_disjoint(task: TaskSpec, data_dir: str, train: Sequence[Example], dev: dict[str, Sequence[Example]],
                       max_fraction: float = MAX_OVERLAP_FRACTION) -> dict[str, int]:
    """``{split: examples also in training}``; refuses a split above ``max_fraction``, warns below."""
    seen = {_pair(example) for example in train}
    counts = {}
    for split, examples in dev.items():
        repeated = [number for number, example in enumerate(examples, start=1) if _pair(example) in seen]
        counts[split] = len(repeated)
        if not repeated:
            continue
        path = os.path.join(data_dir, task.dev_files[split])
        share = len(repeated) / max(1, len(examples))
        text = (f"{path}: {len(repeated)} of its {len(examples)} examples ({100 * share:.1f} %) are also training "
                f"examples (the first: example {repeated[0]})")
        if share > max_fraction:
            raise UserError(f"{text}; a dev set that repeats training scores memory, not skill: take dev examples "
                            "that training does not hold")
        logger.warning("%s; scored as they are (at most %.0f %% is accepted)", text, 100 * max_fraction)
    return counts
