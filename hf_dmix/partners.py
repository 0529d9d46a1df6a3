"""Partner search: for every training example, the top-τ candidates a DMIX partner is drawn from (paper eq. 4).

What lives here: :class:`PartnerIndex` (the candidate sets and the uniform draw from them), :func:`build_partner_index`
(exact chunked top-τ selection over a distance from ``geometry.py``) and :func:`partner_statistics` (how concentrated
the candidate sets are, so users can see whether the geometry is doing something sensible).

What does not: embedding text (``trainer.py``), mapping embeddings into a space (``geometry.py``), fetching the
partner's features (``collator.py``).

Candidate sets are the ``k = ceil(τ·(N−1))`` other examples farthest from (or nearest to) each anchor. ``τ = 1`` and
the ``random`` distance both mean "every other example" (vanilla Mixup) and are stored without any list at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from .geometry import METRICS, chunk_rows_for_budget, ranking_factors

PartnerDistance = Literal["hyperbolic", "euclidean", "cosine", "random"]
PARTNER_DISTANCES: tuple[str, ...] = (*METRICS, "random")
PARTNER_ORDERS: tuple[str, ...] = ("farthest", "nearest")
# The key of one pair, recomputed in a matrix product of another shape than the one that set the threshold, differs
# by float32 rounding (~1e-7 relative); this relative slack keeps the k-th key itself (and its exact ties) members.
_KEY_RTOL = 1e-5


def num_candidates(num_examples: int, tau: float) -> int:
    """``ceil(τ·(N−1))``: how many of the ``N−1`` other examples form each anchor's candidate set (at least 1)."""
    if num_examples < 2:
        raise ValueError(f"Partner search needs at least 2 examples, got {num_examples}.")
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must lie in (0, 1], got {tau}.")
    # The small tolerance keeps τ·(N−1) = 3.0000000000000004 from becoming 4.
    return max(1, min(num_examples - 1, math.ceil(tau * (num_examples - 1) - 1e-9)))


