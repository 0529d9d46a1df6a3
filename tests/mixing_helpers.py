"""Forward helpers shared by the mixing tests of every modality (tests/test_mixing.py, tests/test_modalities.py)."""

from __future__ import annotations

import torch

from hf_dmix.mixing import HiddenStateMixer, unwrap_model

ATOL = 1e-5


def rows(batch: dict[str, torch.Tensor], sl: slice) -> dict[str, torch.Tensor]:
    return {k: v[sl] for k, v in batch.items()}


def logits_of(model, batch: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, **kwargs).logits


def mixed_logits(
    model, mixer: HiddenStateMixer, batch, site: int, ratio: float, num_anchors: int, anchors_only: bool = False
) -> torch.Tensor:
    with torch.no_grad(), mixer.mixing(site, ratio, num_anchors, anchors_only=anchors_only):
        return model(**batch).logits


def hook_counts(model) -> int:
    base = unwrap_model(model)
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in base.modules())


def assert_ratio_one_keeps_and_zero_swaps(model, batch: dict[str, torch.Tensor], num_anchors: int) -> None:
    """At every site, r = 1 leaves both halves of ``[anchors; partners]`` unchanged and r = 0 swaps them."""
    B = num_anchors
    plain_a, plain_p = logits_of(model, rows(batch, slice(0, B))), logits_of(model, rows(batch, slice(B, None)))
    assert not torch.allclose(plain_a, plain_p, atol=1e-3), "anchors and partners must be distinguishable"
    mixer = HiddenStateMixer(model).attach()
    for site in range(mixer.sentence_site + 1):
        keep = mixed_logits(model, mixer, batch, site, 1.0, B)
        torch.testing.assert_close(keep[:B], plain_a, atol=ATOL, rtol=0, msg=f"r=1 anchors, site {site}")
        torch.testing.assert_close(keep[B:], plain_p, atol=ATOL, rtol=0, msg=f"r=1 partners, site {site}")
        swap = mixed_logits(model, mixer, batch, site, 0.0, B)
        torch.testing.assert_close(swap[:B], plain_p, atol=ATOL, rtol=0, msg=f"r=0 anchors, site {site}")
        torch.testing.assert_close(swap[B:], plain_a, atol=ATOL, rtol=0, msg=f"r=0 partners, site {site}")
    mixer.detach()
