"""What a run's numbers are read against: the majority-class baseline, prediction collapse, and the data checks.

What lives here: the one-line description of :func:`~hf_dmix.diagnostics.majority_baseline` (the floor a model must
beat),
:func:`check_outcome` (the ``outcome`` section of results.json, with a warning when a model predicts one class for
everything), and :func:`log_data_diagnostics` (one warning per problem the data checks found). What does not: the
checks themselves (``hf_dmix.diagnostics``) and writing results (``report``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..diagnostics import collapse_warnings, majority_baseline, outcome_diagnostics
from .args import logger

__all__ = ["check_outcome", "describe_majority_baseline", "log_data_diagnostics", "majority_baseline"]


def describe_majority_baseline(baseline: dict[str, float], test_labels: list[int], label_names: list[str]) -> str:
    """One line: what always predicting the most frequent test class scores, to read the metrics table against."""
    majority = label_names[int(np.argmax(np.bincount(np.asarray(test_labels))))]
    return (
        f"Majority-class baseline on test (always {majority!r}): macro_f1 {baseline['macro_f1']:.4f}, "
        f"accuracy {baseline['accuracy']:.4f}"
    )


def check_outcome(predictions: dict[str, Any], labels: dict[str, list[int]], label_names: list[str]) -> dict[str, Any]:
    """The ``outcome`` section of results.json from the ``PredictionOutput`` of each split; warns on a collapse."""
    predicted = {}
    for split, output in predictions.items():
        logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        predicted[split] = np.argmax(logits, axis=-1).tolist()
    for message in collapse_warnings(predicted, labels, label_names):
        logger.warning(message)
    return outcome_diagnostics(predicted, labels, label_names)


def log_data_diagnostics(diagnostics: dict[str, Any]) -> None:
    """Log each problem :func:`hf_dmix.diagnostics.data_diagnostics` found as a warning, else a one-line summary."""
    for message in diagnostics["warnings"]:
        logger.warning(message)
    if diagnostics["warnings"]:
        return
    truncated = ", ".join(f"{s} {100 * t['truncated_share']:.1f} %" for s, t in diagnostics["truncation"].items())
    coverage = ", ".join(
        f"{s} {100 * c.get('unk_share', 0.0):.1f} % unknown / {100 * c['single_char_share']:.1f} % single-character"
        for s, c in diagnostics["tokenizer_coverage"].items()
    )
    dup = diagnostics.get("duplicates") or {}
    duplicates = (
        f"; {dup['groups']} duplicated texts, none in more than one split ({dup['handling']})"
        if dup.get("groups")
        else ""
    )
    logger.info(
        f"Data checks passed: truncated at {diagnostics['max_seq_length']} tokens: {truncated}; tokens: {coverage}"
        + duplicates
    )
