"""Ranking: which other examples an anchor prefers as DMIX partners, and the chunked top-τ selection over them.

What lives here: the *partner rules* (``PARTNER_RULES``) as ranking keys (:class:`Ranker`: larger = preferred), the
per-example distance moments the hub-robust rules re-reference by (:func:`distance_moments`), and the two chunked
selections every search mode goes through: the ``k`` top-ranked others of each anchor (:func:`top_tau_candidates`)
and the key of the ``k``-th (:func:`top_tau_thresholds`, exact or from a sample of columns). Memory is bounded per
chunk of anchors; no ``N × N`` matrix is ever held.

What does not: the distances themselves (``geometry.py``), the index these selections become and the one search path
that calls them (``partners.py``), the statistics of an index (``hubness.py``).

A new partner rule is one branch of :class:`Ranker` and one entry of ``PARTNER_RULES``: every search mode, the
thresholds and the draws go through the ranker.
"""

from __future__ import annotations

import math
from typing import Literal, cast

import torch
from tqdm.auto import tqdm

from .geometry import Metric, chunk_rows_for_budget, distance_from_gram, prepare_points, ranking_factors

PartnerRule = Literal["paper", "centered", "mutual"]
PARTNER_RULES: tuple[str, ...] = ("paper", "centered", "mutual")
PARTNER_ORDERS: tuple[str, ...] = ("farthest", "nearest")
# Examples whose distances define the per-example moments of the hub-robust rules: all of them up to this many,
# else a fixed random sample of this size (the estimate of a mean over 16k distances is exact to ~1 %).
DEFAULT_MOMENT_REFERENCE = 16384
# Smallest standard deviation a z-score divides by (an example equidistant from all others).
_MIN_STD = 1e-12
# The key of one pair, recomputed in a matrix product of another shape than the one that set the threshold, differs
# by float32 rounding (~1e-7 relative); this relative slack keeps the k-th key itself (and its exact ties) members.
# It also admits any other example whose key is within the slack below the k-th: a threshold set is the exact list
# plus those near-ties (tests/test_partners.py::test_exact_thresholds_admit_the_lists_and_near_ties_of_the_kth_key_only).
_KEY_RTOL = 1e-5


