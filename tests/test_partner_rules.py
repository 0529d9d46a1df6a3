"""The hub-robust partner rules (``centered``, ``mutual``): exact candidate sets against a float64 brute force,
the threshold and sampled search paths, and that they remove the norm-driven hubs of the paper's rule."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from hf_dmix.geometry import to_poincare_ball
from hf_dmix.partners import (
    build_partner_index,
    distance_moments,
    num_candidates,
    partner_statistics,
    reference_sample,
)

N = 120


def make_points(metric: str, n: int = N, seed: int = 0, d: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Heavy-tailed norms, as encoder embeddings have: a few far-out points become hubs under the paper's rule.
    raw = torch.randn(n, d, generator=g) * torch.exp(0.6 * torch.randn(n, 1, generator=g)) + 0.3
    return to_poincare_ball(raw, median_radius=0.6) if metric == "hyperbolic" else raw


def brute_distances(points: torch.Tensor, metric: str, c: float = 1.0) -> torch.Tensor:
    """Float64 distances straight from the definitions (no expanded norms, no chunking)."""
    x = points.double()
    if metric == "cosine":
        u = x / x.norm(dim=-1, keepdim=True)
        return 1.0 - u @ u.T
    diff = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    if metric == "euclidean":
        return diff.sqrt()
    sq = (x * x).sum(-1)
    z = 2 * c * diff / ((1 - c * sq)[:, None] * (1 - c * sq)[None, :])
    return torch.acosh(1 + z) / math.sqrt(c)


def brute_keys(points: torch.Tensor, metric: str, rule: str, order: str) -> torch.Tensor:
    d = brute_distances(points, metric)
    n = d.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    mean = (d * off).sum(1) / (n - 1)
    std = (((d - mean[:, None]) ** 2) * off).sum(1).div(n - 1).sqrt()
    sign = -1.0 if order == "nearest" else 1.0
    if rule == "paper":
        keys = sign * d
    elif rule == "centered":
        keys = sign * (d - mean[None, :])
    else:
        zr = (d - mean[:, None]) / std[:, None]
        zc = (d - mean[None, :]) / std[None, :]
        keys = torch.from_numpy(norm.logcdf(sign * zr.numpy()) + norm.logcdf(sign * zc.numpy()))
    return keys.masked_fill(~off, -math.inf)


def assert_same_sets(candidates: torch.Tensor, keys: torch.Tensor, k: int, tol: float = 1e-5) -> None:
    """Each anchor's set equals the float64 top-k, except members whose key ties the k-th key within ``tol``."""
    for i in range(keys.shape[0]):
        ours = set(candidates[i].tolist())
        ref = set(torch.topk(keys[i], k).indices.tolist())
        kth = torch.topk(keys[i], k).values.min().item()
        for j in ours ^ ref:
            assert abs(keys[i, j].item() - kth) <= tol * max(1.0, abs(kth)), (i, j, keys[i, j].item(), kth)
        assert len(ours) == k and i not in ours


@pytest.mark.parametrize("rule", ["centered", "mutual", "paper"])
@pytest.mark.parametrize("metric", ["hyperbolic", "euclidean", "cosine"])
@pytest.mark.parametrize("order", ["farthest", "nearest"])
def test_exact_lists_equal_float64_brute_force(rule: str, metric: str, order: str) -> None:
    points = make_points(metric, seed=1)
    tau = 0.25
    k = num_candidates(N, tau)
    # memory_bytes small enough for several ragged chunks
    index = build_partner_index(
        points, N, metric, tau=tau, order=order, rule=rule, memory_bytes=13 * N * 8 * 4, show_progress=False
    )
    assert index.candidates is not None and index.candidates.shape == (N, k)
    assert_same_sets(index.candidates, brute_keys(points, metric, rule, order), k)


@pytest.mark.parametrize("rule", ["centered", "mutual"])
def test_thresholds_give_the_same_sets_as_lists(rule: str) -> None:
    points = make_points("hyperbolic", seed=2)
    lists = build_partner_index(points, N, "hyperbolic", tau=0.3, rule=rule, show_progress=False)
    thresholds = build_partner_index(
        points, N, "hyperbolic", tau=0.3, rule=rule, representation="thresholds", show_progress=False
    )
    keys = brute_keys(points, "hyperbolic", rule, "farthest")
    members = thresholds.members(torch.arange(N))
    k = lists.candidates_per_example
    for i in range(N):
        got = set(torch.nonzero(members[i]).reshape(-1).tolist())
        assert got == set(lists.candidates[i].tolist()) or all(
            abs(keys[i, j] - torch.topk(keys[i], k).values.min()) < 1e-4
            for j in got ^ set(lists.candidates[i].tolist())
        )
    # Rejection sampling draws only members, never the anchor, and reaches all members of an anchor.
    g = torch.Generator().manual_seed(0)
    anchors = torch.full((4000,), 7, dtype=torch.long)
    drawn = thresholds.sample(anchors, g)
    assert set(drawn.tolist()) == set(torch.nonzero(members[7]).reshape(-1).tolist())


