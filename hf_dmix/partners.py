"""Partner search: for every training example, the top-τ candidates a DMIX partner is drawn from (paper eq. 4).

What lives here: :class:`PartnerIndex` (the candidate sets and the uniform draw from them), :func:`build_partner_index`
(exact chunked top-τ selection over a distance from ``geometry.py``) and :func:`partner_statistics` (how concentrated
the candidate sets are, so users can see whether the geometry is doing something sensible; :func:`describe_partner_index`
says the same in one sentence).

What does not: embedding text (``trainer.py``), mapping embeddings into a space (``geometry.py``), fetching the
partner's features (``collator.py``).

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
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from .geometry import METRICS, chunk_rows_for_budget, distance_from_gram, prepare_points, ranking_factors

PartnerDistance = Literal["hyperbolic", "euclidean", "cosine", "random"]
PARTNER_DISTANCES: tuple[str, ...] = (*METRICS, "random")
PARTNER_ORDERS: tuple[str, ...] = ("farthest", "nearest")
PartnerRule = Literal["paper", "centered", "mutual"]
PARTNER_RULES: tuple[str, ...] = ("paper", "centered", "mutual")
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
        d = d.masked_fill(own, 0.0)
        count = (len(cols) - own.sum(dim=1)).clamp_min(1).double()
        m = d.sum(dim=1) / count
        var = ((d - m[:, None]).masked_fill(own, 0.0) ** 2).sum(dim=1) / count
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

    def members(self, anchors: torch.Tensor) -> torch.Tensor:
        """``(len(anchors), N)`` boolean membership matrix (for inspection, statistics and tests)."""
        anchors = torch.as_tensor(anchors, dtype=torch.long).reshape(-1)
        out = torch.zeros(len(anchors), self.num_examples, dtype=torch.bool)
        if self.candidates is not None:
            out[torch.arange(len(anchors))[:, None], self.candidates[anchors].long()] = True
        elif self.thresholds is not None:
            keys = self._ranker().block(anchors)
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
        rule: how examples are ranked: ``paper`` (by the distance), ``centered`` or ``mutual`` (hub-robust, see
            the module docstring).
        moments: precomputed ``(μ, σ)`` of :func:`distance_moments` for the hub-robust rules; computed here when
            omitted, against every example or, above ``moment_reference_size`` examples, a fixed random sample.
        moment_reference_size: see ``moments``.

    Returns:
        A :class:`PartnerIndex`. With lists, ties at the τ boundary are broken arbitrarily but consistently.
    """
    if distance not in PARTNER_DISTANCES:
        raise ValueError(f"Unknown partner distance {distance!r}; expected one of {PARTNER_DISTANCES}.")
    if order not in PARTNER_ORDERS:
        raise ValueError(f"Unknown partner order {order!r}; expected one of {PARTNER_ORDERS}.")
    if rule not in PARTNER_RULES:
        raise ValueError(f"Unknown partner rule {rule!r}; expected one of {PARTNER_RULES}.")
    k = num_candidates(num_examples, tau)
    if distance == "random" or k == num_examples - 1:
        return PartnerIndex(num_examples=num_examples)
    if points is None or points.shape[0] != num_examples:
        got = None if points is None else tuple(points.shape)
        raise ValueError(f"Partner search with distance {distance!r} needs ({num_examples}, d) points, got {got}.")
    if rule != "paper" and moments is None:
        moments = distance_moments(
            points, distance, curvature, reference=reference_sample(num_examples, moment_reference_size),
            memory_bytes=memory_bytes, show_progress=show_progress,
        )
    common = dict(
        distance=distance, order=order, curvature=curvature, memory_bytes=memory_bytes, show_progress=show_progress,
        rule=rule, moments=moments,
    )
    if representation == "thresholds" or sample_size is not None:
        thresholds = top_tau_thresholds(points, k, sample_size=sample_size, **common)
        return threshold_index(
            points, thresholds, distance, order, curvature, k, sampled=sample_size is not None, rule=rule,
            moments=moments,
        )
    candidates = top_tau_candidates(points, k, **common)
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


def _skewness(counts: torch.Tensor) -> float:
    """Sample skewness ``E[(x − μ)³] / σ³`` (0 for a constant)."""
    x = counts.double()
    sd = x.std(unbiased=False)
    return 0.0 if sd <= 0 else float(((x - x.mean()) ** 3).mean() / sd**3)


