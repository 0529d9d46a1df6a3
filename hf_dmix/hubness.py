"""Hubness of a partner index: how its candidate sets spread over the training set, and when to warn about it.

What lives here: the *k-occurrence* of each example (how many candidate sets it belongs to; Radovanović et al.,
JMLR 2010), the statistics :func:`partner_statistics` derives from it beside what uniformly random candidate sets of
the same size would give (:func:`random_partner_statistics`), the one skewness all of them use, the
``hub_concentration`` scale, the degenerate-index warning (:func:`hubness_warning`) and the one-line description
(:func:`describe_partner_index`). What does not: building an index (``partners.py``) or drawing it (``plotting.py``).

Every figure describes the candidate sets of *all* ``N`` anchors, whatever the index's representation: lists are
counted exactly; a threshold index counts, for a fixed sample of up to ``STATISTICS_SAMPLE_SIZE`` candidate examples,
their memberships over every anchor. The sampled k-occurrences are then draws from the same distribution as the
exact ones, so the figures (and their random baselines, which are those of ``N − 1`` anchors) describe the same
index as lists of the same points would. (Counting over a sample of *anchors* instead would give each example
``Binomial(m, p)`` memberships rather than ``Binomial(N − 1, p)`` and make coverage look far smaller than it is.)

The index is only read here through its public surface (``num_examples``, ``candidates``, ``thresholds``,
``candidates_per_example`` and ``members``), so this module does not import ``partners.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .geometry import chunk_rows_for_budget

# Candidate examples whose k-occurrence (over every anchor) describes a threshold index; all of them up to this N.
STATISTICS_SAMPLE_SIZE = 2048
# The degenerate-index warning compares an index with uniformly random candidate sets of the *same* k. It fires when
# the most frequent 1 % of examples hold at least CONCENTRATION_RATIO times their random share of candidate slots and
# at least CONCENTRATION_EXCESS (absolute, 1 percentage point) more, or when the share of the training set that is
# ever a candidate is below COVERAGE_RATIO times the share random sets of that k reach.
CONCENTRATION_RATIO = 2.0
CONCENTRATION_EXCESS = 0.01
COVERAGE_RATIO = 0.75
# Former names (a rescaled "hub concentration" and a fixed coverage), kept for imports; the warning no longer uses them.
DEGENERATE_CONCENTRATION = 0.5
DEGENERATE_COVERAGE = 0.5


def skewness(counts: torch.Tensor) -> float:
    """Sample skewness ``E[(x − μ)³] / σ³`` of a k-occurrence distribution (``0.0`` when every count is equal)."""
    x = counts.double()
    sd = x.std(unbiased=False)
    return 0.0 if sd <= 0 else float(((x - x.mean()) ** 3).mean() / sd**3)


def k_occurrence(
    index: Any, max_anchors: int | None = None, memory_bytes: int = 256 * 2**20, seed: int = 0
) -> torch.Tensor:
    """How many candidate sets each example belongs to (its *k-occurrence*).

    * lists: a ``bincount`` of the ``(N, k)`` table — exact, ``O(N·k)``.
    * thresholds: membership rows of chunks of anchors (``PartnerIndex.members``), summed over anchors. Exact
      costs ``O(N²)`` key products; with ``max_anchors = m < N`` only ``m`` anchors drawn uniformly without
      replacement are scanned and the column sums are scaled by ``N / m`` (an unbiased estimate, rounded).
    * all others (``τ = 1`` or ``random``): every example is in every other set, so every count is ``N − 1``.

    Args:
        index: the partner index.
        max_anchors: for thresholds, estimate from this many sampled anchors instead of all ``N``; ``None`` = exact.
            Ignored by the other representations, which are always exact.
        memory_bytes: budget for one chunk of membership rows (thresholds only).
        seed: seed of the anchor sample (thresholds with ``max_anchors`` only).

    Returns:
        ``(N,)`` int64 counts. Exact counts sum to ``N·k`` for lists.
    """
    n = index.num_examples
    if max_anchors is not None and max_anchors < 1:
        raise ValueError(f"max_anchors must be a positive number of anchors or None (exact), got {max_anchors}.")
    if index.candidates is not None:
        return torch.bincount(index.candidates.reshape(-1).long(), minlength=n)
    if index.thresholds is None:
        return torch.full((n,), n - 1, dtype=torch.int64)
    if max_anchors is None or max_anchors >= n:
        anchors = torch.arange(n)
    else:
        anchors = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_anchors]
    # members() holds a float32 key block and a bool block of (rows, N): 5 bytes per value.
    chunk = min(1024, chunk_rows_for_budget(n, memory_bytes, bytes_per_value=5))
    counts = torch.zeros(n, dtype=torch.int64)
    for start in range(0, len(anchors), chunk):
        counts += index.members(anchors[start : start + chunk]).sum(dim=0)
    if len(anchors) < n:
        counts = torch.round(counts.double() * (n / len(anchors))).long()
    return counts


def statistics_sample(num_examples: int, size: int = STATISTICS_SAMPLE_SIZE) -> torch.Tensor | None:
    """The candidate examples a threshold index is described by: ``None`` (all) up to ``size``, else a fixed sorted
    random sample of ``size``."""
    if num_examples <= size:
        return None
    return torch.randperm(num_examples, generator=torch.Generator().manual_seed(3))[:size].sort().values


def _threshold_counts(
    index: Any, labels: torch.Tensor | None, columns: torch.Tensor | None, memory_bytes: int = 256 * 2**20
) -> tuple[torch.Tensor, int, float | None]:
    """k-occurrence over every anchor of the candidate examples ``columns`` (all: ``None``), their number of slots
    and, with labels, how many of those slots hold the anchor's label."""
    n = index.num_examples
    width = n if columns is None else len(columns)
    counts = torch.zeros(width, dtype=torch.int64)
    same = 0
    chunk = min(4096, chunk_rows_for_budget(width, memory_bytes, bytes_per_value=5))
    for start in range(0, n, chunk):
        anchors = torch.arange(start, min(start + chunk, n))
        member = index.members(anchors, columns)
        counts += member.sum(dim=0)
        if labels is not None:
            col_labels = labels if columns is None else labels[columns]
            same += int((member & (labels[anchors][:, None] == col_labels[None, :])).sum())
    return counts, int(counts.sum()), None if labels is None else float(same)


