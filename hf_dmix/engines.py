"""Training engines DMIX runs on (DDP, FSDP2, DeepSpeed ZeRO, ``torch.compile``): the checks made before training.

What lives here: reading which engine a run asked for (a DeepSpeed ZeRO stage from ``TrainingArguments.deepspeed`` /
``hf_deepspeed_config`` or ``accelerate launch``'s environment; an FSDP request from ``fsdp`` or the environment) and
:func:`check_engines`, which refuses the combinations DMIX cannot run correctly and :func:`warn_fsdp_on_cpu`, which warns
about an FSDP request that will silently not happen. What does not: the collective embedding pass through a sharded model (``embeddings.py``, padded
per process by ``indexer.Sharding``), the mixing hooks (``mixing.py``) — both engine-agnostic.

Why each rule (README, "Compatibility"):

* **DeepSpeed ZeRO-3** partitions every parameter across processes; before ``deepspeed.initialize`` (when the index is
  first built) a model loaded under ``zero.Init`` holds empty placeholders, so embedding the training set with the
  model being fine-tuned would run on partitioned weights. Refused unless the embeddings come from elsewhere
  (``sentence_embeddings=`` / ``embedding_model=``). ZeRO-1/2 partition optimizer state and gradients only: every
  process keeps whole weights and the forward is DDP's, so they are expected to work as DDP does.
* **FSDP on the CPU**: ``use_cpu=True`` turns an FSDP request into DDP (or one process) without a word; a warning says so.
* **torch.compile + gradient checkpointing**: with checkpointing, each layer's forward is recomputed in backward and
  must mix exactly as the first forward did (the mixer stays armed for it); under compilation the checkpointed regions
  are traced as higher-order ops, and whether the recomputation replays our hooks has not been verified — refused.
  ``torch.compile`` alone works (``tests/test_engines.py``): one graph per mixing site plus one recompilation when
  the ratio (a Python float) first changes, after which dynamo treats it as a dynamic input. Speech classifiers
  (wav2vec2/HuBERT) train correctly compiled but their own forward breaks the graph every step: a warning
  (:func:`warn_compile_graph_breaks`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from transformers.utils import logging

logger = logging.get_logger(__name__)


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def deepspeed_zero_stage(args: Any) -> int | None:
    """The ZeRO stage a run asked for (``None``: no DeepSpeed), read without importing ``deepspeed``.

    Sources, first found wins: ``args.hf_deepspeed_config`` (set by ``TrainingArguments`` when DeepSpeed is
    installed), ``args.deepspeed`` (a dict or the path of a JSON file), ``accelerate launch``'s environment
    (``ACCELERATE_USE_DEEPSPEED`` with ``ACCELERATE_DEEPSPEED_ZERO_STAGE``).
    """
    hf_config = getattr(args, "hf_deepspeed_config", None)
    config = getattr(hf_config, "config", None)
    if config is None:
        config = getattr(args, "deepspeed", None)
    if isinstance(config, str) and os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            config = json.load(f)
    if isinstance(config, dict):
        stage = (config.get("zero_optimization") or {}).get("stage", 0)
        return int(stage) if str(stage).isdigit() else None
    if _truthy(os.environ.get("ACCELERATE_USE_DEEPSPEED")):
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
        return int(stage) if stage.isdigit() else None
    return None


def fsdp_requested(args: Any) -> bool:
    """Whether the run asked for FSDP (``TrainingArguments.fsdp`` or ``accelerate launch``'s FSDP environment)."""
    return bool(getattr(args, "fsdp", None)) or _truthy(os.environ.get("ACCELERATE_USE_FSDP"))


ZERO3_MESSAGE = (
    "DeepSpeed ZeRO-3 partitions the model's parameters across processes, and DMIX's default embedding pass (the "
    "model being fine-tuned, run over the training set before training to build the partner index) would call the "
    "model while its weights are partitioned placeholders. Give the partner search its own embeddings instead: "
    "DMixTrainer(..., sentence_embeddings=<(N, d) array>) or DMixConfig(embedding_model='<encoder id or folder>'), or "
    "use ZeRO-2 (whole weights on every process) or FSDP2 (supported: the embedding pass runs through the sharded "
    "model); partner_refresh_epochs is refused under ZeRO-3 for the same reason."
)

COMPILE_CHECKPOINTING_MESSAGE = (
    "torch_compile=True with gradient_checkpointing=True is not supported with DMIX mixing: gradient checkpointing "
    "recomputes each layer's forward during backward, and DMIX's mixing hooks must replay exactly in that "
    "recomputation; under torch.compile the checkpointed layers are traced as one opaque region and that replay is "
    "not verified. Turn off one of the two (torch.compile alone and gradient checkpointing alone are both supported), "
    "or set mix_strategy='none'."
)


def warn_fsdp_on_cpu(args: Any) -> bool:
    """Warn (and return ``True``) when FSDP was requested with ``use_cpu=True``: Trainer then refuses it in one process
    ("Using fsdp only works in distributed training") or, under ``torchrun``, silently trains with DDP. Called when a
    ``DMixConfig`` is built, before ``Trainer`` sees the settings."""
    if not (fsdp_requested(args) and getattr(args, "use_cpu", False)):
        return False
    logger.warning(
        "FSDP was requested (fsdp / fsdp_config or ACCELERATE_USE_FSDP) but use_cpu=True: on the CPU, Trainer and "
        "Accelerate do not shard the model — under torchrun this run trains with DDP, with whole parameters on every "
        "process, and in one process Trainer refuses FSDP. FSDP needs GPUs (DMIX's own pieces on a model sharded with "
        "fully_shard are tested on the CPU: tests/test_fsdp.py)."
    )
    return True


COMPILE_SPEECH_MESSAGE = (
    "torch_compile=True with a wav2vec2/HuBERT classifier: training is correct (the same losses as without "
    "compilation) but gains nothing — the model's own forward breaks the graph every step (transformers' feature "
    "encoder sets requires_grad on a tensor, and a ContextVar is read), so dynamo compiles new graphs step after step "
    "(24 in 6 steps in tests/test_engines.py). Consider torch_compile=False for this model."
)


def warn_compile_graph_breaks(args: Any, model: Any) -> bool:
    """Warn (and return ``True``) when ``torch_compile`` is set for a family whose forward breaks dynamo's graph on
    every step (the speech classifiers: their family has a frame mask)."""
    if not getattr(args, "torch_compile", False) or model is None:
        return False
    from .families import resolve_family, unwrap_model

    try:
        family = resolve_family(unwrap_model(model))
    except (ValueError, TypeError):
        return False
    if family.frame_mask is None:
        return False
    logger.warning(COMPILE_SPEECH_MESSAGE)
    return True


def check_engines(args: Any, embedding_source: str, mixing: bool) -> None:
    """Refuse what DMIX cannot run correctly on the requested engine, before training.

    ``embedding_source``: ``"precomputed"``, ``"embedding_model"`` or ``"model"`` (``embeddings.embedding_source``).
    Called at construction and again when each training loop starts (a ``hyperparameter_search`` trial).
    """
    if not mixing:
        return
    if deepspeed_zero_stage(args) == 3 and (embedding_source == "model" or args.partner_refresh_epochs):
        raise ValueError(ZERO3_MESSAGE)
    if getattr(args, "torch_compile", False) and getattr(args, "gradient_checkpointing", False):
        raise ValueError(COMPILE_CHECKPOINTING_MESSAGE)
