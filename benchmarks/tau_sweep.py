#!/usr/bin/env python
"""The paper's Figure 1 on ESSC: DMIX test macro-F1 against the threshold τ (τ = 100 % is vanilla Mixup).

    python benchmarks/tau_sweep.py --seeds 3
    python benchmarks/tau_sweep.py --seeds 5 --parallel 6 --taus 0.05 0.1 0.2 0.4 0.6 0.8 1.0

Writes ``docs/results/essc_tau_sweep.csv`` and ``docs/results/essc_tau_sweep.png`` and a summary between the
``tau-sweep`` markers of ``docs/results/essc.md``, all rebuilt from the per-run records in ``--records-dir`` (committed:
``benchmarks/results/essc-tau-sweep/``); finished runs are skipped, and ``--report-only`` trains nothing.
"""

from __future__ import annotations

import argparse
import csv
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import ROOT, Job, load_records, mean_std, run_jobs, write_section
from table1 import add_run_arguments, base_flags

TAUS = [0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [100 * r["tau"] for r in rows]
    y = [r["mean"] for r in rows]
    e = [r["std"] for r in rows]
    width_in, title_size = 5.5, 9
    # Constrained layout reserves room for the wrapped, multi-line suptitle above the axes.
    fig, ax = plt.subplots(figsize=(width_in, 3.6), dpi=150, layout="constrained")
    ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label="DMIX (hyperbolic, farthest)")
    for r in rows:
        ax.scatter([100 * r["tau"]] * len(r["values"]), r["values"], s=8, color="grey", alpha=0.5)
    ax.set_xlabel("threshold τ (% of training set); 100 % = vanilla Mixup")
    ax.set_ylabel("test macro-F1 (%)")
    # The model label and device list made the title wider than the figure (cut off at both ends): wrap it to 90 % of
    # the width, counting ~0.62 em per glyph (DejaVu Sans averages ~0.55), so no line runs past either edge.
    chars = int(0.9 * width_in * 72 / (0.62 * title_size))
    fig.suptitle(textwrap.fill(title, chars), fontsize=title_size)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    # "tight" keeps every artist, the wrapped title included, inside the saved image.
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "tau_sweep", "essc-tau-sweep")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--taus", type=float, nargs="+", default=TAUS)
    parser.add_argument("--out-dir", default=str(ROOT / "docs" / "results"))
    args = parser.parse_args()

    records_dir = Path(args.records_dir)
    if not args.report_only:
        base = base_flags(args)
        jobs = [
            Job(
                f"tau{tau:g}-seed{seed}",
                {**base, "preset": "dmix", "tau": tau, "seed": seed},
                Path(args.runs_dir),
                {"tau": tau},
                records_dir,
            )
            for tau in args.taus
            for seed in range(args.seeds)
        ]
        run_jobs(jobs, parallel=args.parallel, keep_going=True)
    results = [r for r in load_records(records_dir) if r["benchmark_meta"]["tau"] in args.taus]
    if not results:
        sys.exit(f"No run records in {records_dir}: nothing to report (run without --report-only first).")
    rows = []
    for tau in sorted({r["benchmark_meta"]["tau"] for r in results}):
        vals = [100 * r["metrics"]["test"]["macro_f1"] for r in results if r["benchmark_meta"]["tau"] == tau]
        stats = [r["partner_index"] for r in results if r["benchmark_meta"]["tau"] == tau and r.get("partner_index")]
        m, s = mean_std(vals)
        rows.append(
            {
                "tau": tau,
                "mean": m,
                "std": s,
                "n": len(vals),
                "values": vals,
                "same_label_share": sum(x["same_label_share"] for x in stats) / len(stats) if stats else float("nan"),
            }
        )
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "essc_tau_sweep.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tau", "mean_macro_f1", "std", "n_seeds", "same_label_share", "per_seed"])
        for r in rows:
            w.writerow(
                [
                    r["tau"],
                    f"{r['mean']:.4f}",
                    f"{r['std']:.4f}",
                    r["n"],
                    f"{r['same_label_share']:.4f}",
                    " ".join(f"{v:.4f}" for v in r["values"]),
                ]
            )
    devices = sorted({r["device"] for r in results})
    flags = results[0]["benchmark_flags"]
    epochs, max_len, seeds = float(flags["num_train_epochs"]), flags["max_seq_length"], max(r["n"] for r in rows)
    title = f"ESSC, {(args.label or results[0]['model']).replace('package:', '')}, {epochs:g} ep, {seeds} seeds/point ({', '.join(devices)})"
    plot(rows, out / "essc_tau_sweep.png", title)
    lines = [
        f"DMIX (hyperbolic, farthest) test macro-F1 (%) against τ, up to {seeds} seeds per point, same data, split and "
        f"hyperparameters as Table 1 ({epochs:g} epoch(s), max length {max_len}). Hardware: {', '.join(devices)}.",
        "",
        "| τ | mean ± std | seeds | same-label share of candidates |",
        "|---|---|---|---|",
        *[
            f"| {100 * r['tau']:g} % | {r['mean']:.2f} ± {r['std']:.2f} | {r['n']} | {100 * r['same_label_share']:.1f} % |"
            for r in rows
        ],
        "",
        "![DMIX macro-F1 against τ](essc_tau_sweep.png) (data: [essc_tau_sweep.csv](essc_tau_sweep.csv))",
        "",
        f"Rebuilt from {len(results)} run records (default folder `benchmarks/results/essc-tau-sweep/`) by "
        "`python benchmarks/tau_sweep.py --report-only`.",
    ]
    write_section(Path(args.report), "tau-sweep", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
