"""What goes into a ``run_dmix.py`` run, per modality: one object each for text, images and audio.

What lives here: :class:`Inputs` and its three kinds, which load the data (named datasets, Hub ids, local files),
subsample it, load the model and its processing class (tokenizer, image processor, feature extractor) and turn the
splits into model inputs; :data:`INPUTS`, the table of them; :data:`NAMED_DATASETS`, the datasets the CLI knows by
name; and :func:`resolve_modality`. A new modality is one more :class:`Inputs` in the table, not a branch in the
script. What does not: the loaders themselves (``hf_dmix.data``, ``hf_dmix.media``), training, reporting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets import DatasetDict

from ..data import DataError, LoadedData, demo_data_files, load_classification_data
from ..diagnostics import data_diagnostics
from ..media import (
    CONFIG_PREFIX,
    DIGITS_TEST_SIZE,
    config_model_type,
    count_parameters,
    fsdd_path,
    load_audio_data,
    load_digits_data,
    load_image_data,
    preprocess,
)
from ..mixing import modality_of
from ..splits import stratified_subsample
from .args import logger
from .models import apply_lora, load_media_model, load_text_model, resolve_model_path
from .outcome import log_data_diagnostics


@dataclass(frozen=True)
class NamedDataset:
    """A dataset the CLI knows by name (``--dataset_name NAME``)."""

    modality: str
    source: str | None = None  # how results.json (and so the model card) names it; None: the loader's own name
    license: str | None = None


NAMED_DATASETS: dict[str, NamedDataset] = {
    # The card names the dataset by results.json's data.source: a name, not a path or a sentence with one.
    "demo": NamedDataset("text", "SMS Spam Collection v.1 (800-message sample bundled with hf-dmix)", "CC BY 4.0"),
    "digits": NamedDataset("image"),
    "fsdd": NamedDataset("audio"),
}


def _split_sizes(data_args) -> dict[str, Any]:
    return dict(
        validation_size=data_args.validation_size, test_size=data_args.test_size, split_seed=data_args.split_seed
    )


def _data_files(data_args) -> dict[str, str]:
    files = {
        s: getattr(data_args, f"{s}_file") for s in ("train", "validation", "test") if getattr(data_args, f"{s}_file")
    }
    if files and "train" not in files:
        raise DataError("--validation_file/--test_file need a --train_file as well.")
    return files


def subsample(data: LoadedData, data_args) -> None:
    """``--max_train_samples`` / ``--max_eval_samples``: stratified subsamples drawn with ``--split_seed``.

    Every setting and training seed of a low-resource benchmark sees the same subsample, with the class balance of
    the full split (a file sorted by label, as MR and SUBJ are, would otherwise give a one-class prefix).
    """
    splits = data.splits
    if data_args.max_train_samples is not None and data_args.max_train_samples < len(splits["train"]):
        rows = stratified_subsample(list(splits["train"]["label"]), data_args.max_train_samples, data_args.split_seed)
        splits["train"] = splits["train"].select(rows)
        data.split_info["train_subsample"] = {
            "size": len(rows),
            "method": "stratified by label",
            "seed": data_args.split_seed,
        }
    if data_args.max_eval_samples is not None:
        for s in ("validation", "test"):
            if data_args.max_eval_samples < len(splits[s]):
                rows = stratified_subsample(list(splits[s]["label"]), data_args.max_eval_samples, data_args.split_seed)
                splits[s] = splits[s].select(rows)


class Inputs:
    """How the data and the model of one modality enter a run (subclasses fill in the ``_`` methods)."""

    modality: str = ""
    row_key: str = "id"  # the column that names a test row in predictions.csv

    def load_data(self, data_args, explicit: set[str]) -> LoadedData:
        """The validated, split and subsampled data (every problem reported before a model is loaded)."""
        data = self._read(data_args, explicit)
        subsample(data, data_args)
        logger.info(f"Data ({self.modality}): {data.split_info['sizes']} examples, labels {data.label_names}")
        return data

    def load_model(self, model_args, data: LoadedData, seed: int):
        """``(model, processing class, number of parameters before LoRA)``; LoRA applied when asked for."""
        model, processor = self._model(model_args, data, seed)
        num_parameters = count_parameters(model)
        if model_args.use_lora:
            model = apply_lora(model, model_args)
        return model, processor, num_parameters

    def encode(self, data: LoadedData, processor, data_args, training_args) -> DatasetDict:
        """The splits as model inputs (computed by the main process first, then read from the cache)."""
        with training_args.main_process_first(desc="preprocessing"):
            return self._encode(data, processor, data_args)

    def diagnostics(self, processor, encoded: DatasetDict, data: LoadedData, data_args) -> dict[str, Any] | None:
        """Checks of the inputs for results.json (``None``: this modality has none)."""
        return None

    def data_record(self, data_args) -> dict[str, Any]:
        """Settings of the inputs that results.json records beside the data description."""
        return {}

    def _read(self, data_args, explicit: set[str]) -> LoadedData:
        raise NotImplementedError

    def _model(self, model_args, data: LoadedData, seed: int):
        return load_media_model(model_args, data, self.modality, seed)

    def _encode(self, data: LoadedData, processor, data_args) -> DatasetDict:
        return preprocess(data.splits, processor, self.modality, data.split_info.get("sampling_rate"))


class TextInputs(Inputs):
    """Text: a Hub dataset, local files or the bundled demo; a pretrained classifier and its tokenizer."""

    modality = "text"
    row_key = "text"

    def _read(self, data_args, explicit: set[str]) -> LoadedData:
        named = NAMED_DATASETS.get(data_args.dataset_name or "")
        if data_args.dataset_name == "demo":
            source: dict[str, Any] = demo_data_files()
        else:
            source = {
                "dataset_name": data_args.dataset_name,
                **{f"{s}_file": f for s, f in _data_files(data_args).items()},
            }
        data = load_classification_data(
            **source,
            dataset_config_name=data_args.dataset_config_name,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
            text_pair_column=data_args.text_pair_column,
            text_column_delimiter=data_args.text_column_delimiter,
            train_split=data_args.train_split,
            validation_split=data_args.validation_split,
            test_split=data_args.test_split,
            group_duplicates=data_args.group_duplicates,
            **_split_sizes(data_args),
        )
        if named is not None and named.source:
            data.split_info.update({"source": named.source, "license": named.license})
        return data

    def _model(self, model_args, data: LoadedData, seed: int):
        return load_text_model(model_args, data.label_names)

    def _encode(self, data: LoadedData, processor, data_args) -> DatasetDict:
        def tokenize(batch):
            # A sentence pair goes to the tokenizer as (text, text_pair), as run_glue.py passes it.
            pair = batch.get("text_pair")
            return processor(batch["text"], pair, truncation=True, max_length=data_args.max_seq_length)

        return data.splits.map(tokenize, batched=True, desc="Tokenizing")

    def diagnostics(self, processor, encoded: DatasetDict, data: LoadedData, data_args) -> dict[str, Any]:
        """Truncation, tokenizer coverage and duplicate texts (:func:`hf_dmix.diagnostics.data_diagnostics`)."""
        found = data_diagnostics(
            processor, encoded, data_args.max_seq_length, duplicates=data.split_info.pop("duplicates", None)
        )
        log_data_diagnostics(found)
        return found

    def data_record(self, data_args) -> dict[str, Any]:
        record: dict[str, Any] = {"max_seq_length": data_args.max_seq_length}
        if "," in data_args.text_column:
            record.update(
                text_columns=data_args.text_column.split(","), text_column_delimiter=data_args.text_column_delimiter
            )
        if data_args.text_pair_column:
            record["text_pair_column"] = data_args.text_pair_column
        return record


class ImageInputs(Inputs):
    """Images: scikit-learn's ``digits``, a Hub dataset or local files; a ViT/DeiT classifier and image processor."""

    modality = "image"

    def _read(self, data_args, explicit: set[str]) -> LoadedData:
        sizes = _split_sizes(data_args)
        if data_args.dataset_name == "digits":
            if "test_size" not in explicit:
                sizes["test_size"] = DIGITS_TEST_SIZE
            return load_digits_data(**sizes)
        files = _data_files(data_args)
        return load_image_data(
            files or None,
            None if files else data_args.dataset_name,
            data_args.dataset_config_name,
            image_column=data_args.image_column,
            label_column=data_args.label_column,
            **sizes,
        )


