"""``hf_dmix.loss``: the (layer, ratio) schedule and the mixed loss, with literal inputs (no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_dmix.loss import MixingSchedule, StepMetrics, mixup_loss, resolve_mix_layers

# Two anchors (rows 0-1) and their partners (rows 2-3), three classes.
LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, -1.0, 0.0]])
LABELS = torch.tensor([0, 1, 2, 0])


def _soft_target_ce(logits, targets):
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def test_mixup_loss_is_the_cross_entropy_of_the_interpolated_label():
    r = 0.7
    onehot = F.one_hot(LABELS, 3).float()
    # Row b: r on its own label, 1 − r on its pair's (row b ± 2).
    targets = r * onehot + (1 - r) * onehot.roll(2, dims=0)
    torch.testing.assert_close(mixup_loss(LOGITS, LABELS, r, 2), _soft_target_ce(LOGITS, targets))
    # The pair really is rolled by B: anchor 0 is mixed with partner row 2 (label 2), not with row 1.
    assert targets[0].tolist() == pytest.approx([0.7, 0.0, 0.3])


def test_anchor_dominant_loss_reads_the_anchor_rows_only():
    r = 0.8
    onehot = F.one_hot(LABELS, 3).float()
    targets = r * onehot[:2] + (1 - r) * onehot[2:]
    for logits in (LOGITS[:2], LOGITS):  # B rows, or 2B when the site was the last layer
        torch.testing.assert_close(
            mixup_loss(logits, LABELS, r, 2, anchors_only=True), _soft_target_ce(LOGITS[:2], targets)
        )


def test_label_smoothing_and_half_precision_logits():
    r, eps = 0.6, 0.1
    onehot = F.one_hot(LABELS, 3).float()
    smooth = onehot * (1 - eps) + eps / 3
    targets = r * smooth + (1 - r) * smooth.roll(2, dims=0)
    torch.testing.assert_close(mixup_loss(LOGITS, LABELS, r, 2, label_smoothing=eps), _soft_target_ce(LOGITS, targets))
    loss = mixup_loss(LOGITS.half(), LABELS, r, 2)
    assert loss.dtype == torch.float32  # computed in float32 from half-precision logits


def test_schedule_draws_the_layer_then_the_ratio_from_one_seeded_generator():
    schedule = MixingSchedule("hidden", [1, 2, 3], 3, alpha=0.4, seed=5)
    reference = np.random.default_rng(5)
    for _ in range(20):
        site = int(reference.choice([1, 2, 3]))
        ratio = float(reference.beta(0.4, 0.4))
        assert schedule.draw() == (site, ratio)
    # The whole state is the bit generator's: a restored schedule continues the stream exactly.
    saved = json.loads(json.dumps(schedule.state_dict()))
    ahead = [schedule.draw() for _ in range(5)]
    restored = MixingSchedule("hidden", [1, 2, 3], 3, alpha=0.4, seed=0)
    restored.load_state_dict(saved)
    assert [restored.draw() for _ in range(5)] == ahead


def test_input_and_sentence_sites_draw_only_the_ratio():
    for strategy, site in (("input", 0), ("sentence", 7)):
        schedule = MixingSchedule(strategy, [1, 2], 6, alpha=0.2, seed=1)
        assert schedule.draw() == (site, float(np.random.default_rng(1).beta(0.2, 0.2)))


def test_mix_layers_are_checked_against_the_model():
    assert resolve_mix_layers(None, 4) == [1, 2, 3, 4]
    assert resolve_mix_layers([2, 4], 4) == [2, 4]
    with pytest.raises(ValueError, match=r"mix_layers \[5\] out of range: this model has 4 encoder layers"):
        resolve_mix_layers([1, 5], 4)


def test_step_metrics_are_averaged_into_training_logs_only():
    metrics = StepMetrics()
    metrics.record(2, 0.75, torch.tensor([0, 1, 0, 0]), 2)
    metrics.record(4, 0.25, torch.tensor([1, 1, 1, 1]), 2)
    evaluation = {"eval_loss": 1.0}
    metrics.flush_into(evaluation)
    assert evaluation == {"eval_loss": 1.0}
    logs = {"loss": 0.5}
    metrics.flush_into(logs)
    assert logs == {"loss": 0.5, "dmix/mix_layer": 3.0, "dmix/ratio": 0.5, "dmix/partner_same_label": 0.75}
    again = {"loss": 0.4}
    metrics.flush_into(again)
    assert again == {"loss": 0.4}  # cleared at each log
