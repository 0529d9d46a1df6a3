"""``PartnerIndexer``: the one owner of a run's partner index.

What lives here: everything about *the* index of a training run — its embeddings (and their cache, keyed by
everything they depend on: the training set, the embedding settings and where the embeddings come from, the model's
weights included), the points in the chosen space, the index itself (built through the one search path,
:func:`hf_dmix.partners.search_partners`), its statistics and degenerate-index warning, its rebuilds (a setting
changed, a ``hyperparameter_search`` trial, a partner refresh between epochs, a resumed refresh) and its reset at the
start of a new run. It is the only writer of the collator's ``partner_index``. Sharding across processes is the
:class:`Sharding` given with the inputs.

What does not: the search itself (``partners.py``), embedding passes (``embeddings.py``), the statistics
(``hubness.py``), when to build or refresh (``trainer.py`` decides, from ``Trainer``'s hooks), checkpoint files
(``checkpoint.py``).
"""

from __future__ import annotations

import hashlib
import logging as py_logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from .collator import DMixDataCollator
from .config import EMBEDDING_FIELDS, INDEX_FIELDS, DMixConfig
from .embeddings import check_embeddings, embed_training_set, embedding_source, texts_of, weights_digest
from .geometry import to_poincare_ball
from .hubness import hubness_warning, partner_statistics
from .overlap import candidate_overlap, cosine_overlap
from .partners import PartnerIndex, search_partners
from .trainset import LABEL_COLUMNS, base_dataset, check_model_inputs, data_key, feature_rows, labels_of

logger = logging.get_logger(__name__)

# Above this many examples the hyperbolic-vs-cosine overlap diagnostic on *every* anchor (partner_overlap_anchors=-1,
# a second full search) is skipped; a sample of anchors is always measured.
_OVERLAP_MAX_EXAMPLES = 200_000


