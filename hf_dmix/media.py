"""Images and audio for ``run_dmix.py``: data loaders, preprocessing and small classifiers built from a config.

What lives here: the two offline datasets the CLI knows by name — ``digits`` (scikit-learn's bundled 8×8 handwritten
digits, split with a fixed seed) and ``fsdd`` (the Free Spoken Digit Dataset as one Parquet file of WAV bytes) — and
the general readers behind them (an image column, or an audio column of WAV bytes / float arrays, in any file
``datasets`` reads); WAV decoding with the standard-library ``wave`` module; the processing class of a model
(image processor or feature extractor: the counterpart of a tokenizer, saved with the model so that
``pipeline("image-classification" | "audio-classification")`` works on the published checkpoint); and
:data:`MODEL_CONFIGS`, the small architectures ``--model_name_or_path config:NAME`` builds with random weights.

Every loader returns a :class:`hf_dmix.data.LoadedData` whose splits have an input column (``image`` or ``audio``),
``label`` (int) and ``id`` (a row name for ``predictions.csv``). A missing validation or test split is carved out of
train by :func:`hf_dmix.splits.carve_out_of_train` — stratified by label (and, where a ``strata`` column such as FSDD's
``speaker`` exists, by label × stratum) with a fixed seed.

What does not: text (``data.py``), mixing, training (``trainer.py``); choosing a loader for a run
(``hf_dmix/cli/inputs.py``).
"""

from __future__ import annotations

import io
import json
import os
import wave
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict

from .data import LoadedData, _checked_labels, _load_raw, splits_from_column
from .mixing import modality_of
from .splits import SPLITS, DataError, carve_out_of_train

DIGITS_SOURCE = "scikit-learn load_digits (UCI optical recognition of handwritten digits, 1,797 8x8 images)"
# Default split of the digits: 20 % test, 10 % validation, stratified by digit, seed --split_seed (42).
DIGITS_TEST_SIZE = 0.2
FSDD_FILE = "fsdd.parquet"


# ---------------------------------------------------------------------------------------------------------- data


def _split_and_describe(
    official: Mapping[str, Dataset],
    input_column: str,
    label_column: str,
    validation_size: float,
    test_size: float,
    split_seed: int,
    source: Any,
    strata_column: str | None = None,
    id_column: str | None = None,
    extra_info: Mapping[str, Any] | None = None,
) -> LoadedData:
    """Map labels to ids, carve missing validation/test splits out of train, and describe the result."""
    label_names, to_id = _checked_labels(official, input_column, label_column)

    def normalise(ds: Dataset, name: str) -> Dataset:
        ids = []
        for i, v in enumerate(ds[label_column]):
            key = int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v
            if key not in to_id:
                raise DataError(
                    f"Label {v!r} in the {name} split (row {i}) never occurs in train; train has {label_names}."
                )
            ids.append(to_id[key])
        row_ids = (
            [str(x) for x in ds[id_column]]
            if id_column and id_column in ds.column_names
            else [f"{name}-{i}" for i in range(len(ds))]
        )
        out = ds.select_columns([input_column]).add_column("label", ids).add_column("id", row_ids)
        if strata_column and strata_column in ds.column_names:
            out = out.add_column("stratum", [str(x) for x in ds[strata_column]])
        return out

    splits = {name: normalise(ds, name) for name, ds in official.items()}
    info: dict[str, Any] = {"source": source, "official_splits": sorted(official)}
    need = [s for s in ("validation", "test") if s not in splits]
    if need:
        full = splits["train"]
        strata = full["stratum"] if "stratum" in full.column_names else None
        keys = [f"{y}|{s}" for y, s in zip(full["label"], strata, strict=True)] if strata else full["label"]
        # The split can group identical texts; rows are never duplicates here, so each row is its own "text".
        info.update(
            carve_out_of_train(
                splits,
                need,
                validation_size,
                test_size,
                split_seed,
                texts=[str(i) for i in range(len(full))],
                keys=keys,
                group_duplicates=False,
                method="stratified by label" + (f" x {strata_column}" if strata else ""),
            )
        )
    splits = {s: (ds.remove_columns("stratum") if "stratum" in ds.column_names else ds) for s, ds in splits.items()}
    for s in SPLITS:
        if len(splits[s]) == 0:
            raise DataError(f"The {s} split is empty after splitting; use more data or larger sizes.")
    info["sizes"] = {s: len(splits[s]) for s in SPLITS}
    info["label_counts"] = {
        s: {label_names[k]: int(v) for k, v in zip(*np.unique(splits[s]["label"], return_counts=True), strict=True)}
        for s in SPLITS
    }
    info.update(extra_info or {})
    return LoadedData(DatasetDict({s: splits[s] for s in SPLITS}), label_names, info)


