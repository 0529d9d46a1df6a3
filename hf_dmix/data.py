"""Loading a text-classification dataset into train / validation / test splits with validated labels.

What lives here: reading a Hub dataset or local CSV / JSON / Parquet files through ``datasets``; the official splits
that a ``split`` column of a single table names (for text, images and audio alike); checking the text and label columns
(several text columns joined into one text, and the second text of a sentence pair); mapping string or integer labels to
contiguous ids; carving the missing splits out of train when the data has no official split (the stratified,
duplicate-aware split itself is in ``splits.py``); counting duplicate texts and how the splits share them (with
``diagnostics.duplicate_stats``); the bundled SMS Spam Collection sample the README's quick start trains on
(``demo_data_files``); and a generated toy dataset for timing runs that need no data file.
Every problem is reported before any model is loaded, naming what was wrong and what is accepted.

What does not: tokenization (``hf_dmix/cli/inputs.py``), training (``trainer.py``), anything about mixing.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict

from .diagnostics import duplicate_stats
from .splits import SPLITS, DataError, carve_out_of_train, duplicate_handling, example_texts

_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class LoadedData:
    """A validated dataset, ready for tokenization.

    Attributes:
        splits: ``DatasetDict`` with ``train``, ``validation`` and ``test``; columns ``text`` (str) and ``label`` (int).
        label_names: class name of each label id.
        split_info: how the splits were obtained (official or our stratified split, seed, sizes, a fingerprint), and
            ``duplicates``: identical texts in the loaded data and how many sit in more than one split (see
            :func:`hf_dmix.diagnostics.duplicate_stats`), with ``handling`` saying how the split treated them.
    """

    splits: DatasetDict
    label_names: list[str]
    split_info: dict[str, Any] = field(default_factory=dict)


def _builder_for(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in _EXTENSIONS:
        raise DataError(f"Unsupported data file {path!r}: expected one of {sorted(_EXTENSIONS)} files.")
    return _EXTENSIONS[ext]


def _load_raw(
    dataset_name: str | None,
    dataset_config_name: str | None,
    data_files: dict[str, str],
) -> DatasetDict:
    from datasets import load_dataset

    if dataset_name and data_files:
        raise DataError(
            "Pass either --dataset_name (a Hub id) or local --train_file/--validation_file/--test_file, not both."
        )
    if data_files:
        for split, path in data_files.items():
            if not os.path.isfile(path):
                raise DataError(f"--{split}_file {path!r} does not exist (looked in {os.path.abspath(path)!r}).")
        builders = {_builder_for(p) for p in data_files.values()}
        if len(builders) > 1:
            raise DataError(f"All data files must have the same format; got {sorted(builders)}.")
        builder = builders.pop()
        loaded = {}
        for split, path in data_files.items():
            kwargs = {"delimiter": "\t"} if path.lower().endswith(".tsv") else {}
            try:
                loaded[split] = load_dataset(builder, data_files={split: path}, split=split, **kwargs)
            except ValueError as err:
                if "corresponds to no data" in str(err):
                    raise DataError(f"The {split} split is empty: {path!r} has no rows.") from None
                raise DataError(f"Could not read --{split}_file {path!r}: {err}") from err
        return DatasetDict(loaded)
    if not dataset_name:
        raise DataError(
            "No data: pass --dataset_name (a Hub dataset id) or --train_file (a local CSV/JSON/Parquet file)."
        )
    if os.path.isdir(dataset_name) or os.path.isfile(dataset_name):
        if os.path.isfile(dataset_name):
            return load_dataset(_builder_for(dataset_name), data_files={"train": dataset_name})
        return load_dataset(dataset_name, dataset_config_name)
    if os.sep in dataset_name.strip("/") and dataset_name.startswith((".", "/", "~")):
        raise DataError(f"--dataset_name {dataset_name!r} looks like a path but does not exist.")
    try:
        return load_dataset(dataset_name, dataset_config_name)
    except Exception as err:  # datasets raises many types for "not reachable" (ConnectionError, FileNotFoundError, ...)
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
            "HF_DATASETS_OFFLINE", "0"
        ).lower() in ("1", "true", "yes")
        why = "offline mode is on (HF_HUB_OFFLINE)" if offline else f"{type(err).__name__}: {err}"
        raise DataError(
            f"Could not load the Hub dataset {dataset_name!r} ({why}). Without Hub access, pass local files instead: "
            "--train_file data.csv (and optionally --validation_file/--test_file)."
        ) from err


# Values of a ``split`` column that name the validation split without being its --validation_split name.
SPLIT_ALIASES: dict[str, str] = {"valid": "validation", "dev": "validation"}


def splits_from_column(
    raw: Mapping[str, Dataset], split_column: str | None, names: Mapping[str, str | None] | None = None
) -> dict[str, Dataset] | None:
    """The official splits that a ``split_column`` of single-table data names, or ``None`` when there is none.

    Applies when the data are one table (one file, or a dataset with one split) that has the column: its rows are
    grouped by value, ``names`` mapping each of ``train`` / ``validation`` / ``test`` to the value that marks it
    (default: the same words; ``valid`` and ``dev`` also mean validation). Any other value is an error, and so are
    data whose column marks no training rows: training on them would train on the official test rows.
    """
    if not split_column or len(raw) != 1:
        return None
    whole = next(iter(raw.values()))
    if split_column not in whole.column_names:
        return None
    to_split: dict[str | None, str] = {value: target for target, value in (names or {}).items() if value}
    for target in SPLITS:
        to_split.setdefault(target, target)
    for alias, target in SPLIT_ALIASES.items():
        to_split.setdefault(alias, target)
    values = [None if v is None else str(v) for v in whole[split_column]]
    found = sorted({v for v in values if v is not None}) + ([None] if None in values else [])
    for value in found:
        if value not in to_split:
            raise DataError(
                f"Column {split_column!r} has the value {value!r}; expected {sorted(k for k in to_split if k)} (train, validation or "
                "test, or the values named by --train_split / --validation_split / --test_split)."
            )
    rows: dict[str, list[int]] = defaultdict(list)
    for i, value in enumerate(values):
        rows[to_split[value]].append(i)
    if "train" not in rows:
        train_value = next((v for v, t in to_split.items() if t == "train"), "train")
        raise DataError(
            f"Column {split_column!r} has no rows with the value {train_value!r} (--train_split); its values are "
            f"{found}. Pass --train_split VALUE to train on the rows marked VALUE."
        )
    return {target: whole.select(rows[target]) for target in SPLITS if target in rows}


def _checked_labels(
    official: Mapping[str, Dataset], input_columns: str | list[str], label_column: str
) -> tuple[list[str], dict[Any, int]]:
    """Check that every split is non-empty and has both columns, and that train has at least two classes; returns
    the label names and the raw-label-to-id map of :func:`_label_names`."""
    for name, ds in official.items():
        if len(ds) == 0:
            raise DataError(f"The {name} split is empty.")
        inputs = [input_columns] if isinstance(input_columns, str) else list(input_columns)
        missing = [c for c in (*inputs, label_column) if c not in ds.column_names]
        if missing:
            raise DataError(f"The {name} split lacks the column(s) {missing}; it has {ds.column_names}.")
    label_names, to_id = _label_names(official["train"], label_column)
    if len(label_names) < 2:
        raise DataError(
            f"The training labels have only {len(label_names)} class ({label_names}); classification needs at least 2."
        )
    return label_names, to_id


def _label_names(train: Dataset, label_column: str) -> tuple[list[str], dict[Any, int]]:
    feature = train.features[label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names), {i: i for i in range(feature.num_classes)}
    values = [v for v in train[label_column] if v is not None]
    kinds = {type(v) for v in values}
    if kinds <= {int, np.int64, bool}:
        uniq = sorted({int(v) for v in values})
        return [str(v) for v in uniq], {v: i for i, v in enumerate(uniq)}
    if kinds <= {str}:
        names = sorted(set(values))
        return names, {v: i for i, v in enumerate(names)}
    raise DataError(
        f"Label column {label_column!r} must hold class names (strings) or integer class ids; found {sorted(k.__name__ for k in kinds)}."
    )


def _official_splits(raw: Mapping[str, Dataset], names: Mapping[str, str | None]) -> dict[str, Dataset]:
    """The splits of ``raw`` that ``names`` (``train`` / ``validation`` / ``test`` -> a split name) select."""
    train = names["train"]
    if train is None or train not in raw:
        raise DataError(f"The dataset has no split {train!r}; its splits are {list(raw)}. Set --train_split.")
    official = {"train": raw[train]}
    for name in ("validation", "test"):
        split = names[name]
        if split and split in raw:
            official[name] = raw[split]
    return official


def _text_split(
    ds: Dataset,
    name: str,
    text_columns: str | list[str],
    label_column: str,
    to_id: Mapping[Any, int],
    label_names: list[str],
    text_pair_column: str | None = None,
    delimiter: str = " ",
) -> Dataset:
    """One split as columns ``text`` (several columns joined with ``delimiter``), ``text_pair`` (sentence pairs only)
    and ``label`` (ids); empty texts and labels unknown to train are errors."""
    text_columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    raw_labels = ds[label_column]
    for column in (*text_columns, *([text_pair_column] if text_pair_column else [])):
        values = ds[column]
        bad_text = [i for i, t in enumerate(values) if not isinstance(t, str) or not t.strip()]
        if bad_text:
            raise DataError(
                f"The {name} split has {len(bad_text)} empty or non-text value(s) in {column!r} (first at row "
                f"{bad_text[0]})."
            )
    texts = list(ds[text_columns[0]])
    for column in text_columns[1:]:
        texts = [t + delimiter + v for t, v in zip(texts, ds[column], strict=True)]
    ids = []
    for i, v in enumerate(raw_labels):
        key = int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v
        if key not in to_id:
            raise DataError(
                f"Label {v!r} in the {name} split (row {i}) never occurs in train; train has the labels {label_names}."
            )
        ids.append(to_id[key])
    columns: dict[str, list[Any]] = {"text": texts}
    if text_pair_column:
        columns["text_pair"] = list(ds[text_pair_column])
    return Dataset.from_dict({**columns, "label": ids})


def load_classification_data(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    text_column_delimiter: str = " ",
    train_split: str = "train",
    validation_split: str | None = "validation",
    test_split: str | None = "test",
    validation_size: float = 0.1,
    test_size: float = 0.1,
    split_seed: int = 42,
    group_duplicates: bool = True,
    split_column: str | None = "split",
) -> LoadedData:
    """Load, validate and split a text-classification dataset (see the module docstring).

    Official splits are used when present: the ``train_split`` / ``validation_split`` / ``test_split`` names, the
    three local files, or, for one table with a ``split_column``, the rows its values mark
    (:func:`splits_from_column`; TREC-6 and SST-2 come that way). Missing validation and/or test splits are carved
    out of train by :func:`~hf_dmix.splits.stratified_split`, never out of the official test rows.

    ``text_column`` may name several columns, ``"title,body"``: their values are joined with
    ``text_column_delimiter`` into one text, as ``run_classification.py``'s ``--text_column_names`` does.
    ``text_pair_column`` names the second text of a sentence-pair task (kept as the column ``text_pair``, which the
    tokenizer receives as ``text_pair``, as ``run_glue.py`` does).
    """
    data_files = {k: v for k, v in {"train": train_file, "validation": validation_file, "test": test_file}.items() if v}
    if data_files and "train" not in data_files:
        raise DataError("--validation_file/--test_file need a --train_file as well.")
    raw = _load_raw(dataset_name, dataset_config_name, data_files)
    names = {"train": train_split, "validation": validation_split, "test": test_split}
    by_column = splits_from_column(raw, split_column, names)
    official = by_column if by_column is not None else _official_splits(raw, names)
    text_columns = [c.strip() for c in text_column.split(",") if c.strip()]
    columns = [(c, "--text_column") for c in text_columns] + [(label_column, "--label_column")]
    if text_pair_column:
        columns.append((text_pair_column, "--text_pair_column"))
    for col, flag in columns:
        if col not in official["train"].column_names:
            raise DataError(
                f"Column {col!r} ({flag}) not found; the dataset has the columns {official['train'].column_names}."
            )
    label_names, to_id = _checked_labels(official, [c for c, _ in columns if c != label_column], label_column)

    normalised = {
        name: _text_split(
            ds, name, text_columns, label_column, to_id, label_names, text_pair_column, text_column_delimiter
        )
        for name, ds in official.items()
    }
    info: dict[str, Any] = {"source": dataset_name or data_files, "official_splits": sorted(official)}
    if by_column is not None:
        info["split_column"] = split_column
    need = [s for s in ("validation", "test") if s not in normalised]
    if need:
        info.update(
            carve_out_of_train(
                normalised,
                need,
                validation_size,
                test_size,
                split_seed,
                texts=example_texts(normalised["train"]),
                keys=normalised["train"]["label"],
                group_duplicates=group_duplicates,
                method="stratified by label, duplicate texts kept together"
                if group_duplicates
                else "stratified by label",
            )
        )
    info.update(_describe_splits(normalised, label_names, duplicate_handling(need, group_duplicates)))
    return LoadedData(DatasetDict(normalised), label_names, info)


def _describe_splits(splits: Mapping[str, Dataset], label_names: list[str], handling: str) -> dict[str, Any]:
    """The final splits' sizes, duplicate figures (``handling`` says how the split treated them) and label counts,
    for ``split_info``; an empty split is an error."""
    for s in SPLITS:
        if len(splits[s]) == 0:
            raise DataError(
                f"The {s} split is empty after splitting {len(splits['train'])} rows; use more data or larger sizes."
            )
    return {
        "sizes": {s: len(splits[s]) for s in SPLITS},
        "duplicates": {
            **duplicate_stats(
                {s: example_texts(splits[s]) for s in SPLITS}, {s: splits[s]["label"][:] for s in SPLITS}
            ),
            "handling": handling,
        },
        "label_counts": {
            s: {
                label_names[k]: int(v)
                for k, v in sorted(zip(*np.unique(splits[s]["label"], return_counts=True), strict=True))
            }
            for s in SPLITS
        },
    }


DEMO_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_data")


def demo_data_files() -> dict[str, str]:
    """The ``train_file`` / ``validation_file`` / ``test_file`` paths of the demo data (``--dataset_name demo``).

    An 800-message sample of the SMS Spam Collection v.1 (CC BY 4.0), shipped as package data in
    ``hf_dmix/demo_data`` with its attribution (``README.md`` there): fixed splits of 500 / 100 / 200 messages with
    the source's class balance (about 13 % spam), no text in two splits. ``benchmarks/make_demo_data.py`` re-creates it.
    """
    files = {f"{split}_file": os.path.join(DEMO_DATA_DIR, f"essc_demo_{split}.csv") for split in SPLITS}
    missing = [p for p in files.values() if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"The demo data is missing ({missing[0]!r}): hf_dmix was installed without its package data. "
            "Reinstall it from the repository (pip install -e .) or pass --train_file instead of --dataset_name demo."
        )
    return files


_DEMO_TOPICS = {
    "sports": (
        ["the striker", "our goalkeeper", "the home team", "the coach", "the young sprinter", "the captain"],
        [
            "scored twice in the final",
            "won the championship",
            "broke the national record",
            "was injured in training",
            "signed a new contract with the club",
            "lost the match on penalties",
        ],
    ),
    "business": (
        ["the central bank", "shares of the retailer", "the startup", "the oil company", "investors", "the factory"],
        [
            "raised interest rates again",
            "fell sharply after the report",
            "announced record quarterly profits",
            "cut two hundred jobs",
            "expanded into new markets",
            "reported weaker sales than expected",
        ],
    ),
    "science": (
        ["researchers", "the space agency", "a new telescope", "biologists", "the physics team", "the lab"],
        [
            "discovered a distant planet",
            "sequenced the genome of the plant",
            "measured the particle mass precisely",
            "launched a probe to the moon",
            "published results on climate models",
            "observed a rare cell behaviour",
        ],
    ),
}


def make_demo_dataset(num_per_class: int = 120, seed: int = 0) -> Dataset:
    """A small three-class news-headline dataset generated from templates (no download, no third-party text).

    Nearly separable (a fine-tuned model scores about 1.0), so it suits timing and smoke runs, not a demonstration of
    accuracy: ``--dataset_name demo`` trains on real text instead (:func:`demo_data_files`).

    Each headline combines a subject and an event of its topic, with occasional words from another topic so that
    the task is not trivially separable.
    """
    rng = random.Random(seed)
    names = sorted(_DEMO_TOPICS)
    texts, labels = [], []
    for topic in names:
        subjects, events = _DEMO_TOPICS[topic]
        for _ in range(num_per_class):
            text = f"{rng.choice(subjects)} {rng.choice(events)}"
            if rng.random() < 0.3:
                other = _DEMO_TOPICS[rng.choice([n for n in names if n != topic])]
                text += f" as {rng.choice(other[0])} watched"
            texts.append(text[0].upper() + text[1:])
            labels.append(topic)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return Dataset.from_dict({"text": [texts[i] for i in order], "label": [labels[i] for i in order]})
