"""The training-curve summary and the under-training warning (hf_dmix.convergence), on literal histories, on a real
Trainer run with the best epoch kept, and on recorded runs of the project's grids."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from hf_dmix.convergence import final_training_loss, training_summary, undertraining_warning

ROOT = Path(__file__).resolve().parents[1]


def _history(losses: list[float], every: int = 10) -> list[dict]:
    # Training-loss entries interleaved with an evaluation entry and the closing summary, as Trainer logs them.
    out = [{"loss": v, "step": every * (i + 1), "epoch": i / 4} for i, v in enumerate(losses)]
    out.insert(2, {"eval_loss": 1.0, "eval_macro_f1": 0.5, "step": 20, "epoch": 1.0})
    out.append({"train_loss": sum(losses) / len(losses), "step": every * len(losses), "epoch": 5.0})
    return out


def test_final_loss_is_the_mean_of_the_last_tenth_of_logged_steps():
    # 20 logs at steps 10..200: the last tenth is steps >= 180, i.e. the last three values.
    losses = [2.0] * 17 + [0.3, 0.6, 0.9]
    assert final_training_loss(_history(losses)) == pytest.approx(0.6)
    assert final_training_loss([{"eval_loss": 1.0, "step": 5}]) is None


def test_warning_fires_above_eighty_percent_of_a_uniform_prediction_and_names_the_fix():
    chance = math.log(6)
    near = undertraining_warning(_history([chance] * 5 + [0.83 * chance] * 5), num_labels=6)
    assert near is not None and "83 %" in near and "ln 6 = 1.792" in near and "--learning_rate" in near
    assert undertraining_warning(_history([chance] * 5 + [0.78 * chance] * 5), num_labels=6) is None
    # Two classes: ln 2 = 0.693; 0.6 is 87 % of it, 0.5 is 72 %.
    assert undertraining_warning(_history([0.6] * 10), num_labels=2) is not None
    assert undertraining_warning(_history([0.5] * 10), num_labels=2) is None
    assert undertraining_warning([], num_labels=2) is None
    with pytest.raises(ValueError, match="num_labels must be at least 2, got 1"):
        undertraining_warning(_history([0.1]), num_labels=1)


def test_training_summary_reads_the_best_epoch_from_the_state():
    history = _history([1.5, 1.2, 0.9, 0.7])
    history.insert(5, {"eval_loss": 0.8, "eval_macro_f1": 0.7, "step": 40, "epoch": 2.0})
    state = SimpleNamespace(log_history=history, best_global_step=40, best_metric=0.7, epoch=3.0)
    summary = training_summary(state)
    assert summary["best_epoch"] == 2.0 and summary["epochs_trained"] == 3.0 and summary["best_metric"] == 0.7
    assert summary["loss_curve"] == [[10, 1.5], [20, 1.2], [30, 0.9], [40, 0.7]]
    no_best = training_summary(SimpleNamespace(log_history=history, best_global_step=None, best_metric=None, epoch=3.0))
    assert no_best["best_epoch"] is None


def _records(folder: Path, **meta) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if all(record.get("benchmark_meta", {}).get(k) == v for k, v in meta.items()):
            out.append(record)
    return out


def _history_of(record: dict) -> list[dict]:
    return [{"step": step, "loss": loss} for step, loss in record["loss_curve"]]


def test_warning_fires_on_the_old_trec6_recipe_and_not_on_the_chosen_one():
    """Must-show 4 of issue 20, on recorded losses: the suite's old TREC-6 recipe (lr 2e-5, 4 epochs, 300 examples)
    against every recorded TREC-6 run at the learning rate rule R1 chose on validation for its setting (plain
    fine-tuning, Mixup; best epoch kept)."""
    from hf_dmix.compare import choose_recipes

    old = _records(ROOT / "benchmarks" / "results" / "undertraining", dataset="trec6")
    grid = _records(ROOT / "benchmarks" / "results" / "operating-point", dataset="trec6", size="300")
    chosen = choose_recipes(grid, (5e-5, 1e-4, 2e-4), (0, 1, 2))
    assert old and chosen is not None, "the old recipe's runs and TREC-6's stage 1 must be committed"
    new = [
        r
        for r in grid
        if r["benchmark_meta"]["setting"] in chosen
        and r["benchmark_meta"].get("learning_rate") == chosen[r["benchmark_meta"]["setting"]]["learning_rate"]
    ]
    assert len(new) >= 6
    for record in old:
        assert undertraining_warning(_history_of(record), num_labels=6) is not None, record["benchmark_meta"]
    for record in new:
        assert undertraining_warning(_history_of(record), num_labels=6) is None, record["benchmark_meta"]
