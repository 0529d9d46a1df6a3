"""Partner search: for every training example, the top-τ candidates a DMIX partner is drawn from (paper eq. 4).

What lives here: search only. :class:`PartnerIndex` (the candidate sets and the uniform draw from them),
:class:`PartnerSearch` (every setting of a search) and :func:`search_partners`, the one search path — exact lists,
exact thresholds or sampled thresholds, the size limit between them, the shard of anchors one process searches and the
seeds — that both the public :func:`build_partner_index` and ``DMixTrainer`` call; the chunked top-τ selection
(:func:`top_tau_candidates`, :func:`top_tau_thresholds`) over a distance from ``geometry.py``, and
:func:`candidate_overlap` between two indices.

What does not: embedding the training set (``embeddings.py``), mapping embeddings into a space (``geometry.py``), the
statistics of an index and its warning (``hubness.py``; re-exported here), who builds and keeps the index of a run
(``indexer.py``), fetching the partner's features (``collator.py``).

A new partner rule is one branch of :class:`_Ranker` (its ranking key, larger = preferred) and one entry of
``PARTNER_RULES``: every search mode, the thresholds and the draws go through the ranker.

Candidate sets are the ``k = ceil(τ·(N−1))`` other examples that rank highest for each anchor. ``τ = 1`` and the
``random`` distance both mean "every other example" (vanilla Mixup) and are stored without any list at all.

How examples are ranked is the *partner rule* (``PARTNER_RULES``):

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
from typing import Literal

import torch
from tqdm.auto import tqdm

from .geometry import METRICS, chunk_rows_for_budget, distance_from_gram, prepare_points, ranking_factors

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

PartnerDistance = Literal["hyperbolic", "euclidean", "cosine", "random"]
PARTNER_DISTANCES: tuple[str, ...] = (*METRICS, "random")
PARTNER_ORDERS: tuple[str, ...] = ("farthest", "nearest")
PartnerRule = Literal["paper", "centered", "mutual"]
PARTNER_RULES: tuple[str, ...] = ("paper", "centered", "mutual")
PARTNER_SEARCH_MODES: tuple[str, ...] = ("auto", "exact", "sampled")
# Above this many training examples, the "auto" search mode switches from exact to sampled search.
AUTO_EXACT_MAX_EXAMPLES = 200_000
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


def num_candidates(num_examples: int, tau: float) -> int:
    """``ceil(τ·(N−1))``: how many of the ``N−1`` other examples form each anchor's candidate set (at least 1)."""
    if num_examples < 2:
        raise ValueError(f"Partner search needs at least 2 examples, got {num_examples}.")
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must lie in (0, 1], got {tau}.")
    # The small tolerance keeps τ·(N−1) = 3.0000000000000004 from becoming 4.
    return max(1, min(num_examples - 1, math.ceil(tau * (num_examples - 1) - 1e-9)))


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
    pts = prepare_points(points, metric)  # type: ignore[arg-type]
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


class _Ranker:
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
        self.points, self.metric, self.curvature, self.rule = points, metric, curvature, rule
        self.sign = -1.0 if order == "nearest" else 1.0
        self._right_all: torch.Tensor | None = None
        if rule != "paper":
            self.prepared = prepare_points(points, metric)  # type: ignore[arg-type]
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
            right = self.right_all() if columns is None else ranking_factors(self.points[columns], self.metric, self.curvature)[1]
            return left @ right.T
        cols = slice(None) if columns is None else columns
        x, y = self.prepared[rows], self.prepared[cols]
        d = distance_from_gram(x @ y.T, self.sq[rows][:, None], self.sq[cols][None, :], self.metric, self.curvature)  # type: ignore[arg-type]
        return self._transform(d, rows[:, None], cols if columns is None else columns[None, :])

    def pairs(self, anchors: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``(B, M)`` keys of anchor ``b`` against each of its ``M`` candidates ``candidates[b]``."""
        if self.rule == "paper":
            left = self.sign * ranking_factors(self.points[anchors], self.metric, self.curvature)[0]
            right = ranking_factors(self.points[candidates.reshape(-1)], self.metric, self.curvature)[1]
            return torch.einsum("bd,bmd->bm", left, right.view(*candidates.shape, -1))
        x, y = self.prepared[anchors], self.prepared[candidates]
        gram = torch.einsum("bd,bmd->bm", x, y)
        d = distance_from_gram(gram, self.sq[anchors][:, None], self.sq[candidates], self.metric, self.curvature)  # type: ignore[arg-type]
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
            return int(round(self.expected_k))
        return self.num_examples - 1

    @staticmethod
    def _lowered(thresholds: torch.Tensor) -> torch.Tensor:
        return thresholds - _KEY_RTOL * thresholds.abs().clamp_min(1.0)

    def _ranker(self) -> _Ranker:
        ranker = self.__dict__.get("_ranker_cache")
        if ranker is None:
            ranker = _Ranker(self.points, self.metric, self.curvature, self.order, self.rule, self.moments)
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
        share = max(self.expected_k, 1.0) / (self.num_examples - 1)
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
            ("distance", self.distance, PARTNER_DISTANCES), ("order", self.order, PARTNER_ORDERS),
            ("rule", self.rule, PARTNER_RULES), ("search mode", self.mode, PARTNER_SEARCH_MODES),
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
            points, search.distance, search.curvature, rows=rows, reference=reference,
            memory_bytes=search.memory_bytes, show_progress=show_progress,
        )
        moments = (gather(mean, n), gather(std, n))
    common = dict(
        distance=search.distance, order=search.order, curvature=search.curvature, rows=rows,
        memory_bytes=search.memory_bytes, show_progress=show_progress, rule=search.rule, moments=moments,
    )
    sampled = search.is_sampled(n)
    if not sampled and n * k * 4 <= search.max_list_bytes:
        return PartnerIndex(num_examples=n, candidates=gather(top_tau_candidates(points, k, **common), n))
    local = top_tau_thresholds(points, k, **common, sample_size=search.sample_size if sampled else None, seed=search.seed)
    return threshold_index(
        points, gather(local, n), search.distance, search.order, search.curvature, k, sampled, rule=search.rule,
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
        distance=distance, tau=tau, order=order, rule=rule, curvature=curvature,
        mode="exact" if sample_size is None else "sampled",
        sample_size=DEFAULT_MOMENT_REFERENCE if sample_size is None else sample_size,
        moment_reference_size=moment_reference_size,
        max_list_bytes=math.inf if representation == "lists" else 0, memory_bytes=memory_bytes, seed=seed,
    )
    return search_partners(points, num_examples, search, moments=moments, show_progress=show_progress)


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
    ranker = _Ranker(points, distance, curvature, order, rule, moments)
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
    ranker = _Ranker(points, distance, curvature, order, rule, moments)
    sampled = sample_size is not None and sample_size < n - 1
    if rule == "paper" and not sampled:
        ranker.right_all()  # exact: the right factors of all N examples, once
    if sampled:
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
        num_examples=points.shape[0], thresholds=thresholds.cpu(), points=points.detach().float().cpu(),
        metric=distance, curvature=curvature, order=order, expected_k=float(k), rule=rule,
        moments=None if moments is None else (moments[0].cpu(), moments[1].cpu()),
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
