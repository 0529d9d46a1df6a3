"""The training set as DMIX sees it: checks, the ``dmix_index`` column that names each row, and the labels.

What lives here: the checks a training set must pass before partners can be drawn from it (map-style, at least two
examples, single-label integer class ids the head can score), :func:`with_index` (the column, or a wrapper, that
carries each row's position to the collator), :func:`labels_of` and :func:`feature_rows` (reading rows for the
embedding pass). What does not: loading data from files or the Hub (``data.py``, ``media.py``), padding
(``collator.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from .collator import INDEX_COLUMN

LABEL_COLUMNS: tuple[str, ...] = ("labels", "label", "label_ids")


class _IndexedDataset(Dataset):
    """A map-style dataset whose items also carry their position as ``dmix_index``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], INDEX_COLUMN: i}


def base_dataset(dataset: Any) -> Any:
    """The dataset under the :func:`with_index` wrapper (the dataset itself when it was not wrapped)."""
    return dataset.dataset if isinstance(dataset, _IndexedDataset) else dataset


def has_index(dataset: Any) -> bool:
    """Whether rows of ``dataset`` carry their position as ``dmix_index`` (see :func:`with_index`)."""
    return isinstance(dataset, _IndexedDataset) or INDEX_COLUMN in (getattr(dataset, "column_names", None) or [])


def with_index(dataset: Any) -> Any:
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


def columns_of(dataset: Any) -> list[str]:
    if hasattr(dataset, "column_names") and dataset.column_names is not None:
        return list(dataset.column_names)
    return list(dataset[0].keys()) if len(dataset) else []


def labels_of(dataset: Any) -> torch.Tensor | None:
    """The class ids of every row, as an int64 tensor (``None`` without a label column)."""
    base = base_dataset(dataset)
    columns = columns_of(base)
    for key in LABEL_COLUMNS:
        if key in columns:
            if hasattr(base, "column_names"):
                return torch.as_tensor(np.asarray(base[key]), dtype=torch.long)
            return torch.as_tensor([int(base[i][key]) for i in range(len(base))], dtype=torch.long)
    return None


def feature_rows(dataset: Any, keep: set[str]) -> Callable[[Sequence[int]], list[dict[str, Any]]]:
    """A reader of rows ``indices`` restricted to the columns ``keep`` (one columnar read for a ``datasets.Dataset``)."""

    def rows(indices: Sequence[int]) -> list[dict[str, Any]]:
        if hasattr(dataset, "column_names"):
            cols = dataset.select_columns([c for c in dataset.column_names if c in keep])[list(indices)]
            return [{k: cols[k][j] for k in cols} for j in range(len(indices))]
        return [{k: v for k, v in dataset[i].items() if k in keep} for i in indices]

    return rows


def check_train_dataset(dataset: Any) -> None:
    """Map-style, at least two rows, and a label column of single integer class ids (a ``ValueError`` otherwise)."""
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise ValueError(
            f"DMIX needs a map-style training set (random access to draw partners), got {type(dataset).__name__}. "
            "Use a datasets.Dataset (not streaming) or a torch Dataset with __len__ and __getitem__."
        )
    if len(dataset) < 2:
        raise ValueError(f"DMIX needs at least 2 training examples to draw partners from, got {len(dataset)}.")
    columns = columns_of(dataset)
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
    if isinstance(label, (str, bytes)):
        raise ValueError(
            f"Labels must be integer class ids, got the string {label!r}. A CSV column read as strings stays strings "
            "after a map that writes ints into it: encode it with dataset.class_encode_column("
            f"{next(c for c in LABEL_COLUMNS if c in first)!r}) (or cast_column to a ClassLabel/int64 feature), and "
            "load the model with that many num_labels."
        )
    if isinstance(label, float) or (isinstance(label, torch.Tensor) and label.is_floating_point()):
        raise ValueError(f"Labels must be integer class ids, got the float {label!r} (a regression target?).")


def check_labels(labels: torch.Tensor | None, num_labels: int) -> None:
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
