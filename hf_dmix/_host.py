"""``TrainerHost``: what ``DMixTrainer`` provides to its mixins, stated once for the type checker.

The mixins (``checkpoint.DMixCheckpointMixin``, ``hub_mixin.DMixHubMixin``) read attributes and call methods that
only ``DMixTrainer`` (``trainer.py``) defines. Under ``TYPE_CHECKING`` they derive from this ``Trainer`` subclass that
declares them; at run time ``TrainerHost`` is ``object``, so the mixins are plain classes and ``DMixTrainer`` puts
``Trainer`` after them. Nothing here is imported at run time but that name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn
    from transformers import Trainer

    from .config import DMixConfig
    from .indexer import IndexInputs, PartnerIndexer
    from .loss import MixingSchedule
    from .partners import PartnerIndex

    class TrainerHost(Trainer):
        """What ``DMixTrainer`` provides to its mixins (``checkpoint.py``'s and ``hub_mixin.py``'s)."""

        args: DMixConfig
        model: nn.Module  # Trainer.__init__ has a model (given, or built by model_init) or raises
        train_dataset: Any  # a datasets.Dataset (check_train_dataset: sized, indexable) or None
        mix_layers: list[int]
        num_encoder_layers: int
        _mixing: bool
        _indexer: PartnerIndexer
        _schedule: MixingSchedule
        _dmix_batches: int
        _loss_offset: tuple[float, int] | None
        _data_fingerprint: tuple[tuple, str] | None
        _run_weights: str | None
        resumed_checkpoint: str | None

        @property
        def partner_index(self) -> PartnerIndex | None: ...
        @property
        def partner_index_stats(self) -> dict[str, float]: ...
        def _prepare_dmix(self) -> None: ...
        def _index_inputs(self) -> IndexInputs: ...
        def _new_schedule(self) -> MixingSchedule: ...
else:
    TrainerHost = object  # at run time the mixins are plain classes; DMixTrainer puts Trainer after them
