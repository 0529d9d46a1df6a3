"""Training recipes of ``run_dmix.py`` (``--recipe``): the paper's, and one for small training sets.

A recipe is a set of defaults for the training arguments, applied under every value the user sets (a flag or a config
file key) and under every preset, so ``--recipe small-data --learning_rate 5e-5`` changes only the learning rate.

- ``paper`` (the default): the paper's setup (Sec. 3), lr 2e-5 and weight decay 0.01 with ``TrainingArguments``'
  3 epochs. The paper fine-tuned on full datasets; at a few hundred examples this leaves an encoder barely trained
  (``docs/results/operating-point.md``), and the CLI's under-training warning says so after such a run.
- ``small-data``: the recipe of ``docs/results/operating-point-plan.md``: evaluate after every epoch, keep the best
  epoch by validation macro-F1, stop after 3 epochs without improvement, at most 15 epochs, at the learning rate that
  rule R6 chose from the grid's validation results (``tests/test_docs.py`` recomputes it from the committed records).

What does not live here: parsing (``args``), and the comparison protocol that searches the learning rate on the user's
own data (``hf_dmix.compare``, which shares :data:`BEST_EPOCH`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BEST_EPOCH", "MAX_EPOCHS", "PATIENCE", "RECIPES", "SMALL_DATA_LEARNING_RATE"]

# Keep the best epoch by validation macro-F1: evaluate and save each epoch, one checkpoint on disk at a time (the best
# one is kept besides the latest), weights only (a best-epoch checkpoint is for loading, not for resuming).
BEST_EPOCH: dict[str, Any] = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "macro_f1",
    "save_total_limit": 1,
    "save_only_model": True,
}

# The plan's schedule: at most 15 epochs, stop after 3 evaluations without a better validation macro-F1.
MAX_EPOCHS = 15.0
PATIENCE = 3

# Rule R6 of operating-point-plan.md: the learning rate rule R1 chose for Mixup on the most of the five datasets (ties:
# the smaller), from stage 1 of the operating-point grid (lr in {5e-5, 1e-4, 2e-4}, seeds 0-2, 300 examples): 5e-5,
# chosen on SST-2, MR and SUBJ (1e-4 on ESSC and TREC-6). 5e-5 is the lower edge of the searched grid there, so a
# smaller rate was not tried; hf-dmix compare searches your own data instead.
SMALL_DATA_LEARNING_RATE = 5e-5

RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"learning_rate": 2e-5, "weight_decay": 0.01},
    "small-data": {
        **BEST_EPOCH,
        "learning_rate": SMALL_DATA_LEARNING_RATE,
        "weight_decay": 0.01,
        "per_device_train_batch_size": 8,
        "num_train_epochs": MAX_EPOCHS,
        "early_stopping_patience": PATIENCE,
    },
}