def load_digits_data(
    validation_size: float = 0.1, test_size: float = DIGITS_TEST_SIZE, split_seed: int = 42
) -> LoadedData:
    """scikit-learn's handwritten digits as RGB uint8 images (8×8×3; the 0–16 grey levels scaled to 0–255), labels
    ``"0"``..``"9"``, split ``1 − validation_size − test_size`` / ``validation_size`` / ``test_size`` stratified by
    digit with ``split_seed`` (defaults: 1,257 / 180 / 360 rows). Nothing is downloaded: the data ship with sklearn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise DataError("--dataset_name digits needs scikit-learn: pip install scikit-learn.") from err
    digits = load_digits()
    grey = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)  # H×W×3: what an image processor (and pipeline) expects
    full = Dataset.from_dict(
        {
            "image": list(images),
            "label": [str(int(y)) for y in digits.target],
            "index": list(range(len(images))),
        }
    )
    return _split_and_describe(
        {"train": full},
        "image",
        "label",
        validation_size,
        test_size,
        split_seed,
        source="digits",
        id_column="index",
        extra_info={"description": DIGITS_SOURCE, "image_size": [8, 8]},
    )


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a PCM WAV file (bytes) into mono float32 samples in [-1, 1] and its sampling rate."""
    with wave.open(io.BytesIO(data)) as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        samples = np.frombuffer(raw, dtype=f"<i{width}").astype(np.float32) / float(2 ** (8 * width - 1))
    else:
        raise DataError(f"Unsupported WAV sample width of {width} bytes (expected 8-, 16- or 32-bit PCM).")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def fsdd_path(data_dir: str | None) -> str:
    """``fsdd.parquet`` in ``data_dir``, else ``$DMIX_DATA_DIR``, else ``../shared/data`` (relative to the cwd)."""
    folder = data_dir or os.environ.get("DMIX_DATA_DIR") or os.path.join("..", "shared", "data")
    path = os.path.join(folder, FSDD_FILE)
    if not os.path.isfile(path):
        raise DataError(
            f"--dataset_name fsdd: {FSDD_FILE} not found in {os.path.abspath(folder)!r}. Pass --data_dir DIR or set "
            "DMIX_DATA_DIR to the folder that holds it, or pass the file itself: --train_file PATH/fsdd.parquet."
        )
    return path


def _official_splits(
    files: Mapping[str, str] | None,
    dataset_name: str | None,
    dataset_config_name: str | None,
    split_column: str | None,
    input_column: str,
    modality: str,
) -> dict:
    """The dataset's own splits (per-split files, its named splits, or the values of ``split_column``), checked to
    have a training split whose columns include ``input_column``."""
    raw = _load_raw(dataset_name, dataset_config_name, dict(files or {}))
    official = splits_from_column(raw, split_column)
    if official is None:
        official = {s: raw[s] for s in SPLITS if s in raw}
    if "train" not in official:
        raise DataError(f"No training split: the data have the splits {sorted(raw)}.")
    if input_column not in official["train"].column_names:
        raise DataError(
            f"{modality.capitalize()} column {input_column!r} (--{modality}_column) not found; the data "
            f"have the columns {official['train'].column_names}."
        )
    return official


