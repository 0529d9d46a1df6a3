"""Hubness statistics (``hf_dmix.hubness``): a threshold index is described as the lists of the same points are."""

from __future__ import annotations

import pytest
import torch

from hf_dmix.partners import build_partner_index, hubness_warning, partner_statistics

KEYS = ("distinct_candidate_share", "top1pct_slot_share", "k_occurrence_skewness", "same_label_share")


def _both(n: int, tau: float, rule: str, seed: int = 0):
    points = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(n) % 3
    common = dict(tau=tau, rule=rule, show_progress=False)
    lists = build_partner_index(points, n, "euclidean", **common)
    thresholds = build_partner_index(points, n, "euclidean", representation="thresholds", **common)
    return partner_statistics(lists, labels), partner_statistics(thresholds, labels)


def test_threshold_statistics_of_a_small_set_equal_the_lists():
    """Up to STATISTICS_SAMPLE_SIZE examples every candidate is counted over every anchor: exactly the lists' figures.

    (Seed 2 has no near-tie at the τ cut; a threshold set also admits keys within a 1e-5 slack of the k-th one.)
    """
    lists, thresholds = _both(600, 0.05, "centered", seed=2)
    assert "estimated_from_examples" not in thresholds
    for key in (*KEYS, "hub_concentration", "random_top1pct_slot_share", "random_k_occurrence_skewness"):
        assert thresholds[key] == pytest.approx(lists[key], abs=1e-9), key


def test_threshold_statistics_of_a_large_set_estimate_the_lists_and_warn_alike():
    """Above it, the sampled candidates are counted over every anchor, so coverage is not underestimated.

    With k = 2 of 2,999 others, counting memberships over 1,024 sampled *anchors* (before issue 14) found 36.7 % of the
    set ever a candidate and called the index degenerate, while the lists of the same points cover 56.6 %.
    """
    lists, thresholds = _both(3000, 0.0006, "centered")
    assert lists["candidates_per_example"] == thresholds["candidates_per_example"] == 2
    assert lists["distinct_candidate_share"] == pytest.approx(0.566, abs=0.001)
    assert thresholds["distinct_candidate_share"] == pytest.approx(lists["distinct_candidate_share"], abs=0.03)
    assert thresholds["same_label_share"] == pytest.approx(lists["same_label_share"], abs=0.03)
    assert thresholds["top1pct_slot_share"] == pytest.approx(lists["top1pct_slot_share"], rel=0.35)
    assert thresholds["k_occurrence_skewness"] == pytest.approx(lists["k_occurrence_skewness"], abs=0.3)
    assert hubness_warning(lists, "centered") is None
    assert hubness_warning(thresholds, "centered") is None
    assert thresholds["estimated_from_examples"] == 2048
