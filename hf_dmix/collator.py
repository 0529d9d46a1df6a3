"""``DMixDataCollator``: pads a batch and, for training batches, attaches one mixup partner per example.

What lives here: the collator, and :func:`training_collator`, which picks the one ``DMixTrainer`` trains with. The
collator is a plain dataclass with no model: it needs the model's processing class (for padding), the training
dataset (to fetch partners' features) and a :class:`~hf_dmix.partners.PartnerIndex` (to draw them). Text is padded
by the tokenizer; images (``pixel_values``) and fixed-size spectrograms are stacked; raw audio (``input_values`` of
different lengths) is padded by the feature extractor's ``pad`` (see :class:`FeaturePadder`).

Layout of a training batch of ``B`` anchors: every tensor has ``2B`` rows, anchors first, then their partners in
the same order, padded together to one length; ``dmix_partner_ids`` (``B`` ints) holds the partners' dataset
indices and marks the batch as one to mix. An example is an anchor when it carries the ``dmix_index`` column that
:class:`~hf_dmix.DMixTrainer` adds to the training set; evaluation examples don't, so evaluation batches are padded
and returned as they are.

The padding can be the user's own collator (``collate_fn``: ``default_data_collator``, ``DataCollatorWithPadding``,
any callable from a list of examples to a batch), which is what :class:`~hf_dmix.DMixTrainer` sets when a script
passes its own ``data_collator``: that collator builds the ``2B``-row batch from the anchors' and partners' features,
and this one only draws the partners and attaches their ids. A collator that drops, repeats or reorders rows cannot carry
a pair layout: every training batch it builds is checked row by row (``layout.py``) and such a batch is refused
(:class:`CollatorLayoutError`) before it reaches the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor

from .families import model_modality
from .layout import LABEL_KEYS, CollatorLayoutError, check_pair_layout  # noqa: F401  (the error: re-exported here)
from .partners import PartnerIndex

INDEX_COLUMN = "dmix_index"
PARTNER_IDS_KEY = "dmix_partner_ids"


@dataclass
class DMixDataCollator:
    """Pad examples and attach DMIX partners to training examples.

    Args:
        tokenizer: the model's processing class, which decides how a batch is padded (see :func:`make_padder`): a
            tokenizer pads like ``DataCollatorWithPadding``; an audio feature extractor (``Wav2Vec2FeatureExtractor``,
            ``ASTFeatureExtractor``, or a processor holding one) pads ``input_values`` and ``attention_mask`` with
            its ``pad``; anything else (an image processor, or ``None``) stacks features that all have one shape
            (``pixel_values``) and rejects examples of different lengths.
        train_dataset: random-access training set whose row ``i`` is the example with ``dmix_index == i``;
            partners' features are read from it. Set by ``DMixTrainer``.
        partner_index: candidate sets to draw partners from. Set by ``DMixTrainer`` when training starts.
        padding, max_length, pad_to_multiple_of, return_tensors: as in ``DataCollatorWithPadding``.
        seed: seed of the partner draws. Each process and each dataloader worker derives its own stream from it.
        index_column: name of the column that carries the dataset index of an anchor.
        collate_fn: the collator that turns a list of examples into a batch, in place of the padding chosen from
            ``tokenizer`` (then ``tokenizer``, ``padding``, ``max_length`` and ``pad_to_multiple_of`` are unused).
            ``DMixTrainer`` sets it to the ``data_collator`` a script passes. It receives the ``2B`` anchor and partner
            examples of a training batch (``dmix_index`` removed) and every evaluation batch as it is.

    Partner draws are counter-based: the ``b``-th training batch this collator draws for (``batches_drawn == b``)
    uses a generator seeded from ``(seed, b)``. Its whole state is therefore one integer, which ``DMixTrainer``
    stores in checkpoints and sets back on resume, so a resumed run draws exactly the partners the uninterrupted run
    would have drawn. (Inside dataloader workers the key also holds the worker's seed; see :meth:`_rng`.)
    """

    tokenizer: PreTrainedTokenizerBase | Any
    train_dataset: Any = None
    partner_index: PartnerIndex | None = None
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"
    seed: int = 0
    index_column: str = INDEX_COLUMN
    collate_fn: Callable[[list[dict[str, Any]]], Mapping[str, Any]] | None = None
    batches_drawn: int = field(default=0, init=False)
    _worker_key: Any = field(default=None, init=False, repr=False)
    _column_view: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.return_tensors != "pt":
            raise ValueError(
                f"DMixDataCollator returns PyTorch tensors only; got return_tensors={self.return_tensors!r}."
            )
        self._pad = self.collate_fn or make_padder(
            self.tokenizer, self.padding, self.max_length, self.pad_to_multiple_of
        )

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("DMixDataCollator received an empty batch.")
        if self.index_column not in features[0] or self.partner_index is None:
            return dict(self._pad([self._strip(f) for f in features]))

        anchors = torch.tensor([int(f[self.index_column]) for f in features], dtype=torch.long)
        partners = self.partner_index.sample(anchors, self._rng())
        self.batches_drawn += 1
        anchor_rows = [self._strip(f) for f in features]
        keys = list(anchor_rows[0])
        rows = anchor_rows + self._fetch(partners.tolist(), keys)
        # The padding gets copies: a collator may pop keys (the label) from the dicts it is given.
        batch = dict(self._pad([dict(r) for r in rows]))
        if self.collate_fn is not None:
            # Every batch: row count, labels and each passed-through feature row by row (layout.py; about a
            # millisecond for 64 rows of 128 ids). The re-collation probe — one more call of the script's collator,
            # for collators that compute every feature (tokenize) — on the first 8 batches and every 16th after.
            probe = self.batches_drawn <= 8 or self.batches_drawn % 16 == 0
            check_pair_layout(batch, rows, self.collate_fn, probe=probe)
        batch[PARTNER_IDS_KEY] = partners
        return batch

    def _strip(self, feature: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in feature.items() if k != self.index_column}

    def _fetch(self, ids: list[int], keys: list[str]) -> list[dict[str, Any]]:
        """Partners' features, restricted to the columns the anchors carry (the model's inputs and label)."""
        if self.train_dataset is None:
            raise RuntimeError("DMixDataCollator has a partner index but no train_dataset to fetch partners from.")
        dataset = self.train_dataset
        if hasattr(dataset, "column_names") and hasattr(dataset, "select"):
            # A datasets.Dataset: one columnar read for the whole batch is much faster than B row reads, and the
            # column-restricted view is built once (building it costs about a millisecond per batch otherwise).
            wanted = tuple(k for k in keys if k in dataset.column_names)
            cache = self._column_view
            if cache is None or cache[0] is not dataset or cache[1] != wanted:
                cache = self._column_view = (dataset, wanted, dataset.select_columns(list(wanted)))
            columns = cache[2][ids]
            return [{k: columns[k][i] for k in columns} for i in range(len(ids))]
        return [{k: v for k, v in dataset[i].items() if k in keys} for i in ids]

    def _rng(self) -> torch.Generator:
        """The generator of the next training batch's partner draws, seeded from ``(seed, batches_drawn)``.

        Dataloader workers hold copies of the collator: keyed on ``seed`` alone every worker would draw the same
        sequence. Inside a worker the key also holds ``worker.seed``, which torch derives from the main process's
        (Trainer-seeded) RNG per worker and per epoch, and the batch counter restarts with each new worker.
        """
        worker = torch.utils.data.get_worker_info()
        key = None if worker is None else (worker.id, worker.seed)
        if key != self._worker_key:
            self._worker_key = key
            if worker is not None:
                self.batches_drawn = 0
        entropy = [self.seed % 2**63, self.batches_drawn] + ([] if worker is None else [worker.seed % 2**63])
        # SeedSequence mixes the counter into well-separated 64-bit seeds (seed + b would make neighbouring
        # collator seeds share streams shifted by one batch).
        seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) % 2**63
        return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------- padding


def make_padder(
    processor: Any, padding: bool | str = True, max_length: int | None = None, pad_to_multiple_of: int | None = None
):
    """The function that turns a list of examples into a batch of PyTorch tensors, chosen by the processing class.

    A tokenizer gets ``DataCollatorWithPadding`` (text, unchanged); anything else a :class:`FeaturePadder`.
    """
    if isinstance(processor, PreTrainedTokenizerBase):
        return DataCollatorWithPadding(
            processor,
            padding=padding,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            return_tensors="pt",
        )
    return FeaturePadder(processor, padding=padding, max_length=max_length, pad_to_multiple_of=pad_to_multiple_of)


@dataclass
class FeaturePadder:
    """Batch image and audio examples (lists, NumPy arrays or tensors, as ``datasets`` or a torch dataset give them).

    * The model inputs a sequence feature extractor knows (``feature_extractor.model_input_names``, e.g.
      ``input_values`` and ``attention_mask`` for wav2vec2) are padded by its ``pad``, with its padding value,
      padding side and ``return_attention_mask`` default — exactly what its ``__call__`` does for a batch, so
      wav2vec2 checkpoints that take no attention mask get none. ``padding``, ``max_length`` and
      ``pad_to_multiple_of`` are passed on.
    * Every other feature (``pixel_values``, or everything when there is no sequence feature extractor) is stacked;
      examples whose shapes differ are rejected (they need a feature extractor to pad them).
    * ``label``/``label_ids`` become ``labels`` (long), as in ``DataCollatorWithPadding``. Floating-point features
      become float32 (a ``datasets`` column of Python floats reads as float64).

    ``processor`` may also be a processor (``ProcessorMixin``) with a ``feature_extractor`` attribute.
    """

    processor: Any = None
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        extractor = getattr(self.processor, "feature_extractor", self.processor)
        self.extractor = extractor if isinstance(extractor, SequenceFeatureExtractor) else None

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        keys = list(features[0])
        batch: dict[str, torch.Tensor] = {}
        padded_keys: list[str] = []
        # model_input_names: declared by each concrete feature extractor class, not by SequenceFeatureExtractor.
        names: list[str] = getattr(self.extractor, "model_input_names", [])
        if self.extractor is not None and names and names[0] in keys:
            padded_keys = [k for k in names if k in keys]
            padded = self.extractor.pad(
                [{k: _as_array(f[k]) for k in padded_keys} for f in features],
                padding=self.padding,
                max_length=self.max_length,
                pad_to_multiple_of=self.pad_to_multiple_of,
                return_tensors="pt",
            )
            batch.update({k: _float32(v) for k, v in padded.items()})
        for key in keys:
            if key in padded_keys:
                continue
            values = [_as_tensor(f[key]) for f in features]
            if key in LABEL_KEYS:
                batch["labels"] = torch.stack(values).long()
                continue
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(
                    f"Cannot batch {key!r}: the examples have different shapes {sorted(shapes)[:4]}. Pad them with the "
                    "model's processing class: pass processing_class=feature_extractor to DMixTrainer (or "
                    "DMixDataCollator(feature_extractor)), a tokenizer for text, or resize the inputs to one shape."
                )
            batch[key] = _float32(torch.stack(values))
        return batch


def training_collator(data_collator: Callable | None, processing_class: Any, model: Any) -> DMixDataCollator:
    """The collator ``DMixTrainer`` trains with, from the ``data_collator`` a script passes.

    A :class:`DMixDataCollator` is used as it is; any other collator builds the batches of one
    (``collate_fn=data_collator``); without one, a :class:`DMixDataCollator` pads with ``processing_class``, which a
    text ``model`` cannot do without (a ``ValueError`` says so).
    """
    if data_collator is None:
        if processing_class is None and model_modality(model) == "text":
            raise ValueError(
                "DMixTrainer needs a tokenizer to pad batches: pass processing_class=tokenizer, or a DMixDataCollator."
            )
        return DMixDataCollator(processing_class)
    if not isinstance(data_collator, DMixDataCollator):
        return DMixDataCollator(processing_class, collate_fn=data_collator)
    return data_collator


def _as_array(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(np.asarray(value))


def _float32(value: torch.Tensor) -> torch.Tensor:
    return value.float() if value.is_floating_point() else value