@dataclass
class Sharding:
    """Which contiguous share of the training set this process embeds and searches, and how shards are joined."""

    world_size: int = 1
    rank: int = 0
    # Gathers one equal-shaped tensor from every process, concatenated in rank order (e.g. accelerator.gather).
    gather_all: Callable[[torch.Tensor], torch.Tensor] | None = None

    def shard_size(self, n: int) -> int:
        """The size of the largest shard of ``range(n)``: the one every process pads its embedding batches to."""
        return -(-n // self.world_size)

    def rows(self, n: int) -> range:
        """This process's contiguous share of ``range(n)`` (all of it in a single process)."""
        size = -(-n // self.world_size)
        return range(min(self.rank * size, n), min((self.rank + 1) * size, n))

    def gather(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Concatenate every process's shard of an ``(n, ...)`` tensor, in rank order, on every process (CPU)."""
        if self.world_size == 1:
            return local
        if self.gather_all is None:
            raise ValueError(f"Sharding over {self.world_size} processes needs gather_all (an all-gather of tensors).")
        size = -(-n // self.world_size)
        # gather needs equal shapes: pad each shard to the common size and trim after.
        padded = local.new_zeros((size, *local.shape[1:]))
        padded[: local.shape[0]] = local
        gathered = self.gather_all(padded).cpu()
        return torch.cat(
            [
                gathered[r * size : r * size + len(range(r * size, min((r + 1) * size, n)))]
                for r in range(self.world_size)
            ]
        )


@dataclass
class IndexInputs:
    """What building the index reads, as the trainer holds it when a training loop starts."""

    args: DMixConfig
    dataset: Any  # the training set, rows carrying dmix_index
    model: nn.Module  # the model being fine-tuned (its embeddings, unless an encoder or precomputed ones are used)
    collate: Callable[[list[dict[str, Any]]], Any]  # the training collator: pads feature rows for the embedding pass
    # The columns of a training batch (Trainer's signature columns, labels included); None: every column
    # (remove_unused_columns=False). The embedding pass hands the collator rows of exactly these.
    feature_columns: set[str] | None
    sharding: Sharding
    device: Any = None
    show_progress: bool = False
    # Digest of the weights the run started from (embeddings of the model being fine-tuned are keyed by it); None:
    # the model's current weights.
    weights: str | None = None
    _data_key: tuple | None = field(default=None, repr=False)

    def data_key(self) -> tuple:
        """:func:`hf_dmix.trainset.data_key` of the training set, taken once per inputs (it may read rows)."""
        if self._data_key is None:
            self._data_key = data_key(self.dataset)
        return self._data_key


class PartnerIndexer:
    """Builds, keeps, refreshes and publishes the partner index of a training run.

    Args:
        sentence_embeddings: fixed ``(N, d)`` embeddings to search (``DMixTrainer(sentence_embeddings=...)``).
        refresh_epochs: ``DMixConfig.partner_refresh_epochs`` (checked against fixed embeddings).

    Attributes:
        index, points, stats, warning: the current :class:`~hf_dmix.partners.PartnerIndex`, the points it was
            searched in (CPU), its :func:`~hf_dmix.hubness.partner_statistics` and degenerate-index warning.
        refreshes: one record per partner refresh of the current run; ``refreshed_epoch``: the last one's epoch.
    """

    def __init__(self, sentence_embeddings: Any = None, refresh_epochs: int = 0) -> None:
        if refresh_epochs and sentence_embeddings is not None:
            raise ValueError(
                f"partner_refresh_epochs={refresh_epochs} re-embeds the training set with the model being "
                "trained, but sentence_embeddings were given (fixed). Drop one of the two."
            )
        self.sentence_embeddings = sentence_embeddings
        self.index: PartnerIndex | None = None
        self.points: torch.Tensor | None = None
        self.stats: dict[str, float] = {}
        self.warning: str | None = None
        self.refreshes: list[dict[str, float]] = []
        self.refreshed_epoch: int | None = None
        self._key: tuple | None = None
        # The embeddings of the run's starting point, by their key: kept across runs and refreshes, so that a resume
        # on the same trainer rebuilds the index the checkpoint was trained with from them.
        self._embeddings: tuple[tuple, torch.Tensor] | None = None
        self._refreshed: torch.Tensor | None = None  # the embeddings of the last refresh of this run
        self._precomputed_digest: str | None = None

    # ------------------------------------------------------------------ keys

    def source(self, args: DMixConfig) -> str:
        """Where the embeddings come from: ``"precomputed"``, ``"embedding_model"`` or ``"model"``."""
        return embedding_source(self.sentence_embeddings, args.embedding_model)

    def origin(self, args: DMixConfig, model: nn.Module, weights: str | None = None) -> str | None:
        """What the embeddings are computed from, for checkpoints: the digest of the model's weights (``weights``:
        those the run started from), the encoder's name, or a digest of the precomputed embeddings."""
        source = self.source(args)
        if source == "model":
            return weights or weights_digest(model)
        if source == "embedding_model":
            return args.embedding_model
        if self._precomputed_digest is None:  # hashed once: O(N d)
            emb = torch.as_tensor(self.sentence_embeddings, dtype=torch.float32).detach().cpu().contiguous()
            self._precomputed_digest = hashlib.sha256(emb.numpy().tobytes()).hexdigest()[:16]
        return self._precomputed_digest

    def embedding_key(self, inputs: IndexInputs) -> tuple:
        """Everything the embeddings depend on: the training set's content (:func:`~hf_dmix.trainset.data_key`), the
        settings, the source (the model's weights: those the run started from)."""
        dataset, args = inputs.dataset, inputs.args
        source = self.source(args)
        weights = (inputs.weights or weights_digest(inputs.model)) if source == "model" else None
        return (len(dataset), inputs.data_key(), source, weights, *(getattr(args, f) for f in EMBEDDING_FIELDS))

    def has_embeddings(self, inputs: IndexInputs) -> bool:
        """Whether the embeddings for ``inputs`` (its data, settings and weights) are held, so need no pass."""
        return self._embeddings is not None and self._embeddings[0] == self.embedding_key(inputs)

    def index_key(self, inputs: IndexInputs) -> tuple:
        """Everything the index depends on: the embeddings' key and every setting in ``INDEX_FIELDS``."""
        return (self.embedding_key(inputs), *(getattr(inputs.args, f) for f in INDEX_FIELDS))

    # ------------------------------------------------------------------ embeddings

    def embed(self, inputs: IndexInputs) -> torch.Tensor:
        """Embed the training set now (no cache): see :func:`hf_dmix.embeddings.embed_training_set`."""
        args, dataset = inputs.args, inputs.dataset
        base = base_dataset(dataset)
        if self.source(args) == "model":
            check_model_inputs(dataset, inputs.feature_columns)
        return embed_training_set(
            len(dataset),
            precomputed=self.sentence_embeddings,
            embedding_model=args.embedding_model,
            texts=partial(texts_of, base, args.embedding_text_column, pair_column=args.embedding_text_pair_column),
            model=inputs.model,
            feature_rows=feature_rows(dataset, inputs.feature_columns),
            collate=embedding_collate(inputs.collate),
            pooling=args.embedding_pooling,
            batch_size=args.embedding_batch_size,
            max_length=args.embedding_max_length,
            device=inputs.device,
            rows=inputs.sharding.rows(len(dataset)),
            gather=inputs.sharding.gather,
            show_progress=inputs.show_progress,
            # Every process makes the same number of forward calls: with a sharded model (FSDP2) each is a collective.
            num_batches=-(-inputs.sharding.shard_size(len(dataset)) // args.embedding_batch_size),
        )

    def embeddings(self, inputs: IndexInputs) -> torch.Tensor:
        """The cached embeddings if their key still holds, else a fresh (checked) embedding pass."""
        key = self.embedding_key(inputs)
        if self._embeddings is None or self._embeddings[0] != key:
            emb = self.embed(inputs)
            check_embeddings(emb)
            self._embeddings = (key, emb)
        return self._embeddings[1]

    @property
    def current_embeddings(self) -> torch.Tensor | None:
        """The embeddings the current index was built from (``None`` when it needed none)."""
        if self._refreshed is not None:
            return self._refreshed
        return None if self._embeddings is None else self._embeddings[1]

    # ------------------------------------------------------------------ the index

    def ensure(self, inputs: IndexInputs) -> PartnerIndex:
        """The current index, rebuilt first when anything it depends on changed."""
        if self.index is None or self._key != self.index_key(inputs):
            return self.build(inputs)
        return self.index

    def build(self, inputs: IndexInputs, embeddings: torch.Tensor | None = None) -> PartnerIndex:
        """Embed (or reuse the embeddings), map into the chosen space, search, describe and log the index."""
        args, n = inputs.args, len(inputs.dataset)
        search = args.partner_search_settings()
        search.check_candidate_count(n)
        self._key = self.index_key(inputs)
        emb = points = None
        if search.needs_points(n):
            emb = self.embeddings(inputs) if embeddings is None else embeddings
            points = self._points(emb, args).to(args.device)
        # Kept for pictures (plot): the space the candidates were chosen in, on the CPU.
        self.points = None if points is None else points.detach().float().cpu()
        self.index = search_partners(
            points,
            n,
            search,
            rows=inputs.sharding.rows(n),
            gather=inputs.sharding.gather,
            show_progress=inputs.show_progress,
        )
        self._describe(inputs, emb)
        return self.index

    @staticmethod
    def _points(emb: torch.Tensor, args: DMixConfig) -> torch.Tensor:
        if args.partner_distance != "hyperbolic":
            return emb
        return to_poincare_ball(
            emb,
            curvature=args.curvature,
            median_radius=args.ball_median_radius,
            clip_quantile=args.ball_clip_quantile,
            center=args.ball_center,
        )

    def _describe(self, inputs: IndexInputs, emb: torch.Tensor | None) -> None:
        """Statistics, the degenerate warning and the cosine overlap of the new index; one log line."""
        args, index, n = inputs.args, self.index, len(inputs.dataset)
        self.stats = s = partner_statistics(index, labels_of(inputs.dataset))
        self.warning = None
        if emb is not None:
            self.warning = hubness_warning(s, args.partner_rule)
            s["degenerate"] = self.warning is not None
            if self.warning is not None:
                logger.warning(self.warning)
        self._cosine_overlap(args, emb, s, n)
        show_summary(args, _log_line(args, s, n))

    def _cosine_overlap(self, args: DMixConfig, emb: torch.Tensor | None, s: dict[str, float], n: int) -> None:
        """Would cosine have chosen the same candidates? If so, the geometry is not what DMIX adds here. Measured on
        ``partner_overlap_anchors`` sampled anchors (the same on every process; ``-1``: every anchor, ``0``: off)."""
        anchors, index = args.partner_overlap_anchors, self.index
        no_sets = index is None or (index.thresholds is None and index.candidates is None)  # "all others": no sets
        if args.partner_distance != "hyperbolic" or emb is None or anchors == 0 or index is None or no_sets:
            return
        if anchors < 0 and n > _OVERLAP_MAX_EXAMPLES:
            return
        k = index.candidates_per_example
        s["cosine_overlap"] = cosine_overlap(
            index,
            emb.to(args.device),
            args.partner_order,
            max_anchors=None if anchors < 0 else anchors,
            memory_bytes=args.partner_search_memory_mb * 2**20,
        )
        s["cosine_overlap_anchors"] = float(n if anchors < 0 else min(anchors, n))
        s["cosine_overlap_chance"] = k / (n - 1)

    # ------------------------------------------------------------------ refresh and reset

    def refresh_due(self, epoch: int | None, every: int) -> bool:
        """Whether epoch ``epoch`` starts with a refresh (every ``every``-th epoch, once, when an index exists)."""
        return (
            epoch is not None
            and self.index is not None
            and every > 0
            and epoch > 0
            and epoch % every == 0
            and self.refreshed_epoch != epoch
        )

    def refresh(self, inputs: IndexInputs, epoch: int) -> dict[str, float]:
        """Embed the training set with the model as trained so far and rebuild the index from it (see
        ``DMixTrainer.refresh_partner_index``); returns and keeps the record of the refresh."""
        start = time.perf_counter()
        previous = self.index
        emb = self.embed(inputs)
        check_embeddings(emb)
        index = self.install(inputs, emb, epoch)
        record = {"epoch": float(epoch), "seconds": time.perf_counter() - start}
        if previous is not None and previous.candidates is not None and index.candidates is not None:
            record["candidates_kept"] = candidate_overlap(previous, index)
        # How the new index looks (the benchmarks compare it with the index of the untrained model).
        record.update(
            {
                k: float(self.stats[k])
                for k in ("same_label_share", "top1pct_slot_share")
                if self.stats.get(k) is not None
            }
        )
        self.refreshes.append(record)
        logger.info(
            f"DMIX partner refresh at the start of epoch {epoch}: embedding pass, partner search and index "
            f"statistics took "
            f"{record['seconds']:.1f} s"
            + (
                f"; {record['candidates_kept']:.1%} of each example's candidates stayed."
                if "candidates_kept" in record
                else "."
            )
        )
        return record

    def install(self, inputs: IndexInputs, embeddings: torch.Tensor, epoch: int) -> PartnerIndex:
        """Rebuild the index from the embeddings of the refresh at ``epoch`` (computed now, or read back from a
        checkpoint); they stay the current embeddings until the next reset."""
        self._refreshed = embeddings
        self.build(inputs, embeddings=embeddings)
        self.refreshed_epoch = epoch
        assert self.index is not None  # build() just set it
        return self.index

    def reset(self) -> None:
        """A new training run: forget its refreshes, so the index is built again from the embeddings of the weights
        the run starts from (kept when they are those of the last run's start, embedded again otherwise)."""
        if self.refreshed_epoch is not None:
            self.refreshed_epoch = None
            self._refreshed = None
            self._key = None
        self.refreshes = []

    # ------------------------------------------------------------------ the collator

    def publish(self, collator: Any, active: bool = True) -> None:
        """Make ``collator`` draw from the current index (``active=False``: from none, so it only pads)."""
        if isinstance(collator, DMixDataCollator):
            collator.partner_index = self.index if active else None

    @contextmanager
    def suspended(self, collator: Any) -> Iterator[None]:
        """No partners while the block runs (evaluation on training rows); the previous index afterwards."""
        if not isinstance(collator, DMixDataCollator):
            yield
            return
        index, collator.partner_index = collator.partner_index, None
        try:
            yield
        finally:
            collator.partner_index = index

    # ------------------------------------------------------------------ pictures

    def plot(
        self, output_dir: str, args: DMixConfig, labels: torch.Tensor | None, label_names: dict, max_points: int = 5000
    ) -> dict[str, str]:
        """``partners.png`` and ``k_occurrence.png`` of the current index in ``output_dir`` (see
        ``DMixTrainer.plot_partner_index``); ``{}`` when there is nothing to draw."""
        import os

        from .plotting import plot_k_occurrence, plot_partners

        if self.index is None or self.points is None:
            return {}
        os.makedirs(output_dir, exist_ok=True)
        names = [str(label_names.get(i, i)) for i in range(int(labels.max()) + 1)] if labels is not None else None
        hyperbolic = args.partner_distance == "hyperbolic"
        space = "Poincaré distance" if hyperbolic else f"{args.partner_distance} distance"
        what = f"{args.partner_rule} rule, {args.partner_order}, τ = {args.tau}, {space}"
        drawn = plot_partners(
            self.points if hyperbolic else _unit_ball(self.points),
            self.index,
            labels,
            names,
            path=os.path.join(output_dir, "partners.png"),
            curvature=args.curvature if hyperbolic else 1.0,
            title=f"Training set and DMIX candidates ({what})",
            max_points=max_points,
        )
        histogram = plot_k_occurrence(
            self.index,
            path=os.path.join(output_dir, "k_occurrence.png"),
            title=f"k-occurrence of the candidate sets ({what})",
        )
        return {"partners": drawn, "k_occurrence": histogram}  # type: ignore[dict-item]  # paths: no return_figure


def embedding_collate(collate: Callable[[list[dict[str, Any]]], Any]) -> Callable[[list[dict[str, Any]]], dict]:
    """The training collator as the embedding pass uses it: on rows of a training batch's columns, its batch without
    the labels (the forward of the pass takes none); a collator that fails on those rows is an error naming the fixes.
    """
    user = getattr(collate, "collate_fn", None) or collate
    name = getattr(user, "__name__", None) or type(user).__name__

    def run(rows: list[dict[str, Any]]) -> dict:
        try:
            batch = collate(rows)
        except Exception as err:
            raise ValueError(
                f"The data collator {name} failed in DMIX's embedding pass on rows of the training set with the "
                f"columns of a training batch ({sorted(rows[0]) if rows else []}): {type(err).__name__}: {err}. If "
                "it reads columns the model does not take (raw text it tokenizes), set remove_unused_columns=False so "
                "that training rows keep them, as plain Trainer needs too; or give the partner search its own "
                "embeddings: DMixTrainer(sentence_embeddings=...) or DMixConfig(embedding_model=..., "
                "embedding_text_column=...)."
            ) from err
        return {k: v for k, v in dict(batch).items() if k not in LABEL_COLUMNS}

    return run


def _unit_ball(points: torch.Tensor) -> torch.Tensor:
    """Euclidean/cosine points scaled into the unit disk for drawing (one factor: the picture keeps their ratios)."""
    return points / (points.norm(dim=-1).max().clamp_min(1e-12) * (1 + 1e-3))


def show_summary(args: DMixConfig, message: str) -> bool:
    """Log the partner-index summary so that a plain Python script shows it, as it shows ``Trainer``'s output.

    Main process only (``args.should_log``, which follows ``log_on_each_node``). The level is
    ``args.get_process_log_level()``: with ``log_level="passive"`` (the default) the summary is shown unless the
    library's verbosity is above ``WARNING`` (it is logged at ``WARNING`` when ``INFO`` would be dropped, the
    default of a script that configured no logging); an explicit ``log_level`` shows it at ``info`` or more verbose
    only. Returns whether it was logged.
    """
    if not args.should_log:
        return False
    level = args.get_process_log_level()
    if level > (py_logging.WARNING if args.log_level == "passive" else py_logging.INFO):
        return False
    logger.log(py_logging.INFO if logger.isEnabledFor(py_logging.INFO) else py_logging.WARNING, message)
    return True


def _search_named(args: DMixConfig) -> str:
    """The partner search as the settings that took effect: random partners or ``tau = 1`` rank nothing, so no rule,
    order or distance applies (``DMixConfig.effective_dmix_settings`` decides, as for ``results.json``)."""
    if "partner_rule" not in args.effective_dmix_settings():
        return "every other example, uniformly: Mixup partners"
    return f"{args.partner_distance}, {args.partner_rule} rule, {args.partner_order}, tau={args.tau}"


def _log_line(args: DMixConfig, s: dict[str, float], n: int) -> str:
    return (
        f"DMIX partner index ({_search_named(args)}): {int(s['candidates_per_example'])} candidates per example out "
        f"of {n - 1}; "
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
            f"top-tau sets ({s['cosine_overlap_chance']:.1%} by chance; {int(s['cosine_overlap_anchors'])} anchors)."
            if "cosine_overlap" in s
            else "."
        )
    )
