"""Partner search: for every training example, the top-τ candidates a DMIX partner is drawn from (paper eq. 4).

What lives here: search only. :class:`PartnerIndex` (the candidate sets and the uniform draw from them),
:class:`PartnerSearch` (every setting of a search) and :func:`search_partners`, the one search path — exact lists,
exact thresholds or sampled thresholds, the size limit between them, the shard of anchors one process searches and the
seeds — that both the public :func:`build_partner_index` and ``DMixTrainer`` call.

What does not: how candidates are ranked and the chunked top-τ selection (``ranking.py``: the partner rules,
:func:`~hf_dmix.ranking.top_tau_candidates`, :func:`~hf_dmix.ranking.top_tau_thresholds`; re-exported here), embedding
the training set (``embeddings.py``), mapping embeddings into a space (``geometry.py``), the statistics of an index and
its warning (``hubness.py``; re-exported here), how far two indices agree (``overlap.py``: candidate and cosine
overlap; re-exported here), who builds and keeps the index of a run (``indexer.py``), fetching the partner's features
(``collator.py``).

Candidate sets are the ``k = ceil(τ·(N−1))`` other examples that rank highest for each anchor. ``τ = 1`` and the
``random`` distance both mean "every other example" (vanilla Mixup) and are stored without any list at all.

How examples are ranked is the *partner rule* (``PARTNER_RULES``, one branch each of
:class:`~hf_dmix.ranking.Ranker`):

* ``paper`` — the paper's eq. 4 read literally: by the distance itself, farthest (or nearest) first. In the Poincaré
  ball the distance to ``j`` grows without bound with ``‖x_j‖``, so for every anchor the farthest examples are largely
  the same few high-norm ones: "hubs" (Radovanović et al., JMLR 2010) decide the candidate sets.
* ``centered`` — a CSLS-style correction (Conneau et al., ICLR 2018): rank by ``d(i, j) − μ_j``, where ``μ_j`` is
  ``j``'s mean distance to the data. Every column of the key matrix then has mean zero over anchors, so no example
  is far (or near) from everyone "on average": a hub's large distances are discounted by its large mean.
* ``mutual`` — mutual proximity (Schnitzer et al., JMLR 2012) with Gaussian distance distributions: ``j`` ranks high
  for ``i`` when ``d(i, j)`` is far out in *both* ``i``'s and ``j``'s distance distributions,
  ``log Φ(z_i) + log Φ(z_j)`` with ``z_x = (d(i, j) − μ_x)/σ_x`` (``−z`` for ``nearest``). Symmetric in ``i, j``.

Both corrections keep the selection a distance constraint in the chosen space: they only re-reference each distance
by per-example statistics of the same distance (``distance_moments``). One matrix product per chunk of anchors, as
for the paper's rule; no ``N × N`` matrix is ever held.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .geometry import METRICS

# The statistics of an index live in hubness.py; they are re-exported here, where they were defined before.
from .hubness import (  # noqa: F401
    DEGENERATE_CONCENTRATION,
    DEGENERATE_COVERAGE,
    describe_partner_index,
    hub_concentration,
    hubness_warning,
    partner_statistics,
    random_partner_statistics,
)

# How far two indices agree lives in overlap.py; re-exported here, where it was defined before.
from .overlap import candidate_overlap, cosine_overlap, overlap_anchors  # noqa: F401

# The ranking (rules, moments, chunked top-τ selection) lives in ranking.py; re-exported here, where it was before.
from .ranking import (
    _KEY_RTOL,
    DEFAULT_MOMENT_REFERENCE,
    PARTNER_ORDERS,
    PARTNER_RULES,
    PartnerRule,
    Ranker,
    distance_moments,
    reference_sample,
    top_tau_candidates,
    top_tau_thresholds,
)

PartnerDistance = Literal["hyperbolic", "euclidean", "cosine", "random"]
PARTNER_DISTANCES: tuple[str, ...] = (*METRICS, "random")
PARTNER_SEARCH_MODES: tuple[str, ...] = ("auto", "exact", "sampled")
# Above this many training examples, the "auto" search mode switches from exact to sampled search.
AUTO_EXACT_MAX_EXAMPLES = 200_000


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
      under the partner rule (larger = preferred) is ``>= thresholds[i]``. ``O(N)`` memory on top of the ``points``
      (and, for the hub-robust rules, the ``moments``) it refers to. Sampling is by rejection: draw others uniformly until one is a member,
      which is exactly uniform over the members and costs ``~1/τ`` dot products per draw. A key counts as
      ``>= thresholds[i]`` within a slack of ``_KEY_RTOL · max(|t|, 1)`` (``1e-5``): exact ties with the k-th
      candidate (lists keep an arbitrary one of them) and float32 near-ties are all members, so a set can hold a
      few more than ``k`` examples.

    Attributes:
        num_examples: ``N``, the size of the training set the indices refer to.
        candidates: the lists, or ``None``.
        thresholds: the thresholds, or ``None``.
        points, metric, curvature, order, rule, moments: the space and ranking the thresholds refer to
            (thresholds only); ``moments`` is the ``(μ, σ)`` pair of the hub-robust rules.
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
    rule: str = "paper"
    moments: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def candidates_per_example(self) -> int:
        """``k``, the size of each candidate set (the mean size, rounded, for sampled thresholds)."""
        if self.candidates is not None:
            return self.candidates.shape[1]
        if self.thresholds is not None:
            if self.expected_k is None:
                raise ValueError("A threshold PartnerIndex needs expected_k, the mean size of its candidate sets.")
            return round(self.expected_k)
        return self.num_examples - 1

    @staticmethod
    def _lowered(thresholds: torch.Tensor) -> torch.Tensor:
        return thresholds - _KEY_RTOL * thresholds.abs().clamp_min(1.0)

    def _ranker(self) -> Ranker:
        ranker = self.__dict__.get("_ranker_cache")
        if ranker is None:
            if self.points is None:
                raise ValueError("A threshold PartnerIndex needs the points its thresholds refer to.")
            ranker = Ranker(self.points, self.metric, self.curvature, self.order, self.rule, self.moments)
            self.__dict__["_ranker_cache"] = ranker
        return ranker

    def members(self, anchors: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """``(len(anchors), N)`` boolean membership matrix (for inspection, statistics and tests).

        ``columns``: only these candidate examples, ``(len(anchors), len(columns))`` (a threshold index then computes
        only their keys).
        """
        anchors = torch.as_tensor(anchors, dtype=torch.long).reshape(-1)
        if self.thresholds is not None:
            keys = self._ranker().block(anchors, None if columns is None else torch.as_tensor(columns).long())
            out = keys >= self._lowered(self.thresholds[anchors])[:, None].to(keys.dtype)
        else:
            out = torch.zeros(len(anchors), self.num_examples, dtype=torch.bool)
            if self.candidates is not None:
                out[torch.arange(len(anchors))[:, None], self.candidates[anchors].long()] = True
            else:
                out[:] = True
            if columns is not None:
                out = out[:, torch.as_tensor(columns).long()]
        if columns is None:
            out[torch.arange(len(anchors)), anchors] = False
        else:
            out &= torch.as_tensor(columns).long()[None, :] != anchors[:, None]
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
        assert self.thresholds is not None  # called for threshold indices only
        share = max(self.expected_k or 0.0, 1.0) / (self.num_examples - 1)
        draws = min(4096, max(8, math.ceil(4.0 / share)))  # ~e^-4 of anchors need a second round
        out = torch.empty_like(anchors)
        pending = torch.arange(anchors.numel())
        ranker = self._ranker()
        thresholds = self._lowered(self.thresholds[anchors])
        for _ in range(10_000):
            cand = self._uniform_others(anchors[pending].unsqueeze(1), generator, draws)
            keys = ranker.pairs(anchors[pending], cand)
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


@dataclass(frozen=True)
class PartnerSearch:
    """Every setting of one partner search besides the points: the rule of eq. 4 and how the search is run.

    :func:`search_partners` is the one search path: :func:`build_partner_index` (the public function) and
    ``DMixTrainer`` (through ``DMixConfig.partner_search_settings()``) both describe their search with this.

    Attributes:
        distance, tau, order, rule, curvature: what ranks the candidates (see the module docstring).
        mode: ``"exact"`` compares every anchor with every example; ``"sampled"`` estimates thresholds from
            ``sample_size`` random examples per anchor; ``"auto"``: exact up to ``AUTO_EXACT_MAX_EXAMPLES``.
        sample_size: ``m`` of sampled search.
        moment_reference_size: the hub-robust rules measure each example's distance moments against every example
            up to this many, else against a random sample of this size (seeded with ``seed``).
        max_list_bytes: exact candidate lists (``4·N·k`` bytes) are kept up to this size; above it one threshold per
            example (``0``: always thresholds).
        memory_bytes: budget of one chunk of the distance matrix.
        seed: seed of the moment reference sample and of sampled search.
    """

    distance: str = "hyperbolic"
    tau: float = 1.0
    order: str = "farthest"
    rule: str = "paper"
    curvature: float = 1.0
    mode: str = "exact"
    sample_size: int = DEFAULT_MOMENT_REFERENCE
    moment_reference_size: int = DEFAULT_MOMENT_REFERENCE
    max_list_bytes: float = math.inf
    memory_bytes: int = 512 * 2**20
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("distance", self.distance, PARTNER_DISTANCES),
            ("order", self.order, PARTNER_ORDERS),
            ("rule", self.rule, PARTNER_RULES),
            ("search mode", self.mode, PARTNER_SEARCH_MODES),
        ):
            if value not in choices:
                raise ValueError(f"Unknown partner {name} {value!r}; expected one of {choices}.")

    def is_sampled(self, num_examples: int) -> bool:
        """Whether thresholds are estimated from samples (``mode``, and for ``auto`` the size of the training set)."""
        return self.mode == "sampled" or (self.mode == "auto" and num_examples > AUTO_EXACT_MAX_EXAMPLES)

    def needs_points(self, num_examples: int) -> bool:
        """Whether the search ranks anything: not for ``random`` partners or ``τ = 1`` (every other example)."""
        return self.distance != "random" and num_candidates(num_examples, self.tau) < num_examples - 1

    def check_candidate_count(self, num_examples: int) -> None:
        """τ·(N−1) must be at least one candidate: below that the set would silently be the single top example."""
        n = num_examples
        if self.distance == "random" or self.tau >= 1.0 or self.tau * (n - 1) >= 1.0 - 1e-9:
            return
        raise ValueError(
            f"tau={self.tau} asks for {self.tau * (n - 1):.3g} candidate partners per example among the {n - 1} other "
            f"examples of this training set: fewer than one. Use a training set of at least "
            f"{math.ceil(1 / self.tau - 1e-9) + 1} examples, or tau >= 1/(N-1) = {1 / (n - 1):.4g} (exactly one "
            f"candidate: the {self.order} example)."
        )


def search_partners(
    points: torch.Tensor | None,
    num_examples: int,
    search: PartnerSearch,
    *,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    rows: range | None = None,
    gather: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    show_progress: bool = False,
) -> PartnerIndex:
    """The partner search: exact lists, exact thresholds or sampled thresholds, as ``search`` says.

    Args:
        points: ``(N, d)`` points in the space of ``search.distance`` (ignored for ``random`` or ``τ = 1``).
        num_examples: ``N``.
        search: the settings.
        moments: precomputed ``(μ, σ)`` for the hub-robust rules (computed here when omitted).
        rows, gather: distributed search — this process searches the anchors ``rows`` (a contiguous shard) and
            ``gather(local, N)`` concatenates every process's shard in rank order, on every process. Default: all
            rows, no gathering.
        show_progress: progress bars over chunks.
    """
    n = num_examples
    k = num_candidates(n, search.tau)
    if not search.needs_points(n):
        return PartnerIndex(num_examples=n)
    if points is None or points.shape[0] != n:
        got = None if points is None else tuple(points.shape)
        raise ValueError(f"Partner search with distance {search.distance!r} needs ({n}, d) points, got {got}.")
    rows = range(n) if rows is None else rows
    gather = gather or (lambda local, _n: local)
    if search.rule != "paper" and moments is None:
        # Each process describes its shard against the same reference set; the shards are gathered.
        reference = reference_sample(n, search.moment_reference_size, seed=search.seed)
        mean, std = distance_moments(
            points,
            search.distance,
            search.curvature,
            rows=rows,
            reference=reference,
            memory_bytes=search.memory_bytes,
            show_progress=show_progress,
        )
        moments = (gather(mean, n), gather(std, n))
    common: dict[str, Any] = dict(
        distance=search.distance,
        order=search.order,
        curvature=search.curvature,
        rows=rows,
        memory_bytes=search.memory_bytes,
        show_progress=show_progress,
        rule=search.rule,
        moments=moments,
    )
    sampled = search.is_sampled(n)
    if not sampled and n * k * 4 <= search.max_list_bytes:
        return PartnerIndex(num_examples=n, candidates=gather(top_tau_candidates(points, k, **common), n))
    local = top_tau_thresholds(
        points, k, **common, sample_size=search.sample_size if sampled else None, seed=search.seed
    )
    return threshold_index(
        points,
        gather(local, n),
        search.distance,
        search.order,
        search.curvature,
        k,
        sampled,
        rule=search.rule,
        moments=moments,
    )


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
    rule: PartnerRule = "paper",
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    moment_reference_size: int = DEFAULT_MOMENT_REFERENCE,
    seed: int = 0,
) -> PartnerIndex:
    """Top-τ candidate sets, computed in row chunks so that memory stays bounded (:func:`search_partners`).

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
        rule: how examples are ranked: ``paper`` (by the distance), ``centered`` or ``mutual`` (hub-robust, see
            the module docstring).
        moments: precomputed ``(μ, σ)`` of :func:`distance_moments` for the hub-robust rules; computed here when
            omitted, against every example or, above ``moment_reference_size`` examples, a fixed random sample.
        moment_reference_size: see ``moments``.
        seed: seed of the moment reference sample and of sampled search. ``DMixTrainer`` passes ``args.seed`` (and
            ``partner_search_sample_size`` as both sizes), so the same call reproduces a trainer's index exactly.

    Returns:
        A :class:`PartnerIndex`. With lists, ties at the τ boundary are broken arbitrarily but consistently.
    """
    search = PartnerSearch(
        distance=distance,
        tau=tau,
        order=order,
        rule=rule,
        curvature=curvature,
        mode="exact" if sample_size is None else "sampled",
        sample_size=DEFAULT_MOMENT_REFERENCE if sample_size is None else sample_size,
        moment_reference_size=moment_reference_size,
        max_list_bytes=math.inf if representation == "lists" else 0,
        memory_bytes=memory_bytes,
        seed=seed,
    )
    return search_partners(points, num_examples, search, moments=moments, show_progress=show_progress)


def threshold_index(
    points: torch.Tensor,
    thresholds: torch.Tensor,
    distance: str,
    order: str,
    curvature: float,
    k: int,
    sampled: bool,
    rule: str = "paper",
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> PartnerIndex:
    """A threshold :class:`PartnerIndex`; for sampled thresholds the mean set size is measured on 256 anchors."""
    index = PartnerIndex(
        num_examples=points.shape[0],
        thresholds=thresholds.cpu(),
        points=points.detach().float().cpu(),
        metric=distance,
        curvature=curvature,
        order=order,
        expected_k=float(k),
        rule=rule,
        moments=None if moments is None else (moments[0].cpu(), moments[1].cpu()),
    )
    if sampled:
        probe = torch.randperm(points.shape[0], generator=torch.Generator().manual_seed(1))[:256]
        index.expected_k = float(index.members(probe).sum(dim=1).float().mean())
    return index
