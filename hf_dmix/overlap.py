"""How far partner indices agree: :func:`candidate_overlap` of two indices over the same examples, and
:func:`cosine_overlap`, the share of an index's candidates that the cosine top-τ sets of the same anchors also hold
(measured on the :func:`overlap_anchors` sample), which shows whether a geometry selects anything cosine would not.

What does not: building an index (``partners.py``; these are re-exported there, where they were defined before) and
the statistics of one index (``hubness.py``). Like ``hubness.py``, this module reads an index only through its public
surface (``num_examples``, ``candidates``, ``thresholds``, ``candidates_per_example`` and ``members``), so it does not
import ``partners.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .geometry import chunk_rows_for_budget, ranking_factors

if TYPE_CHECKING:
    from .partners import PartnerIndex


def candidate_overlap(a: PartnerIndex, b: PartnerIndex, chunk_rows: int = 4096) -> float:
    """Mean over anchors of ``|C_a(i) ∩ C_b(i)| / k``: how much two indices with the same ``k`` agree.

    1.0 means the two distances select identical candidate sets; ``k / (N − 1)`` is what two unrelated random
    selections would share. Used to show whether the hyperbolic geometry selects anything cosine would not.
    """
    both_lists = a.candidates is not None and b.candidates is not None
    if a.num_examples != b.num_examples or (both_lists and a.candidates_per_example != b.candidates_per_example):
        raise ValueError("candidate_overlap needs two indices over the same examples with the same k.")
    n, k = a.num_examples, a.candidates_per_example
    if (a.candidates is None and a.thresholds is None) or (b.candidates is None and b.thresholds is None):
        return 1.0
    if a.thresholds is not None or b.thresholds is not None:
        # Threshold indices: exact membership rows for a fixed sample of anchors.
        probe = torch.randperm(n, generator=torch.Generator().manual_seed(2))[: min(n, 1024)]
        ma, mb = a.members(probe), b.members(probe)
        return float((ma & mb).sum()) / float(ma.sum().clamp_min(1))
    assert a.candidates is not None and b.candidates is not None  # both lists: the other cases returned above
    total = 0
    for start in range(0, n, chunk_rows):
        rows = torch.arange(start, min(start + chunk_rows, n))
        # Membership through a dense 0/1 mask per chunk: (rows, N) bytes instead of sorting k-long lists.
        mask = torch.zeros(len(rows), n, dtype=torch.bool)
        mask[torch.arange(len(rows))[:, None], a.candidates[rows].long()] = True
        total += int(mask.gather(1, b.candidates[rows].long()).sum())
    return total / (n * k)


def overlap_anchors(num_examples: int, max_anchors: int | None, seed: int = 2) -> torch.Tensor:
    """The anchors a diagnostic overlap is measured on: all of them (``None`` or ``≥ N``), else a fixed uniform sample
    of ``max_anchors`` (sorted; the same on every process)."""
    if max_anchors is None or max_anchors >= num_examples:
        return torch.arange(num_examples)
    return torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed))[:max_anchors].sort().values


def cosine_overlap(
    index: PartnerIndex,
    embeddings: torch.Tensor,
    order: str = "farthest",
    max_anchors: int | None = None,
    memory_bytes: int = 512 * 2**20,
) -> float:
    """Share of ``index``'s candidate slots that the cosine top-``k`` sets (by the distance, ``order`` first) of the
    same anchors also hold: would cosine have chosen the same candidates?

    Measured on :func:`overlap_anchors` (every anchor by default; a sample of ``max_anchors`` costs ``max_anchors/N``
    of a full cosine search). On every anchor of a list index this is ``candidate_overlap`` of the index and the
    cosine lists; ``k/(N − 1)`` is what unrelated random sets would share. Lists and thresholds alike.
    """
    n, k = index.num_examples, index.candidates_per_example
    anchors = overlap_anchors(n, max_anchors)
    left, right = ranking_factors(embeddings, "cosine")
    sign = -1.0 if order == "nearest" else 1.0
    chunk = max(1, min(1024, chunk_rows_for_budget(n, memory_bytes, bytes_per_value=9)))
    shared = total = 0
    for start in range(0, len(anchors), chunk):
        rows = anchors[start : start + chunk]
        keys = sign * (left[rows.to(left.device)] @ right.T)
        keys[torch.arange(len(rows), device=keys.device), rows.to(keys.device)] = float("-inf")
        cosine = torch.topk(keys, k, dim=1, largest=True, sorted=False).indices.cpu()
        member = index.members(rows)
        shared += int(member.gather(1, cosine).sum())
        total += int(member.sum())
    return shared / max(total, 1)