class AudioInputs(Inputs):
    """Audio: the Free Spoken Digit Dataset (``fsdd``), a Hub dataset or local files; a speech/AST classifier."""

    modality = "audio"

    def _read(self, data_args, explicit: set[str]) -> LoadedData:
        files = _data_files(data_args)
        if data_args.dataset_name == "fsdd":
            files, name = {"train": fsdd_path(data_args.data_dir)}, None
        else:
            name = None if files else data_args.dataset_name
        return load_audio_data(
            files or None,
            name,
            data_args.dataset_config_name,
            audio_column=data_args.audio_column,
            label_column=data_args.label_column,
            **_split_sizes(data_args),
        )


INPUTS: dict[str, Inputs] = {inputs.modality: inputs for inputs in (TextInputs(), ImageInputs(), AudioInputs())}


def resolve_modality(model_args, data_args) -> str:
    """``--modality``, else the modality of the model's ``model_type`` (from ``config:NAME`` or the checkpoint's
    config.json), else that of a named dataset (``demo``, ``digits``, ``fsdd``), else text. A contradiction is an
    error."""
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
    named = NAMED_DATASETS.get(data_args.dataset_name or "")
    claims = [
        ("--modality", data_args.modality),
        (f"the model {name!r}", from_model),
        (f"--dataset_name {data_args.dataset_name}", named.modality if named else None),
    ]
    known = [(what, value) for what, value in claims if value is not None]
    if len({value for _, value in known}) > 1:
        raise DataError(
            "The modality is ambiguous: "
            + ", ".join(f"{what} is {value}" for what, value in known)
            + ". Pass a model and data of one modality (text, image or audio)."
        )
    return known[0][1] if known else "text"