def reference_sample(num_examples: int, size: int = DEFAULT_MOMENT_REFERENCE, seed: int = 0) -> torch.Tensor | None:
    """The examples that per-example distance moments are measured against: ``None`` (all) up to ``size``, else a
    fixed random subset of ``size`` (sorted), the same on every process for the same ``seed``."""
    if num_examples <= size:
        return None
    return torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def distance_moments(
    points: torch.Tensor,
    metric: str,
    curvature: float = 1.0,
    rows: range | None = None,
    reference: torch.Tensor | None = None,
    memory_bytes: int = 512 * 2**20,
    show_progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each example's distances to the reference examples (itself excluded).

    These are the ``μ_j, σ_j`` of the ``centered`` and ``mutual`` partner rules. ``reference`` is a 1-D index tensor
    (default: every example, see :func:`reference_sample`); ``rows`` selects the examples to describe (a shard, in
    distributed search). One matrix product per chunk; sums are accumulated in float64.

    Returns:
        ``(mean, std)``, two float32 tensors of ``len(rows)`` values on the CPU.
    """
    n = points.shape[0]
    rows = range(n) if rows is None else rows
    metric = cast(Metric, metric)  # a name geometry.py checks (ValueError for an unknown one)
    pts = prepare_points(points, metric)
    sq = (pts * pts).sum(-1)
    cols = torch.arange(n, device=pts.device) if reference is None else reference.to(pts.device)
    ref, ref_sq = pts[cols], sq[cols]
    chunk = chunk_rows_for_budget(len(cols), memory_bytes, bytes_per_value=8)
    mean = torch.empty(len(rows), dtype=torch.float32)
    std = torch.empty(len(rows), dtype=torch.float32)
    desc = f"DMIX distance moments ({metric})"
    for start in tqdm(range(rows.start, rows.stop, chunk), desc=desc, disable=not show_progress):
        stop = min(start + chunk, rows.stop)
        d = distance_from_gram(pts[start:stop] @ ref.T, sq[start:stop, None], ref_sq[None, :], metric, curvature)
        d = d.double()
        # An example's distance to itself (0, or ~1e-3 after float32 cancellation) is not part of its distribution.
        own = cols[None, :] == torch.arange(start, stop, device=pts.device)[:, None]
        d.masked_fill_(own, 0.0)
        count = (len(cols) - own.sum(dim=1)).clamp_min(1).double()
        m = d.sum(dim=1) / count
        # In place (the same operations as out of place, so the same numbers): no further (rows, refs) float64 copies.
        var = d.sub_(m[:, None]).masked_fill_(own, 0.0).square_().sum(dim=1) / count
        mean[start - rows.start : stop - rows.start] = m.float().cpu()
        std[start - rows.start : stop - rows.start] = var.sqrt().float().cpu()
    return mean, std


class Ranker:
    """Ranking keys of one partner rule: for a fixed anchor, a larger key means a more preferred candidate.

    The paper's rule uses the one-GEMM bilinear keys of :func:`hf_dmix.geometry.ranking_factors` (monotone in the
    distance along a row); the hub-robust rules need the distance itself (one GEMM plus element-wise work) and the
    per-example moments ``(μ, σ)`` of :func:`distance_moments`.
    """

    def __init__(
        self,
        points: torch.Tensor,
        metric: str,
        curvature: float = 1.0,
        order: str = "farthest",
        rule: str = "paper",
        moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        if rule not in PARTNER_RULES:
            raise ValueError(f"Unknown partner rule {rule!r}; expected one of {PARTNER_RULES}.")
        if rule != "paper" and moments is None:
            raise ValueError(f"The {rule!r} partner rule needs per-example distance moments (see distance_moments).")
        # metric: a name geometry.py checks (ValueError for an unknown one)
        self.points, self.metric, self.curvature, self.rule = points, cast(Metric, metric), curvature, rule
        self.sign = -1.0 if order == "nearest" else 1.0
        self._right_all: torch.Tensor | None = None
        if rule != "paper" and moments is not None:  # (moments is not None: checked above)
            self.prepared = prepare_points(points, self.metric)
            self.sq = (self.prepared * self.prepared).sum(-1)
            self.mean = moments[0].to(points.device, torch.float32)
            self.std = moments[1].to(points.device, torch.float32).clamp_min(_MIN_STD)

    def right_all(self) -> torch.Tensor:
        """The right factors of every example (paper rule), computed once."""
        if self._right_all is None:
            self._right_all = ranking_factors(self.points, self.metric, self.curvature)[1]
        return self._right_all

    def block(self, rows: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """``(len(rows), len(columns))`` keys (``columns=None``: every example)."""
        if self.rule == "paper":
            left = self.sign * ranking_factors(self.points[rows], self.metric, self.curvature)[0]
            right = (
                self.right_all()
                if columns is None
                else ranking_factors(self.points[columns], self.metric, self.curvature)[1]
            )
            return left @ right.T
        cols = slice(None) if columns is None else columns
        x, y = self.prepared[rows], self.prepared[cols]
        d = distance_from_gram(x @ y.T, self.sq[rows][:, None], self.sq[cols][None, :], self.metric, self.curvature)
        return self._transform(d, rows[:, None], cols if columns is None else columns[None, :])

    def pairs(self, anchors: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``(B, M)`` keys of anchor ``b`` against each of its ``M`` candidates ``candidates[b]``."""
        if self.rule == "paper":
            left = self.sign * ranking_factors(self.points[anchors], self.metric, self.curvature)[0]
            right = ranking_factors(self.points[candidates.reshape(-1)], self.metric, self.curvature)[1]
            return torch.einsum("bd,bmd->bm", left, right.view(*candidates.shape, -1))
        x, y = self.prepared[anchors], self.prepared[candidates]
        gram = torch.einsum("bd,bmd->bm", x, y)
        d = distance_from_gram(gram, self.sq[anchors][:, None], self.sq[candidates], self.metric, self.curvature)
        return self._transform(d, anchors[:, None], candidates)

    def _transform(self, d: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor | slice) -> torch.Tensor:
        mean_c = self.mean[cols] if isinstance(cols, torch.Tensor) else self.mean[None, :]
        if self.rule == "centered":
            # The anchor's own mean is constant along its row: only the candidate's term changes the ranking.
            return self.sign * (d - mean_c)
        std_c = self.std[cols] if isinstance(cols, torch.Tensor) else self.std[None, :]
        z_row = (d - self.mean[rows]) / self.std[rows]
        z_col = (d - mean_c) / std_c
        # log Φ instead of Φ: the product of two tail probabilities underflows float32 for far-out pairs, and
        # log_ndtr is accurate deep into the tail (plain log(ndtr(z)) returns -inf below z ≈ -13).
        return torch.special.log_ndtr(self.sign * z_row) + torch.special.log_ndtr(self.sign * z_col)