def random_partner_statistics(
    num_examples: int, k: int, labels: torch.Tensor | None = None, counted: int | None = None
) -> dict[str, float]:
    """What the figures of :func:`partner_statistics` would be for uniformly random candidate sets of the same ``k``.

    Each example is then a candidate of each other anchor with probability ``p = k/(N−1)``, so its k-occurrence is
    ``Binomial(N−1, p)``: skewness ``(1−2p)/sqrt((N−1)p(1−p))``; the top-1 % share is simulated from that law (fixed
    seed) for ``counted`` examples (default ``N``: a threshold index described by a sample of candidate examples is
    compared with the same number of random k-occurrences, each over every anchor); the same-label share is
    ``Σ_c n_c(n_c−1) / (N(N−1))``.
    """
    n, p = num_examples, k / (num_examples - 1)
    m = n if counted is None else counted
    out = {
        "random_distinct_candidate_share": 1.0 - (1.0 - p) ** (n - 1),
        "random_k_occurrence_skewness": 0.0 if p >= 1.0 else (1 - 2 * p) / math.sqrt((n - 1) * p * (1 - p)),
    }
    if p >= 1.0:
        out["random_top1pct_slot_share"] = max(1, m // 100) / m
    else:
        g = torch.Generator().manual_seed(0)
        counts = torch.binomial(torch.full((m,), float(n - 1)), torch.full((m,), p), generator=g)
        out["random_top1pct_slot_share"] = float(torch.topk(counts, max(1, m // 100)).values.sum() / counts.sum())
    if labels is not None:
        sizes = torch.bincount(labels).double()
        out["random_same_label_share"] = float((sizes * (sizes - 1)).sum() / (n * (n - 1)))
    return out


def partner_statistics(index: Any, labels: torch.Tensor | None = None) -> dict[str, float]:
    """Describe how a partner index spreads over the training set: the standard hubness figures.

    The *k-occurrence* of an example is the number of candidate sets it belongs to (Radovanović et al., JMLR 2010);
    uniform random sets give every example about ``k`` of them, hubs get many more.

    Returns:
        ``candidates_per_example``; ``k_occurrence_skewness`` (skewness of the k-occurrence distribution, the usual
        hubness measure: ~0 for random sets, large and positive with hubs); ``distinct_candidate_share`` (fraction of
        the training set that appears in at least one candidate set); ``top1pct_slot_share`` (fraction of all
        candidate slots held by the most frequent 1 % of examples — about 0.01 when uniform); with ``labels``,
        ``same_label_share`` (fraction of anchor–candidate slots whose labels agree); the ``random_*`` figures of
        :func:`random_partner_statistics` beside them; and ``hub_concentration``. A threshold index with more than
        ``STATISTICS_SAMPLE_SIZE`` examples is described by that many sampled candidate examples, each counted over
        every anchor (``estimated_from_examples``; see the module docstring).
    """
    n = index.num_examples
    k = index.candidates_per_example
    stats: dict[str, float] = {"num_examples": float(n), "candidates_per_example": float(k)}
    labels = None if labels is None else torch.as_tensor(labels).reshape(-1).long()
    if index.thresholds is not None:
        columns = statistics_sample(n)
        counts, slots, same = _threshold_counts(index, labels, columns)
        if columns is not None:
            stats["estimated_from_examples"] = float(len(columns))
    elif index.candidates is None:
        counts = torch.full((n,), n - 1)
        slots = n * (n - 1)
        same = None
        if labels is not None:
            sizes = torch.bincount(labels).double()
            # Uniform over others: P(same) = sum_c n_c (n_c − 1) / (n (n − 1)).
            same = float((sizes * (sizes - 1)).sum() / (n * (n - 1))) * slots
    else:
        flat = index.candidates.reshape(-1).long()
        counts = torch.bincount(flat, minlength=n)
        slots = flat.numel()
        same = None if labels is None else float((labels[index.candidates.long()] == labels[:, None]).sum())
    stats["k_occurrence_skewness"] = skewness(counts)
    stats["distinct_candidate_share"] = float((counts > 0).sum()) / len(counts)
    stats["top1pct_slot_share"] = float(torch.topk(counts, max(1, len(counts) // 100)).values.sum()) / max(slots, 1)
    if same is not None:
        stats["same_label_share"] = same / max(slots, 1)
    stats.update(random_partner_statistics(n, k, labels, counted=len(counts)))
    stats["hub_concentration"] = hub_concentration(stats)
    return stats


def describe_partner_index(stats: dict[str, float]) -> str:
    """The figures of :func:`partner_statistics` (``DMixTrainer.partner_index_stats``) in one plain-English line.

    For people reading a run's output rather than its ``results.json``: how many candidates each example draws its
    partner from, how concentrated the candidate slots are and how much of the training set they cover, how often a
    candidate has the anchor's label and, for hyperbolic indices, the overlap with cosine top-τ; each measured
    figure is followed by what uniformly random candidate sets of the same size would give. Returns ``""`` for empty
    ``stats`` (no partner index: plain fine-tuning).
    """
    if not stats:
        return ""
    n, k = int(stats["num_examples"]), int(stats["candidates_per_example"])
    parts = [f"Each training example has {k} candidate partners out of {n - 1}"]
    if "top1pct_slot_share" in stats:
        parts.append(
            f"the most frequent 1% of examples hold {stats['top1pct_slot_share']:.1%} of candidate slots "
            f"(random {stats['random_top1pct_slot_share']:.1%})"
        )
    if "distinct_candidate_share" in stats:
        share = stats["distinct_candidate_share"]
        # Rounded down: "100.0%" for 99.96% would hide the examples that are never a partner.
        parts.append(
            "every example is a candidate of some anchor"
            if share >= 1.0
            else f"{math.floor(share * 1000) / 10:.1f}% of the training set is a candidate of some anchor"
        )
    if "same_label_share" in stats:
        parts.append(
            f"{stats['same_label_share']:.1%} of candidates share the anchor's label "
            f"(random {stats['random_same_label_share']:.1%})"
        )
    if "cosine_overlap" in stats:
        parts.append(
            f"{stats['cosine_overlap']:.1%} of candidates are also in the cosine top-τ set "
            f"(chance {stats['cosine_overlap_chance']:.1%}"
            + (
                f"; on {int(stats['cosine_overlap_anchors'])} sampled anchors)"
                if stats.get("cosine_overlap_anchors", stats["num_examples"]) < stats["num_examples"]
                else ")"
            )
        )
    text = "; ".join(parts) + "."
    if "estimated_from_examples" in stats:
        text += (
            f" (Slot figures estimated from {int(stats['estimated_from_examples'])} sampled examples, each counted "
            "over every anchor.)"
        )
    return text


def hub_concentration(stats: dict[str, float]) -> float:
    """Where the top-1 % slot share of :func:`partner_statistics` lies between random candidate sets (0) and hubs that
    are candidates of every anchor (1).

    The raw share cannot exceed ``m·(N−1)/(N·k) ≈ 1 %/τ`` (``m = max(1, N // 100)`` examples, each in at most ``N − 1``
    sets), so at τ = 0.3 a share of 3.3 % is already the most concentrated index possible; this rescales it.
    """
    n, k = int(stats["num_examples"]), max(1.0, float(stats["candidates_per_example"]))
    most = min(1.0, max(1, n // 100) * (n - 1) / (n * k))
    random_top = stats.get("random_top1pct_slot_share", max(1, n // 100) / n)
    spread = most - random_top
    if spread <= 0:
        return 0.0
    return min(1.0, max(0.0, (stats["top1pct_slot_share"] - random_top) / spread))


def hubness_warning(stats: dict[str, float], rule: str = "paper") -> str | None:
    """A one-line warning when the candidate sets described by :func:`partner_statistics` differ clearly from random
    candidate sets of the same ``k``, else ``None``.

    It fires on either of two absolute excesses over random partners *for the same k* (the ``random_*`` figures):

    * concentration: the most frequent 1 % of examples hold at least ``CONCENTRATION_RATIO`` (2) times their random
      share of candidate slots *and* at least ``CONCENTRATION_EXCESS`` (1 percentage point) more. A partner is drawn
      uniformly from its anchor's set, so this share is also the share of partner draws those examples receive. At
      large τ the share cannot exceed ``≈ 1 %/τ`` (1.1 % at τ = 0.9), so a near-random index there never warns;
    * coverage: less than ``COVERAGE_RATIO`` (3/4) of the share of the training set that random sets of this ``k``
      reach is ever a candidate (random sets of a small ``k`` miss examples too).

    The message gives the measured figures beside the random ones and a setting to try; it claims nothing beyond them.
    """
    if "top1pct_slot_share" not in stats:
        return None
    top, random_top = stats["top1pct_slot_share"], stats.get("random_top1pct_slot_share", 0.01)
    cover, random_cover = stats["distinct_candidate_share"], stats.get("random_distinct_candidate_share", 1.0)
    concentrated = top >= CONCENTRATION_RATIO * random_top and top - random_top >= CONCENTRATION_EXCESS
    uncovered = cover < COVERAGE_RATIO * random_cover
    if not (concentrated or uncovered):
        return None
    k = int(stats.get("candidates_per_example", 0))
    fix = (
        "partner_rule='centered' (or 'mutual') discounts norm-driven hubs"
        if rule == "paper"
        else "a larger tau, or anchor_dominant=True (only the anchor-dominant mixed row of each pair is trained)"
    )
    findings = []
    if concentrated:
        findings.append(
            f"the most frequent 1% of examples hold {top:.1%} of candidate slots (so about {top:.1%} of partner "
            f"draws go to them), {top / max(random_top, 1e-12):.1f} times and {100 * (top - random_top):.1f} "
            f"percentage points above the {random_top:.1%} of random partners with the same k={k}"
        )
    share = "all" if cover >= 1.0 else f"{math.floor(cover * 1000) / 10:.1f}%"
    findings.append(
        f"{share} of the training set is ever a candidate (random partners: {random_cover:.1%})"
        + ("; the rest is never drawn as a partner" if uncovered else "")
    )
    return (
        "DMIX candidate sets differ from random partners with the same k: "
        + "; ".join(findings)
        + f". If that is not intended: {fix}."
    )