@pytest.mark.parametrize("rule", ["centered", "mutual"])
def test_sampled_search_meets_the_recall_target(rule: str) -> None:
    n = 3000
    points = make_points("hyperbolic", n=n, seed=3, d=16)
    exact = build_partner_index(points, n, "hyperbolic", tau=0.3, rule=rule, show_progress=False)
    sampled = build_partner_index(points, n, "hyperbolic", tau=0.3, rule=rule, sample_size=1000, show_progress=False)
    probe = torch.arange(0, n, 7)
    members = sampled.members(probe)
    exact_members = torch.zeros_like(members)
    exact_members[torch.arange(len(probe))[:, None], exact.candidates[probe].long()] = True
    recall = (members & exact_members).sum().item() / exact_members.sum().item()
    assert recall >= 0.99
    # The margin costs somewhat larger sets: z·sqrt((1−f)/(f·m)) = 12 % here on average, plus the sampling spread.
    assert members.sum(1).float().mean().item() <= 1.25 * exact.candidates_per_example


def test_moments_against_a_reference_sample_and_shards() -> None:
    points = make_points("hyperbolic", n=200, seed=4)
    d = brute_distances(points, "hyperbolic")
    mean, std = distance_moments(points, "hyperbolic")
    off = ~torch.eye(200, dtype=torch.bool)
    ref_mean = (d * off).sum(1) / 199
    assert torch.allclose(mean.double(), ref_mean, atol=1e-4)
    assert torch.allclose(std.double(), (((d - ref_mean[:, None]) ** 2) * off).sum(1).div(199).sqrt(), atol=1e-4)
    # Two shards give the full result; a reference sample excludes self where the example is in it.
    m1, _ = distance_moments(points, "hyperbolic", rows=range(77))
    m2, _ = distance_moments(points, "hyperbolic", rows=range(77, 200))
    assert torch.allclose(torch.cat([m1, m2]), mean)
    ref = reference_sample(200, size=50, seed=0)
    assert ref is not None and len(ref) == 50 and reference_sample(200, size=500) is None
    ms, _ = distance_moments(points, "hyperbolic", reference=ref)
    expected = torch.stack([d[i, ref][ref != i].mean() for i in range(200)])
    assert torch.allclose(ms.double(), expected, atol=1e-4)


def test_hub_robust_rules_remove_norm_driven_hubs() -> None:
    n = 1000
    points = make_points("hyperbolic", n=n, seed=5, d=16)
    labels = torch.arange(n) % 3
    stats = {
        rule: partner_statistics(
            build_partner_index(points, n, "hyperbolic", tau=0.3, rule=rule, show_progress=False), labels
        )
        for rule in ("paper", "centered", "mutual")
    }
    paper = stats["paper"]
    # The literal rule concentrates candidate slots on a few high-norm points and leaves half the set unused...
    assert paper["top1pct_slot_share"] > 2.5 * paper["random_top1pct_slot_share"]
    assert paper["k_occurrence_skewness"] > 0.5 and paper["distinct_candidate_share"] < 0.6
    # ...centring removes the norm effect: concentration at the random level, everyone a candidate...
    centered = stats["centered"]
    assert centered["top1pct_slot_share"] <= 1.3 * centered["random_top1pct_slot_share"]
    assert centered["distinct_candidate_share"] == 1.0
    # ...mutual proximity only in part (on these points; the suite measures both on real data).
    mutual = stats["mutual"]
    assert mutual["k_occurrence_skewness"] < paper["k_occurrence_skewness"]
    assert mutual["distinct_candidate_share"] > paper["distinct_candidate_share"] + 0.1
    for s in stats.values():
        assert s["random_same_label_share"] == pytest.approx((334 * 333 + 2 * 333 * 332) / (n * (n - 1)))


def test_degenerate_warning_flags_hubs_and_names_the_fix() -> None:
    from hf_dmix.partners import hubness_warning

    n = 1000
    points = make_points("hyperbolic", n=n, seed=5, d=16)
    paper = partner_statistics(build_partner_index(points, n, "hyperbolic", tau=0.3, show_progress=False))
    centered = partner_statistics(
        build_partner_index(points, n, "hyperbolic", tau=0.3, rule="centered", show_progress=False)
    )
    # 1 % of 1000 = 10 examples can hold at most 10 * 999 / (1000 * 300) = 3.33 % of the slots.
    most = 10 * 999 / (1000 * 300)
    expected = (paper["top1pct_slot_share"] - paper["random_top1pct_slot_share"]) / (
        most - paper["random_top1pct_slot_share"]
    )
    assert paper["hub_concentration"] == pytest.approx(expected)
    assert paper["hub_concentration"] > 0.5 > centered["hub_concentration"]
    warning = hubness_warning(paper, "paper")
    assert (
        warning is not None and "partner_rule='centered'" in warning and f"{paper['top1pct_slot_share']:.1%}" in warning
    )
    assert hubness_warning(centered, "centered") is None
    # Low coverage alone is degenerate too, and a hub-robust rule gets a different suggestion.
    sparse = {**centered, "distinct_candidate_share": 0.3}
    assert "larger tau" in hubness_warning(sparse, "centered")
    # Random partners are never degenerate.
    assert hubness_warning(partner_statistics(build_partner_index(points, n, "random", tau=0.3))) is None
