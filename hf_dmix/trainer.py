"""``DMixTrainer``: a ``transformers.Trainer`` whose training loss is DMIX (paper eq. 1–4).

What lives here: a thin orchestrator of ``Trainer``'s hooks. At construction it checks the model and the data; when a
training loop starts — after ``model_init`` and a ``hyperparameter_search`` trial's settings, so both are what it sees
— it validates the settings, has the partner index built (or kept) and hooks the model; ``compute_loss`` runs one
forward pass through the (possibly DDP-wrapped) model over ``[anchors; partners]`` with the mixing hooks active.

What does not, and where it is: the partner index of the run (``indexer.py``: embeddings, search, statistics,
refresh — the only writer of the collator's index), the search (``partners.py``), the mixing hooks (``mixing.py``),
the (layer, ratio) schedule and the mixed loss (``loss.py``), checkpoints and resume (``checkpoint.py``, whose
``DMixCheckpointMixin`` holds the checkpoint hooks), stopping on
SIGTERM (``termination.py``), the model card and Hub hooks (``hub_mixin.py``), the family table and model checks
(``families.py``), training-set checks and the ``dmix_index`` column (``trainset.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, Trainer

from .checkpoint import DMixCheckpointMixin, whole_run_loss
from .collator import INDEX_COLUMN, PARTNER_IDS_KEY, DMixDataCollator, training_collator
from .config import DMixConfig, as_dmix_config
from .engines import check_engines, warn_compile_graph_breaks
from .families import (
    check_anchor_dominant,
    check_classifier,
    check_mixing_settings,
    load_classifier,
    num_layers,
    unwrap_model,
)
from .hub_mixin import DMixHubMixin
from .indexer import IndexInputs, PartnerIndexer, Sharding
from .loss import MixingSchedule, StepMetrics, cross_entropy, mixup_loss, resolve_mix_layers
from .mixing import HiddenStateMixer
from .partners import PartnerIndex
from .termination import StopOnTermination
from .tracking import PartnerIndexFeed, log_images
from .trainset import LABEL_COLUMNS, check_labels, check_train_dataset, data_key, labels_of, with_index


class DMixTrainer(DMixCheckpointMixin, DMixHubMixin, Trainer):
    """Trainer for DMIX: distance-constrained interpolative mixup for text, image and audio classification.

    A drop-in replacement for ``Trainer`` with a classification model: swap ``TrainingArguments`` for
    [`DMixConfig`] and ``Trainer`` for ``DMixTrainer``; the script's own data collator (or none: a
    [`DMixDataCollator`] is built from ``processing_class``) stays as it is.

    Args:
        model: a classifier of a supported family (optionally PEFT-wrapped): ``*ForSequenceClassification`` for text
            and wav2vec2/HuBERT, ``ViTForImageClassification``/``DeiTForImageClassification``,
            ``ASTForAudioClassification``; or a path / Hub id, loaded in float32 with the family's auto class.
        args: a [`DMixConfig`]. Defaults to ``DMixConfig("dmix-output")``.
        data_collator: a [`DMixDataCollator`]; built from ``processing_class`` when omitted. Any other collator
            (``default_data_collator``, ``DataCollatorWithPadding``, a function from examples to a batch) is wrapped:
            it builds each training batch from the anchors' and partners' examples (``2B`` rows), DMIX draws the
            partners and attaches their ids, and evaluation batches are its own. Each training batch it builds is
            checked row by row; one in which a row does not hold its own example (the collator dropped, added or
            reordered rows) is refused before it trains (:class:`~hf_dmix.collator.CollatorLayoutError`).
        train_dataset: map-style training set of model inputs (tokenized text, ``pixel_values``, or
            ``input_values`` [+ ``attention_mask``]) with a ``label`` (or ``labels``) column of class ids.
        eval_dataset, **kwargs: as for ``Trainer``.
        processing_class: pads the batches: a tokenizer for text, the feature extractor for raw audio
            (wav2vec2/HuBERT clips of different lengths); optional for images and AST spectrograms (stacked).
        sentence_embeddings: optional precomputed ``(len(train_dataset), d)`` embeddings for partner search; when
            given, no embedding pass is run.

    Attributes:
        resumed_checkpoint: the checkpoint folder the last ``train()`` resumed from (``None``: it started afresh).
    """

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | str | None = None,
        args: DMixConfig | None = None,
        data_collator: Callable | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        sentence_embeddings: torch.Tensor | np.ndarray | None = None,
        **kwargs: Any,
    ) -> None:
        args = as_dmix_config(args)
        if isinstance(model, str):
            model = load_classifier(model)
        if model is None and kwargs.get("model_init") is None:
            raise ValueError("DMixTrainer needs a model, or a model_init function (for hyperparameter_search).")
        self._mixing = args.mix_strategy != "none"
        if train_dataset is not None:
            check_train_dataset(train_dataset)
            train_dataset = with_index(train_dataset) if self._mixing else train_dataset
        data_collator = training_collator(data_collator, processing_class, model)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self._indexed_dataset = self.train_dataset if self._mixing else None
        self._link_collator()
        # Trainer built the model from model_init when none was given: check whichever model we now hold.
        self._check_model(self.model)
        self._checked_data: tuple | None = None  # data_key of the training set as last checked (see _prepare_dmix)
        if self.train_dataset is not None:
            check_labels(labels_of(self.train_dataset), unwrap_model(self.model).config.num_labels)
            self._checked_data = data_key(self.train_dataset)
        # We compute our own loss, averaged over the micro-batch: Trainer must divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._indexer = PartnerIndexer(sentence_embeddings, refresh_epochs=args.partner_refresh_epochs)
        check_engines(self.args, self._indexer.source(self.args), self._mixing)  # DeepSpeed/FSDP/compile (engines.py)
        warn_compile_graph_breaks(self.args, self.model)
        self.mixer = HiddenStateMixer(self.model) if self._mixing else None
        self._schedule = self._new_schedule()
        self._metrics = StepMetrics()
        self._index_feed = PartnerIndexFeed()  # the index's statistics, once per index, to report_to's trackers
        # Training batches with partners consumed by compute_loss in this run (the resume state; see checkpoint.py).
        self._dmix_batches = 0
        self._data_fingerprint: tuple[tuple, str] | None = None
        self._run_weights: str | None = None  # digest of the weights this run started from (the embeddings' model)
        self._loss_offset: tuple[float, int] | None = None  # (loss sum, steps) before the checkpoint resumed from
        self.resumed_checkpoint: str | None = None
        self._termination = StopOnTermination()
        self.add_callback(self._termination)
        self._tag_model()  # hub_mixin.py

    # ------------------------------------------------------------------ what the owners hold

    partner_index = property(lambda self: self._indexer.index, doc="The current partner index (``None``: none yet).")
    partner_index_stats = property(lambda self: self._indexer.stats, doc="Its hubness statistics (``hubness.py``).")
    partner_index_warning = property(lambda self: self._indexer.warning, doc="Its degenerate-index warning, or None.")
    partner_points = property(lambda self: self._indexer.points, doc="The points it was searched in (CPU), or None.")
    partner_refreshes = property(lambda self: self._indexer.refreshes, doc="One record per refresh of the last run.")
    stopped_by_signal = property(
        lambda self: self._termination.stopped_by_signal,
        doc="The signal that stopped the last ``train()`` early (``save_on_sigterm``), or ``None``.",
    )

    # ------------------------------------------------------------------ data plumbing

    def _set_signature_columns_if_needed(self) -> None:
        # Trainer drops every column the model's forward does not take; the collator needs the example index.
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and INDEX_COLUMN not in self._signature_columns:
            self._signature_columns.append(INDEX_COLUMN)

    def _link_collator(self) -> None:
        """When mixing, rows carry ``dmix_index`` (added here if a trial turned mixing on) and the collator reads
        partners from the training set; each process draws its own partners."""
        if self._mixing and self.train_dataset is not None and self.train_dataset is not self._indexed_dataset:
            self.train_dataset = self._indexed_dataset = with_index(self.train_dataset)
        a = self.args
        if self._mixing and not isinstance(self.data_collator, DMixDataCollator):  # replaced after construction
            self.data_collator = DMixDataCollator(self.processing_class, collate_fn=self.data_collator)
        collator = self.data_collator
        if isinstance(collator, DMixDataCollator):
            collator.train_dataset = self.train_dataset
            # Distinct partner draws per process; the (layer, ratio) stream is shared by all processes.
            collator.seed = a.seed + 1_000_003 * a.process_index

    def evaluation_loop(self, *args: Any, **kwargs: Any):
        """``Trainer.evaluation_loop`` (``evaluate`` and ``predict``) with partner attachment switched off.

        Rows of the training set carry the ``dmix_index`` column, so without this ``evaluate(train.select(...))``
        would collate ``2B``-row batches whose partner rows enter the loss, metrics and predictions. Evaluation runs
        the plain forward on exactly the rows it was given, whatever dataset that is.
        """
        self._disarm()  # a compute_loss called by hand before leaves its step's mixing armed (see compute_loss)
        with self._indexer.suspended(self.data_collator):
            return super().evaluation_loop(*args, **kwargs)

    # ------------------------------------------------------------------ partner index (owned by self._indexer)

    def _index_inputs(self) -> IndexInputs:
        self._set_signature_columns_if_needed()
        a = self.args
        return IndexInputs(
            args=a,
            dataset=self.train_dataset,
            model=self.model,
            collate=self.data_collator,
            feature_columns=set(self._signature_columns or ()) - {INDEX_COLUMN} if a.remove_unused_columns else None,
            sharding=Sharding(a.world_size, a.process_index, lambda t: self.accelerator.gather(t.to(a.device))),
            device=a.device,
            show_progress=self.is_local_process_zero() and not a.disable_tqdm,
            weights=self._run_weights,
        )

    def compute_sentence_embeddings(self) -> torch.Tensor:
        """``(N, d)`` float32 embeddings of the training set, row ``i`` for example ``i``.

        In order of preference: the ``sentence_embeddings`` given to ``__init__``; the encoder named by
        ``args.embedding_model`` over ``args.embedding_text_column``; the model being fine-tuned (its current
        weights — before training, the pretrained ones) over the tokenized features.
        """
        return self._indexer.embed(self._index_inputs())

    def build_partner_index(self) -> PartnerIndex:
        """Embed the training set, map it into the chosen space and select every example's top-τ candidates.

        Called when training starts; call it yourself to inspect the candidate sets first. Logs how many candidates
        each example has and how concentrated the candidate sets are (see :func:`~hf_dmix.partners.partner_statistics`).
        """
        index = self._indexer.build(self._index_inputs())
        self._indexer.publish(self.data_collator)
        return index

    def index_settings(self) -> tuple:
        """Everything the partner index depends on: the training set, the embeddings' source (the model's weights)
        and every setting of ``config.INDEX_FIELDS``. ``train()`` rebuilds the index whenever this changes, e.g.
        between ``hyperparameter_search`` trials; an unchanged key reuses the index (and its embeddings)."""
        return self._indexer.index_key(self._index_inputs())

    def refresh_partner_index(self, epoch: int) -> dict[str, float]:
        """Embed the training set with the model as trained so far and rebuild the partner index from it.

        Called at the start of every ``partner_refresh_epochs``-th epoch (before that epoch's batches are drawn).
        Returns and logs its record: the epoch, the seconds it took and, for candidate lists, the share of each
        anchor's candidates that stayed (``1`` = nothing changed).
        """
        self._disarm()  # the last step's mixing stays armed for gradient checkpointing: disarm it
        record = self._indexer.refresh(self._index_inputs(), epoch)
        self._indexer.publish(self.data_collator)
        return record

    def plot_partner_index(self, output_dir: str | None = None, max_points: int = 5000) -> dict[str, str]:
        """Draw the current partner index: ``partners.png`` (the training set in the Poincaré disk, coloured by
        label, with the hubs and one anchor's candidates; see :func:`hf_dmix.plot_partners`) and
        ``k_occurrence.png`` (:func:`hf_dmix.plot_k_occurrence`), in ``output_dir`` (default ``args.output_dir``).

        Returns the paths written, by name; ``{}`` when there is nothing to draw (no mixing, random partners or
        ``tau = 1``) or on processes other than the main one. The pictures also go to the run's trackers that take
        images (``report_to``: TensorBoard, trackio; ``tracking.py``) as ``dmix/partners`` and ``dmix/k_occurrence``.
        """
        if not self.is_world_process_zero():
            return {}
        id2label = getattr(unwrap_model(self.model).config, "id2label", None) or {}
        output_dir = output_dir or self.args.output_dir
        assert output_dir is not None  # TrainingArguments.__post_init__ sets its default
        plots = self._indexer.plot(output_dir, self.args, labels_of(self.train_dataset), id2label, max_points)
        log_images(self, plots)
        return plots

    # ------------------------------------------------------------------ the training loop

    def train(self, *args: Any, **kwargs: Any):
        """``Trainer.train``; the partner index is built (or reused) and the hooks attached when the loop starts.

        That happens inside the loop, after ``Trainer`` has created this trial's model (``model_init``) and applied
        this trial's hyperparameters (``hyperparameter_search``), so both are what the index and the hooks see.

        ``resume_from_checkpoint=True`` resumes from the last *complete* checkpoint of ``output_dir`` (folders a kill
        left half-written are skipped with a warning); the checkpoint used is logged and kept as
        ``resumed_checkpoint``. The DMIX streams continue from the checkpoint's ``dmix_state.json``, a checkpoint of
        other data or DMIX settings is refused (:class:`~hf_dmix.checkpoint.ResumeMismatchError`), and the reported
        ``train_loss`` is the mean over the whole run, steps before the checkpoint included.
        """
        self._indexer.reset()
        self._index_feed.reset()
        self._run_weights, self._loss_offset = None, None
        args, kwargs = self._resolve_resume_arguments(args, kwargs)  # checkpoint.py
        restore = self._termination.catch(self.args.save_on_sigterm)
        try:
            result = super().train(*args, **kwargs)
        finally:
            restore()
            self._run_weights = None
            if self.mixer is not None:
                self.mixer.detach()
        return self._whole_run_output(result)  # log() made metrics["train_loss"] the whole run's

    def _inner_training_loop(self, *args: Any, **kwargs: Any):
        self._prepare_dmix()
        self._start_dmix_streams(kwargs.get("resume_from_checkpoint"))
        return super()._inner_training_loop(*args, **kwargs)

    def _prepare_dmix(self) -> None:
        """Validate this run's settings, (re)build the partner index if they changed, hook the current model."""
        self.args.validate_dmix_settings()
        self._mixing = self.args.mix_strategy != "none"
        check_engines(self.args, self._indexer.source(self.args), self._mixing)
        self._check_model(self.model)
        if self.train_dataset is not None and data_key(self.train_dataset) != self._checked_data:
            # Replaced or changed since it was checked (trainer.train_dataset = other): check it as __init__ did.
            check_train_dataset(self.train_dataset)
            check_labels(labels_of(self.train_dataset), unwrap_model(self.model).config.num_labels)
            self._link_collator()
            self._checked_data = data_key(self.train_dataset)
        if self.mixer is not None and self.mixer.base is not unwrap_model(self.model):
            self.mixer.detach()  # a model_init trial replaced the model: hook the new one
            self.mixer = None
        if not self._mixing or self.train_dataset is None:
            self._indexer.publish(self.data_collator, active=False)  # plain batches: no partners, nothing mixes
            return
        self._link_collator()
        self.mixer = self.mixer or HiddenStateMixer(self.model)
        if self._run_weights is None:
            self._run_weights = self._starting_weights()  # resuming: the checkpoint's run's (checkpoint.py)
        self._indexer.ensure(self._index_inputs())
        self._indexer.publish(self.data_collator)
        self.mixer.attach()

    def _check_model(self, model: nn.Module) -> None:
        """Family, head and layer checks of the model DMIX will hook into (again for each ``model_init`` model)."""
        check_classifier(model)
        if self._mixing:
            check_mixing_settings(model, self.args.mix_strategy)
        self.num_encoder_layers = num_layers(model)
        self.mix_layers = resolve_mix_layers(self.args.mix_layers, self.num_encoder_layers)
        check_anchor_dominant(self.args.anchor_dominant, model)

    def _run_epoch(self, *args: Any, **kwargs: Any):
        epoch = kwargs.get("epoch")
        if self._mixing and epoch is not None and self._indexer.refresh_due(epoch, self.args.partner_refresh_epochs):
            self.refresh_partner_index(epoch)
        return super()._run_epoch(*args, **kwargs)

    # ------------------------------------------------------------------ loss (loss.py)

    def _new_schedule(self) -> MixingSchedule:
        a = self.args
        return MixingSchedule(a.mix_strategy, self.mix_layers, self.num_encoder_layers, a.mix_alpha, a.seed)

    def sample_mixing(self) -> tuple[int, float]:
        """Draw the mixing site and ratio of one step: ``k`` uniform over the mix layers, ``r ~ Beta(α, α)``."""
        return self._schedule.draw()

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """Mixup loss on training batches with partners; plain cross-entropy (and no mixing) otherwise.

        The mixing it arms lasts until its training step ends (:meth:`training_step`: the backward, which recomputes
        the mixed forward under gradient checkpointing, included); called by hand, until the next ``compute_loss``,
        ``evaluate`` or ``predict``.
        """
        inputs = dict(inputs)
        partner_ids = inputs.pop(PARTNER_IDS_KEY, None)
        labels = next((inputs.pop(key) for key in LABEL_COLUMNS if key in inputs), None)
        smoothing = self.args.label_smoothing_factor
        self._disarm()  # a previous step's state must never leak into this forward
        if partner_ids is None or self.mixer is None or not model.training:
            outputs = model(**inputs)
            loss = None if labels is None else cross_entropy(outputs.logits, labels, smoothing)
            return (loss, outputs) if return_outputs else loss
        if labels is None:
            raise ValueError("DMIX training batches need labels; the collator produced a batch without them.")
        num_anchors = partner_ids.shape[0]
        site, ratio = self.sample_mixing()
        self._dmix_batches += 1  # consumed (the collator may have drawn further ahead): the resume counter
        anchors_only = bool(self.args.anchor_dominant)
        if anchors_only:
            ratio = max(ratio, 1.0 - ratio)
        # Stays armed through the backward, so that gradient-checkpointing recomputation mixes identically.
        self.mixer.activate(site, ratio, num_anchors, anchors_only=anchors_only)
        outputs = model(**inputs)
        loss = mixup_loss(outputs.logits, labels, ratio, num_anchors, anchors_only, smoothing)
        self._metrics.record(site, ratio, labels, num_anchors)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``Trainer.training_step`` (``compute_loss``, then the backward); the mixing is disarmed when it ends, so
        nothing after it — callbacks, ``evaluate``/``predict``, a script's own forward — ever mixes."""
        try:
            return super().training_step(*args, **kwargs)
        finally:
            self._disarm()

    def _disarm(self) -> None:
        if self.mixer is not None:
            self.mixer.deactivate()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averages of the DMIX step metrics since the last log, and a new partner index's statistics, to
        training logs (so every ``report_to`` tracker receives them); after a resume, make the final ``train_loss`` the
        mean over the whole run (``Trainer`` averages the resumed steps only)."""
        self._metrics.flush_into(logs)
        self._index_feed.flush_into(logs, self.partner_index_stats)
        if "train_loss" in logs and self._loss_offset is not None:
            logs["train_loss"] = whole_run_loss(logs["train_loss"], self.state.global_step, self._loss_offset)
        super().log(logs, start_time)
