"""``DMixConfig``: the ``TrainingArguments`` of a DMIX run.

What lives here: every DMIX setting with its default, help text and validation; the groups of settings, defined once
(``INDEX_FIELDS``: what the partner index depends on; ``RESUME_FIELDS``: what a checkpoint must agree on;
``EFFECTIVE_FIELDS`` and :meth:`DMixConfig.effective_dmix_settings`: what took effect in a run) that the trainer,
``checkpoint.py``, the card and ``results.json`` read; and :meth:`DMixConfig.partner_search_settings`, the search the
settings describe. What does not: any behaviour (see ``trainer.py``). Settings that depend on the model (the number of layers) are checked again when the trainer
is built.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from transformers import TrainingArguments

from .geometry import check_ball_settings
from .mixing import MIX_STRATEGIES
from .partners import (
    AUTO_EXACT_MAX_EXAMPLES,  # noqa: F401  (importable from here, where it was defined before)
    PARTNER_DISTANCES,
    PARTNER_ORDERS,
    PARTNER_RULES,
    PARTNER_SEARCH_MODES,
    PartnerSearch,
)

EMBEDDING_POOLINGS: tuple[str, ...] = ("mean", "cls")

# ---- Field groups: defined once, read by the trainer, the partner indexer, checkpoints, the card and results.json.
MIXING_FIELDS: tuple[str, ...] = ("mix_strategy", "mix_layers", "mix_alpha", "anchor_dominant")
PARTNER_FIELDS: tuple[str, ...] = ("partner_distance", "tau", "partner_order", "partner_rule")
BALL_FIELDS: tuple[str, ...] = ("curvature", "ball_median_radius", "ball_clip_quantile", "ball_center")
# What the sentence embeddings depend on, besides the training set and where they come from (the model's weights,
# an encoder, precomputed). embedding_batch_size is not here: it changes only the padding of the embedding batches.
EMBEDDING_FIELDS: tuple[str, ...] = (
    "embedding_model",
    "embedding_text_column",
    "embedding_text_pair_column",
    "embedding_pooling",
    "embedding_max_length",
)
SEARCH_FIELDS: tuple[str, ...] = ("partner_search", "partner_search_sample_size", "partner_index_max_mb")
# Settings of how the work is done, which change no number of the index or of training (partner_overlap_anchors: only
# how many anchors a logged diagnostic, the hyperbolic-vs-cosine overlap, is measured on).
RESOURCE_FIELDS: tuple[str, ...] = (
    "embedding_batch_size",
    "partner_search_memory_mb",
    "save_on_sigterm",
    "partner_overlap_anchors",
)
# Everything the partner index depends on besides the embeddings' source and the training set: a change rebuilds it.
INDEX_FIELDS: tuple[str, ...] = (*PARTNER_FIELDS, *BALL_FIELDS, *EMBEDDING_FIELDS, *SEARCH_FIELDS, "seed")
# Everything a checkpoint's DMIX streams and index depend on (with mix_layers resolved): a resume must agree on it.
RESUME_FIELDS: tuple[str, ...] = (
    "mix_strategy",
    "mix_alpha",
    "anchor_dominant",
    "partner_refresh_epochs",
    *INDEX_FIELDS,
)
# The settings a run records as having shaped it (results.json, see DMixConfig.effective_dmix_settings).
EFFECTIVE_FIELDS: tuple[str, ...] = (
    *MIXING_FIELDS,
    *PARTNER_FIELDS,
    "partner_refresh_epochs",
    *BALL_FIELDS,
    *EMBEDDING_FIELDS,
    *SEARCH_FIELDS,
)


@dataclass
class DMixConfig(TrainingArguments):
    r"""Configuration for [`DMixTrainer`]: ``TrainingArguments`` plus the settings of DMIX.

    Only the parameters specific to DMIX are listed here. For the others see ``transformers.TrainingArguments``.
    Using ``HfArgumentParser`` every field becomes a command-line flag.

    Parameters that control mixing (paper eq. 1–3):
        mix_strategy (`str`, defaults to `"hidden"`):
            Where anchors and partners are interpolated. `"hidden"`: the output of an encoder layer ``k`` sampled
            uniformly from ``mix_layers`` (the paper). `"input"`: the embedding output. `"sentence"`: the sentence
            vector entering the final linear classifier. `"none"`: no mixup (plain fine-tuning).
        mix_layers (`list[int]` or `None`, defaults to `None`):
            Encoder layers (1-based, ``1..N``) from which the mixing layer ``k`` is sampled each step. `None` means
            every layer, as the paper's "random layer sampled from all the layers".
        mix_alpha (`float`, defaults to `0.2`):
            The mixing ratio is ``r ~ Beta(mix_alpha, mix_alpha)``; must be > 0.
        anchor_dominant (`bool`, defaults to `False`):
            Beyond the paper. `False`: each selected pair gives two mixed rows, at ratios ``r`` and ``1 − r`` on the
            anchor, so half of all mixed examples are dominated by the *partner* and the partner index's skew becomes
            half of the training distribution. `True`: only the anchor-dominant row is trained, at
            ``r' = max(r, 1 − r)`` (as MixText does); the layers after the mixing site then run on ``B`` rows
            instead of ``2B``. Not available for ModernBERT with ``classifier_pooling="mean"``.

    Parameters that control partner selection (paper eq. 4):
        partner_distance (`str`, defaults to `"hyperbolic"`):
            `"hyperbolic"` (DMIX: Poincaré distance), `"euclidean"`, `"cosine"` (1 − cosine similarity) or
            `"random"` (vanilla Mixup: any other training example).
        tau (`float`, defaults to `0.3`):
            Fraction of the other training examples, in ``(0, 1]``, that form each example's candidate set; a
            partner is drawn uniformly from it. ``1.0`` is vanilla Mixup.
        partner_order (`str`, defaults to `"farthest"`):
            `"farthest"`: candidates are the top-τ by decreasing distance (the paper sorts in decreasing order).
            `"nearest"`: the top-τ by increasing distance.
        partner_rule (`str`, defaults to `"centered"`):
            How candidates are ranked. `"paper"`: by the distance itself (eq. 4 read literally); in the Poincaré
            ball a few high-norm "hub" examples then rank first for every anchor (on all five benchmark datasets the
            top 1 % are candidates of every anchor). Beyond the paper, two hub-robust rules that keep the selection a
            distance constraint in the same space (the default, `"centered"`, was chosen on validation over five
            datasets, docs/results/suite.md): `"centered"` ranks by
            ``d(i, j) − μ_j`` with ``μ_j`` the mean distance of ``j`` to the data (CSLS-style, Conneau et al. 2018);
            `"mutual"` by mutual proximity (Schnitzer et al. 2012), ``log Φ(z_i) + log Φ(z_j)`` with
            ``z_x = (d(i, j) − μ_x)/σ_x``. The moments are measured against every example, or against
            ``partner_search_sample_size`` random ones for larger training sets.

    Parameters that control the geometry:
        curvature (`float`, defaults to `1.0`):
            ``c > 0``; the Poincaré ball has curvature ``-c`` and radius ``1/sqrt(c)``.
        ball_median_radius (`float`, defaults to `0.5`):
            Embeddings are rescaled by one global factor so that the median one lands at this fraction of the
            ball's radius, in ``(0, 1)``. Keeps points away from the boundary, where ranking degenerates.
        ball_clip_quantile (`float`, defaults to `0.99`):
            Embedding norms are capped at this quantile before mapping into the ball, in ``(0.5, 1]`` (1 disables
            it). Limits "hubs": outliers that would otherwise be the farthest point from every anchor.
        ball_center (`bool`, defaults to `True`):
            Subtract the mean embedding before mapping into the ball.

    Parameters that control sentence embeddings (computed once, before training):
        embedding_model (`str` or `None`, defaults to `None`):
            `None`: the mean-pooled last hidden state of the model being fine-tuned, at its initial weights.
            Otherwise a local path or Hub id of another encoder (loaded with ``AutoModel``), which embeds the raw
            text of ``embedding_text_column``.
        embedding_text_column (`str`, defaults to `"text"`):
            Column with the raw text, used only with ``embedding_model``.
        embedding_text_pair_column (`str` or `None`, defaults to `None`):
            For sentence-pair tasks: the column with the second text, passed with ``embedding_text_column`` to the
            encoder's tokenizer as ``text_pair`` (the pair as a pair model reads it). Used only with
            ``embedding_model``; without one, the model being fine-tuned embeds its own (pair) features.
        embedding_pooling (`str`, defaults to `"mean"`):
            `"mean"` (attention-masked mean of the last hidden state) or `"cls"` (first token).
        embedding_batch_size (`int`, defaults to `64`):
            Batch size of the embedding pass.
        embedding_max_length (`int`, defaults to `256`):
            Truncation length when ``embedding_model`` tokenizes raw text.
        partner_refresh_epochs (`int`, defaults to `0`):
            Beyond the paper. ``0``: the embeddings and the partner index are computed once, before training (the
            paper). ``E ≥ 1``: at the start of epochs ``E, 2E, …`` the training set is embedded again with the
            model being trained and the index is rebuilt from those embeddings, so that partners follow what the
            model has learned (a model trained from scratch has meaningless initial embeddings). Each refresh runs
            an embedding pass over the training set, the ball mapping, the distance moments (hub-robust rules), the
            partner search, the index statistics, the cosine overlap diagnostic on ``partner_overlap_anchors``
            anchors and (list indices) the count of candidates kept, and is logged with its time and how many
            candidate slots changed. Needs the embeddings of the model being trained: not available with
            ``embedding_model`` or precomputed ``sentence_embeddings``. Checkpoints after a refresh also store its
            embeddings (``N × d`` float32), so that a resumed run continues with the same partners.
        partner_search_memory_mb (`int`, defaults to `512`):
            Memory budget of one chunk of the distance matrix during partner search.
        partner_overlap_anchors (`int`, defaults to `512`):
            How many anchors (a fixed uniform sample, the same on every process) the logged diagnostic "share of the
            hyperbolic candidates that the cosine top-τ sets also hold" is measured on, after every build and
            refresh of a hyperbolic index. It costs ``m/N`` of a second, cosine partner search and changes nothing
            of the index. ``0``: off; ``-1``: every anchor (a full second search, repeated on every process; skipped
            above 200,000 examples).
        partner_search (`str`, defaults to `"auto"`):
            `"exact"` compares every anchor with every example (chunked, ``O(N²d)`` work); `"sampled"` estimates
            each anchor's top-τ threshold from ``partner_search_sample_size`` random examples (``O(N·m·d)``, for
            millions of examples, membership recall ≈ 1 with slightly larger sets); `"auto"`: exact up to 200,000
            examples.
        partner_search_sample_size (`int`, defaults to `16384`):
            ``m``, examples per anchor in sampled search; also the size of the reference sample that the
            ``centered``/``mutual`` rules measure distance moments against when the training set is larger.
        partner_index_max_mb (`int`, defaults to `1024`):
            Candidate sets are kept as an ``(N, k)`` int32 table up to this size; beyond it (e.g. ``N = 100k``,
            ``τ = 0.5`` would need 20 GB) one threshold per example is stored and partners are drawn by rejection.
            The threshold ``t`` is the anchor's k-th largest ranking key, lowered by a slack of
            ``1e-5 · max(|t|, 1)`` so that recomputing a key in another matrix shape (float32 rounding, ~1e-7
            relative) never drops a member. A threshold set is therefore every member of the exact list plus every
            example whose key lies within that slack below ``t``: exact ties with the k-th candidate (repeated
            texts have identical embeddings; a list keeps an arbitrary one of them) and float32 near-ties. Such a
            set can hold more than ``k`` examples; with distinct, continuous embeddings it equals the list.

    Parameters for long runs on shared clusters:
        save_on_sigterm (`bool`, defaults to `True`):
            On ``SIGTERM`` (cluster pre-emption, ``scancel``, a reclaimed spot instance, ``docker stop``) finish the
            current optimizer step, save a checkpoint (whatever ``save_strategy`` says) and stop training;
            ``trainer.stopped_by_signal`` then names the signal. Resume with ``resume_from_checkpoint=True``. In
            multi-process runs the request is shared across processes at each step end (one scalar all-reduce), so
            all processes stop at the same step even if only one got the signal.

    Defaults that differ from ``TrainingArguments`` (what DDP needs; every other default, ``learning_rate`` and
    ``weight_decay`` included, is ``TrainingArguments``' own, so swapping the class changes no hyperparameter — the
    paper's ``learning_rate=2e-5``, ``weight_decay=0.01`` are set by ``run_dmix.py`` and the config files):
        ddp_find_unused_parameters: ``False`` (every parameter is used in the single forward of a DMIX step);
        ddp_broadcast_buffers: ``False`` (BERT-like position-id buffers never change; broadcasting them each
        forward costs time and can trip autograd's in-place check).
    """

    # --- TrainingArguments' learning_rate and weight_decay stay as they are (the paper's 2e-5 and 0.01: run_dmix.py) ---
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Training batch size per device, in anchors (paper: 8)."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "DDP find_unused_parameters. DMIX runs one forward per step that uses every parameter."},
    )
    ddp_broadcast_buffers: bool | None = field(
        default=False, metadata={"help": "DDP broadcast_buffers. Off: encoder buffers are constant."}
    )

    # --- Mixing ---
    mix_strategy: str = field(
        default="hidden",
        metadata={
            "help": "Where to interpolate: hidden (sampled encoder layer, the paper), input (embedding output), "
            "sentence (vector entering the classifier) or none (no mixup).",
            "choices": list(MIX_STRATEGIES),
        },
    )
    mix_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Encoder layers (1-based) to sample the mixing layer from. Default: all layers 1..N."},
    )
    mix_alpha: float = field(default=0.2, metadata={"help": "Mixing ratio r ~ Beta(alpha, alpha); alpha > 0."})
    anchor_dominant: bool = field(
        default=False,
        metadata={
            "help": "Train only the anchor-dominant mixed row of each pair, at r' = max(r, 1 - r) (beyond the paper); "
            "the layers after the mixing site run on B rows instead of 2B."
        },
    )

    # --- Partners ---
    partner_distance: str = field(
        default="hyperbolic",
        metadata={
            "help": "Distance between sentence embeddings: hyperbolic (DMIX), euclidean, cosine, or random "
            "(vanilla Mixup).",
            "choices": list(PARTNER_DISTANCES),
        },
    )
    tau: float = field(
        default=0.3,
        metadata={"help": "Fraction in (0, 1] of the other training examples a partner is drawn from; 1 = Mixup."},
    )
    partner_order: str = field(
        default="farthest",
        metadata={
            "help": "farthest: top-tau by decreasing distance (the paper); nearest: by increasing distance.",
            "choices": list(PARTNER_ORDERS),
        },
    )
    partner_rule: str = field(
        default="centered",
        metadata={
            "help": "How candidates are ranked: paper (by the distance, eq. 4 literally), centered (distance minus the "
            "candidate's mean distance to the data; CSLS-style, hub-robust) or mutual (mutual proximity, hub-robust).",
            "choices": list(PARTNER_RULES),
        },
    )

    # --- Geometry ---
    curvature: float = field(default=1.0, metadata={"help": "c > 0: the Poincare ball has curvature -c."})
    ball_median_radius: float = field(
        default=0.5, metadata={"help": "Fraction of the ball radius, in (0, 1), where the median embedding lands."}
    )
    ball_clip_quantile: float = field(
        default=0.99, metadata={"help": "Quantile in (0.5, 1] at which embedding norms are capped (1 = off)."}
    )
    ball_center: bool = field(default=True, metadata={"help": "Subtract the mean embedding before the ball map."})

    # --- Sentence embeddings ---
    embedding_model: str | None = field(
        default=None,
        metadata={
            "help": "Encoder for partner-search embeddings (local path or Hub id). Default: the model being "
            "fine-tuned, before training."
        },
    )
    embedding_text_column: str = field(
        default="text", metadata={"help": "Raw-text column embedded by --embedding_model."}
    )
    embedding_text_pair_column: str | None = field(
        default=None,
        metadata={
            "help": "Second raw-text column of a sentence pair, passed to --embedding_model's tokenizer as text_pair."
        },
    )
    embedding_pooling: str = field(
        default="mean",
        metadata={"help": "Pooling of the last hidden state: mean or cls.", "choices": list(EMBEDDING_POOLINGS)},
    )
    embedding_batch_size: int = field(default=64, metadata={"help": "Batch size of the embedding pass."})
    embedding_max_length: int = field(
        default=256, metadata={"help": "Truncation length when --embedding_model tokenizes raw text."}
    )
    partner_refresh_epochs: int = field(
        default=0,
        metadata={
            "help": "Re-embed the training set with the model being trained and rebuild the partner index at the "
            "start of every E-th epoch (0 = once, before training, as the paper)."
        },
    )
    save_on_sigterm: bool = field(
        default=True,
        metadata={
            "help": "On SIGTERM (pre-emption, scancel) finish the current step, save a checkpoint and stop; resume "
            "with --resume_from_checkpoint true."
        },
    )
    partner_search_memory_mb: int = field(
        default=512, metadata={"help": "Memory budget (MiB) of one chunk of the partner-search distance matrix."}
    )
    partner_overlap_anchors: int = field(
        default=512,
        metadata={
            "help": "Anchors (a fixed sample) the hyperbolic-vs-cosine overlap diagnostic is measured on; 0 = off, "
            "-1 = every anchor (a second full search)."
        },
    )
    partner_search: str = field(
        default="auto",
        metadata={
            "help": "exact: every anchor against every example (N x N work, chunked); sampled: thresholds estimated "
            "from partner_search_sample_size random examples per anchor (N x m work, for millions of examples); "
            "auto: exact up to 200000 examples, sampled above.",
            "choices": list(PARTNER_SEARCH_MODES),
        },
    )
    partner_search_sample_size: int = field(
        default=16384, metadata={"help": "Examples per anchor that estimate its threshold in sampled search."}
    )
    partner_index_max_mb: int = field(
        default=1024,
        metadata={
            "help": "Largest candidate table (N x k int32) kept as explicit lists; larger indices store one "
            "threshold per example and draw partners by rejection in O(N) memory. Threshold sets hold every list "
            "member plus the examples tied or nearly tied with the k-th candidate (ranking key within 1e-5 relative, "
            "e.g. repeated texts), so a set can exceed k; 0 = always thresholds."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate_dmix_settings()
        from .engines import warn_fsdp_on_cpu

        warn_fsdp_on_cpu(self)  # before Trainer: on the CPU it either refuses FSDP or silently trains DDP

    def validate_dmix_settings(self) -> None:
        """Raise ``ValueError`` naming the first invalid DMIX setting and what is accepted.

        Run at construction and again when training starts (``hyperparameter_search`` sets trial values on an
        existing config without constructing a new one).
        """
        if self.partner_index_max_mb < 0:
            raise ValueError(
                f"partner_index_max_mb must be >= 0 (0 = always thresholds), got {self.partner_index_max_mb!r}."
            )
        for f in fields(self):  # the choices declared in each field's metadata (the CLI's --help lists them too)
            if f.name in DMIX_FIELDS and "choices" in f.metadata:
                _check_choice(f.name, getattr(self, f.name), f.metadata["choices"])
        if not (isinstance(self.tau, (int, float)) and 0.0 < self.tau <= 1.0):
            raise ValueError(f"tau must lie in (0, 1] (a fraction of the training set; 1.0 = Mixup), got {self.tau!r}.")
        if not (isinstance(self.mix_alpha, (int, float)) and self.mix_alpha > 0):
            raise ValueError(f"mix_alpha must be > 0 (r ~ Beta(mix_alpha, mix_alpha)), got {self.mix_alpha!r}.")
        check_ball_settings(self.curvature, self.ball_median_radius, self.ball_clip_quantile)  # geometry.py
        if self.mix_layers is not None:
            layers = list(self.mix_layers)
            if not layers or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in layers):
                raise ValueError(
                    f"mix_layers must be a non-empty list of 1-based encoder layer numbers (1..N), got {self.mix_layers!r}."
                )
            self.mix_layers = sorted(set(layers))
        refresh = self.partner_refresh_epochs
        if not isinstance(refresh, int) or isinstance(refresh, bool) or refresh < 0:
            raise ValueError(
                f"partner_refresh_epochs must be an integer >= 0 (0 = embed once, before training), got {refresh!r}."
            )
        if refresh and self.embedding_model is not None:
            raise ValueError(
                f"partner_refresh_epochs={refresh} re-embeds with the model being trained, but embedding_model="
                f"{self.embedding_model!r} is a fixed encoder whose embeddings never change. Drop one of the two."
            )
        for name in (
            "embedding_batch_size",
            "embedding_max_length",
            "partner_search_memory_mb",
            "partner_search_sample_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if not isinstance(self.partner_overlap_anchors, int) or self.partner_overlap_anchors < -1:
            raise ValueError(
                "partner_overlap_anchors must be an integer: a number of anchors, 0 (off) or -1 (every anchor), got "
                f"{self.partner_overlap_anchors!r}."
            )
        if refresh and self.dataloader_persistent_workers and self.dataloader_num_workers > 0:
            raise ValueError(
                f"partner_refresh_epochs={refresh} rebuilds the partner index between epochs, but "
                f"dataloader_persistent_workers=True keeps {self.dataloader_num_workers} dataloader workers alive with "
                "the collator (and the index) they were started with, so they would keep drawing the old partners. "
                "Use dataloader_persistent_workers=False (workers restart each epoch and see the new index), "
                "dataloader_num_workers=0, or partner_refresh_epochs=0."
            )

    def effective_dmix_settings(self) -> dict[str, Any]:
        """The DMIX settings that took effect in a run with this config (what ``results.json`` records).

        Settings that could not change anything are left out: with ``mix_strategy="none"`` everything but it; with
        random partners or ``tau=1`` the partner order, rule, refresh and the embedding, search and ball settings;
        with a non-hyperbolic distance the ball settings; the text column and length of a separate encoder without
        ``embedding_model``; ``mix_layers`` unless ``mix_strategy="hidden"``.
        """
        settings = {name: getattr(self, name) for name in EFFECTIVE_FIELDS}
        if self.mix_strategy == "none":
            return {"mix_strategy": "none"}
        drop: set[str] = set()
        if self.partner_distance == "random" or self.tau >= 1.0:
            drop |= {
                *BALL_FIELDS,
                *EMBEDDING_FIELDS,
                *SEARCH_FIELDS,
                "partner_order",
                "partner_rule",
                "partner_refresh_epochs",
            }
        elif self.partner_distance != "hyperbolic":
            drop |= set(BALL_FIELDS)
        if self.embedding_model is None:
            # read only by a separate encoder
            drop |= {"embedding_text_column", "embedding_text_pair_column", "embedding_max_length"}
        if self.mix_strategy != "hidden":
            drop.add("mix_layers")
        return {k: v for k, v in settings.items() if k not in drop}

    def partner_search_settings(self) -> PartnerSearch:
        """The :class:`~hf_dmix.partners.PartnerSearch` these settings describe (what the trainer searches with)."""
        return PartnerSearch(
            distance=self.partner_distance,
            tau=self.tau,
            order=self.partner_order,
            rule=self.partner_rule,
            curvature=self.curvature,
            mode=self.partner_search,
            sample_size=self.partner_search_sample_size,
            moment_reference_size=self.partner_search_sample_size,
            max_list_bytes=self.partner_index_max_mb * 2**20,
            memory_bytes=self.partner_search_memory_mb * 2**20,
            seed=self.seed,
        )

    # --- Pickling without secrets (training_args.bin) ---

    def __getstate__(self) -> dict[str, Any]:
        """The pickled state: every attribute, with each ``*_token`` field (``hub_token``) replaced by ``None``."""
        return {k: (None if k.endswith("_token") else v) for k, v in self.__dict__.items()}

    def __copy__(self) -> DMixConfig:
        # copy.copy would otherwise go through __getstate__ and lose the token of the live object.
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> DMixConfig:
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new


# The settings DMixConfig adds to TrainingArguments (what ``dmix_config.json`` records), in declaration order. Every one
# of them is in exactly one of the groups above (MIXING, PARTNER, BALL, EMBEDDING, SEARCH, RESOURCE) or is
# partner_refresh_epochs (tests/test_config.py checks this).
DMIX_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(DMixConfig) if f.name not in {g.name for g in fields(TrainingArguments)}
)


def as_dmix_config(args: Any) -> DMixConfig:
    """``args`` if it is a :class:`DMixConfig`, the default one for ``None``; a ``TypeError`` for anything else (plain
    ``TrainingArguments`` lack every DMIX setting)."""
    if args is None:
        return DMixConfig(output_dir="dmix-output")
    if not isinstance(args, DMixConfig):
        raise TypeError(
            f"DMixTrainer needs a DMixConfig, got {type(args).__name__}. Build one with the same arguments: "
            "DMixConfig(output_dir=..., mix_strategy=..., tau=..., ...)."
        )
    return args


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {', '.join(map(repr, choices))}.")