def top_tau_candidates(
    points: torch.Tensor,
    k: int,
    distance: str,
    order: str = "farthest",
    curvature: float = 1.0,
    rows: range | None = None,
    memory_bytes: int = 512 * 2**20,
    show_progress: bool = False,
    rule: str = "paper",
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The ``k`` top-ranked other points of each anchor in ``rows`` (default: all), as int32 on the CPU.

    Each chunk of anchors costs one matrix product (ranking keys, :func:`hf_dmix.geometry.ranking_factors`, for the
    paper's rule; distances re-referenced by ``moments`` for the hub-robust rules) and one ``topk``; memory is
    bounded by ``memory_bytes`` per chunk whatever ``N`` is. ``rows`` lets several processes each search a shard.
    """
    n = points.shape[0]
    rows = range(n) if rows is None else rows
    ranker = Ranker(points, distance, curvature, order, rule, moments)
    if rule == "paper":
        ranker.right_all()  # once, up front: only the (N, d+2) right factors are ever held in full
    # The hub-robust rules hold a few more (rows, N) temporaries than the bilinear keys.
    chunk = chunk_rows_for_budget(n, memory_bytes, bytes_per_value=4 if rule == "paper" else 8)
    out = torch.empty((len(rows), k), dtype=torch.int32)
    starts = range(rows.start, rows.stop, chunk)
    desc = f"DMIX partner search ({distance}, {rule}, {order} top-{k})"
    for start in tqdm(starts, desc=desc, disable=not show_progress):
        stop = min(start + chunk, rows.stop)
        keys = ranker.block(torch.arange(start, stop, device=points.device))
        local = torch.arange(stop - start, device=keys.device)
        # An anchor is never its own partner: its key goes to the end that topk never reaches.
        keys[local, local + start] = float("-inf")
        idx = torch.topk(keys, k, dim=1, largest=True, sorted=False).indices
        out[start - rows.start : stop - rows.start] = idx.to(device="cpu", dtype=torch.int32)
    return out


def _kth_largest(keys: torch.Tensor, kth: int) -> torch.Tensor:
    """Row-wise ``kth`` largest value. ``topk`` of the smaller side beats ``kthvalue`` (measured: ~1.5x on CPU).

    The ``kth`` largest is the ``(w − kth + 1)``-th smallest; a ``-inf`` self-key is among the smallest either way.
    """
    width = keys.shape[1]
    if kth <= width - kth + 1:
        return torch.topk(keys, kth, dim=1, largest=True, sorted=False).values.min(dim=1).values
    return torch.topk(keys, width - kth + 1, dim=1, largest=False, sorted=False).values.max(dim=1).values


def top_tau_thresholds(
    points: torch.Tensor,
    k: int,
    distance: str,
    order: str = "farthest",
    curvature: float = 1.0,
    rows: range | None = None,
    memory_bytes: int = 512 * 2**20,
    sample_size: int | None = None,
    recall_z: float = 2.5,
    seed: int = 0,
    show_progress: bool = False,
    rule: str = "paper",
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-anchor ranking-key thresholds of the top-``k`` candidate sets, in ``O(N)`` memory.

    Exact (``sample_size=None``): the ``k``-th largest key of each anchor's row, from chunked matrix products and
    ``topk``. As a :class:`PartnerIndex` the sets are those of :func:`top_tau_candidates` plus the examples whose key
    lies within ``_KEY_RTOL · max(|t|, 1)`` below the threshold ``t`` (ties and float32 near-ties with the k-th
    candidate, which the lists break arbitrarily), without storing them.

    Sampled (``sample_size=m``): each anchor's threshold is estimated from its keys to ``m`` random examples, at the
    ``k_s``-th largest with ``k_s = ceil(f·m + z·sqrt(m·f·(1−f)))``, ``f = k/(N−1)``. The margin of ``z`` binomial
    standard deviations makes the estimate fall below the exact threshold for almost every anchor, so membership
    recall stays near 1 at the price of slightly larger sets (about ``z·sqrt((1−f)/(f·m))`` relative). Cost
    ``N × m`` instead of ``N × N``: this is the mode for ``N`` in the millions. ``rule``/``moments`` as in
    :func:`top_tau_candidates`.
    """
    n = points.shape[0]
    rows = range(n) if rows is None else rows
    ranker = Ranker(points, distance, curvature, order, rule, moments)
    sampled = sample_size is not None and sample_size < n - 1
    if rule == "paper" and not sampled:
        ranker.right_all()  # exact: the right factors of all N examples, once
    if sampled and sample_size is not None:
        share = k / (n - 1)
        kth = math.ceil(share * sample_size + recall_z * math.sqrt(sample_size * share * (1 - share)))
        kth = max(1, min(sample_size - 1, kth))
        width = sample_size
    else:
        kth, width = k, n
    chunk = chunk_rows_for_budget(width, memory_bytes, bytes_per_value=4 if rule == "paper" else 8)
    out = torch.empty(len(rows), dtype=torch.float32)
    desc = f"DMIX partner thresholds ({distance}, {rule}, {order} top-{k}{', sampled' if sampled else ''})"
    for start in tqdm(range(rows.start, rows.stop, chunk), desc=desc, disable=not show_progress):
        stop = min(start + chunk, rows.stop)
        anchors = torch.arange(start, stop, device=points.device)
        local = torch.arange(stop - start, device=points.device)
        if sampled:
            # A fresh sample per chunk: one shared sample would shift every anchor's threshold the same way. Only
            # the chunk's m columns are ever factored, so memory stays O(m·d + chunk) for millions of examples.
            g = torch.Generator().manual_seed(seed * 1_000_003 + start)
            columns = torch.randperm(n, generator=g)[:sample_size].to(points.device)
            keys = ranker.block(anchors, columns)
            keys[columns[None, :] == anchors[:, None]] = float("-inf")  # never one's own candidate
        else:
            keys = ranker.block(anchors)
            keys[local, local + start] = float("-inf")
        out[start - rows.start : stop - rows.start] = _kth_largest(keys, kth).cpu()
    return out
