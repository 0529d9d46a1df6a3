"""The training set as DMIX sees it: checks, the ``dmix_index`` column that names each row, the labels, its keys.

What lives here: the checks a training set must pass before partners can be drawn from it (map-style, at least two
examples, single-label integer class ids the head can score), :func:`with_index` (the column, or a wrapper, that
carries each row's position to the collator), :func:`labels_of` and :func:`feature_rows` (reading rows for the
embedding pass as a training batch gets them), and what identifies a training set's content: :func:`data_key` (cheap,
taken at every ``train()``: a replaced or changed set is checked again and gets its own index) and
:func:`dataset_fingerprint` (a hash of every row, stored in checkpoints). What does not: loading data from files or the
Hub (``data.py``, ``media.py``), padding (``collator.py``).
"""

from __future__ import annotations

import hashlib
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


def feature_rows(dataset: Any, keep: set[str] | None) -> Callable[[Sequence[int]], list[dict[str, Any]]]:
    """A reader of rows ``indices`` as a training batch gets them: the columns ``keep`` (``Trainer``'s signature
    columns, labels included; ``None``: every column, as with ``remove_unused_columns=False``), without ``dmix_index``
    (so the collator pads them and draws no partners). One columnar read for a ``datasets.Dataset``."""

    def kept(name: str) -> bool:
        return name != INDEX_COLUMN and (keep is None or name in keep)

    def rows(indices: Sequence[int]) -> list[dict[str, Any]]:
        if hasattr(dataset, "column_names"):
            cols = dataset.select_columns([c for c in dataset.column_names if kept(c)])[list(indices)]
            return [{k: cols[k][j] for k in cols} for j in range(len(indices))]
        return [{k: v for k, v in dataset[i].items() if kept(k)} for i in indices]

    return rows


def check_model_inputs(dataset: Any, keep: set[str] | None) -> None:
    """Refuse a training set of which a training batch would keep nothing but labels (``keep``: as for
    :func:`feature_rows`): raw text that the script's collator tokenizes, with ``remove_unused_columns`` on."""
    columns = [c for c in columns_of(dataset) if c != INDEX_COLUMN]  # as rows come (after an on-the-fly transform)
    if keep is None or any(c in keep and c not in LABEL_COLUMNS for c in columns):
        return
    raise ValueError(
        f"None of the training set's columns {columns} is an input of the model, so DMIX's embedding pass (and "
        "Trainer's training batches) would get rows of labels only. Tokenize the texts into the training set "
        "(dataset.map(tokenizer)); or, when the data collator builds the model inputs from raw columns, set "
        "remove_unused_columns=False so that it gets them; or give the partner search its own embeddings: "
        "DMixTrainer(sentence_embeddings=...) or DMixConfig(embedding_model=..., embedding_text_column=...)."
    )


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


# ---------------------------------------------------------------------- what identifies a training set's content

# How many rows data_key reads of a training set that has no fingerprint of its own (a torch Dataset, a list).
KEY_SAMPLE_ROWS = 64


def data_key(dataset: Any) -> tuple:
    """A cheap key of a training set's content: the partner index is rebuilt, and the construction checks rerun, when
    it changes (``trainer.train_dataset = other``, of any length and any map-style type).

    A ``datasets.Dataset`` is keyed by its length and ``datasets``' own fingerprint (no row is read). Any other
    dataset (a torch ``Dataset``, a list of dicts) is keyed by the object itself, its length and a hash of the
    features and labels of ``KEY_SAMPLE_ROWS`` rows spread evenly over it, first and last included. Cost: that many
    ``__getitem__`` calls (a transform runs on each), whatever the size of the set, each time the key is taken (a
    few times per ``train()``). Replacing the dataset object, changing its length or any sampled row changes the
    key; an in-place change of rows that are not sampled does not (assign the changed set to
    ``trainer.train_dataset`` as a new object). The ``dmix_index`` column is not part of the key.
    """
    base = base_dataset(dataset)
    fingerprint = getattr(base, "_fingerprint", None)
    if fingerprint is not None:
        return ("datasets", len(base), fingerprint)
    n = len(base)
    h = hashlib.sha256()
    for i in sorted({round(j * (n - 1) / max(KEY_SAMPLE_ROWS - 1, 1)) for j in range(min(n, KEY_SAMPLE_ROWS))}):
        for key, value in sorted(base[i].items()):
            if key != INDEX_COLUMN:
                h.update(str(key).encode())
                hash_value(h, value)
    return (type(base).__name__, id(base), n, h.hexdigest()[:16])


def dataset_fingerprint(dataset: Any, labels: Any = None) -> str:
    """A content hash of a training set: its size, its labels and the content of every column (every model input).

    ``datasets`` fingerprints are not used: they describe how a dataset was built, not its rows, and a transform
    ``datasets`` cannot hash (a closure over an unpicklable object) gets a random one, so the same data would look
    different in the resumed process. A ``datasets.Dataset`` is hashed from its stored (Arrow) columns — token ids,
    pixel values, audio samples, or the raw images and clips an on-the-fly transform turns into them — and any other
    dataset from every value of every row. The hash reads the logical rows (after any ``select``/``shuffle``), so the
    same rows in another order hash differently — they would be other partner ids. The ``dmix_index`` column is not
    hashed (it is the row's position).
    """
    h = hashlib.sha256()
    h.update(str(len(dataset)).encode())
    if labels is not None:
        h.update(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes())
    base = base_dataset(dataset)
    if hasattr(base, "column_names") and hasattr(base, "with_format"):
        arrow = base.with_format("arrow")
        for start in range(0, len(arrow), 10_000):
            table = arrow[start : start + 10_000]
            for name in sorted(table.column_names):
                if name != INDEX_COLUMN:
                    h.update(name.encode())
                    _hash_arrow(h, table[name])
    else:
        for i in range(len(base)):
            for key, value in sorted(base[i].items()):
                if key != INDEX_COLUMN:
                    h.update(str(key).encode())
                    hash_value(h, value)
    return h.hexdigest()[:16]


def _hash_arrow(h: Any, column: Any) -> None:
    """Hash an Arrow column's logical content: list lengths level by level, struct fields, then the leaf values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = arr.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        h.update(np.asarray(pc.list_value_length(arr).fill_null(-1), dtype=np.int64).tobytes())
        _hash_arrow(h, pc.list_flatten(arr))
    elif pa.types.is_struct(kind):
        for i in range(kind.num_fields):
            h.update(kind.field(i).name.encode())
            _hash_arrow(h, pc.struct_field(arr, i))
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        h.update(np.asarray(arr.is_null(), dtype=np.bool_).tobytes())
        h.update(np.ascontiguousarray(arr.fill_null(0).to_numpy(zero_copy_only=False)).tobytes())
    else:  # strings, bytes (encoded images and audio) and anything else: value by value
        for value in arr.to_pylist():
            hash_value(h, value)


def hash_value(h: Any, value: Any) -> None:
    """Hash one Python, NumPy or torch value (with its length, so that concatenations cannot collide)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    elif hasattr(value, "__array_interface__"):  # a PIL image: its pixels (its repr holds its memory address)
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value).tobytes()
        h.update(f"{value.dtype}{value.shape}".encode())
    elif isinstance(value, bytes):
        data = value
    elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, bool)) for v in value):
        data = np.asarray(value).tobytes()
    else:
        data = repr(value).encode()
    h.update(f"{len(data)}:".encode())
    h.update(data)
