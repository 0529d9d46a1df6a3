"""``DMixTrainer``: a ``transformers.Trainer`` whose training loss is DMIX (paper eq. 1–4).

What lives here: checking the model and data before training, building the partner index when ``train()`` starts,
and ``compute_loss`` — one forward pass through the (possibly DDP-wrapped) model over ``[anchors; partners]`` with
the mixing hooks of ``mixing.py`` active, and the mixup loss ``r·CE(y_i) + (1−r)·CE(y_j)`` in float32.

What does not: geometry, partner selection, padding and the hooks themselves (their own modules).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, IterableDataset
from transformers import AutoModelForSequenceClassification, PreTrainedModel, Trainer, TrainerCallback
from transformers.utils import logging

from .checkpoint import (
    DMIX_STATE_NAME,
    REFRESH_EMBEDDINGS_NAME,
    ResumeMismatchError,
    read_tensor,
    write_tensor,
    dataset_fingerprint,
    fingerprint_differences,
    index_digest,
    last_complete_checkpoint,
    read_state,
    write_state,
)
from .collator import INDEX_COLUMN, PARTNER_IDS_KEY, DMixDataCollator
from .config import AUTO_EXACT_MAX_EXAMPLES, DMixConfig
from .embeddings import embed_batches, embed_texts, iter_feature_batches
from .geometry import to_poincare_ball
from .mixing import _FAMILIES, HiddenStateMixer, check_mixing_settings, num_layers, resolve_family, unwrap_model
from .partners import (
    PartnerIndex,
    candidate_overlap,
    distance_moments,
    hubness_warning,
    num_candidates,
    partner_statistics,
    reference_sample,
    threshold_index,
    top_tau_candidates,
    top_tau_thresholds,
)

logger = logging.get_logger(__name__)

LABEL_COLUMNS: tuple[str, ...] = ("labels", "label", "label_ids")
# Above this many examples the hyperbolic-vs-cosine overlap diagnostic (a second partner search) is skipped.
_OVERLAP_MAX_EXAMPLES = 200_000


class _IndexedDataset(Dataset):
    """A map-style dataset whose items also carry their position as ``dmix_index``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], INDEX_COLUMN: i}