@dataclass
class PartnerIndex:
    """Candidate partners for each of ``num_examples`` training examples, in one of three representations.

    * **all others** (``candidates`` and ``thresholds`` both ``None``): ``τ = 1`` or ``random`` — vanilla Mixup.
    * **lists**: ``candidates`` is an ``(N, k)`` int32 tensor of dataset indices (never the anchor itself). Exact
      and fastest to sample, but ``4·N·k`` bytes: 20 GB for ``N = 100k`` at ``τ = 0.5``.
    * **thresholds**: ``thresholds`` is an ``(N,)`` tensor; ``j`` is a candidate of ``i`` iff its ranking key
      (:func:`hf_dmix.geometry.ranking_factors`, negated for ``nearest``) is ``>= thresholds[i]``. ``O(N)`` memory on
      top of the ``points`` it refers to. Sampling is by rejection: draw others uniformly until one is a member,
      which is exactly uniform over the members and costs ``~1/τ`` dot products per draw. Ties at the threshold
      are all members (lists break them arbitrarily).

    Attributes:
        num_examples: ``N``, the size of the training set the indices refer to.
        candidates: the lists, or ``None``.
        thresholds: the thresholds, or ``None``.
        points, metric, curvature, order: the space the thresholds refer to (thresholds only).
        expected_k: mean candidate-set size (exact ``k`` for exact thresholds; an estimate for sampled ones).
    """

    num_examples: int
    candidates: torch.Tensor | None = None
    thresholds: torch.Tensor | None = None
    points: torch.Tensor | None = None
    metric: str = "hyperbolic"
    curvature: float = 1.0
    order: str = "farthest"
    expected_k: float | None = None

    @property
    def candidates_per_example(self) -> int:
        """``k``, the size of each candidate set (the mean size, rounded, for sampled thresholds)."""
        if self.candidates is not None:
            return self.candidates.shape[1]
        if self.thresholds is not None:
            return int(round(self.expected_k))
        return self.num_examples - 1

    @staticmethod
    def _lowered(thresholds: torch.Tensor) -> torch.Tensor:
        return thresholds - _KEY_RTOL * thresholds.abs().clamp_min(1.0)

    def _left(self, rows: torch.Tensor) -> torch.Tensor:
        left, _ = ranking_factors(self.points[rows], self.metric, self.curvature)
        return -left if self.order == "nearest" else left

    def _right(self, rows: torch.Tensor) -> torch.Tensor:
        return ranking_factors(self.points[rows], self.metric, self.curvature)[1]

    def members(self, anchors: torch.Tensor) -> torch.Tensor:
        """``(len(anchors), N)`` boolean membership matrix (for inspection, statistics and tests)."""
        anchors = torch.as_tensor(anchors, dtype=torch.long).reshape(-1)
        out = torch.zeros(len(anchors), self.num_examples, dtype=torch.bool)
        if self.candidates is not None:
            out[torch.arange(len(anchors))[:, None], self.candidates[anchors].long()] = True
        elif self.thresholds is not None:
            keys = self._left(anchors) @ self._right(torch.arange(self.num_examples)).T
            out = keys >= self._lowered(self.thresholds[anchors])[:, None].to(keys.dtype)
        else:
            out[:] = True
        out[torch.arange(len(anchors)), anchors] = False
        return out

    def sample(self, anchors: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one partner per anchor, uniformly from that anchor's candidates (paper eq. 4).

        Args:
            anchors: 1-D tensor of dataset indices.
            generator: source of randomness (CPU); ``None`` uses torch's global generator.

        Returns:
            1-D int64 tensor of partner indices, never equal to the anchor.
        """
        anchors = torch.as_tensor(anchors, dtype=torch.long).reshape(-1)
        if anchors.numel() and (anchors.min() < 0 or anchors.max() >= self.num_examples):
            raise IndexError(
                f"Anchor indices must lie in [0, {self.num_examples}); got min {int(anchors.min())}, "
                f"max {int(anchors.max())}. Was the index built on a different training set?"
            )
        if self.candidates is not None:
            cols = torch.randint(0, self.candidates.shape[1], anchors.shape, generator=generator)
            return self.candidates[anchors, cols].long()
        if self.thresholds is not None:
            return self._sample_by_rejection(anchors, generator)
        return self._uniform_others(anchors.unsqueeze(1), generator).squeeze(1)

    def _uniform_others(self, anchors: torch.Tensor, generator: torch.Generator | None, draws: int = 1) -> torch.Tensor:
        # Uniform over the N−1 others: draw from [0, N−1) and shift draws at or above the anchor up by one.
        draw = torch.randint(0, self.num_examples - 1, (anchors.shape[0], draws), generator=generator)
        return draw + (draw >= anchors).long()

    def _sample_by_rejection(self, anchors: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        share = max(self.expected_k, 1.0) / (self.num_examples - 1)
        draws = min(4096, max(8, math.ceil(4.0 / share)))  # ~e^-4 of anchors need a second round
        out = torch.empty_like(anchors)
        pending = torch.arange(anchors.numel())
        left = self._left(anchors)
        thresholds = self._lowered(self.thresholds[anchors])
        for _ in range(10_000):
            cand = self._uniform_others(anchors[pending].unsqueeze(1), generator, draws)
            right = self._right(cand.reshape(-1)).view(len(pending), draws, -1)
            keys = torch.einsum("bd,bmd->bm", left[pending], right)
            ok = keys >= thresholds[pending][:, None].to(keys.dtype)
            hit = ok.any(dim=1)
            # The first accepted of i.i.d. uniform draws is uniform over the members.
            first = ok.to(torch.int8).argmax(dim=1)
            out[pending[hit]] = cand[hit, first[hit]]
            pending = pending[~hit]
            if pending.numel() == 0:
                return out
        raise RuntimeError("Rejection sampling found no candidate; is a threshold above every key?")

    def candidate_set(self, anchor: int) -> set[int]:
        """The candidate set of one anchor as Python ints (for inspection and tests)."""
        if self.candidates is None and self.thresholds is None:
            return set(range(self.num_examples)) - {anchor}
        if self.candidates is not None:
            return set(self.candidates[anchor].tolist())
        return set(torch.nonzero(self.members(torch.tensor([anchor]))[0]).reshape(-1).tolist())


def build_partner_index(
    points: torch.Tensor | None,
    num_examples: int,
    distance: PartnerDistance = "hyperbolic",
    tau: float = 1.0,
    order: Literal["farthest", "nearest"] = "farthest",
    curvature: float = 1.0,
    memory_bytes: int = 512 * 2**20,
    show_progress: bool = True,
    representation: Literal["lists", "thresholds"] = "lists",
    sample_size: int | None = None,
) -> PartnerIndex:
    """Top-τ candidate sets, computed in row chunks so that memory stays bounded.

    Args:
        points: ``(N, d)`` points already in the space of ``distance`` (for ``hyperbolic``: inside the Poincaré
            ball, see :func:`hf_dmix.geometry.to_poincare_ball`). Ignored (may be ``None``) for ``random`` or
            ``tau == 1``.
        num_examples: ``N``.
        distance: ``hyperbolic``, ``euclidean``, ``cosine`` or ``random``.
        tau: fraction of the other examples that form each candidate set, in ``(0, 1]``.
        order: ``farthest`` (the paper: distances sorted in decreasing order, top-τ taken) or ``nearest``.
        curvature: ``c`` of the ball, for ``hyperbolic``.
        memory_bytes: budget for one chunk of the distance matrix; the ``N × N`` matrix is never materialised.
        show_progress: show a progress bar over chunks.
        representation: ``lists`` (an ``(N, k)`` table) or ``thresholds`` (``O(N)``, see :class:`PartnerIndex`).
        sample_size: estimate thresholds from this many random examples per anchor instead of all ``N`` (the
            large-``N`` mode, see :func:`top_tau_thresholds`); implies ``thresholds``.

    Returns:
        A :class:`PartnerIndex`. With lists, ties at the τ boundary are broken arbitrarily but consistently.
    """
    if distance not in PARTNER_DISTANCES:
        raise ValueError(f"Unknown partner distance {distance!r}; expected one of {PARTNER_DISTANCES}.")
    if order not in PARTNER_ORDERS:
        raise ValueError(f"Unknown partner order {order!r}; expected one of {PARTNER_ORDERS}.")
    k = num_candidates(num_examples, tau)
    if distance == "random" or k == num_examples - 1:
        return PartnerIndex(num_examples=num_examples)
    if points is None or points.shape[0] != num_examples:
        got = None if points is None else tuple(points.shape)
        raise ValueError(f"Partner search with distance {distance!r} needs ({num_examples}, d) points, got {got}.")
    if representation == "thresholds" or sample_size is not None:
        thresholds = top_tau_thresholds(
            points, k, distance, order, curvature, memory_bytes=memory_bytes, sample_size=sample_size,
            show_progress=show_progress,
        )
        return threshold_index(points, thresholds, distance, order, curvature, k, sampled=sample_size is not None)

    candidates = top_tau_candidates(
        points, k, distance, order, curvature, memory_bytes=memory_bytes, show_progress=show_progress
    )
    return PartnerIndex(num_examples=num_examples, candidates=candidates)


def top_tau_candidates(
    points: torch.Tensor,
    k: int,
    distance: str,
    order: str = "farthest",
    curvature: float = 1.0,
    rows: range | None = None,
    memory_bytes: int = 512 * 2**20,
    show_progress: bool = False,
) -> torch.Tensor:
    """The ``k`` farthest (or nearest) other points of each anchor in ``rows`` (default: all), as int32 on the CPU.

    Each chunk of anchors costs one matrix product of ranking keys (:func:`hf_dmix.geometry.ranking_factors`) and one
    ``topk``; memory is bounded by ``memory_bytes`` per chunk whatever ``N`` is. ``rows`` lets several processes
    each search a shard of the anchors.
    """
    n = points.shape[0]
    rows = range(n) if rows is None else rows
    right = ranking_factors(points, distance, curvature)[1]
    sign = -1.0 if order == "nearest" else 1.0
    chunk = chunk_rows_for_budget(n, memory_bytes, bytes_per_value=4)
    out = torch.empty((len(rows), k), dtype=torch.int32)
    starts = range(rows.start, rows.stop, chunk)
    desc = f"DMIX partner search ({distance}, {order} top-{k})"
    for start in tqdm(starts, desc=desc, disable=not show_progress):
        stop = min(start + chunk, rows.stop)
        # Left factors per chunk: only the (N, d+2) right factors are ever held in full.
        keys = (sign * ranking_factors(points[start:stop], distance, curvature)[0]) @ right.T
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
) -> torch.Tensor:
    """Per-anchor ranking-key thresholds of the top-``k`` candidate sets, in ``O(N)`` memory.

    Exact (``sample_size=None``): the ``k``-th largest key of each anchor's row, from chunked matrix products and
    ``kthvalue`` — the same sets as :func:`top_tau_candidates`, without storing them.

    Sampled (``sample_size=m``): each anchor's threshold is estimated from its keys to ``m`` random examples, at the
    ``k_s``-th largest with ``k_s = ceil(f·m + z·sqrt(m·f·(1−f)))``, ``f = k/(N−1)``. The margin of ``z`` binomial
    standard deviations makes the estimate fall below the exact threshold for almost every anchor, so membership
    recall stays near 1 at the price of slightly larger sets (about ``z·sqrt((1−f)/(f·m))`` relative). Cost
    ``N × m`` instead of ``N × N``: this is the mode for ``N`` in the millions.
    """
    n = points.shape[0]
    rows = range(n) if rows is None else rows
    sign = -1.0 if order == "nearest" else 1.0
    sampled = sample_size is not None and sample_size < n - 1
    # Exact: the right factors of all N examples, once. Sampled: only those of each chunk's m columns, so memory
    # stays O(m·d + chunk) even for millions of examples.
    right = None if sampled else ranking_factors(points, distance, curvature)[1]
    if sampled:
        share = k / (n - 1)
        kth = math.ceil(share * sample_size + recall_z * math.sqrt(sample_size * share * (1 - share)))
        kth = max(1, min(sample_size - 1, kth))
        width = sample_size
    else:
        kth, width = k, n
    chunk = chunk_rows_for_budget(width, memory_bytes, bytes_per_value=4)
    out = torch.empty(len(rows), dtype=torch.float32)
    desc = f"DMIX partner thresholds ({distance}, {order} top-{k}{', sampled' if sampled else ''})"
    for start in tqdm(range(rows.start, rows.stop, chunk), desc=desc, disable=not show_progress):
        stop = min(start + chunk, rows.stop)
        left = sign * ranking_factors(points[start:stop], distance, curvature)[0]
        local = torch.arange(stop - start, device=left.device)
        if sampled:
            # A fresh sample per chunk: one shared sample would shift every anchor's threshold the same way.
            g = torch.Generator().manual_seed(seed * 1_000_003 + start)
            columns = torch.randperm(n, generator=g)[:sample_size].to(left.device)
            keys = left @ ranking_factors(points[columns], distance, curvature)[1].T
            keys[columns[None, :] == (local + start)[:, None]] = float("-inf")  # never one's own candidate
        else:
            keys = left @ right.T
            keys[local, local + start] = float("-inf")
        out[start - rows.start : stop - rows.start] = _kth_largest(keys, kth).cpu()
    return out


def threshold_index(
    points: torch.Tensor, thresholds: torch.Tensor, distance: str, order: str, curvature: float, k: int, sampled: bool
) -> PartnerIndex:
    """A threshold :class:`PartnerIndex`; for sampled thresholds the mean set size is measured on 256 anchors."""
    index = PartnerIndex(
        num_examples=points.shape[0], thresholds=thresholds.cpu(), points=points.detach().float().cpu(),
        metric=distance, curvature=curvature, order=order, expected_k=float(k),
    )
    if sampled:
        probe = torch.randperm(points.shape[0], generator=torch.Generator().manual_seed(1))[:256]
        index.expected_k = float(index.members(probe).sum(dim=1).float().mean())
    return index


def candidate_overlap(a: PartnerIndex, b: PartnerIndex, chunk_rows: int = 4096) -> float:
    """Mean over anchors of ``|C_a(i) ∩ C_b(i)| / k``: how much two indices with the same ``k`` agree.

    1.0 means the two distances select identical candidate sets; ``k / (N − 1)`` is what two unrelated random
    selections would share. Used to show whether the hyperbolic geometry selects anything cosine would not.
    """
    both_lists = a.candidates is not None and b.candidates is not None
    if a.num_examples != b.num_examples or (both_lists and a.candidates_per_example != b.candidates_per_example):
        raise ValueError("candidate_overlap needs two indices over the same examples with the same k.")
    n, k = a.num_examples, a.candidates_per_example
    if a.candidates is None and a.thresholds is None or b.candidates is None and b.thresholds is None:
        return 1.0
    if a.thresholds is not None or b.thresholds is not None:
        # Threshold indices: exact membership rows for a fixed sample of anchors.
        probe = torch.randperm(n, generator=torch.Generator().manual_seed(2))[: min(n, 1024)]
        ma, mb = a.members(probe), b.members(probe)
        return float((ma & mb).sum()) / float(ma.sum().clamp_min(1))
    total = 0
    for start in range(0, n, chunk_rows):
        rows = torch.arange(start, min(start + chunk_rows, n))
        # Membership through a dense 0/1 mask per chunk: (rows, N) bytes instead of sorting k-long lists.
        mask = torch.zeros(len(rows), n, dtype=torch.bool)
        mask[torch.arange(len(rows))[:, None], a.candidates[rows].long()] = True
        total += int(mask.gather(1, b.candidates[rows].long()).sum())
    return total / (n * k)


def partner_statistics(index: PartnerIndex, labels: torch.Tensor | None = None) -> dict[str, float]:
    """Describe how a partner index spreads over the training set (hubness diagnostics).

    Returns:
        ``candidates_per_example``; ``distinct_candidate_share`` (fraction of the training set that appears in at
        least one candidate set); ``top1pct_slot_share`` (fraction of all candidate slots held by the most frequent
        1 % of examples — 0.01 when uniform); and, with ``labels``, ``same_label_share`` (fraction of
        anchor–candidate slots whose labels agree; with uniform partners this is the sum of squared class shares).
    """
    n = index.num_examples
    stats: dict[str, float] = {"num_examples": float(n), "candidates_per_example": float(index.candidates_per_example)}
    labels = None if labels is None else torch.as_tensor(labels).reshape(-1).long()
    if index.thresholds is not None:
        # No lists to count: exact membership rows of up to 1024 sampled anchors stand in for all of them.
        probe = torch.randperm(n, generator=torch.Generator().manual_seed(3))[: min(n, 1024)]
        members = index.members(probe)
        counts = members.sum(dim=0)
        slots = int(members.sum())
        stats["estimated_from_anchors"] = float(len(probe))
        stats["distinct_candidate_share"] = float((counts > 0).sum()) / n
        stats["top1pct_slot_share"] = float(torch.topk(counts, max(1, n // 100)).values.sum()) / max(slots, 1)
        if labels is not None:
            same = members & (labels[None, :] == labels[probe][:, None])
            stats["same_label_share"] = float(same.sum()) / max(slots, 1)
        return stats
    if index.candidates is None:
        stats["distinct_candidate_share"] = 1.0
        stats["top1pct_slot_share"] = max(1, n // 100) / n
        if labels is not None:
            counts = torch.bincount(labels).double()
            # Uniform over others: P(same) = sum_c n_c (n_c − 1) / (n (n − 1)).
            stats["same_label_share"] = float((counts * (counts - 1)).sum() / (n * (n - 1)))
        return stats
    flat = index.candidates.reshape(-1).long()
    counts = torch.bincount(flat, minlength=n)
    stats["distinct_candidate_share"] = float((counts > 0).sum()) / n
    top = torch.topk(counts, max(1, n // 100)).values.sum()
    stats["top1pct_slot_share"] = float(top) / flat.numel()
    if labels is not None:
        same = labels[index.candidates.long()] == labels[:, None]
        stats["same_label_share"] = float(same.double().mean())
    return stats
