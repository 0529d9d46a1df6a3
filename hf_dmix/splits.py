"""Splitting a classification dataset: the stratified, duplicate-aware split of the data that have no official
validation or test split, the stratified subsample of a low-resource run, and how a split treated identical texts.

What lives here: :func:`stratified_split` (row indices per split, identical texts kept together),
:func:`carve_out_of_train` (the missing splits carved out of train, with what ``split_info`` records about it, for
text, images and audio alike), :func:`stratified_subsample`, :func:`example_texts` (what identifies a text, for
grouping and counting duplicates) and :func:`duplicate_handling` (the words ``split_info`` uses for it); the split
names :data:`SPLITS` and :class:`DataError`, which every data loader raises (kept here, the lowest module of the data
loaders, so that ``data.py`` and ``media.py`` both import it from below).

What does not: reading and validating data (``data.py``, ``media.py``), duplicate statistics
(``diagnostics.duplicate_stats``).
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from datasets import Dataset

SPLITS = ("train", "validation", "test")


class DataError(ValueError):
    """A problem with the dataset that must be fixed before training (bad path, column, split or label)."""


def stratified_split(
    texts: list[str],
    labels: Sequence[int | str],
    validation_size: float,
    test_size: float,
    seed: int,
    group_duplicates: bool = True,
) -> dict[str, list[int]]:
    """Row indices of a stratified train / validation / test split.

    With ``group_duplicates`` rows whose text is identical after stripping whitespace are kept in the same split, so
    that no test text was seen in training. Groups are assigned per label (the label of a group's first row) in a
    seeded random order, so each split receives about its share of every class.
    """
    if not (0 <= validation_size < 1 and 0 <= test_size < 1 and validation_size + test_size < 1):
        raise DataError(
            f"validation_size and test_size must be in [0, 1) with a sum below 1, got {validation_size} and {test_size}."
        )
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, text in enumerate(texts):
        groups[text.strip() if group_duplicates else i].append(i)
    by_label: dict[int | str, list[list[int]]] = defaultdict(list)
    for rows in groups.values():
        by_label[labels[rows[0]]].append(rows)
    rng = random.Random(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for label in sorted(by_label):
        label_groups = by_label[label]
        rng.shuffle(label_groups)
        total = sum(len(g) for g in label_groups)
        want_test, want_val = round(total * test_size), round(total * validation_size)
        filled = {"test": 0, "validation": 0}
        for rows in label_groups:
            if filled["test"] < want_test:
                target = "test"
            elif filled["validation"] < want_val:
                target = "validation"
            else:
                target = "train"
            out[target].extend(rows)
            if target != "train":
                filled[target] += len(rows)
    return {s: sorted(v) for s, v in out.items()}


def stratified_subsample(labels: list[int], size: int, seed: int) -> list[int]:
    """Row indices of a stratified random subsample of ``size`` rows (sorted), the same for the same ``seed``.

    Each class gets its share of ``size`` (largest remainders round; every class keeps at least one row when
    ``size`` allows), drawn uniformly within the class. The low-resource regime of a benchmark uses it so that a
    500-example training set has the class balance of the full one.
    """
    if size < 1:
        raise DataError(f"A subsample needs at least 1 row, got size={size}.")
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    if size >= len(labels):
        return list(range(len(labels)))
    classes = sorted(by_label)
    exact = {c: size * len(by_label[c]) / len(labels) for c in classes}
    take = {c: int(exact[c]) for c in classes}
    if size >= len(classes):
        for c in classes:
            take[c] = max(take[c], 1)
    for c in sorted(classes, key=lambda c: exact[c] - int(exact[c]), reverse=True):
        if sum(take.values()) >= size:
            break
        if take[c] < len(by_label[c]):
            take[c] += 1
    while sum(take.values()) > size:  # the at-least-one floor overshot: trim the largest classes
        c = max(classes, key=lambda c: take[c])
        take[c] -= 1
    rng = random.Random(seed)
    out: list[int] = []
    for c in classes:
        out.extend(rng.sample(by_label[c], take[c]))
    return sorted(out)


def duplicate_handling(carved: list[str], group_duplicates: bool) -> str:
    """How the split treated identical texts: the counts say whether any ended up in two splits."""
    if not carved:
        return "official splits, used as given (duplicates across them are not removed)"
    what = " and ".join(carved) + " carved out of train"
    what += (
        " with identical texts kept in one split"
        if group_duplicates
        else (" without grouping identical texts (--group_duplicates false)")
    )
    official = [s for s in ("validation", "test") if s not in carved]
    return what + "".join(f"; the official {s} split used as given" for s in official)


def example_texts(ds: Dataset) -> list[str]:
    """What identifies an example's text (duplicates, grouping): its text, and for a pair both texts."""
    if "text_pair" not in ds.column_names:
        return ds["text"][:]
    return [f"{a}\n{b}" for a, b in zip(ds["text"], ds["text_pair"], strict=True)]


def carve_out_of_train(
    splits: dict[str, Dataset],
    need: Sequence[str],
    validation_size: float,
    test_size: float,
    split_seed: int,
    *,
    texts: list[str],
    keys: Sequence[int | str],
    group_duplicates: bool,
    method: str,
) -> dict[str, Any]:
    """Carve the ``need``ed splits out of ``splits["train"]`` (in place) by :func:`stratified_split` of its rows'
    ``texts`` and stratification ``keys``; returns how it was done (``method`` names it), for ``split_info``."""
    full = splits["train"]
    idx = stratified_split(
        texts,
        keys,
        validation_size if "validation" in need else 0.0,
        test_size if "test" in need else 0.0,
        split_seed,
        group_duplicates,
    )
    splits["train"] = full.select(idx["train"])
    for s in need:
        splits[s] = full.select(idx[s])
    return {
        "split_method": method,
        "split_seed": split_seed,
        "validation_size": validation_size if "validation" in need else None,
        "test_size": test_size if "test" in need else None,
        "split_fingerprint": hashlib.sha256(repr(idx).encode()).hexdigest()[:16],
    }
