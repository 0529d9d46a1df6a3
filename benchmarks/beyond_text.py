#!/usr/bin/env python
"""DMIX beyond text: images (scikit-learn's digits, a tiny ViT) and audio (FSDD, a tiny AST), on CPU.

    python benchmarks/beyond_text.py --seeds 5 --parallel 2       # 2 datasets x 4 settings x 5 seeds (~40 runs)
    python benchmarks/beyond_text.py --report-only                # rewrite docs/results/beyond-text.md from the cache
    python benchmarks/beyond_text.py --datasets digits --settings mixup dmix --seeds 1   # one cell

Settings: ``baseline`` (no mixup), ``mixup`` (hidden-layer Mixup, random partner), ``dmix`` (``--preset dmix``: the
library's default rule — hyperbolic distance, centered ranking, farthest-first, τ = 0.3) and ``dmix-refresh`` (the
same, with the partner index rebuilt from the model being trained at the start of every epoch,
``--partner_refresh_epochs 1``). Both models are built from a config with random weights (``config:vit-tiny``,
``config:ast-tiny``; no pretrained image or audio weights are reachable offline), so the first partner index of
``dmix`` comes from an untrained network: that is what ``dmix-refresh`` is there to compare against.

Every run is one ``run_dmix.py`` process (``_runs.py``: cached per flags under ``--runs-dir``, resumable, ``--parallel``
runs at a time with one thread each). The per-dataset training settings (epochs, learning rate, batch) were chosen
on the validation split of the baseline and are the same for every setting; the report gives test accuracy and
macro-F1 (mean ± sd over seeds), the paired t-test against Mixup, validation accuracy, wall time per run and the
partner-index statistics (same-label share, hub concentration) that explain a DMIX loss or win.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import ROOT, Job, mean_std, paired_test, run_grid  # noqa: E402

# dataset: (model, data flags, training flags). Chosen on the baseline's validation accuracy (see the report).
DATASETS: dict[str, tuple[str, dict[str, object], dict[str, object]]] = {
    "digits": ("config:vit-tiny", {"dataset_name": "digits"},
               {"num_train_epochs": 15, "learning_rate": 1e-3, "per_device_train_batch_size": 32, "warmup_steps": 40}),
    "fsdd": ("config:ast-tiny", {"dataset_name": "fsdd"},
             {"num_train_epochs": 6, "learning_rate": 2e-3, "per_device_train_batch_size": 32, "warmup_steps": 40}),
}
SETTINGS: dict[str, dict[str, object]] = {
    "baseline": {"preset": "baseline"},
    "mixup": {"preset": "mixup"},
    "dmix": {"preset": "dmix"},
    "dmix-refresh": {"preset": "dmix", "partner_refresh_epochs": 1},
}
DESCRIPTION = {
    "digits": "scikit-learn digits (8×8, 10 classes), stratified 1,259 / 179 / 359 split (seed 42); "
              "`config:vit-tiny` (ViT, 4 layers, hidden 64, 2×2 patches, 136,650 parameters, random init)",
    "fsdd": "FSDD (8 kHz spoken digits, 10 classes), official test split (recording index 0–4, 300 clips), validation "
            "= 10 % of train stratified by digit × speaker (seed 42): 2,460 / 240 / 300; `config:ast-tiny` (AST on 32 "
            "log-mel bins × 100 frames, 4 layers, hidden 64, 8×8 patches, 142,282 parameters, random init)",
}


def data_dir(cli_value: str | None) -> Path:
    path = Path(cli_value or os.environ.get("DMIX_DATA_DIR") or ROOT.parent / "shared" / "data")
    if not (path / "fsdd.parquet").is_file():
        sys.exit(f"fsdd.parquet not found in {path}. Pass --data-dir DIR or set DMIX_DATA_DIR to the folder holding it "
                 "(the Free Spoken Digit Dataset as one Parquet file; see ../shared/data/README.md).")
    return path


def build_jobs(args: argparse.Namespace) -> list[Job]:
    common = {
        "per_device_eval_batch_size": 256, "weight_decay": 0.01, "eval_strategy": "no", "save_strategy": "no",
        "save_model": "false", "report_to": "none", "disable_tqdm": "true", "logging_steps": 50, "split_seed": 42,
        "use_cpu": "true",
    }
    jobs = []
    for seed in range(args.seeds):
        for name in args.datasets:
            model, data, training = DATASETS[name]
            if name == "fsdd":
                data = {**data, "data_dir": str(data_dir(args.data_dir))}
            for setting in args.settings:
                flags = {"model_name_or_path": model, **data, **common, **training, **SETTINGS[setting], "seed": seed}
                meta = {"dataset": name, "setting": setting, "seed": seed}
                jobs.append(Job(f"{name}-{setting}-seed{seed}", flags, Path(args.runs_dir) / "runs", meta))
    return jobs


def _pct(r: dict, split: str, metric: str) -> float:
    return 100 * r["metrics"][split][metric]


def report(results: list[dict], args: argparse.Namespace) -> str:
    cells: dict = {}
    for r in results:
        if r is not None:
            m = r["benchmark_meta"]
            cells.setdefault(m["dataset"], {}).setdefault(m["setting"], {})[m["seed"]] = r
    done = [r for r in results if r is not None]
    devices = sorted({r["device"] for r in done})
    total = sum(r["wall_time_s"] for r in done)
    lines = [f"{len(done)} runs on {', '.join(devices)} (one thread per run, {args.parallel} at a time), "
             f"{total / 60:.1f} min of run time in total. Mean ± sd over seeds; Δ = mean paired difference to Mixup "
             "(points), p = two-sided paired t-test over seeds. Wall time is `results.json`'s `wall_time_s` (data "
             "loading, preprocessing, partner search, training, evaluation; not the Python start-up); other jobs "
             "shared the two cores during the benchmark, so the minimum is the best estimate of an unloaded run."]
    for name in [d for d in DATASETS if d in cells]:
        per = cells[name]
        _, _, training = DATASETS[name]
        lines += ["", f"### {name}", "", DESCRIPTION[name] + ". Training: " + ", ".join(
            f"{k} {v}" for k, v in training.items()) + ", weight decay 0.01, α = 0.2.", "",
            "| setting | test accuracy (%) | Δ vs Mixup, paired p | test macro-F1 (%) | Δ vs Mixup, paired p "
            "| validation accuracy (%) | wall time per run (s): mean ± sd (min) | seeds |", "|---|---|---|---|---|---|---|---|"]
        for setting in [s for s in SETTINGS if s in per]:
            runs = per[setting]
            row = [setting]
            for metric in ("accuracy", "macro_f1"):
                values = {s: _pct(r, "test", metric) for s, r in runs.items()}
                m, sd = mean_std(list(values.values()))
                row.append(f"{m:.2f} ± {sd:.2f}")
                if setting != "mixup" and "mixup" in per:
                    diff, p, n = paired_test(values, {s: _pct(r, "test", metric) for s, r in per["mixup"].items()})
                    row.append(f"{diff:+.2f}, p = {p:.3f}" if p == p else "—")
                else:
                    row.append("—")
            row.append("{:.2f}".format(mean_std([_pct(r, "validation", "accuracy") for r in runs.values()])[0]))
            walls = [r["wall_time_s"] for r in runs.values()]
            wall_m, wall_sd = mean_std(walls)
            row.append(f"{wall_m:.0f} ± {wall_sd:.0f} ({min(walls):.0f})")
            row.append(str(len(runs)))
            lines.append("| " + " | ".join(row) + " |")
        # Partner statistics of the DMIX runs (the first index, from the untrained model, is the same for every seed
        # only if the initial weights are: they depend on the seed here, so report mean over seeds).
        stats_rows = []
        for setting in ("dmix", "dmix-refresh"):
            runs = per.get(setting) or {}
            if not runs:
                continue
            stats = [r["partner_index"] for r in runs.values() if r.get("partner_index")]
            if not stats:
                continue

            def avg(key: str) -> float:
                vals = [s[key] for s in stats if s.get(key) is not None]
                return sum(vals) / len(vals) if vals else float("nan")

            refresh = ""
            refreshes = [x for r in runs.values() for x in r.get("partner_refreshes", [])]
            if refreshes:
                # A refresh's statistics are those of the index it built (logged); here: count and cost.
                secs = sum(x.get("seconds", 0.0) for x in refreshes) / len(refreshes)
                refresh = f"{len(refreshes) / len(runs):.0f} refreshes per run, {secs:.1f} s each"
            last_same = [r["partner_refreshes"][-1].get("same_label_share") for r in runs.values()
                         if r.get("partner_refreshes")]
            last_same = [x for x in last_same if x is not None]
            stats_rows.append(
                f"| {setting} | {100 * avg('same_label_share'):.1f} % (random {100 * avg('random_same_label_share'):.1f} %) "
                f"| {100 * avg('top1pct_slot_share'):.1f} % (random {100 * avg('random_top1pct_slot_share'):.1f} %) "
                f"| {avg('k_occurrence_skewness'):.2f} | {100 * avg('distinct_candidate_share'):.0f} % "
                f"| {(f'{100 * sum(last_same) / len(last_same):.1f} %' if last_same else '—')} | {refresh or '—'} |")
        if stats_rows:
            lines += ["", "Partner index (mean over seeds): candidates with the anchor's label; candidate slots held by the "
                      "most frequent 1 % of examples (hub concentration); k-occurrence skewness; share of the training "
                      "set ever a candidate. `dmix`: the index built before training, from the untrained model; "
                      "`dmix-refresh`: the index in use at the end of training (the last refresh). The same-label share "
                      "of the last refreshed index is also listed on its own.", "",
                      "| setting | same-label share | top-1 % slot share | skewness | ever a candidate "
                      "| same-label share, last refresh | refreshes |", "|---|---|---|---|---|---|---|"]
            lines += stats_rows
    lines += ["", f"Command: `python benchmarks/beyond_text.py {shlex.join(sys.argv[1:])}`".rstrip()
              + " (every run's flags are also in `benchmark_flags` of its `results.json` under `--runs-dir`)."]
    examples = {}
    for r in done:
        m = r["benchmark_meta"]
        if m["seed"] == 0:
            flags = r["benchmark_flags"]
            examples[(m["dataset"], m["setting"])] = "python run_dmix.py " + " ".join(
                f"--{k} {shlex.quote(str(v))}" for k, v in flags.items() if k != "data_dir") + (
                " --data_dir $DMIX_DATA_DIR" if "data_dir" in flags else "") + " --output_dir OUT"
    if examples:
        lines += ["", "Exact commands of seed 0 (other seeds: `--seed 1` … `--seed 4`):", "", "```bash"]
        lines += [examples[k] for k in sorted(examples)]
        lines += ["```"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder of fsdd.parquet (default: $DMIX_DATA_DIR or ../shared/data)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (one thread each)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "beyond-text"))
    parser.add_argument("--report", default=str(ROOT / "docs" / "results" / "beyond-text.md"))
    parser.add_argument("--report-only", action="store_true", help="summarise the cached runs; train nothing")
    args = parser.parse_args()

    run_grid(build_jobs(args), args, "beyond-text", report, ("benchmark_meta", "metrics", "partner_index", "partner_refreshes", "wall_time_s", "device"))

if __name__ == "__main__":
    main()