def random_partner_statistics(num_examples: int, k: int, labels: torch.Tensor | None = None) -> dict[str, float]:
    """What the figures of :func:`partner_statistics` would be for uniformly random candidate sets of the same ``k``.

    Each example is then a candidate of each other anchor with probability ``p = k/(N−1)``, so its k-occurrence is
    ``Binomial(N−1, p)``: skewness ``(1−2p)/sqrt((N−1)p(1−p))``; the top-1 % share is simulated from that law (fixed
    seed); the same-label share is ``Σ_c n_c(n_c−1) / (N(N−1))``.
    """
    n, p = num_examples, k / (num_examples - 1)
    out = {
        "random_distinct_candidate_share": 1.0 - (1.0 - p) ** (n - 1),
        "random_k_occurrence_skewness": 0.0 if p >= 1.0 else (1 - 2 * p) / math.sqrt((n - 1) * p * (1 - p)),
    }
    if p >= 1.0:
        out["random_top1pct_slot_share"] = max(1, n // 100) / n
    else:
        g = torch.Generator().manual_seed(0)
        counts = torch.binomial(torch.full((n,), float(n - 1)), torch.full((n,), p), generator=g)
        out["random_top1pct_slot_share"] = float(torch.topk(counts, max(1, n // 100)).values.sum() / counts.sum())
    if labels is not None:
        sizes = torch.bincount(labels).double()
        out["random_same_label_share"] = float((sizes * (sizes - 1)).sum() / (n * (n - 1)))
    return out


def partner_statistics(index: PartnerIndex, labels: torch.Tensor | None = None) -> dict[str, float]:
    """Describe how a partner index spreads over the training set: the standard hubness figures.

    The *k-occurrence* of an example is the number of candidate sets it belongs to (Radovanović et al., JMLR 2010);
    uniform random sets give every example about ``k`` of them, hubs get many more.

    Returns:
        ``candidates_per_example``; ``k_occurrence_skewness`` (skewness of the k-occurrence distribution, the usual
        hubness measure: ~0 for random sets, large and positive with hubs); ``distinct_candidate_share`` (fraction of
        the training set that appears in at least one candidate set); ``top1pct_slot_share`` (fraction of all
        candidate slots held by the most frequent 1 % of examples — about 0.01 when uniform); with ``labels``,
        ``same_label_share`` (fraction of anchor–candidate slots whose labels agree); and the ``random_*`` figures of
        :func:`random_partner_statistics` beside them. Threshold indices are described from the exact membership
        rows of up to 1024 sampled anchors (``estimated_from_anchors``).
    """
    n = index.num_examples
    k = index.candidates_per_example
    stats: dict[str, float] = {"num_examples": float(n), "candidates_per_example": float(k)}
    labels = None if labels is None else torch.as_tensor(labels).reshape(-1).long()
    if index.thresholds is not None:
        # No lists to count: exact membership rows of up to 1024 sampled anchors stand in for all of them.
        probe = torch.randperm(n, generator=torch.Generator().manual_seed(3))[: min(n, 1024)]
        members = index.members(probe)
        counts = members.sum(dim=0)
        slots = int(members.sum())
        stats["estimated_from_anchors"] = float(len(probe))
        same = None if labels is None else float((members & (labels[None, :] == labels[probe][:, None])).sum())
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
    stats["k_occurrence_skewness"] = _skewness(counts)
    stats["distinct_candidate_share"] = float((counts > 0).sum()) / n
    stats["top1pct_slot_share"] = float(torch.topk(counts, max(1, n // 100)).values.sum()) / max(slots, 1)
    if same is not None:
        stats["same_label_share"] = same / max(slots, 1)
    stats.update(random_partner_statistics(n, k, labels))
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
            "every example is a candidate of some anchor" if share >= 1.0
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
            f"(chance {stats['cosine_overlap_chance']:.1%})"
        )
    text = "; ".join(parts) + "."
    if "estimated_from_anchors" in stats:
        text += f" (Slot figures estimated from {int(stats['estimated_from_anchors'])} sampled anchors.)"
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


# A candidate index is called degenerate when its hub concentration (0 = random sets, 1 = the top 1 % are candidates
# of every anchor) reaches this value, or when less than this share of the training set is ever a candidate.
DEGENERATE_CONCENTRATION = 0.5
DEGENERATE_COVERAGE = 0.5


def hubness_warning(stats: dict[str, float], rule: str = "paper") -> str | None:
    """A one-line warning when the candidate sets described by :func:`partner_statistics` are degenerate, else ``None``.

    Degenerate: the ``hub_concentration`` is at least ``DEGENERATE_CONCENTRATION`` (the most frequent 1 % of examples
    hold at least half-way between their random share of candidate slots and the most they could hold), or less than
    ``DEGENERATE_COVERAGE`` of the training set is ever a candidate. Partners then come mostly from a few hub
    examples, and with two mixed rows per pair half of all training rows are dominated by them.
    """
    if "top1pct_slot_share" not in stats:
        return None
    top, random_top = stats["top1pct_slot_share"], stats.get("random_top1pct_slot_share", 0.01)
    cover = stats["distinct_candidate_share"]
    concentration = stats["hub_concentration"] if "hub_concentration" in stats else hub_concentration(stats)
    if concentration < DEGENERATE_CONCENTRATION and cover >= DEGENERATE_COVERAGE:
        return None
    fix = (
        "try partner_rule='centered' (or 'mutual'), which discount hubs"
        if rule == "paper"
        else "try a larger tau, partner_rule='mutual', or anchor_dominant=True"
    )
    return (
        f"DMIX candidate sets are degenerate: the most frequent 1% of examples hold {top:.1%} of candidate slots "
        f"(random partners: {random_top:.1%}) and {cover:.1%} of the training set is ever a candidate. Partners will "
        f"come mostly from a few 'hub' examples; {fix}."
    )
