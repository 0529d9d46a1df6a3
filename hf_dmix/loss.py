"""The DMIX loss of one training step: where and how much to mix (the schedule), and the mixed cross-entropy.

What lives here: :class:`MixingSchedule`, the stream of per-step draws — the mixing site ``k`` (uniform over the mix
layers for ``mix_strategy="hidden"``, paper Sec. 3) and the ratio ``r ~ Beta(α, α)`` (eq. 2) — whose whole state is one
NumPy bit-generator state (``state_dict`` / ``load_state_dict``, stored in checkpoints); :func:`mixup_loss`, the
interpolated label's cross-entropy ``r·CE(y_i) + (1 − r)·CE(y_j)`` in float32; and :class:`StepMetrics`, the
``dmix/*`` figures averaged into the training logs. What does not: the hooks that mix (``mixing.py``), the partners
(``partners.py``, ``collator.py``).

Row layout (``mixing.py``): a batch of ``B`` anchors has ``2B`` rows, ``[anchors; partners]``. Row ``b < B`` mixes
anchor ``b`` (weight ``r``) with its partner; row ``B + b`` is the same pair at ratio ``1 − r``. Under
``anchor_dominant`` only the ``B`` anchor-dominant rows are trained, at ``r' = max(r, 1 − r)``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def resolve_mix_layers(mix_layers: list[int] | None, num_layers: int) -> list[int]:
    """The encoder layers ``k`` is drawn from: ``mix_layers`` (checked against the model's ``N``), or all of them."""
    if mix_layers is None:
        return list(range(1, num_layers + 1))
    bad = [k for k in mix_layers if not 1 <= k <= num_layers]
    if bad:
        raise ValueError(
            f"mix_layers {bad} out of range: this model has {num_layers} encoder layers, so layers 1..{num_layers} "
            "are accepted (use mix_strategy='input' to mix the embedding output)."
        )
    return list(mix_layers)


class MixingSchedule:
    """The (site, ratio) draws of successive training steps, from one seeded NumPy generator.

    Args:
        strategy: ``hidden`` (a site drawn from ``mix_layers``), ``input`` (site 0) or ``sentence`` (site ``N+1``).
        mix_layers: the 1-based encoder layers of ``hidden`` mixing.
        num_layers: ``N``.
        alpha: ``r ~ Beta(alpha, alpha)``.
        seed: the generator's seed (``args.seed``: the same stream on every process).
        anchor_dominant: draws are reported as ``max(r, 1 − r)`` (see :meth:`sample`).
    """

    def __init__(
        self,
        strategy: str,
        mix_layers: list[int],
        num_layers: int,
        alpha: float,
        seed: int,
        anchor_dominant: bool = False,
    ) -> None:
        self.strategy, self.mix_layers, self.num_layers = strategy, list(mix_layers), num_layers
        self.alpha, self.anchor_dominant = alpha, anchor_dominant
        self.rng = np.random.default_rng(seed)

    def draw(self) -> tuple[int, float]:
        """One step's raw draw: ``k`` uniform over the mix layers (one draw, ``hidden`` only), then ``r``."""
        if self.strategy == "input":
            site = 0
        elif self.strategy == "sentence":
            site = self.num_layers + 1
        else:
            site = int(self.rng.choice(self.mix_layers))
        return site, float(self.rng.beta(self.alpha, self.alpha))

    def state_dict(self) -> dict[str, Any]:
        """The generator's full bit-generator state (JSON-serialisable)."""
        return dict(self.rng.bit_generator.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy in float32 even under bf16/fp16 autocast: log-softmax of half-precision logits loses the
    small losses."""
    return F.cross_entropy(logits.float(), labels.long(), label_smoothing=float(label_smoothing or 0.0))


def mixup_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ratio: float,
    num_anchors: int,
    anchors_only: bool = False,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``r·CE(y_own) + (1 − r)·CE(y_pair)``: the cross-entropy of the interpolated label (paper eq. 2 on labels).

    ``labels`` has ``2B`` rows (anchors', then partners'). Without ``anchors_only`` every row of ``logits`` is a mixed
    example: row ``b`` with its own label at weight ``r`` and its pair's (``labels`` rolled by ``B``) at ``1 − r``.
    With ``anchors_only`` only the first ``B`` logits are trained (the model returns ``B`` rows, or ``2B`` when the
    site is the last layer), against the anchors' labels at ``r`` and the partners' at ``1 − r``.
    """
    logits = logits.float()
    if anchors_only:
        logits = logits[:num_anchors]
        own, pair = labels[:num_anchors], labels[num_anchors:]
    else:
        own, pair = labels, labels.roll(num_anchors, dims=0)
    return ratio * cross_entropy(logits, own, label_smoothing) + (1.0 - ratio) * cross_entropy(
        logits, pair, label_smoothing
    )


class StepMetrics:
    """``dmix/mix_layer``, ``dmix/ratio`` and ``dmix/partner_same_label`` of each step, averaged at each log."""

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = defaultdict(list)

    def record(self, site: int, ratio: float, labels: torch.Tensor, num_anchors: int) -> None:
        self._values["dmix/mix_layer"].append(float(site))
        self._values["dmix/ratio"].append(ratio)
        same = (labels[:num_anchors] == labels[num_anchors:]).float().mean()
        self._values["dmix/partner_same_label"].append(float(same))

    def flush_into(self, logs: dict[str, float]) -> None:
        """Add the averages since the last flush to ``logs`` (training logs only: those with a ``loss``)."""
        if self._values and "loss" in logs:
            for key, values in self._values.items():
                logs[key] = round(sum(values) / len(values), 4)
            self._values.clear()
