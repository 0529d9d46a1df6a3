"""An ``evaluate`` metric module: macro-F1, weighted-F1 and accuracy for single-label classification.

Shipped with hf-dmix so that ``evaluate.load`` works offline (the Hub's ``f1`` metric is a script downloaded at
run time and needs scikit-learn). F1 follows scikit-learn's definitions: per-class F1 over the classes present in
the references or the predictions, a class with no true and no predicted positive scoring 0.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy, macro-averaged F1 and support-weighted F1 for single-label classification."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class ids.
    references (`list[int]`): true class ids.
Returns:
    accuracy, macro_f1, weighted_f1 (floats in [0, 1]).
"""


class DmixClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        pred = np.asarray(predictions, dtype=np.int64)
        ref = np.asarray(references, dtype=np.int64)
        classes = np.union1d(pred, ref)
        f1s, support = [], []
        for c in classes:
            tp = np.sum((pred == c) & (ref == c))
            fp = np.sum((pred == c) & (ref != c))
            fn = np.sum((pred != c) & (ref == c))
            denom = 2 * tp + fp + fn
            f1s.append(0.0 if denom == 0 else 2 * tp / denom)
            support.append(np.sum(ref == c))
        f1, weight = np.asarray(f1s, dtype=np.float64), np.asarray(support, dtype=np.float64)
        return {
            "accuracy": float(np.mean(pred == ref)) if len(ref) else 0.0,
            "macro_f1": float(f1.mean()) if len(f1) else 0.0,
            "weighted_f1": float((f1 * weight).sum() / weight.sum()) if weight.sum() else 0.0,
        }
