"""Evaluation metrics for DMIX runs, computed through ``evaluate``.

What lives here: loading the packaged ``evaluate`` module (macro-F1 headline, weighted-F1, accuracy) and the
``compute_metrics`` callback for ``Trainer``. The module itself is ``evaluate_metrics/dmix_classification.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

METRIC_SCRIPT = Path(__file__).parent / "evaluate_metrics" / "dmix_classification.py"


def load_metric():
    """The packaged ``evaluate`` metric (works offline: it is a local module, not a Hub download)."""
    import evaluate

    return evaluate.load(str(METRIC_SCRIPT))


def make_compute_metrics(metric=None) -> Callable:
    """A ``compute_metrics`` for ``Trainer``: argmax of the logits against the labels."""
    metric = metric or load_metric()

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        return metric.compute(predictions=np.argmax(logits, axis=-1), references=labels)

    return compute_metrics
