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
    """Candidate partners for each of ``num_examples`` training examples.

    Attributes:
        num_examples: ``N``, the size of the training set the indices refer to.
        candidates: ``(N, k)`` int32 tensor, row ``i`` holding the dataset indices of anchor ``i``'s candidates
            (never ``i`` itself), or ``None`` when every other example is a candidate (``τ = 1`` or ``random``).
    """

    num_examples: int
    candidates: torch.Tensor | None = None

    @property
    def candidates_per_example(self) -> int:
        """``k``, the size of each candidate set."""
        return self.num_examples - 1 if self.candidates is None else self.candidates.shape[1]

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
        if self.candidates is None:
            # Uniform over the N−1 others: draw from [0, N−1) and shift draws at or above the anchor up by one.
            draw = torch.randint(0, self.num_examples - 1, anchors.shape, generator=generator)
            return draw + (draw >= anchors).long()
        cols = torch.randint(0, self.candidates.shape[1], anchors.shape, generator=generator)
        return self.candidates[anchors, cols].long()

    def candidate_set(self, anchor: int) -> set[int]:
        """The candidate set of one anchor as Python ints (for inspection and tests)."""
        if self.candidates is None:
            return set(range(self.num_examples)) - {anchor}
        return set(self.candidates[anchor].tolist())


def build_partner_index(
    points: torch.Tensor | None,
    num_examples: int,
    distance: PartnerDistance = "hyperbolic",
    tau: float = 1.0,
    order: Literal["farthest", "nearest"] = "farthest",
    curvature: float = 1.0,
    memory_bytes: int = 512 * 2**20,
    show_progress: bool = True,
) -> PartnerIndex:
    """Exact top-τ candidate sets, computed in row chunks so that memory stays bounded.

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

    Returns:
        A :class:`PartnerIndex`. Ties at the τ boundary are broken arbitrarily but consistently.
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
    left, right = ranking_factors(points, distance, curvature)
    if order == "nearest":
        left = -left
    chunk = chunk_rows_for_budget(n, memory_bytes, bytes_per_value=4)
    out = torch.empty((len(rows), k), dtype=torch.int32)
    starts = range(rows.start, rows.stop, chunk)
    desc = f"DMIX partner search ({distance}, {order} top-{k})"
    for start in tqdm(starts, desc=desc, disable=not show_progress):
        stop = min(start + chunk, rows.stop)
        keys = left[start:stop] @ right.T
        local = torch.arange(stop - start, device=keys.device)
        # An anchor is never its own partner: its key goes to the end that topk never reaches.
        keys[local, local + start] = float("-inf")
        idx = torch.topk(keys, k, dim=1, largest=True, sorted=False).indices
        out[start - rows.start : stop - rows.start] = idx.to(device="cpu", dtype=torch.int32)
    return out


def candidate_overlap(a: PartnerIndex, b: PartnerIndex, chunk_rows: int = 4096) -> float:
    """Mean over anchors of ``|C_a(i) ∩ C_b(i)| / k``: how much two indices with the same ``k`` agree.

    1.0 means the two distances select identical candidate sets; ``k / (N − 1)`` is what two unrelated random
    selections would share. Used to show whether the hyperbolic geometry selects anything cosine would not.
    """
    if a.num_examples != b.num_examples or a.candidates_per_example != b.candidates_per_example:
        raise ValueError("candidate_overlap needs two indices over the same examples with the same k.")
    if a.candidates is None or b.candidates is None:
        return 1.0
    n, k = a.num_examples, a.candidates_per_example
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