class DMixTrainer(Trainer):
    """Trainer for DMIX: distance-constrained interpolative mixup for text, image and audio classification.

    A drop-in replacement for ``Trainer`` with a classification model: swap ``TrainingArguments`` for
    [`DMixConfig`], ``DataCollatorWithPadding`` (or the default collator) for [`DMixDataCollator`] (or pass none: it
    is built from ``processing_class``) and ``Trainer`` for ``DMixTrainer``.

    Args:
        model: a classifier of a supported family (optionally PEFT-wrapped): ``*ForSequenceClassification`` for text
            and wav2vec2/HuBERT, ``ViTForImageClassification``/``DeiTForImageClassification``,
            ``ASTForAudioClassification``; or a path / Hub id, loaded in float32 with the family's auto class.
        args: a [`DMixConfig`]. Defaults to ``DMixConfig("dmix-output")``.
        data_collator: a [`DMixDataCollator`]; built from ``processing_class`` when omitted.
        train_dataset: map-style training set of model inputs (tokenized text, ``pixel_values``, or
            ``input_values`` [+ ``attention_mask``]) with a ``label`` (or ``labels``) column of class ids.
        eval_dataset, **kwargs: as for ``Trainer``.
        processing_class: pads the batches: a tokenizer for text, the feature extractor for raw audio
            (wav2vec2/HuBERT clips of different lengths); optional for images and AST spectrograms (stacked).
        sentence_embeddings: optional precomputed ``(len(train_dataset), d)`` embeddings for partner search; when
            given, no embedding pass is run.
    """

    _tag_names = ["dmix", "mixup", "hf-dmix", "text-classification"]

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
        if args is None:
            args = DMixConfig(output_dir="dmix-output")
        elif not isinstance(args, DMixConfig):
            raise TypeError(
                f"DMixTrainer needs a DMixConfig, got {type(args).__name__}. Build one with the same arguments: "
                "DMixConfig(output_dir=..., mix_strategy=..., tau=..., ...)."
            )
        if isinstance(model, str):
            model = _load_classifier(model)
        if model is None and kwargs.get("model_init") is None:
            raise ValueError("DMixTrainer needs a model, or a model_init function (for hyperparameter_search).")
        self._mixing = args.mix_strategy != "none"

        if train_dataset is not None:
            _check_train_dataset(train_dataset)
            if self._mixing:
                train_dataset = _with_index(train_dataset)
        if data_collator is None:
            if processing_class is None and _modality(model) == "text":
                raise ValueError(
                    "DMixTrainer needs a tokenizer to pad batches: pass processing_class=tokenizer, or a DMixDataCollator."
                )
            data_collator = DMixDataCollator(processing_class)
        if self._mixing and not isinstance(data_collator, DMixDataCollator):
            raise TypeError(
                f"With mix_strategy={args.mix_strategy!r} the data collator must be a DMixDataCollator (it attaches the "
                f"partners), got {type(data_collator).__name__}."
            )
        if isinstance(data_collator, DMixDataCollator):
            data_collator.train_dataset = train_dataset

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        # Trainer built the model from model_init when none was given: check whichever model we now hold.
        self._check_model(self.model)
        if self.train_dataset is not None:
            _check_labels(_labels_of(self.train_dataset), unwrap_model(self.model).config.num_labels)
        # We compute our own loss, averaged over the micro-batch: Trainer must divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        if isinstance(data_collator, DMixDataCollator):
            # Distinct partner draws per process; the (layer, ratio) stream below is shared by all processes.
            data_collator.seed = args.seed + 1_000_003 * args.process_index
        self._mix_rng = np.random.default_rng(args.seed)
        # Training batches with partners consumed by compute_loss in this run (the resume state; see checkpoint.py).
        self._dmix_batches = 0
        self._data_fingerprint: tuple[tuple, str] | None = None
        # The epoch whose start last rebuilt the index from the trained model (partner_refresh_epochs), or None.
        self._refreshed_epoch: int | None = None
        # One record per refresh of this run: epoch, seconds, share of candidate slots kept.
        self.partner_refreshes: list[dict[str, float]] = []
        if args.partner_refresh_epochs and sentence_embeddings is not None:
            raise ValueError(
                f"partner_refresh_epochs={args.partner_refresh_epochs} re-embeds the training set with the model being "
                "trained, but sentence_embeddings were given (fixed). Drop one of the two."
            )
        self._sentence_embeddings = sentence_embeddings
        self.partner_index: PartnerIndex | None = None
        # What the current index was built from (see _index_key): a change of any of it rebuilds the index.
        self._index_key: tuple | None = None
        self._embeddings_cache: tuple[tuple, torch.Tensor] | None = None
        self.partner_index_stats: dict[str, float] = {}
        # The degenerate-index warning of the last build_partner_index (None when the candidate sets look sound).
        self.partner_index_warning: str | None = None
        self.mixer = HiddenStateMixer(self.model) if self._mixing else None
        # The signal that stopped the last train() early (save_on_sigterm), or None when it ran to the end.
        self.stopped_by_signal: str | None = None
        self.add_callback(_StopOnTermination(self))
        self._metrics: dict[str, list[float]] = defaultdict(list)
        if hasattr(self.model, "add_model_tags"):
            task = f"{_modality(self.model) or 'text'}-classification"
            self.model.add_model_tags([t if t != "text-classification" else task for t in self._tag_names])

    # ------------------------------------------------------------------ data plumbing

    def _set_signature_columns_if_needed(self) -> None:
        # Trainer drops every column the model's forward does not take; the collator needs the example index.
        super()._set_signature_columns_if_needed()
        if INDEX_COLUMN not in self._signature_columns:
            self._signature_columns.append(INDEX_COLUMN)

    def evaluation_loop(self, *args: Any, **kwargs: Any):
        """``Trainer.evaluation_loop`` (``evaluate`` and ``predict``) with partner attachment switched off.

        Rows of the training set carry the ``dmix_index`` column, so without this ``evaluate(train.select(...))``
        would collate ``2B``-row batches whose partner rows enter the loss, metrics and predictions. Evaluation runs
        the plain forward on exactly the rows it was given, whatever dataset that is.
        """
        collator = self.data_collator
        if not isinstance(collator, DMixDataCollator):
            return super().evaluation_loop(*args, **kwargs)
        index, collator.partner_index = collator.partner_index, None
        try:
            return super().evaluation_loop(*args, **kwargs)
        finally:
            collator.partner_index = index

    # ------------------------------------------------------------------ partner index

    def compute_sentence_embeddings(self) -> torch.Tensor:
        """``(N, d)`` float32 embeddings of the training set, row ``i`` for example ``i``.

        In order of preference: the ``sentence_embeddings`` given to ``__init__``; the encoder named by
        ``args.embedding_model`` over ``args.embedding_text_column``; the model being fine-tuned (its current
        weights — before training, the pretrained ones) over the tokenized features.
        """
        args, dataset = self.args, self.train_dataset
        n = len(dataset)
        show = self.is_local_process_zero() and not args.disable_tqdm
        # Each process embeds one contiguous shard; the shards are gathered so every process holds all N rows.
        shard = self._shard(n)
        if self._sentence_embeddings is not None:
            emb = torch.as_tensor(self._sentence_embeddings, dtype=torch.float32)
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(
                    f"sentence_embeddings must have shape ({n}, d) to match the training set, got {tuple(emb.shape)}."
                )
            return emb
        if args.embedding_model is not None:
            base = dataset.dataset if isinstance(dataset, _IndexedDataset) else dataset
            column = args.embedding_text_column
            if hasattr(base, "column_names"):
                if column not in base.column_names:
                    raise ValueError(
                        f"embedding_text_column={column!r} is not a column of the training set; it has "
                        f"{base.column_names}. Keep the raw text column in the dataset you pass to DMixTrainer."
                    )
                texts = list(base.select(shard)[column]) if len(shard) else []
            else:
                texts = [base[i][column] for i in shard]
            local = embed_texts(
                args.embedding_model,
                texts,
                pooling=args.embedding_pooling,
                batch_size=args.embedding_batch_size,
                max_length=args.embedding_max_length,
                device=args.device,
                show_progress=show,
            )
            return self._gather_rows(local, n)

        self._set_signature_columns_if_needed()
        keep = set(self._signature_columns) - set(LABEL_COLUMNS) - {INDEX_COLUMN}
        collator = self.data_collator

        def rows(indices):
            if hasattr(dataset, "column_names"):
                cols = dataset.select_columns([c for c in dataset.column_names if c in keep])[list(indices)]
                return [{k: cols[k][j] for k in cols} for j in range(len(indices))]
            return [{k: v for k, v in dataset[i].items() if k in keep} for i in indices]

        bs = args.embedding_batch_size
        local = embed_batches(
            self.model,
            iter_feature_batches(rows, shard, bs, collator),
            pooling=args.embedding_pooling,
            total=-(-len(shard) // bs),
            show_progress=show,
        )
        return self._gather_rows(local, n)

    def _shard(self, n: int) -> range:
        """This process's contiguous share of ``range(n)`` (all of it in a single process)."""
        world, rank = self.args.world_size, self.args.process_index
        size = -(-n // world)
        return range(min(rank * size, n), min((rank + 1) * size, n))

    def _gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Concatenate every process's shard of an ``(n, ...)`` tensor, in rank order, on every process (CPU)."""
        if self.args.world_size == 1:
            return local
        size = -(-n // self.args.world_size)
        # gather needs equal shapes: pad each shard to the common size and trim after.
        padded = local.new_zeros((size, *local.shape[1:]))
        padded[: local.shape[0]] = local
        gathered = self.accelerator.gather(padded.to(self.args.device)).cpu()
        return torch.cat([gathered[r * size : r * size + len(range(r * size, min((r + 1) * size, n)))] for r in range(self.args.world_size)])

    def build_partner_index(self) -> PartnerIndex:
        """Embed the training set, map it into the chosen space and select every example's top-τ candidates.

        Called by :meth:`train`; call it yourself to inspect the candidate sets first. Logs how many candidates each
        example has and how concentrated the candidate sets are (see :func:`~hf_dmix.partners.partner_statistics`).
        """
        args, n = self.args, len(self.train_dataset)
        _check_candidate_count(n, args)
        self._index_key = self.index_settings()
        needs_points = args.partner_distance != "random" and num_candidates(n, args.tau) < n - 1
        points = None
        if needs_points:
            # The embeddings do not depend on tau, the rule or the ball mapping: reuse them across rebuilds.
            emb_key = (n, self._sentence_embeddings is None, *self._embedding_settings())
            if self._embeddings_cache is not None and self._embeddings_cache[0] == emb_key:
                emb = self._embeddings_cache[1]
            else:
                emb = self.compute_sentence_embeddings()
                _check_embeddings(emb)
                self._embeddings_cache = (emb_key, emb)
            if args.partner_distance == "hyperbolic":
                points = to_poincare_ball(
                    emb,
                    curvature=args.curvature,
                    median_radius=args.ball_median_radius,
                    clip_quantile=args.ball_clip_quantile,
                    center=args.ball_center,
                )
            else:
                points = emb
            points = points.to(args.device)
        # Kept for pictures (plot_partner_index): the space the candidates were chosen in, on the CPU.
        self.partner_points = None if points is None else points.detach().float().cpu()
        if points is None:
            index = PartnerIndex(num_examples=n)
        else:
            index = self._search_partners(points, n)
        self.partner_index = index
        self.data_collator.partner_index = index
        self.partner_index_stats = partner_statistics(index, _labels_of(self.train_dataset))
        s = self.partner_index_stats
        self.partner_index_warning = None
        if points is not None:
            warning = hubness_warning(s, args.partner_rule)
            s["degenerate"] = warning is not None
            if warning is not None:
                logger.warning(warning)
                self.partner_index_warning = warning
        if args.partner_distance == "hyperbolic" and index.candidates is not None and n <= _OVERLAP_MAX_EXAMPLES:
            # Would cosine have chosen the same candidates? If so, the geometry is not what DMIX adds here.
            cosine = PartnerIndex(
                num_examples=n,
                candidates=top_tau_candidates(
                    emb.to(args.device), index.candidates_per_example, "cosine", args.partner_order,
                    memory_bytes=args.partner_search_memory_mb * 2**20,
                ),
            )
            s["cosine_overlap"] = candidate_overlap(index, cosine)
            s["cosine_overlap_chance"] = index.candidates_per_example / (n - 1)
        logger.info(
            f"DMIX partner index ({args.partner_distance}, {args.partner_rule} rule, {args.partner_order}, "
            f"tau={args.tau}): {int(s['candidates_per_example'])} candidates per example out of {n - 1}; "
            f"{s['distinct_candidate_share']:.1%} of the training set appears as a candidate; the most frequent 1% "
            f"of examples hold {s['top1pct_slot_share']:.1%} of candidate slots (random: "
            f"{s['random_top1pct_slot_share']:.1%}); k-occurrence skewness {s['k_occurrence_skewness']:.2f} (random: "
            f"{s['random_k_occurrence_skewness']:.2f})"
            + (
                f"; same-label share {s['same_label_share']:.1%} (random: {s['random_same_label_share']:.1%})"
                if "same_label_share" in s
                else ""
            )
            + (
                f"; the hyperbolic candidate sets share {s['cosine_overlap']:.1%} of their members with the cosine "
                f"top-tau sets ({s['cosine_overlap_chance']:.1%} by chance)."
                if "cosine_overlap" in s
                else "."
            )
        )
        return index

    def _search_partners(self, points: torch.Tensor, n: int) -> PartnerIndex:
        """Exact lists, exact thresholds or sampled thresholds (see ``DMixConfig.partner_search``).

        Each process searches the anchors of its shard; the shards are gathered so that every process holds the
        same full index (one search in total, not one per process).
        """
        args = self.args
        k = num_candidates(n, args.tau)
        sampled = args.partner_search == "sampled" or (
            args.partner_search == "auto" and n > AUTO_EXACT_MAX_EXAMPLES
        )
        show = self.is_local_process_zero() and not args.disable_tqdm
        memory = args.partner_search_memory_mb * 2**20
        moments = None
        if args.partner_rule != "paper":
            # Each process describes its shard against the same reference set; the shards are gathered.
            reference = reference_sample(n, args.partner_search_sample_size, seed=args.seed)
            mean, std = distance_moments(
                points, args.partner_distance, args.curvature, rows=self._shard(n), reference=reference,
                memory_bytes=memory, show_progress=show,
            )
            moments = (self._gather_rows(mean, n), self._gather_rows(std, n))
        common = dict(
            k=k,
            distance=args.partner_distance,
            order=args.partner_order,
            curvature=args.curvature,
            rows=self._shard(n),
            memory_bytes=memory,
            show_progress=show,
            rule=args.partner_rule,
            moments=moments,
        )
        if not sampled and n * k * 4 <= args.partner_index_max_mb * 2**20:
            local = top_tau_candidates(points, **common)
            return PartnerIndex(num_examples=n, candidates=self._gather_rows(local, n))
        size = args.partner_search_sample_size if sampled else None
        local = top_tau_thresholds(points, **common, sample_size=size, seed=args.seed)
        return threshold_index(
            points, self._gather_rows(local, n), args.partner_distance, args.partner_order, args.curvature, k, sampled,
            rule=args.partner_rule, moments=moments,
        )

    def _check_model(self, model: nn.Module) -> None:
        """Family, head and layer checks of the model DMIX will hook into (again for each ``model_init`` model)."""
        _check_classifier(model)
        if self._mixing:
            check_mixing_settings(model, self.args.mix_strategy)
        self.num_encoder_layers = num_layers(model)
        self.mix_layers = _resolve_mix_layers(self.args, self.num_encoder_layers)
        _check_anchor_dominant(self.args, model)

    def index_settings(self) -> tuple:
        """Everything the partner index depends on: the training set and every setting of the search.

        ``train()`` rebuilds the index whenever this changes, e.g. between ``hyperparameter_search`` trials that
        change ``tau`` or ``partner_rule``; an unchanged key reuses the index (and its embeddings).
        """
        a = self.args
        dataset = self.train_dataset
        fingerprint = getattr(getattr(dataset, "dataset", dataset), "_fingerprint", None)
        return (
            len(dataset), fingerprint, a.partner_distance, a.tau, a.partner_order, a.partner_rule, a.curvature,
            a.ball_median_radius, a.ball_clip_quantile, a.ball_center, *self._embedding_settings(),
            a.partner_search, a.partner_search_sample_size, a.partner_index_max_mb, a.seed,
        )

    def _embedding_settings(self) -> tuple:
        a = self.args
        return (a.embedding_model, a.embedding_text_column, a.embedding_pooling, a.embedding_max_length)

    def train(self, *args: Any, **kwargs: Any):
        """``Trainer.train``; the partner index is built (or reused) and the hooks attached when the loop starts.

        That happens inside the loop, after ``Trainer`` has created this trial's model (``model_init``) and applied
        this trial's hyperparameters (``hyperparameter_search``), so both are what the index and the hooks see.

        ``resume_from_checkpoint=True`` resumes from the last *complete* checkpoint of ``output_dir`` (folders a kill
        left half-written are skipped with a warning); the DMIX streams continue from the checkpoint's
        ``dmix_state.json``, and a checkpoint of other data or DMIX settings is refused (see
        :mod:`hf_dmix.checkpoint`).
        """
        self._forget_refreshed_index()
        if args:
            args = (self._resolve_resume(args[0]), *args[1:])
        elif "resume_from_checkpoint" in kwargs:
            kwargs["resume_from_checkpoint"] = self._resolve_resume(kwargs["resume_from_checkpoint"])
        self.stopped_by_signal = None
        restore = self._catch_termination()
        try:
            return super().train(*args, **kwargs)
        finally:
            restore()
            if self.mixer is not None:
                self.mixer.detach()

    def _inner_training_loop(self, *args: Any, **kwargs: Any):
        self._prepare_dmix()
        self._start_dmix_streams(kwargs.get("resume_from_checkpoint"))
        return super()._inner_training_loop(*args, **kwargs)

    # ------------------------------------------------------------------ partner refresh (beyond the paper)

    def _run_epoch(self, *args: Any, **kwargs: Any):
        epoch = kwargs.get("epoch")
        if epoch is not None and self._refresh_due(epoch):
            self.refresh_partner_index(epoch)
        return super()._run_epoch(*args, **kwargs)

    def _refresh_due(self, epoch: int) -> bool:
        every = self.args.partner_refresh_epochs
        return (
            self._mixing and self.partner_index is not None and every > 0 and epoch > 0 and epoch % every == 0
            and self._refreshed_epoch != epoch
        )

    def refresh_partner_index(self, epoch: int) -> dict[str, float]:
        """Embed the training set with the model as trained so far and rebuild the partner index from it.

        Called at the start of every ``partner_refresh_epochs``-th epoch (before that epoch's batches are drawn).
        Returns and logs its record: the epoch, the seconds it took and, for candidate lists, the share of each
        anchor's candidates that stayed (``1`` = nothing changed).
        """
        import time

        start = time.perf_counter()
        if self.mixer is not None:
            self.mixer.deactivate()  # the last step's mixing stays armed for gradient checkpointing: disarm it
        previous = self.partner_index
        emb = self.compute_sentence_embeddings()
        _check_embeddings(emb)
        self._install_embeddings(emb)
        self.build_partner_index()
        self.data_collator.partner_index = self.partner_index
        self._refreshed_epoch = epoch
        record = {"epoch": float(epoch), "seconds": time.perf_counter() - start}
        if previous is not None and previous.candidates is not None and self.partner_index.candidates is not None:
            record["candidates_kept"] = candidate_overlap(previous, self.partner_index)
        # How the new index looks (the benchmarks compare it with the index of the untrained model).
        stats = self.partner_index_stats or {}
        record.update({k: float(stats[k]) for k in ("same_label_share", "top1pct_slot_share") if stats.get(k) is not None})
        self.partner_refreshes.append(record)
        logger.info(
            f"DMIX partner refresh at the start of epoch {epoch}: embedding pass and partner search took "
            f"{record['seconds']:.1f} s"
            + (f"; {record['candidates_kept']:.1%} of each example's candidates stayed." if "candidates_kept" in record else ".")
        )
        return record

    def _install_embeddings(self, emb: torch.Tensor) -> None:
        """Make ``emb`` the embeddings the next :meth:`build_partner_index` uses (and force that rebuild)."""
        n = len(self.train_dataset)
        self._embeddings_cache = ((n, self._sentence_embeddings is None, *self._embedding_settings()), emb)
        self._index_key = None

    def _forget_refreshed_index(self) -> None:
        # A new training run starts from the initial-weights index, not from a previous run's last refresh.
        if self._refreshed_epoch is not None:
            self._refreshed_epoch = None
            self._embeddings_cache = None
            self._index_key = None
        self.partner_refreshes = []

    # ------------------------------------------------------------------ stop on SIGTERM (save_on_sigterm)

    def _catch_termination(self) -> Callable[[], None]:
        """Install the SIGTERM handler for the duration of ``train()``; returns the function that removes it."""
        import signal
        import threading

        self._termination_signal: str | None = None
        if not self.args.save_on_sigterm or threading.current_thread() is not threading.main_thread():
            return lambda: None  # signal handlers can only be set from the main thread
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            # Only a flag here: the step in progress finishes, then the callback saves and stops.
            self._termination_signal = signal.Signals(signum).name
            logger.warning(
                f"{self._termination_signal} received: finishing the current step, then saving a checkpoint and "
                "stopping. Resume with resume_from_checkpoint=True."
            )

        signal.signal(signal.SIGTERM, handler)
        return lambda: signal.signal(signal.SIGTERM, previous)

    def _termination_requested(self) -> str | None:
        """The signal that asked this run to stop, agreed by every process (any process's request counts)."""
        local = getattr(self, "_termination_signal", None)
        if self.args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([1.0 if local else 0.0], device=self.args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() > 0:
                return local or "SIGTERM"
            return None
        return local

    # ------------------------------------------------------------------ resume

    def _resolve_resume(self, resume_from_checkpoint: str | bool | None) -> str | bool | None:
        """``resume_from_checkpoint=True`` picks the last *complete* checkpoint (see :mod:`hf_dmix.checkpoint`)."""
        if resume_from_checkpoint is not True:
            return resume_from_checkpoint
        path, skipped = last_complete_checkpoint(self.args.output_dir, need_dmix_state=self._mixing)
        for folder in skipped:
            logger.warning(
                f"Skipping {folder}: it is incomplete (no trainer_state.json"
                + (" or dmix_state.json" if self._mixing else "")
                + "), most likely because the run was killed while writing it."
            )
        if path is None:
            raise ValueError(
                f"resume_from_checkpoint=True but {self.args.output_dir!r} holds no complete checkpoint"
                + (f" (skipped incomplete: {skipped})" if skipped else "")
                + ". Pass a checkpoint folder explicitly, or start without resume_from_checkpoint."
            )
        return path

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Build the partner index *before* the checkpoint's weights replace the initial ones.

        The interrupted run embedded its training set with the initial (pretrained) weights; embedding with the
        checkpoint's fine-tuned weights would select other partners, and the resumed run would not be the same run.
        """
        if self._mixing and self.train_dataset is not None and model is None:
            self.args.validate_dmix_settings()
            self._check_model(self.model)
            if self.partner_index is None or self._index_key != self.index_settings():
                self.build_partner_index()
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def dmix_fingerprint(self) -> dict[str, Any]:
        """What the partner index and the DMIX streams of this run depend on, by name (stored in checkpoints).

        A checkpoint whose fingerprint differs in any entry but ``index_digest`` is refused on resume.
        """
        a = self.args
        key = self.index_settings()
        if self._data_fingerprint is None or self._data_fingerprint[0] != key:
            self._data_fingerprint = (key, dataset_fingerprint(self.train_dataset, _labels_of(self.train_dataset)))
        if self._sentence_embeddings is not None:
            embeddings = "precomputed"
        elif a.embedding_model is not None:
            embeddings = f"{a.embedding_model} ({a.embedding_pooling}, max_length={a.embedding_max_length})"
        else:
            embeddings = f"the model being fine-tuned ({a.embedding_pooling} pooling)"
        return {
            "train_examples": len(self.train_dataset),
            "train_data": self._data_fingerprint[1],
            "embeddings": embeddings,
            "base_model": getattr(getattr(unwrap_model(self.model), "config", None), "_name_or_path", None),
            **{
                name: getattr(a, name)
                for name in (
                    "mix_strategy", "mix_alpha", "anchor_dominant", "partner_distance", "tau", "partner_order",
                    "partner_rule", "curvature", "ball_median_radius", "ball_clip_quantile", "ball_center",
                    "partner_search", "partner_search_sample_size", "seed",
                )
            },
            "mix_layers": list(self.mix_layers),
            "partner_refresh_epochs": a.partner_refresh_epochs,
            "index_digest": index_digest(self.partner_index),
        }

    def dmix_state(self) -> dict[str, Any]:
        """The DMIX part of a checkpoint: the stream positions and :meth:`dmix_fingerprint`."""
        return {
            "batches_consumed": self._dmix_batches,
            "refreshed_epoch": self._refreshed_epoch,
            "mix_rng": self._mix_rng.bit_generator.state,
            "fingerprint": self.dmix_fingerprint(),
        }

    def _save_rng_state(self, output_dir: str) -> None:
        # Trainer writes the RNG files, then trainer_state.json last: our file lands before it, so a checkpoint
        # with a trainer_state.json always has its dmix_state.json (see last_complete_checkpoint).
        super()._save_rng_state(output_dir)
        if self._mixing and self.partner_index is not None and self.args.should_save:
            if self._refreshed_epoch is not None:
                # The refreshed index came from weights no checkpoint holds: keep its embeddings.
                write_tensor(output_dir, REFRESH_EMBEDDINGS_NAME, self._embeddings_cache[1])
            write_state(output_dir, self.dmix_state())

    def _start_dmix_streams(self, checkpoint: str | None) -> None:
        """Start the partner and (layer, ratio) streams from the seed, or continue a checkpoint's."""
        collator = self.data_collator
        self._mix_rng = np.random.default_rng(self.args.seed)
        self._dmix_batches = 0
        if isinstance(collator, DMixDataCollator):
            collator.seed = self.args.seed + 1_000_003 * self.args.process_index
            collator.batches_drawn = 0
        if checkpoint is None or not self._mixing or self.partner_index is None:
            return
        state = read_state(checkpoint)
        if state is None:
            logger.warning(
                f"{checkpoint} has no {DMIX_STATE_NAME} (written by plain Trainer or an older hf-dmix): the DMIX "
                "partner and (layer, ratio) streams restart from the seed, so this resumed run will not replay the "
                "interrupted one exactly."
            )
            return
        if state.get("refreshed_epoch") is not None:
            self._install_embeddings(read_tensor(checkpoint, REFRESH_EMBEDDINGS_NAME))
            self.build_partner_index()
            collator.partner_index = self.partner_index
            self._refreshed_epoch = int(state["refreshed_epoch"])
        current = self.dmix_fingerprint()
        differences = fingerprint_differences(
            {k: v for k, v in state["fingerprint"].items() if k != "index_digest"},
            {k: v for k, v in current.items() if k != "index_digest"},
        )
        if differences:
            raise ResumeMismatchError(
                f"Cannot resume from {checkpoint}: it was trained with other DMIX data or settings. "
                + "; ".join(differences)
                + ". Resume with the settings and training set of that run, or start a fresh run in a new output_dir."
            )
        if fingerprint_differences({"index_digest": state["fingerprint"].get("index_digest")},
                                   {"index_digest": current["index_digest"]}):
            logger.warning(
                f"The partner index rebuilt for this run differs from the one {checkpoint} was trained with, although "
                "data and settings agree (embeddings computed on other hardware?). Training continues, but its "
                "partner draws will not replay the interrupted run exactly."
            )
        self._dmix_batches = int(state["batches_consumed"])
        self._mix_rng.bit_generator.state = state["mix_rng"]
        if isinstance(collator, DMixDataCollator):
            collator.batches_drawn = self._dmix_batches
        if self.args.dataloader_num_workers > 0:
            logger.warning(
                "Resuming with dataloader_num_workers > 0: partner draws inside workers are keyed on the workers' "
                "seeds, which restart with the resumed epoch; the (layer, ratio) stream continues exactly, partner "
                "draws do not. Use dataloader_num_workers=0 for an exact resume."
            )

    def _prepare_dmix(self) -> None:
        """Validate this run's settings, (re)build the partner index if they changed, hook the current model."""
        self.args.validate_dmix_settings()
        self._mixing = self.args.mix_strategy != "none"
        self._check_model(self.model)
        if self.mixer is not None and self.mixer.base is not unwrap_model(self.model):
            self.mixer.detach()  # a model_init trial replaced the model: hook the new one
            self.mixer = None
        if not self._mixing or self.train_dataset is None:
            if isinstance(self.data_collator, DMixDataCollator):
                self.data_collator.partner_index = None  # plain batches: no partners, nothing mixes
            return
        if self.mixer is None:
            self.mixer = HiddenStateMixer(self.model)
        if self.partner_index is None or self._index_key != self.index_settings():
            self.build_partner_index()
        self.data_collator.partner_index = self.partner_index
        self.mixer.attach()

    def plot_partner_index(self, output_dir: str | None = None, max_points: int = 5000) -> dict[str, str]:
        """Draw the current partner index: ``partners.png`` (the training set in the Poincaré disk, coloured by
        label, with the hubs and one anchor's candidates; see :func:`hf_dmix.plot_partners`) and
        ``k_occurrence.png`` (:func:`hf_dmix.plot_k_occurrence`), in ``output_dir`` (default ``args.output_dir``).

        Returns the paths written, by name; ``{}`` when there is nothing to draw (no mixing, random partners or
        ``tau = 1``) or on processes other than the main one.
        """
        import os

        from .plotting import plot_k_occurrence, plot_partners

        points = getattr(self, "partner_points", None)
        index = self.partner_index
        if index is None or points is None or not self.is_world_process_zero():
            return {}
        out = output_dir or self.args.output_dir
        os.makedirs(out, exist_ok=True)
        a = self.args
        labels = _labels_of(self.train_dataset)
        id2label = getattr(unwrap_model(self.model).config, "id2label", None) or {}
        names = [str(id2label.get(i, i)) for i in range(int(labels.max()) + 1)] if labels is not None else None
        space = "Poincaré distance" if a.partner_distance == "hyperbolic" else f"{a.partner_distance} distance"
        what = f"{a.partner_rule} rule, {a.partner_order}, τ = {a.tau}, {space}"
        drawn = plot_partners(
            points if a.partner_distance == "hyperbolic" else _unit_ball(points), index, labels, names,
            path=os.path.join(out, "partners.png"), curvature=a.curvature if a.partner_distance == "hyperbolic" else 1.0,
            title=f"Training set and DMIX candidates ({what})", max_points=max_points,
        )
        histogram = plot_k_occurrence(
            index, path=os.path.join(out, "k_occurrence.png"), title=f"k-occurrence of the candidate sets ({what})"
        )
        return {"partners": drawn, "k_occurrence": histogram}

    # ------------------------------------------------------------------ loss

    def sample_mixing(self) -> tuple[int, float]:
        """Draw the mixing site and ratio of one step: ``k`` uniform over the mix layers, ``r ~ Beta(α, α)``."""
        strategy = self.args.mix_strategy
        if strategy == "input":
            site = 0
        elif strategy == "sentence":
            site = self.num_encoder_layers + 1
        else:
            site = int(self._mix_rng.choice(self.mix_layers))
        ratio = float(self._mix_rng.beta(self.args.mix_alpha, self.args.mix_alpha))
        return site, ratio

    def _cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # float32 even under bf16/fp16 autocast: log-softmax of half-precision logits loses the small losses.
        return F.cross_entropy(
            logits.float(), labels.long(), label_smoothing=float(self.args.label_smoothing_factor or 0.0)
        )

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """Mixup loss on training batches with partners; plain cross-entropy (and no mixing) otherwise."""
        inputs = dict(inputs)
        partner_ids = inputs.pop(PARTNER_IDS_KEY, None)
        labels = None
        for key in LABEL_COLUMNS:
            if key in inputs:
                labels = inputs.pop(key)
                break
        if self.mixer is not None:
            self.mixer.deactivate()  # a previous step's state must never leak into this forward

        if partner_ids is None or self.mixer is None or not model.training:
            outputs = model(**inputs)
            loss = None if labels is None else self._cross_entropy(outputs.logits, labels)
            return (loss, outputs) if return_outputs else loss

        if labels is None:
            raise ValueError("DMIX training batches need labels; the collator produced a batch without them.")
        num_anchors = partner_ids.shape[0]
        site, ratio = self.sample_mixing()
        self._dmix_batches += 1  # consumed (the collator may have drawn further ahead): the resume counter
        anchors_only = bool(self.args.anchor_dominant)
        if anchors_only:
            ratio = max(ratio, 1.0 - ratio)
        # Stays active until the next compute_loss so that gradient-checkpointing recomputation mixes identically.
        self.mixer.activate(site, ratio, num_anchors, anchors_only=anchors_only)
        outputs = model(**inputs)
        logits = outputs.logits.float()
        if anchors_only:
            # Only the anchor-dominant rows b < B were trained (the model returns B rows, or 2B when the site is the
            # last layer, where nothing follows to skip).
            logits = logits[:num_anchors]
            loss = ratio * self._cross_entropy(logits, labels[:num_anchors]) + (1.0 - ratio) * self._cross_entropy(
                logits, labels[num_anchors:]
            )
        else:
            # Rows b < B mix anchor b (weight r) with its partner; rows b >= B are the same pair at ratio 1 - r.
            loss = ratio * self._cross_entropy(logits, labels) + (1.0 - ratio) * self._cross_entropy(
                logits, labels.roll(num_anchors, dims=0)
            )
        self._metrics["dmix/mix_layer"].append(float(site))
        self._metrics["dmix/ratio"].append(ratio)
        same = (labels[:num_anchors] == labels[num_anchors:]).float().mean()
        self._metrics["dmix/partner_same_label"].append(float(same))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averages of the DMIX step metrics since the last log to training logs."""
        if self._metrics and "loss" in logs:
            for key, values in self._metrics.items():
                logs[key] = round(sum(values) / len(values), 4)
            self._metrics.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ Hub: model card, dmix_config.json, pushes

    _CARD_METADATA_KEYS = ("language", "license", "tags", "finetuned_from", "dataset", "repo_id")

    def set_model_card_metadata(self, **metadata: Any) -> None:
        """Defaults for :meth:`create_model_card`, used by every card this trainer writes (checkpoint pushes too).

        Keys: ``language`` (ISO 639-1 code(s)), ``license`` (Hub license id), ``tags``, ``finetuned_from`` (the base
        model as given — a Hub id is published as ``base_model``, a local path only by its name), ``dataset`` (Hub
        dataset id(s)), ``repo_id`` (the repository the card is for, if not ``args.hub_model_id``).
        """
        unknown = sorted(set(metadata) - set(self._CARD_METADATA_KEYS))
        if unknown:
            raise ValueError(f"Unknown model card metadata {unknown}; accepted: {list(self._CARD_METADATA_KEYS)}.")
        current = dict(getattr(self, "_card_metadata", {}))
        current.update({k: v for k, v in metadata.items() if v is not None})
        self._card_metadata = current

    def dmix_record(self, base_model: str | None = None) -> dict[str, Any]:
        """The DMIX record of this run: what ``dmix_config.json`` holds and the model card shows.

        See :func:`hf_dmix.hub.dmix_record`. ``base_model`` defaults to the ``finetuned_from`` card metadata, else
        the model's (or the adapter's) ``name_or_path``.
        """
        from .hub import dmix_record

        base_model = base_model or getattr(self, "_card_metadata", {}).get("finetuned_from")
        return dmix_record(
            self.args,
            self.model,
            mix_layers=self.mix_layers if self._mixing else None,
            num_encoder_layers=self.num_encoder_layers,
            partner_index_stats=self.partner_index_stats,
            base_model=base_model,
            embedding_source="precomputed" if self._sentence_embeddings is not None else None,
        )

    def create_model_card(
        self,
        language: str | list[str] | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Write the DMIX model card as ``README.md`` in ``args.output_dir`` (main process only).

        Replaces ``Trainer``'s generic card (``push_to_hub`` calls it before uploading). The card is rendered from
        the packaged template (:func:`hf_dmix.cards.render_model_card`): base model, datasets, languages, tags, the
        ``model-index`` (test metrics of ``output_dir/results.json`` when present, else the last evaluation during
        training), the DMIX and training hyperparameters, the label names, usage snippets and the DMIX citation;
        ``output_dir/tau_sweep.png`` is embedded when present. Nothing is fetched from the Hub.

        Arguments not given fall back to :meth:`set_model_card_metadata`. ``tasks``, ``dataset_tags`` and
        ``dataset_args`` are accepted for compatibility with ``Trainer`` and ignored (the task — text, image or audio
        classification — follows from the model type), and so is ``model_name`` (the card is named after the repository: ``args.hub_model_id``).
        ``use_results=False`` ignores ``output_dir/results.json`` (checkpoint pushes: it may belong to an earlier run).
        """
        if not self.is_world_process_zero():
            return
        self._write_model_card(
            self.args.output_dir,
            use_results=kwargs.pop("use_results", True),
            language=language,
            license=license,
            tags=tags,
            finetuned_from=finetuned_from,
            dataset=dataset,
        )

    def _write_model_card(self, output_dir: str, use_results: bool = True, **given: Any) -> str:
        import json
        import os

        from .cards import TAU_SWEEP_PLOT_NAME, hub_repo_id, render_model_card
        from .hub import README_NAME, RESULTS_NAME, write_atomic

        meta = {**getattr(self, "_card_metadata", {}), **{k: v for k, v in given.items() if v is not None}}
        tags = meta.get("tags") or []
        tags = [tags] if isinstance(tags, str) else list(tags)
        results = None
        results_path = os.path.join(output_dir, RESULTS_NAME)
        if use_results and os.path.isfile(results_path):
            with open(results_path, encoding="utf-8") as f:
                results = json.load(f)
        repo_id = next(
            (r for r in (meta.get("repo_id"), self.hub_model_id, self.args.hub_model_id) if hub_repo_id(r)), None
        )
        finetuned_from = meta.get("finetuned_from")
        card = render_model_card(
            self.dmix_record(finetuned_from),
            results,
            repo_id=repo_id,
            base_model=hub_repo_id(finetuned_from),
            datasets=meta.get("dataset"),
            language=meta.get("language"),
            license=meta.get("license"),
            tags=tags,
            validation_metrics=self._last_eval_metrics(),
            tau_sweep_plot=TAU_SWEEP_PLOT_NAME if os.path.isfile(os.path.join(output_dir, TAU_SWEEP_PLOT_NAME)) else None,
        )
        path = os.path.join(output_dir, README_NAME)
        write_atomic(path, str(card))
        return path

    def _last_eval_metrics(self) -> dict[str, float]:
        """The metrics of the last evaluation during training, without the ``eval_`` prefix."""
        for entry in reversed(self.state.log_history):
            metrics = {k[len("eval_"):]: v for k, v in entry.items() if k.startswith("eval_")}
            if any(k in metrics for k in ("macro_f1", "accuracy", "weighted_f1")):
                return metrics
        return {}

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """``Trainer._save``, plus ``dmix_config.json`` (the DMIX record) next to the model — checkpoints included.

        The ``training_args.bin`` that ``Trainer`` saves holds no token: pickling a ``DMixConfig`` drops ``hub_token``.
        """
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            from .hub import write_dmix_config

            write_dmix_config(output_dir if output_dir is not None else self.args.output_dir, self.dmix_record())

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Checkpoint pushes (``hub_strategy``) carry the DMIX card and ``dmix_config.json`` too.

        ``Trainer`` uploads ``output_dir`` (and, for ``hub_strategy="checkpoint"``/``"all_checkpoints"``, the
        checkpoint folder); both get the card of the training so far (metrics: the last evaluation, never a
        ``results.json`` of an earlier run) and the record before the upload starts.
        """
        from transformers.trainer_utils import HubStrategy

        if self.is_world_process_zero() and self.args.hub_strategy != HubStrategy.END:
            import os
            import shutil

            from .hub import README_NAME, write_dmix_config

            output_dir = self.args.output_dir
            write_dmix_config(output_dir, self.dmix_record())
            card = self._write_model_card(output_dir, use_results=False)
            shutil.copyfile(card, os.path.join(checkpoint_folder, README_NAME))
        super()._push_from_checkpoint(checkpoint_folder)

    def wait_for_hub_pushes(self) -> None:
        """Block until the checkpoint pushes started during training (``hub_strategy``) have finished.

        Call it before publishing the final model yourself, so that a late checkpoint upload cannot overwrite it.
        """
        self._finish_current_push()


class _StopOnTermination(TrainerCallback):
    """At each step end: if a SIGTERM arrived (on any process), save a checkpoint now and stop training."""

    def __init__(self, trainer: DMixTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        signal_name = self.trainer._termination_requested() if args.save_on_sigterm else None
        if signal_name is not None:
            control.should_save = True
            control.should_training_stop = True
            self.trainer.stopped_by_signal = signal_name
        return control


# ---------------------------------------------------------------------- checks


def _modality(model: Any) -> str | None:
    """``"text"``, ``"image"`` or ``"audio"`` for a model of a supported family, else ``None``."""
    if not isinstance(model, nn.Module):
        return None
    family = _FAMILIES.get(getattr(getattr(unwrap_model(model), "config", None), "model_type", None))
    return None if family is None else family.modality


def _load_classifier(name_or_path: str) -> PreTrainedModel:
    """Load a path / Hub id in float32 with the auto class of its family (text, image or audio classification)."""
    import transformers
    from transformers import AutoConfig

    family = _FAMILIES.get(AutoConfig.from_pretrained(name_or_path).model_type)
    auto = AutoModelForSequenceClassification if family is None else getattr(transformers, family.auto_class)
    return auto.from_pretrained(name_or_path, dtype=torch.float32)


def _check_classifier(model: nn.Module) -> None:
    resolve_family(model)  # raises for unsupported architectures
    config = unwrap_model(model).config
    if config.problem_type in ("regression", "multi_label_classification"):
        raise ValueError(
            f"DMIX mixes one-hot class labels; the model is configured for problem_type={config.problem_type!r}. "
            "Use a single-label classification head (problem_type='single_label_classification', num_labels >= 2)."
        )
    if config.num_labels < 2:
        raise ValueError(
            f"The model has num_labels={config.num_labels}, i.e. a regression head. DMIX needs a single-label "
            "classification head with num_labels >= 2."
        )


def _check_labels(labels: torch.Tensor | None, num_labels: int) -> None:
    """Class ids the model's head can score, and at least two classes to mix."""
    if labels is None or labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_labels:
        bad = labels[(labels < 0) | (labels >= num_labels)]
        raise ValueError(
            f"The training set has label ids outside 0..{num_labels - 1} (the model has num_labels={num_labels}): "
            f"{sorted(set(bad.tolist()))[:10]}. Map the labels to 0..{num_labels - 1}, or load the model with "
            f"num_labels={high + 1}."
        )
    classes = torch.unique(labels)
    if len(classes) < 2:
        raise ValueError(
            f"The training set has a single class (label id {int(classes[0])}): there is nothing to classify or mix. "
            "Check the label column and the split."
        )


def _check_candidate_count(n: int, args: DMixConfig) -> None:
    """τ·(N−1) must be at least one candidate: below that the set would silently be the single top example."""
    if args.partner_distance == "random" or args.tau >= 1.0:
        return
    wanted = args.tau * (n - 1)
    if wanted < 1.0 - 1e-9:
        import math

        raise ValueError(
            f"tau={args.tau} asks for {wanted:.3g} candidate partners per example among the {n - 1} other examples of "
            f"this training set: fewer than one. Use a training set of at least {math.ceil(1 / args.tau - 1e-9) + 1} "
            f"examples, or tau >= 1/(N-1) = {1 / (n - 1):.4g} (exactly one candidate: the "
            f"{args.partner_order} example)."
        )


def _check_embeddings(emb: torch.Tensor) -> None:
    """Finite, non-constant sentence embeddings: one NaN row would make every ball point NaN and every candidate set
    the same arbitrary block; identical rows leave no distance to rank by."""
    bad = (~torch.isfinite(emb)).any(dim=1)
    if bad.any():
        rows = torch.nonzero(bad).reshape(-1)
        raise ValueError(
            f"{len(rows)} sentence embedding(s) contain NaN or inf (training-set rows {rows[:10].tolist()}). Check "
            "those examples (empty after tokenization?) and the embedding model (half precision overflow?), or pass "
            "finite sentence_embeddings=."
        )
    if emb.shape[0] > 1 and float((emb - emb[0]).abs().max()) == 0.0:
        raise ValueError(
            "All sentence embeddings are identical, so no example is nearer or farther than another. Check that the "
            "embedding model is a trained encoder and that the texts differ (embedding_model=, embedding_pooling=)."
        )


def _unit_ball(points: torch.Tensor) -> torch.Tensor:
    """Euclidean/cosine points scaled into the unit disk for drawing (one factor: the picture keeps their ratios)."""
    return points / (points.norm(dim=-1).max().clamp_min(1e-12) * (1 + 1e-3))


def _check_anchor_dominant(args: DMixConfig, model: nn.Module) -> None:
    config = unwrap_model(model).config
    if args.anchor_dominant and config.model_type == "modernbert" and getattr(config, "classifier_pooling", "cls") == "mean":
        raise ValueError(
            "anchor_dominant=True drops the partner rows after the mixing site, but ModernBERT with "
            "classifier_pooling='mean' pools with the full 2B-row attention mask. Use classifier_pooling='cls' or "
            "anchor_dominant=False."
        )


def _resolve_mix_layers(args: DMixConfig, n_layers: int) -> list[int]:
    if args.mix_layers is None:
        return list(range(1, n_layers + 1))
    bad = [k for k in args.mix_layers if not 1 <= k <= n_layers]
    if bad:
        raise ValueError(
            f"mix_layers {bad} out of range: this model has {n_layers} encoder layers, so layers 1..{n_layers} are "
            "accepted (use mix_strategy='input' to mix the embedding output)."
        )
    return list(args.mix_layers)


def _columns_of(dataset: Any) -> list[str]:
    if hasattr(dataset, "column_names") and dataset.column_names is not None:
        return list(dataset.column_names)
    return list(dataset[0].keys()) if len(dataset) else []


def _check_train_dataset(dataset: Any) -> None:
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise ValueError(
            f"DMIX needs a map-style training set (random access to draw partners), got {type(dataset).__name__}. "
            "Use a datasets.Dataset (not streaming) or a torch Dataset with __len__ and __getitem__."
        )
    if len(dataset) < 2:
        raise ValueError(f"DMIX needs at least 2 training examples to draw partners from, got {len(dataset)}.")
    columns = _columns_of(dataset)
    if not any(c in columns for c in LABEL_COLUMNS):
        raise ValueError(
            f"The training set has no label column: expected one of {list(LABEL_COLUMNS)}, found columns {columns}."
        )
    first = dataset[0]
    label = next(first[c] for c in LABEL_COLUMNS if c in first)
    if isinstance(label, (list, tuple)) or (isinstance(label, torch.Tensor) and label.ndim > 0):
        raise ValueError(
            f"DMIX supports single-label classification: labels must be class ids, got {label!r} (multi-label?)."
        )
    if isinstance(label, float) or (isinstance(label, torch.Tensor) and label.is_floating_point()):
        raise ValueError(f"Labels must be integer class ids, got the float {label!r} (a regression target?).")


def _with_index(dataset: Any) -> Any:
    """The training set with a ``dmix_index`` column holding each row's position.

    A ``datasets.Dataset`` with an on-the-fly transform (``with_transform``/``set_transform``, the usual way to run an
    image processor) is wrapped instead: its transform returns only the columns it builds, so an added column would
    be dropped from every row and no batch would be mixed.
    """
    custom_format = (getattr(dataset, "format", None) or {}).get("type") == "custom"
    if hasattr(dataset, "add_column") and hasattr(dataset, "column_names") and not custom_format:
        if INDEX_COLUMN in dataset.column_names:
            dataset = dataset.remove_columns(INDEX_COLUMN)
        return dataset.add_column(INDEX_COLUMN, np.arange(len(dataset), dtype=np.int64))
    return _IndexedDataset(dataset)


def _labels_of(dataset: Any) -> torch.Tensor | None:
    base = dataset.dataset if isinstance(dataset, _IndexedDataset) else dataset
    columns = _columns_of(base)
    for key in LABEL_COLUMNS:
        if key in columns:
            if hasattr(base, "column_names"):
                return torch.as_tensor(np.asarray(base[key]), dtype=torch.long)
            return torch.as_tensor([int(base[i][key]) for i in range(len(base))], dtype=torch.long)
    return None
