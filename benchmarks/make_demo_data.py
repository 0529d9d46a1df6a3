#!/usr/bin/env python
"""Write the demo's bundled sample of the SMS Spam Collection: ``hf_dmix/demo_data/essc_demo_{train,validation,test}.csv``.

    python benchmarks/make_demo_data.py                     # reads essc.csv from ../shared/data (or --data-dir)

The sample is what ``--dataset_name demo`` (``configs/demo.yaml``, ``make demo``) trains on. It is drawn once and
committed; this script documents how, and re-creates it byte for byte. Steps: keep the first occurrence of every text
(the source repeats 403 messages; identical texts in train and test would inflate the test score), draw a stratified
subsample of ``--size`` messages with the source's class balance (``--seed``), and split it, stratified, into fixed
train / validation / test files. Texts and labels are unchanged.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import ROOT, data_dir

sys.path.insert(0, str(ROOT))
from hf_dmix.splits import stratified_split, stratified_subsample

OUT = ROOT / "hf_dmix" / "demo_data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir", default=None, help="folder holding essc.csv (default: $DMIX_DATA_DIR or ../shared/data)"
    )
    parser.add_argument("--size", type=int, default=800, help="messages in the sample, all splits together")
    parser.add_argument("--validation-size", type=float, default=0.125)
    parser.add_argument("--test-size", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    with open(data_dir(args.data_dir) / "essc.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row["text"].strip() not in seen:  # the same key as the loader's duplicate grouping
            seen.add(row["text"].strip())
            unique.append(row)
    names = sorted({r["label"] for r in unique})
    labels = [names.index(r["label"]) for r in unique]
    picked = [unique[i] for i in stratified_subsample(labels, args.size, args.seed)]
    split = stratified_split(
        [r["text"] for r in picked],
        [names.index(r["label"]) for r in picked],
        args.validation_size,
        args.test_size,
        args.seed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, idx in split.items():
        path = out / f"essc_demo_{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows([picked[i]["text"], picked[i]["label"]] for i in idx)
        counts = {n: sum(picked[i]["label"] == n for i in idx) for n in names}
        print(f"{path}: {len(idx)} rows {counts}")
    print(f"{len(rows)} source rows, {len(unique)} distinct texts, sample of {len(picked)} (seed {args.seed})")


if __name__ == "__main__":
    main()