def load_audio_data(
    files: Mapping[str, str] | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    audio_column: str = "wav",
    label_column: str = "label",
    split_column: str | None = "split",
    strata_column: str | None = "speaker",
    id_column: str | None = "file",
    validation_size: float = 0.1,
    test_size: float = 0.1,
    split_seed: int = 42,
) -> LoadedData:
    """An audio-classification dataset whose ``audio_column`` holds WAV bytes, float arrays, or ``datasets``
    ``Audio`` dicts (``{"array", "sampling_rate"}``).

    Splits: the files given per split, else the dataset's own splits, else the values of ``split_column`` when the
    (single) file has one (FSDD: ``train`` / ``test``, by recording index), and missing ones are carved out of train
    (stratified by label × ``strata_column`` when that column exists). All clips must share one sampling rate; it is
    recorded in ``split_info["sampling_rate"]``. The result's input column is ``audio`` (float32 arrays).
    """
    official = _official_splits(files, dataset_name, dataset_config_name, split_column, audio_column, "audio")
    rates: set[int] = set()

    def decode(batch):
        arrays = []
        for value in batch[audio_column]:
            if isinstance(value, (bytes, bytearray)):
                samples, rate = read_wav(bytes(value))
            elif isinstance(value, Mapping) and "array" in value:
                samples, rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
            else:
                samples, rate = np.asarray(value, dtype=np.float32), None
            if rate is not None:
                rates.add(rate)
            arrays.append(samples.astype(np.float32))
        return {"audio": arrays}

    for name, ds in official.items():
        official[name] = ds.map(
            decode, batched=True, remove_columns=[audio_column], desc=f"Decoding {name} audio", keep_in_memory=True
        )
    if "sampling_rate" in official["train"].column_names:
        rates |= {int(r) for ds in official.values() for r in ds["sampling_rate"]}
    if len(rates) > 1:
        raise DataError(f"The clips have different sampling rates {sorted(rates)}; resample them to one rate first.")
    rate = rates.pop() if rates else None
    source = dataset_name or dict(files or {})
    return _split_and_describe(
        official,
        "audio",
        label_column,
        validation_size,
        test_size,
        split_seed,
        source=source,
        strata_column=strata_column,
        id_column=id_column,
        extra_info={"sampling_rate": rate},
    )


def load_image_data(
    files: Mapping[str, str] | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    validation_size: float = 0.1,
    test_size: float = 0.1,
    split_seed: int = 42,
    split_column: str | None = "split",
) -> LoadedData:
    """An image-classification dataset from ``datasets`` (Hub id, folder, or files) with an ``image_column`` of
    images (``datasets.Image``) or H×W×C arrays. Splits: the files given per split, else the dataset's own splits,
    else the values of ``split_column`` (as for audio); missing validation/test splits are carved out of train."""
    official = _official_splits(files, dataset_name, dataset_config_name, split_column, image_column, "image")
    if image_column != "image":
        official = {s: ds.rename_column(image_column, "image") for s, ds in official.items()}
    return _split_and_describe(
        official,
        "image",
        label_column,
        validation_size,
        test_size,
        split_seed,
        source=dataset_name or dict(files or {}),
    )


# ------------------------------------------------------------------------------------------ models from a config

# The tiny speech encoders (wav2vec2, HuBERT): one set of sizes for both families.
_SPEECH_TINY: dict[str, Any] = dict(
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=(32, 32, 32),
    conv_stride=(5, 2, 2),
    conv_kernel=(10, 3, 3),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    feat_extract_norm="layer",
    classifier_proj_size=64,
    layerdrop=0.0,
    mask_time_prob=0.0,
)

# ``--model_name_or_path config:NAME``: small architectures with random weights (no pretrained image or audio weights
# are needed). Data-dependent fields are filled in by :func:`build_model_from_config`: ``image_size`` and
# ``num_channels`` from the images; an AST's feature extractor is built from its ``num_mel_bins`` and ``max_length``.
# The parameter counts are those of a 10-class head (digits, FSDD).
MODEL_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # 8×8 images in 2×2 patches: 16 patches + [CLS]; 136,650 parameters.
    "vit-tiny": (
        "vit",
        dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, patch_size=2),
    ),
    "deit-tiny": (
        "deit",
        dict(
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=128,
            patch_size=2,
            architectures=["DeiTForImageClassification"],
        ),
    ),
    # 32 log-mel bins × 100 frames (1 s at a 10 ms hop) in non-overlapping 8×8 patches: 4 × 12 = 48 patches; 142,282.
    "ast-tiny": (
        "audio-spectrogram-transformer",
        dict(
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=128,
            num_mel_bins=32,
            max_length=100,
            patch_size=8,
            frequency_stride=8,
            time_stride=8,
        ),
    ),
    # Raw waveform: three conv layers (stride 5·2·2 = 20 samples, 2.5 ms at 8 kHz), 3 transformer layers; 130,650.
    "wav2vec2-tiny": ("wav2vec2", _SPEECH_TINY),
    # The same sizes with HuBERT's layers (it shares wav2vec2's feature encoder).
    "hubert-tiny": ("hubert", _SPEECH_TINY),
}
CONFIG_PREFIX = "config:"


