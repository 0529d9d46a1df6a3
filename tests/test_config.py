"""``DMixConfig``'s groups of settings, defined once: what the index depends on, what a resume checks, what took effect."""

from __future__ import annotations

import pytest

from hf_dmix.config import (
    BALL_FIELDS,
    DMIX_FIELDS,
    EFFECTIVE_FIELDS,
    EMBEDDING_FIELDS,
    INDEX_FIELDS,
    MIXING_FIELDS,
    PARTNER_FIELDS,
    RESOURCE_FIELDS,
    RESUME_FIELDS,
    SEARCH_FIELDS,
    DMixConfig,
)


def _config(tmp_path, **kw) -> DMixConfig:
    return DMixConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kw)


def test_every_dmix_setting_is_in_exactly_one_group():
    groups = (
        MIXING_FIELDS,
        PARTNER_FIELDS,
        BALL_FIELDS,
        EMBEDDING_FIELDS,
        SEARCH_FIELDS,
        RESOURCE_FIELDS,
        ("partner_refresh_epochs",),
    )
    grouped = [name for group in groups for name in group]
    assert sorted(grouped) == sorted(DMIX_FIELDS)
    assert len(grouped) == len(set(grouped))
    # The index depends on every partner, ball, embedding and search setting and on the seed; a resume also on the
    # mixing streams and the refresh; settings of how the work is done change neither.
    assert set(INDEX_FIELDS) == {*PARTNER_FIELDS, *BALL_FIELDS, *EMBEDDING_FIELDS, *SEARCH_FIELDS, "seed"}
    assert set(RESUME_FIELDS) >= set(INDEX_FIELDS) | {
        "mix_strategy",
        "mix_alpha",
        "anchor_dominant",
        "partner_refresh_epochs",
    }
    assert "partner_index_max_mb" in RESUME_FIELDS and not set(RESOURCE_FIELDS) & set(RESUME_FIELDS)


def test_effective_settings_hold_what_took_effect(tmp_path):
    settings = _config(tmp_path, partner_refresh_epochs=2).effective_dmix_settings()
    # Without a separate encoder its text column and length cannot have shaped the run.
    assert list(settings) == [
        f
        for f in EFFECTIVE_FIELDS
        if f not in ("embedding_text_column", "embedding_text_pair_column", "embedding_max_length")
    ]
    assert {"partner_search", "partner_search_sample_size", "partner_index_max_mb", "embedding_pooling"} <= set(
        settings
    )
    assert settings["partner_refresh_epochs"] == 2 and settings["tau"] == 0.3 and settings["mix_layers"] is None
    assert _config(tmp_path, mix_strategy="none").effective_dmix_settings() == {"mix_strategy": "none"}
    mixup = _config(tmp_path, partner_distance="random", mix_strategy="sentence").effective_dmix_settings()
    assert set(mixup) == {"mix_strategy", "mix_alpha", "anchor_dominant", "partner_distance", "tau"}
    cosine = _config(tmp_path, partner_distance="cosine").effective_dmix_settings()
    assert not set(BALL_FIELDS) & set(cosine) and cosine["partner_refresh_epochs"] == 0


def test_partner_search_settings_follow_the_config(tmp_path):
    search = _config(
        tmp_path, tau=0.2, partner_index_max_mb=3, partner_search="sampled", seed=9
    ).partner_search_settings()
    assert (search.tau, search.mode, search.max_list_bytes, search.seed) == (0.2, "sampled", 3 * 2**20, 9)
    assert search.sample_size == search.moment_reference_size == 16384
    assert search.is_sampled(10) and not _config(tmp_path).partner_search_settings().is_sampled(200_000)
    assert _config(tmp_path).partner_search_settings().is_sampled(200_001)  # "auto" above 200,000 examples
    with pytest.raises(ValueError, match=r"tau=0\.02 asks for 0\.78 candidate partners"):
        _config(tmp_path, tau=0.02).partner_search_settings().check_candidate_count(40)
