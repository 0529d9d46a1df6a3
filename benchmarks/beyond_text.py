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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import (
    ROOT,
    Job,
    load_records,
    mean_std,
    paired_ci,
    run_jobs,
    verdict,
    write_section,
)

# dataset: (model, data flags, training flags). Chosen on the baseline's validation accuracy (see the report).
DATASETS: dict[str, tuple[str, dict[str, object], dict[str, object]]] = {
    "digits": (
        "config:vit-tiny",
        {"dataset_name": "digits"},
        {"num_train_epochs": 15, "learning_rate": 1e-3, "per_device_train_batch_size": 32, "warmup_steps": 40},
    ),
    "fsdd": (
        "config:ast-tiny",
        {"dataset_name": "fsdd"},
        {"num_train_epochs": 6, "learning_rate": 2e-3, "per_device_train_batch_size": 32, "warmup_steps": 40},
    ),
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
        sys.exit(
            f"fsdd.parquet not found in {path}. Pass --data-dir DIR or set DMIX_DATA_DIR to the folder holding it "
            "(the Free Spoken Digit Dataset as one Parquet file; see ../shared/data/README.md)."
        )
    return path


def build_jobs(args: argparse.Namespace) -> list[Job]:
    common = {
        "per_device_eval_batch_size": 256,
        "weight_decay": 0.01,
        "eval_strategy": "no",
        "save_strategy": "no",
        "save_model": "false",
        "report_to": "none",
        "disable_tqdm": "true",
        "logging_steps": 50,
        "split_seed": 42,
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
                jobs.append(
                    Job(
                        f"{name}-{setting}-seed{seed}",
                        flags,
                        Path(args.runs_dir) / "runs",
                        meta,
                        Path(args.records_dir),
                    )
                )
    return jobs


def _pct(r: dict, split: str, metric: str) -> float:
    return 100 * r["metrics"][split][metric]


def collect(results: list[dict]) -> dict:
    """``cells[dataset][setting] = {seed: record}``."""
    cells: dict = {}
    for r in results:
        m = r["benchmark_meta"]
        cells.setdefault(m["dataset"], {}).setdefault(m["setting"], {})[m["seed"]] = r
    return cells


def _ci_text(ci: dict) -> str:
    if ci["n"] < 2 or ci["low"] != ci["low"]:
        return f"{ci['mean']:+.2f} (n = {ci['n']})"
    return f"{ci['mean']:+.2f} [{ci['low']:+.2f}, {ci['high']:+.2f}], p = {ci['p']:.3f}"


def _vs_mixup(per: dict, setting: str, metric: str = "accuracy") -> dict:
    return paired_ci(
        {s: _pct(r, "test", metric) for s, r in per[setting].items()},
        {s: _pct(r, "test", metric) for s, r in per.get("mixup", {}).items()},
    )


def _index_means(runs: dict) -> dict[str, float]:
    stats = [r["partner_index"] for r in runs.values() if r.get("partner_index")]
    keys = ("same_label_share", "random_same_label_share", "top1pct_slot_share", "random_top1pct_slot_share")
    return {k: sum(s[k] for s in stats) / len(stats) for k in keys} if stats else {}


def summary(cells: dict) -> str:
    """The generated summary README quotes: per dataset, each setting's test accuracy against Mixup (paired by seed,
    95 % interval; win / tie / loss by the interval), and what the partner index looked like."""
    lines = [
        "| dataset | setting | test accuracy (%) | Δ vs Mixup [95 % CI], p | verdict | seeds |",
        "|---|---|---|---|---|---|",
    ]
    sentences = []
    for name in [d for d in DATASETS if d in cells]:
        per = cells[name]
        for setting in [s for s in SETTINGS if s in per]:
            m, sd = mean_std([_pct(r, "test", "accuracy") for r in per[setting].values()])
            if setting == "mixup" or "mixup" not in per:
                lines.append(f"| {name} | {setting} | {m:.2f} ± {sd:.2f} | — | — | {len(per[setting])} |")
                continue
            ci = _vs_mixup(per, setting)
            lines.append(
                f"| {name} | {setting} | {m:.2f} ± {sd:.2f} | {_ci_text(ci)} | {verdict(ci)} | {len(per[setting])} |"
            )
            if setting.startswith("dmix"):
                word = {"win": "beats", "loss": "is worse than", "tie": "ties"}[verdict(ci)]
                sentences.append(f"- {name}: `{setting}` {word} Mixup (Δ {_ci_text(ci)} points of test accuracy).")
        for setting in ("dmix", "dmix-refresh"):
            idx = _index_means(per.get(setting, {}))
            if idx:
                sentences.append(
                    f"- {name}, `{setting}` index (mean over seeds; for `dmix-refresh` the index in use at the end): "
                    f"{100 * idx['same_label_share']:.1f} % of candidates share the anchor's label (random partners "
                    f"{100 * idx['random_same_label_share']:.1f} %); the most frequent 1 % of examples hold "
                    f"{100 * idx['top1pct_slot_share']:.1f} % of candidate slots (random {100 * idx['random_top1pct_slot_share']:.1f} %)."
                )
    return "\n".join(lines + [""] + sentences)


def report(results: list[dict]) -> str:
    """The generated section of docs/results/beyond-text.md, from the run records alone."""
    cells = collect(results)
    devices = sorted({r["device"] for r in results})
    total = sum(r["wall_time_s"] for r in results)
    lines = [
        f"{len(results)} recorded runs on {', '.join(devices)}, {total / 60:.1f} min of run time in total. Mean ± sd "
        "over seeds; Δ = mean paired difference to Mixup (points) with its 95 % interval (Student t over seeds) "
        "and the paired t-test p; verdict: win / loss when the interval lies entirely above / below 0, else tie. "
        "Wall time is `wall_time_s` of each record (data loading, preprocessing, partner search, training, "
        "evaluation); other jobs may share the cores, so the minimum is the best estimate of an unloaded run.",
        "",
        "<!-- beyond-summary:start -->",
        summary(cells),
        "<!-- beyond-summary:end -->",
    ]
    for name in [d for d in DATASETS if d in cells]:
        per = cells[name]
        _, _, training = DATASETS[name]
        lines += [
            "",
            f"### {name}",
            "",
            DESCRIPTION[name]
            + ". Training: "
            + ", ".join(f"{k} {v}" for k, v in training.items())
            + ", weight decay 0.01, α = 0.2.",
            "",
            "| setting | test macro-F1 (%) | Δ vs Mixup [95 % CI], p | validation accuracy (%) | wall time per run (s): mean (min) |",
            "|---|---|---|---|---|",
        ]
        for setting in [s for s in SETTINGS if s in per]:
            runs = per[setting]
            m, sd = mean_std([_pct(r, "test", "macro_f1") for r in runs.values()])
            delta = "—" if setting == "mixup" or "mixup" not in per else _ci_text(_vs_mixup(per, setting, "macro_f1"))
            val = mean_std([_pct(r, "validation", "accuracy") for r in runs.values()])[0]
            walls = [r["wall_time_s"] for r in runs.values()]
            lines.append(
                f"| {setting} | {m:.2f} ± {sd:.2f} | {delta} | {val:.2f} | {sum(walls) / len(walls):.0f} ({min(walls):.0f}) |"
            )
        lines += refresh_lines(per)
    return "\n".join(lines)


def refresh_lines(per: dict) -> list[str]:
    """Refresh count, cost and the same-label share of the last refreshed index, from the records."""
    runs = per.get("dmix-refresh") or {}
    refreshes = [x for r in runs.values() for x in r.get("partner_refreshes") or []]
    if not refreshes:
        return []
    secs = sum(x.get("seconds", 0.0) for x in refreshes) / len(refreshes)
    last = [r["partner_refreshes"][-1].get("same_label_share") for r in runs.values() if r.get("partner_refreshes")]
    last = [x for x in last if x is not None]
    return [
        "",
        f"`dmix-refresh`: {len(refreshes) / len(runs):.0f} refreshes per run, {secs:.1f} s each on average; "
        f"same-label share of the last refreshed index {100 * sum(last) / max(1, len(last)):.1f} % (mean over seeds).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", default=None, help="folder of fsdd.parquet (default: $DMIX_DATA_DIR or ../shared/data)"
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (one thread each)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "beyond-text"))
    parser.add_argument("--report", default=str(ROOT / "docs" / "results" / "beyond-text.md"))
    parser.add_argument("--report-only", action="store_true", help="summarise the recorded runs; train nothing")
    parser.add_argument(
        "--records-dir",
        default=str(ROOT / "benchmarks" / "results" / "beyond-text"),
        help="committed folder of one small JSON record per finished run; reports read only these",
    )
    args = parser.parse_args()

    records = Path(args.records_dir)
    if not args.report_only:
        run_jobs(build_jobs(args), parallel=args.parallel, keep_going=True)
    results = load_records(records)
    if not results:
        sys.exit(f"No run records in {records}: nothing to report.")
    write_section(Path(args.report), "beyond-text", report(results))
    write_section(ROOT / "README.md", "beyond-summary", summary(collect(results)))
    print(report(results))


if __name__ == "__main__":
    main()
