"""GLUE tasks for candidate evaluation: TSV readers, label lists, the original per-task
fine-tuning table (``glue.tasks``) and the metrics, computed with scikit-learn / scipy
(``glue.metrics``)."""

from glue.metrics import compute_metrics, primary_metric
from glue.tasks import TASKS, Example, TaskSpec, get_task, read_split, read_tsv_examples

__all__ = ["TASKS", "Example", "TaskSpec", "compute_metrics", "get_task", "primary_metric", "read_split",
           "read_tsv_examples"]
