"""Tests of ``hf_dmix.partners``: exact top-τ candidate sets against a float64 reference, uniform draws, statistics."""

from __future__ import annotations

import math

import pytest
import torch

import hf_dmix.partners as partners_mod
from hf_dmix.geometry import to_poincare_ball
from hf_dmix.partners import (
    PartnerIndex,
    build_partner_index,
    describe_partner_index,
    num_candidates,
    partner_statistics,
)

N = 25
DRAWS_PER_ANCHOR = 600
TAUS = (0.1, 0.3, 0.5, 0.9)


# ---------------------------------------------------------------------------------------------------------------
# Float64 reference distances, written out independently of the library
# ---------------------------------------------------------------------------------------------------------------


def ref_mobius_add(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Möbius addition x ⊕_c y (float64)."""
    xy = (x * y).sum(-1, keepdim=True)
    x2 = (x * x).sum(-1, keepdim=True)
    y2 = (y * y).sum(-1, keepdim=True)
    return ((1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y) / (1 + 2 * c * xy + c * c * x2 * y2)


def ref_distance_matrix(points: torch.Tensor, distance: str, c: float = 1.0) -> torch.Tensor:
    """Full ``(N, N)`` float64 distance matrix: Möbius form for hyperbolic, direct formulas otherwise."""
    x = points.double()
    if distance == "hyperbolic":
        u = ref_mobius_add(-x[:, None, :], x[None, :, :], c).norm(dim=-1)
        return 2.0 / math.sqrt(c) * torch.atanh(math.sqrt(c) * u)
    if distance == "euclidean":
        return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).sqrt()
    if distance == "cosine":
        unit = x / x.norm(dim=-1, keepdim=True)
        return 1.0 - unit @ unit.T
    raise AssertionError(distance)


def ref_candidates(dist: torch.Tensor, k: int, order: str) -> list[set[int]]:
    """For each anchor, the ``k`` other examples farthest from (or nearest to) it; asserts the cut is unambiguous."""
    out = []
    n = dist.shape[0]
    for i in range(n):
        others = [j for j in range(n) if j != i]
        ranked = sorted(others, key=lambda j: float(dist[i, j]), reverse=(order == "farthest"))
        if k < len(others):
            gap = abs(float(dist[i, ranked[k - 1]]) - float(dist[i, ranked[k]]))
            assert gap > 1e-5, "test data has a near-tie at the τ cut; pick another seed"
        out.append(set(ranked[:k]))
    return out


def make_points(distance: str, seed: int = 0, c: float = 1.0) -> torch.Tensor:
    """``N`` float32 points for ``distance``: mapped into the ball for hyperbolic, raw Gaussian otherwise."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(N, 6, generator=g) * torch.rand(N, 1, generator=g) * 4 + 0.5
    if distance == "hyperbolic":
        return to_poincare_ball(raw, curvature=c, median_radius=0.6)
    return raw


def draw(index: PartnerIndex, per_anchor: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_anchor`` draws for every anchor with a seeded generator; returns ``(anchors, partners)``."""
    anchors = torch.arange(index.num_examples).repeat(per_anchor)
    partners = index.sample(anchors, torch.Generator().manual_seed(seed))
    return anchors, partners


def pair_counts(anchors: torch.Tensor, partners: torch.Tensor, n: int) -> torch.Tensor:
    """``(n, n)`` matrix of how often each (anchor, partner) pair was drawn."""
    return torch.bincount(anchors * n + partners, minlength=n * n).view(n, n)


def supports(anchors: torch.Tensor, partners: torch.Tensor, n: int) -> list[set[int]]:
    """Set of drawn partners per anchor."""
    counts = pair_counts(anchors, partners, n)
    return [set(torch.nonzero(row).flatten().tolist()) for row in counts]


def assert_uniform(anchors: torch.Tensor, partners: torch.Tensor, cand_sets: list[set[int]]) -> None:
    """Pooled chi-square over anchors against uniform draws from each candidate set, with a generous bound."""
    n = len(cand_sets)
    counts = pair_counts(anchors, partners, n).double()
    stat, df = 0.0, 0
    for a, cands in enumerate(cand_sets):
        obs = counts[a, sorted(cands)]
        expected = counts[a].sum() / len(cands)
        stat += float(((obs - expected) ** 2 / expected).sum())
        df += len(cands) - 1
    if df == 0:
        return
    # Mean df, sd sqrt(2 df): 8 sd is far beyond chance but far below any systematic bias over 600 draws.
    assert stat < df + 8 * math.sqrt(2 * df), (stat, df)


# ---------------------------------------------------------------------------------------------------------------
# Exact candidate sets
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["farthest", "nearest"])
@pytest.mark.parametrize(
    ("distance", "c"),
    [("hyperbolic", 1.0), ("hyperbolic", 2.5), ("euclidean", 1.0), ("cosine", 1.0)],
    ids=["hyperbolic-c1", "hyperbolic-c2.5", "euclidean", "cosine"],
)
def test_draw_support_is_exact_top_tau(distance: str, order: str, c: float) -> None:
    points = make_points(distance, seed=1, c=c)
    dist = ref_distance_matrix(points, distance, c)
    for t, tau in enumerate(TAUS):
        k = num_candidates(N, tau)
        assert k == math.ceil(tau * (N - 1))
        index = build_partner_index(
            points, N, distance=distance, tau=tau, order=order, curvature=c, show_progress=False
        )
        assert index.candidates is not None
        assert index.candidates.dtype == torch.int32 and index.candidates.shape == (N, k)
        assert index.candidates_per_example == k
        expected = ref_candidates(dist, k, order)
        anchors, partners = draw(index, DRAWS_PER_ANCHOR, seed=t)
        assert partners.dtype == torch.int64
        assert (partners != anchors).all()
        got = supports(anchors, partners, N)
        for i in range(N):
            assert got[i] == expected[i], (distance, order, tau, i)
            assert index.candidate_set(i) == expected[i]
        assert_uniform(anchors, partners, expected)


def test_metrics_and_orders_select_different_sets() -> None:
    """The test data discriminates: the distances (and the two orders) really give different candidate sets."""
    points = make_points("hyperbolic", seed=1)
    k = num_candidates(N, 0.3)
    sets = {
        (d, o): ref_candidates(ref_distance_matrix(points, d), k, o)
        for d in ("hyperbolic", "euclidean", "cosine")
        for o in ("farthest", "nearest")
    }
    for d in ("hyperbolic", "euclidean", "cosine"):
        index = build_partner_index(points, N, distance=d, tau=0.3, show_progress=False)
        assert [index.candidate_set(i) for i in range(N)] == sets[(d, "farthest")]
        # Farthest and nearest are disjoint for τ < 0.5.
        assert all(not (a & b) for a, b in zip(sets[(d, "farthest")], sets[(d, "nearest")], strict=True))
    assert sets[("hyperbolic", "farthest")] != sets[("euclidean", "farthest")]
    assert sets[("hyperbolic", "farthest")] != sets[("cosine", "farthest")]
    assert sets[("euclidean", "farthest")] != sets[("cosine", "farthest")]


@pytest.mark.parametrize(
    ("distance", "tau"),
    [("hyperbolic", 1.0), ("euclidean", 1.0), ("cosine", 1.0), ("random", 1.0), ("random", 0.3)],
)
def test_tau_one_and_random_give_every_other_example(distance: str, tau: float) -> None:
    # Points are ignored in this case: None is accepted.
    index = build_partner_index(None, N, distance=distance, tau=tau, show_progress=False)  # type: ignore[arg-type]
    assert index.candidates is None
    assert index.candidates_per_example == N - 1
    anchors, partners = draw(index, 800, seed=3)
    assert (partners != anchors).all()
    assert partners.min() >= 0 and partners.max() < N
    expected = [set(range(N)) - {i} for i in range(N)]
    assert supports(anchors, partners, N) == expected
    assert [index.candidate_set(i) for i in range(N)] == expected
    assert_uniform(anchors, partners, expected)


def test_many_chunks_give_identical_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    points = make_points("hyperbolic", seed=2)
    calls: list[int] = []
    import hf_dmix.ranking as ranking_mod

    real_factors = ranking_mod.ranking_factors

    def counting_factors(x: torch.Tensor, *args: object, **kwargs: object):
        calls.append(x.shape[0])
        return real_factors(x, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ranking_mod, "ranking_factors", counting_factors)
    for distance in ("hyperbolic", "euclidean", "cosine"):
        for order in ("farthest", "nearest"):
            calls.clear()
            one = build_partner_index(points, N, distance=distance, tau=0.3, order=order, show_progress=False)
            # The right factors of all N once, then the left factors chunk by chunk.
            assert calls == [N, N]
            calls.clear()
            many = build_partner_index(
                points, N, distance=distance, tau=0.3, order=order, memory_bytes=1, show_progress=False
            )
            assert calls == [N] + [1] * N  # one row per chunk
            calls.clear()
            # A budget of 7 rows per chunk: the last chunk is ragged.
            some = build_partner_index(
                points, N, distance=distance, tau=0.3, order=order, memory_bytes=7 * N * 4 * 4, show_progress=False
            )
            assert calls == [N, 7, 7, 7, 4]
            for other in (many, some):
                assert other.candidates is not None and one.candidates is not None
                assert torch.equal(other.candidates.sort(dim=1).values, one.candidates.sort(dim=1).values)


def test_anchor_never_its_own_candidate_even_with_duplicates() -> None:
    """Duplicated points (distance 0 to each other) never make an anchor its own nearest candidate."""
    g = torch.Generator().manual_seed(4)
    base = torch.randn(5, 3, generator=g)
    points = torch.cat([base, base])  # i and i + 5 coincide
    for distance in ("euclidean", "cosine"):
        index = build_partner_index(points, 10, distance=distance, tau=0.1, order="nearest", show_progress=False)
        assert index.candidates is not None
        assert index.candidates[:, 0].tolist() == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    ball = to_poincare_ball(points)
    index = build_partner_index(ball, 10, distance="hyperbolic", tau=0.1, order="nearest", show_progress=False)
    assert index.candidates is not None
    assert index.candidates[:, 0].tolist() == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    # Farthest 8 of 9 others: the anchor (pushed to -inf) and its duplicate (distance 0) are the ones left out.
    far = build_partner_index(ball, 10, distance="hyperbolic", tau=0.8, order="farthest", show_progress=False)
    assert far.candidates is not None and far.candidates_per_example == 8
    assert all(far.candidate_set(i) == set(range(10)) - {i, (i + 5) % 10} for i in range(10))


def test_build_partner_index_validates_inputs() -> None:
    points = torch.randn(N, 3)
    with pytest.raises(ValueError, match="Unknown partner distance"):
        build_partner_index(points, N, distance="manhattan", tau=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown partner order"):
        build_partner_index(points, N, tau=0.5, order="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs"):
        build_partner_index(None, N, distance="euclidean", tau=0.5)
    with pytest.raises(ValueError, match="needs"):
        build_partner_index(points[:-1], N, distance="euclidean", tau=0.5)
    with pytest.raises(ValueError, match="tau"):
        build_partner_index(points, N, distance="euclidean", tau=0.0)


# ---------------------------------------------------------------------------------------------------------------
# num_candidates
# ---------------------------------------------------------------------------------------------------------------


def test_num_candidates_edge_cases() -> None:
    assert num_candidates(2, 1.0) == 1
    assert num_candidates(2, 1e-9) == 1
    assert num_candidates(2, 0.5) == 1
    assert num_candidates(1000, 1e-9) == 1
    assert num_candidates(1000, 1.0) == 999
    assert num_candidates(25, 1.0) == 24
    assert num_candidates(25, 0.3) == 8  # ceil(7.2)
    assert 0.07 * 100 > 7  # 7.000000000000001 in floating point...
    assert num_candidates(101, 0.07) == 7  # ...which must not round up to 8
    assert num_candidates(51, 0.14) == 7
    assert num_candidates(11, 0.31) == 4
    assert num_candidates(101, 0.5) == 50


@pytest.mark.parametrize("n", [-1, 0, 1])
def test_num_candidates_rejects_small_n(n: int) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        num_candidates(n, 0.5)


@pytest.mark.parametrize("tau", [0.0, -0.1, 1.0000001, 2.0, float("nan")])
def test_num_candidates_rejects_bad_tau(tau: float) -> None:
    with pytest.raises(ValueError, match="tau"):
        num_candidates(10, tau)


# ---------------------------------------------------------------------------------------------------------------
# PartnerIndex.sample
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "index",
    [PartnerIndex(num_examples=4), PartnerIndex(4, torch.tensor([[1, 2], [0, 2], [3, 1], [0, 1]], dtype=torch.int32))],
    ids=["all-others", "explicit"],
)
def test_sample_out_of_range_anchor_raises(index: PartnerIndex) -> None:
    for bad in ([-1], [4], [0, 1, 7]):
        with pytest.raises(IndexError, match="Anchor indices"):
            index.sample(torch.tensor(bad))
    assert index.sample(torch.tensor([], dtype=torch.long)).shape == (0,)
    out = index.sample([0, 3, 3])  # lists are accepted too
    assert out.shape == (3,) and out.dtype == torch.int64


def test_sample_is_reproducible_with_seeded_generator() -> None:
    index = PartnerIndex(N, torch.randint(0, N, (N, 5), generator=torch.Generator().manual_seed(0), dtype=torch.int32))
    anchors = torch.arange(N).repeat(4)
    a = index.sample(anchors, torch.Generator().manual_seed(7))
    b = index.sample(anchors, torch.Generator().manual_seed(7))
    c = index.sample(anchors, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    for i, p in zip(anchors.tolist(), a.tolist(), strict=True):
        assert p in index.candidate_set(i)


# ---------------------------------------------------------------------------------------------------------------
# partner_statistics
# ---------------------------------------------------------------------------------------------------------------


def test_partner_statistics_hand_built() -> None:
    cands = torch.tensor([[2, 3], [2, 4], [3, 0], [2, 4], [2, 3]], dtype=torch.int32)
    labels = torch.tensor([0, 0, 1, 1, 1])
    stats = partner_statistics(PartnerIndex(5, cands), labels)
    # Slot counts: 0→1, 1→0, 2→4, 3→3, 4→2 (10 slots).
    assert stats["num_examples"] == 5.0
    assert stats["candidates_per_example"] == 2.0
    assert stats["distinct_candidate_share"] == pytest.approx(4 / 5)
    assert stats["top1pct_slot_share"] == pytest.approx(4 / 10)  # top max(1, 5 // 100) = 1 example
    # Same-label slots: row 2 → {3}, row 3 → {2, 4}, row 4 → {2, 3}: 5 of 10.
    assert stats["same_label_share"] == pytest.approx(5 / 10)
    assert "same_label_share" not in partner_statistics(PartnerIndex(5, cands))


def test_describe_partner_index_in_words() -> None:
    stats = {
        "num_examples": 381.0,
        "candidates_per_example": 38.0,
        "top1pct_slot_share": 0.0142,
        "random_top1pct_slot_share": 0.0101,
        "distinct_candidate_share": 1.0,
        "same_label_share": 0.62,
        "random_same_label_share": 0.5512,
    }
    assert describe_partner_index(stats) == (
        "Each training example has 38 candidate partners out of 380; the most frequent 1% of examples hold 1.4% of "
        "candidate slots (random 1.0%); every example is a candidate of some anchor; 62.0% of candidates share the "
        "anchor's label (random 55.1%)."
    )
    # Coverage just short of complete is rounded down, never shown as 100%; the cosine overlap and the threshold
    # index's sampled candidate examples are said when present.
    stats.update(
        distinct_candidate_share=0.9996,
        cosine_overlap=0.716,
        cosine_overlap_chance=0.301,
        estimated_from_examples=2048.0,
    )
    assert describe_partner_index(stats) == (
        "Each training example has 38 candidate partners out of 380; the most frequent 1% of examples hold 1.4% of "
        "candidate slots (random 1.0%); 99.9% of the training set is a candidate of some anchor; 62.0% of candidates "
        "share the anchor's label (random 55.1%); 71.6% of candidates are also in the cosine top-τ set (chance 30.1%). "
        "(Slot figures estimated from 2048 sampled examples, each counted over every anchor.)"
    )
    assert describe_partner_index({}) == ""
    # The keys partner_statistics writes are the keys this reads (no labels: no same-label clause).
    cands = torch.tensor([[2, 3], [2, 4], [3, 0], [2, 4], [2, 3]], dtype=torch.int32)
    stats = partner_statistics(PartnerIndex(5, cands))
    # The random top-1 % share is simulated (seeded): read it back rather than pin torch's sampler.
    assert describe_partner_index(stats) == (
        "Each training example has 2 candidate partners out of 4; the most frequent 1% of examples hold 40.0% of "
        f"candidate slots (random {stats['random_top1pct_slot_share']:.1%}); 80.0% of the training set is a candidate "
        "of some anchor."
    )


def test_partner_statistics_hub_concentration() -> None:
    """Two hubs holding almost every slot: the top 1 % (2 of 200 examples) hold 398 of 400 slots."""
    n = 200
    cands = torch.tensor([[0, 1]] * n, dtype=torch.int32)
    cands[0] = torch.tensor([1, 2])
    cands[1] = torch.tensor([0, 2])
    stats = partner_statistics(PartnerIndex(n, cands))
    assert stats["distinct_candidate_share"] == pytest.approx(3 / n)
    assert stats["top1pct_slot_share"] == pytest.approx(398 / 400)
    # 398/400 is also the most the top 2 examples can hold (each is in at most N - 1 = 199 sets): fully concentrated.
    assert stats["hub_concentration"] == pytest.approx(1.0)
    # Half the anchors choose the two hubs, the other half distinct pairs: the hubs hold about half of the slots,
    # about half-way (measured from the random share) to the most they could hold.
    half = torch.tensor([[0, 1]] * (n // 2) + [[(a + 1) % n, (a + 2) % n] for a in range(n // 2, n)], dtype=torch.int32)
    half[0], half[1] = torch.tensor([1, 2]), torch.tensor([0, 2])
    assert not (half == torch.arange(n)[:, None]).any()  # no anchor is its own candidate
    mid = partner_statistics(PartnerIndex(n, half))
    counts = torch.bincount(half.reshape(-1).long(), minlength=n)
    top = int(counts.topk(2).values.sum())
    assert mid["top1pct_slot_share"] == pytest.approx(top / 400)
    random = mid["random_top1pct_slot_share"]
    assert 0.005 < random < 0.05  # uniform sets of 2 out of 199: the top 2 examples hold a few percent
    assert mid["hub_concentration"] == pytest.approx((top / 400 - random) / (398 / 400 - random))
    assert 0.3 < mid["hub_concentration"] < 0.7
    # Uniform "every other example" sets are not concentrated at all.
    assert partner_statistics(PartnerIndex(n))["hub_concentration"] == 0.0


def test_partner_statistics_all_others_matches_formula_and_explicit_index() -> None:
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    n = 10
    implicit = partner_statistics(PartnerIndex(n), labels)
    assert implicit["candidates_per_example"] == n - 1
    assert implicit["distinct_candidate_share"] == 1.0
    assert implicit["top1pct_slot_share"] == pytest.approx(1 / n)
    assert implicit["same_label_share"] == pytest.approx((5 * 4 + 3 * 2 + 2 * 1) / (n * (n - 1)))
    # The same numbers from the explicit (N, N−1) all-others candidate list.
    explicit = torch.tensor([[j for j in range(n) if j != i] for i in range(n)], dtype=torch.int32)
    from_list = partner_statistics(PartnerIndex(n, explicit), labels)
    for key, value in implicit.items():
        assert from_list[key] == pytest.approx(value), key
    # And from an index built with τ = 1.
    built = build_partner_index(None, n, distance="hyperbolic", tau=1.0, show_progress=False)
    assert partner_statistics(built, labels.tolist()) == implicit


def test_candidate_overlap_exact_values() -> None:
    from hf_dmix.partners import candidate_overlap

    a = PartnerIndex(4, torch.tensor([[1, 2], [0, 2], [0, 1], [0, 1]], dtype=torch.int32))
    b = PartnerIndex(4, torch.tensor([[2, 3], [2, 0], [3, 1], [2, 1]], dtype=torch.int32))
    # Row overlaps: {2}, {0, 2}, {1}, {1} -> (1 + 2 + 1 + 1) / (4 * 2).
    assert candidate_overlap(a, b) == pytest.approx(5 / 8)
    assert candidate_overlap(a, a, chunk_rows=3) == 1.0
    with pytest.raises(ValueError, match="same k"):
        candidate_overlap(a, PartnerIndex(4, torch.zeros(4, 1, dtype=torch.int32)))


@pytest.mark.parametrize("distance", ["hyperbolic", "euclidean", "cosine"])
@pytest.mark.parametrize("order", ["farthest", "nearest"])
def test_exact_thresholds_select_the_same_sets_as_lists(distance: str, order: str) -> None:
    points = make_points(distance, seed=4)
    lists = build_partner_index(points, N, distance=distance, tau=0.3, order=order, show_progress=False)
    thr = build_partner_index(
        points, N, distance=distance, tau=0.3, order=order, representation="thresholds", show_progress=False
    )
    assert thr.candidates is None and thr.thresholds is not None and thr.thresholds.shape == (N,)
    assert thr.candidates_per_example == lists.candidates_per_example
    for i in range(N):
        assert thr.candidate_set(i) == lists.candidate_set(i)
    # Rejection sampling draws exactly from those sets, uniformly, never the anchor.
    anchors, partners = draw(thr, 600, seed=5)
    expected = [lists.candidate_set(i) for i in range(N)]
    assert supports(anchors, partners, N) == expected
    assert_uniform(anchors, partners, expected)
    assert partner_statistics(thr, torch.arange(N) % 2)["same_label_share"] == pytest.approx(
        partner_statistics(lists, torch.arange(N) % 2)["same_label_share"]
    )


@pytest.mark.parametrize("rule", ["paper", "centered"])
def test_exact_thresholds_admit_the_lists_and_near_ties_of_the_kth_key_only(rule: str) -> None:
    """What ``partner_index_max_mb`` promises for threshold mode: every list member, plus the examples whose ranking
    key lies within ``_KEY_RTOL · max(|t|, 1)`` below the anchor's k-th key ``t`` (exact ties such as repeated texts,
    and float32 near-ties), and nothing else. Duplicated points make such ties happen."""
    g = torch.Generator().manual_seed(11)
    base = to_poincare_ball(torch.randn(20, 8, generator=g) * torch.rand(20, 1, generator=g) * 3)
    points = torch.cat([base, base[:5]])  # five repeated "texts": identical embeddings
    n, tau = len(points), 0.3
    extra = dict(rule=rule, show_progress=False)
    lists = build_partner_index(points, n, "hyperbolic", tau, **extra)
    thr = build_partner_index(points, n, "hyperbolic", tau, representation="thresholds", **extra)
    k = lists.candidates_per_example
    keys = thr._ranker().block(torch.arange(n)).double()
    keys.fill_diagonal_(float("-inf"))
    kth = keys.topk(k, dim=1).values[:, -1]
    slack = partners_mod._KEY_RTOL * kth.abs().clamp_min(1.0)
    members = thr.members(torch.arange(n))
    extras = 0
    for i in range(n):
        got, listed = set(members[i].nonzero().flatten().tolist()), lists.candidate_set(i)
        assert listed <= got, f"anchor {i}: a list member is missing"
        near = {j for j in range(n) if j != i and keys[i, j] >= kth[i] - slack[i]}
        assert got == near | listed, f"anchor {i}: admitted beyond the slack"
        extras += len(got - listed)
    # The repeated points tie with the k-th candidate for some anchors: those sets hold more than k examples.
    assert extras > 0
    assert members.sum(dim=1).max() > k


def test_sampled_thresholds_keep_recall_with_bounded_overshoot() -> None:
    n, tau = 3000, 0.1
    g = torch.Generator().manual_seed(7)
    points = to_poincare_ball(torch.randn(n, 16, generator=g) * torch.rand(n, 1, generator=g) * 5)
    exact = build_partner_index(points, n, "hyperbolic", tau, representation="thresholds", show_progress=False)
    sampled = build_partner_index(
        points, n, "hyperbolic", tau, sample_size=2048, memory_bytes=300 * 2048 * 16, show_progress=False
    )
    probe = torch.arange(0, n, 15)
    e, s = exact.members(probe), sampled.members(probe)
    recall = float((e & s).sum()) / float(e.sum())
    assert recall >= 0.99
    k = num_candidates(n, tau)
    assert k <= sampled.expected_k <= 1.3 * k
    partners = sampled.sample(probe, torch.Generator().manual_seed(0))
    assert s[torch.arange(len(probe)), partners].all()  # every draw is a member


def test_cosine_overlap_on_every_anchor_is_the_overlap_with_the_cosine_lists_and_a_sample_estimates_it():
    """Issue 15, item 5: the refresh's hyperbolic-vs-cosine diagnostic. On every anchor it is exactly the former
    second full search (candidate_overlap with the cosine lists); on 512 sampled anchors it costs 512/N of that and
    estimates the same figure; a threshold index of the same points is measured alike."""
    from hf_dmix.geometry import to_poincare_ball
    from hf_dmix.partners import candidate_overlap, cosine_overlap, top_tau_candidates

    n = 1500
    emb = torch.randn(n, 24, generator=torch.Generator().manual_seed(4)) * torch.linspace(0.5, 2.0, n)[:, None]
    points = to_poincare_ball(emb)
    index = build_partner_index(points, n, "hyperbolic", tau=0.3, rule="centered", show_progress=False)
    k = index.candidates_per_example
    cosine = PartnerIndex(n, candidates=top_tau_candidates(emb, k, "cosine"))
    full = cosine_overlap(index, emb)
    assert full == pytest.approx(candidate_overlap(index, cosine), abs=1e-3)
    assert cosine_overlap(index, emb, max_anchors=512) == pytest.approx(full, abs=0.03)
    thresholds = build_partner_index(
        points, n, "hyperbolic", tau=0.3, rule="centered", representation="thresholds", show_progress=False
    )
    assert cosine_overlap(thresholds, emb, max_anchors=512) == pytest.approx(full, abs=0.03)


def test_partner_overlap_anchors_is_validated():
    from hf_dmix import DMixConfig

    assert DMixConfig(output_dir="unused").partner_overlap_anchors == 512
    with pytest.raises(ValueError, match="partner_overlap_anchors"):
        DMixConfig(output_dir="unused", partner_overlap_anchors=-2)