def config_model_type(name: str) -> str:
    """The ``model_type`` of ``config:NAME`` (a :data:`MODEL_CONFIGS` key or a supported image/audio model type)."""
    key = name[len(CONFIG_PREFIX) :] if name.startswith(CONFIG_PREFIX) else name
    if key in MODEL_CONFIGS:
        return MODEL_CONFIGS[key][0]
    if modality_of(key) != "text":
        return key
    raise DataError(
        f"--model_name_or_path {name!r}: unknown config. Use config:NAME with NAME one of {sorted(MODEL_CONFIGS)} "
        "(small architectures, random weights) or an image/audio model type (vit, deit, wav2vec2, hubert, "
        "audio-spectrogram-transformer: transformers' default sizes); adjust sizes with --model_config_overrides."
    )


def parse_overrides(text: str | None) -> dict[str, Any]:
    """``--model_config_overrides '{"hidden_size": 128}'``: a JSON object of config fields."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"--model_config_overrides is not valid JSON ({err}); e.g. '{{\"num_hidden_layers\": 2}}'."
        ) from err
    if not isinstance(value, dict):
        raise DataError(f"--model_config_overrides must be a JSON object of config fields, got {text!r}.")
    return value


def build_model_from_config(
    name: str,
    label_names: Sequence[str],
    overrides: Mapping[str, Any] | None = None,
    image_size: int | None = None,
    seed: int = 0,
):
    """A randomly initialised classifier of ``config:NAME`` with the dataset's labels (float32)."""
    import torch
    import transformers
    from transformers import AutoConfig

    from .mixing import _FAMILIES

    key = name[len(CONFIG_PREFIX) :] if name.startswith(CONFIG_PREFIX) else name
    model_type = config_model_type(name)
    kwargs = dict(MODEL_CONFIGS[key][1]) if key in MODEL_CONFIGS else {}
    if image_size is not None and modality_of(model_type) == "image":
        kwargs.update(image_size=image_size, num_channels=3)
    kwargs.update(overrides or {})
    id2label = dict(enumerate(label_names))
    try:
        config = AutoConfig.for_model(
            model_type,
            num_labels=len(label_names),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            **kwargs,
        )
    except (TypeError, ValueError) as err:
        raise DataError(f"Could not build the {model_type} config of {name!r}: {err}") from err
    auto = getattr(transformers, _FAMILIES[model_type].auto_class)
    torch.manual_seed(seed)  # the initial weights depend on the training seed, as a pretrained head's do
    return auto.from_config(config, dtype=torch.float32)


def count_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# ------------------------------------------------------------------------------------------------ preprocessing


def processor_for(model, model_path: str | None, sampling_rate: int | None = None):
    """The processing class of ``model``: loaded from ``model_path`` (a pretrained checkpoint) when it has one, else
    built from the config — a ViT image processor for the config's image size, an AST feature extractor for its mel
    bins and frames, a wav2vec2 feature extractor (zero-mean unit-variance clips, attention mask) for speech."""
    config = model.config
    modality = modality_of(config.model_type)
    if model_path is not None and not model_path.startswith(CONFIG_PREFIX):
        from transformers import AutoFeatureExtractor, AutoImageProcessor

        try:
            loader = AutoImageProcessor if modality == "image" else AutoFeatureExtractor
            return loader.from_pretrained(model_path)
        except (OSError, ValueError):
            pass  # a checkpoint without a processor config: build one from the model's config below
    if modality == "image":
        import transformers

        cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
        size = int(config.image_size)
        return cls(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if config.model_type == "audio-spectrogram-transformer":
        from transformers import ASTFeatureExtractor

        return ASTFeatureExtractor(
            sampling_rate=sampling_rate or 16000, num_mel_bins=config.num_mel_bins, max_length=config.max_length
        )
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=sampling_rate or 16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )


def preprocess(splits: DatasetDict, processor, modality: str, sampling_rate: int | None = None) -> DatasetDict:
    """Apply the processing class to the ``image`` / ``audio`` column: ``pixel_values`` or ``input_values`` (and,
    for speech extractors, no padding: the collator pads each batch) plus ``label``."""

    if modality == "image":

        def apply(batch):
            images = [np.asarray(im, dtype=np.uint8) for im in batch["image"]]
            return {"pixel_values": list(processor(images, return_tensors="np")["pixel_values"])}

        column = "image"
    else:

        def apply(batch):
            clips = [np.asarray(c, dtype=np.float32) for c in batch["audio"]]
            out = processor(clips, sampling_rate=sampling_rate or processor.sampling_rate, return_tensors=None)
            return {"input_values": [np.asarray(v, dtype=np.float32) for v in out["input_values"]]}

        column = "audio"
    return splits.map(
        apply, batched=True, batch_size=256, remove_columns=[column, "id"], keep_in_memory=True, desc="Preprocessing"
    )
