"""Which row of a batch built by the script's own collator holds which example: the pair layout, checked exactly.

What lives here: :func:`check_pair_layout` and :class:`CollatorLayoutError`. :class:`~hf_dmix.DMixDataCollator`
hands a script's collator the ``2B`` examples of a training batch as ``[anchors; partners]``, and the mixing hooks mix
row ``b`` with row ``B + b``. A collator that sorts (by length, say), shuffles, drops or repeats rows would make DMIX
mix pairs that were never drawn, with labels of other rows, and nothing would fail. So every training batch a
script's collator builds is checked before it reaches the model:

1. **Row count**: every tensor has ``2B`` rows.
2. **Labels**: the batch's labels are the examples' labels, in order.
3. **Row keys**: every feature the collator passes through (``input_ids``, ``attention_mask``, ``pixel_values``,
   ``input_values``, …: up to padding on either side, truncation and a dtype cast) is compared row by row with the
   example the row must hold. A row that holds *another* example's value is a reordering, refused. A feature that
   no row reproduces is one the collator computes (it tokenizes raw text, augments), which identifies nothing.
4. **Re-collation probe**: when the features that passed through do not single out every row while the collator
   computes others (a collator that tokenizes), the collator is called once more on the same examples in another
   (fixed, pseudo-random) order. A collator that keeps rows in order returns the same batch with its rows permuted
   the same way; one that sorts or reorders does not.

What does not live here: drawing partners and padding (``collator.py``), the mixing (``mixing.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

LABEL_KEYS: tuple[str, ...] = ("label", "label_ids", "labels")

_FIX = (
    "Use a collator that keeps the examples' order (default_data_collator, DataCollatorWithPadding) or leave "
    "data_collator unset; to batch examples of similar length together, set group_by_length=True (the sampler groups "
    "the anchors, the pairs stay intact)."
)


class CollatorLayoutError(ValueError):
    """The user's collator did not return one row per example, in order: DMIX's ``[anchors; partners]`` layout is lost."""


def collator_name(collate_fn: Any) -> str:
    return getattr(collate_fn, "__name__", None) or type(collate_fn).__name__


def check_pair_layout(
    batch: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], collate_fn: Callable, probe: bool = True
) -> None:
    """Refuse a batch in which some row does not hold the example at its position of ``rows`` (anchors, partners).

    ``batch`` is what ``collate_fn`` returned for ``rows``. ``probe``: allow the re-collation probe (step 4 of the
    module docstring) when the row keys cannot decide.

    Cost, per training batch, measured on one CPU core with ``2B = 64`` rows: steps 1–3 read every passed-through
    feature of every row once. Token ids as Python lists (one ``.tolist()`` per batch tensor, a list comparison per
    row): about 2 ms for rows of up to 128 tokens, where ``DataCollatorWithPadding`` itself takes 10–14 ms. Tensors
    (pixels from an image transform), compared as tensors: about 20 ms for 224×224 images, a third of what stacking
    them takes. Floats given as Python lists (audio), at ``_FLOAT_SAMPLES`` evenly spaced positions: about 15 ms for
    1 s clips, a fifteenth of the collator's time. All of it is small next to a training step. The probe costs one
    more call of ``collate_fn``; the caller allows it on the first batches and a sample of later ones only.
    """
    name, n = collator_name(collate_fn), len(rows)
    short = {k: tuple(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] != n}
    if short:
        raise CollatorLayoutError(
            f"The data collator {name} returned {short} for a training batch of {n} examples ({n // 2} anchors, then "
            f"their {n // 2} partners); DMIX needs one row per example, in order. {_FIX}"
        )
    _check_labels(batch, rows, name)
    verified, computed = [], []
    for key, value in batch.items():
        if key in LABEL_KEYS or not isinstance(value, torch.Tensor) or not value.ndim:
            continue
        if all(key in r for r in rows) and _rows_hold_their_examples(key, value, rows, name):
            verified.append(key)
        else:
            computed.append(key)
    if computed and probe and not _single_out(batch, rows, verified):
        _probe(batch, rows, collate_fn, name)


def _check_labels(batch: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], name: str) -> None:
    label_key = next((k for k in LABEL_KEYS if k in rows[0]), None)
    got = next((batch[k] for k in ("labels", "label", "label_ids") if k in batch), None)
    if label_key is None or got is None:
        raise CollatorLayoutError(
            f"The data collator {name} returned no labels for a training batch (keys {sorted(batch)}); DMIX computes "
            "the mixed loss from the anchors' and partners' labels."
        )
    expected = [int(r[label_key]) for r in rows]
    got = torch.as_tensor(got).reshape(-1).tolist()
    if got != expected:
        what = "changed the order of the examples" if sorted(got) == sorted(expected) else "changed the labels"
        raise CollatorLayoutError(
            f"The data collator {name} {what}: the batch's labels are {got[:16]}, the examples' labels in order are "
            f"{expected[:16]}. DMIX lays a training batch out as anchors, then their partners in the same order. {_FIX}"
        )


# ---------------------------------------------------------------------------------------------------- row keys

_SAME = ("same length",)  # the signature of a row whose value fills the whole batch row (no padding)
_TRUNCATED = ("truncated",)
# A feature given as a Python list of floats (audio or pixels read from a ``datasets`` column) is compared at this
# many evenly spaced positions at most: converting the whole list would cost about as much as the collator itself.
_FLOAT_SAMPLES = 1024


class _Example:
    """One example's feature, flat, cast to the batch dtype: ``n`` values, of which ``data`` holds every ``step``-th."""

    __slots__ = ("data", "n", "step")

    def __init__(self, n: int, data: list | torch.Tensor, step: int = 1) -> None:
        self.n, self.data, self.step = n, data, step

    def same_as(self, other: _Example) -> bool:
        return self.n == other.n and self.step == other.step and _equal(self.data, other.data)

    def key(self) -> tuple:
        data = self.data
        return self.n, tuple(data) if isinstance(data, list) else data.numpy().tobytes()


def _example(value: Any, dtype: torch.dtype) -> _Example | None:
    """``value`` as an :class:`_Example` (``None``: nothing comparable, e.g. text or an image object)."""
    floating = dtype.is_floating_point
    if isinstance(value, (bool, int)) and not floating:
        return _Example(1, [value])
    if isinstance(value, list) and (not value or isinstance(value[0], (bool, int))) and not floating:
        return _Example(len(value), value)  # token ids and masks, the common case: compared as they are
    if isinstance(value, list) and value and isinstance(value[0], float):
        step = -(-len(value) // _FLOAT_SAMPLES)
        return _Example(len(value), torch.tensor(value[::step], dtype=torch.float64).to(dtype), step)
    try:
        array = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError):
        return None
    if array.dtype.is_complex or not (array.dtype.is_floating_point or array.dtype == torch.bool or _is_int(array)):
        return None
    return _Example(array.numel(), array.reshape(-1).to(dtype))


def _is_int(array: torch.Tensor) -> bool:
    return not array.dtype.is_floating_point and not array.dtype.is_complex and array.dtype != torch.bool


def _equal(a: list | torch.Tensor, b: list | torch.Tensor) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return a == b
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return a.shape == b.shape and torch.equal(a, b.to(a.dtype))


def _constant(rest: list | torch.Tensor) -> Any:
    """The value every element of ``rest`` holds (``None`` when they differ)."""
    if isinstance(rest, list):
        return rest[0] if rest.count(rest[0]) == len(rest) else None
    return rest[0].item() if bool((rest == rest[0]).all()) else None


def _match(example: _Example, row: list | torch.Tensor) -> tuple | None:
    """How batch row ``row`` holds ``example``: padded on one side with one value, truncated, whole, or not at all."""
    n, m, step, data = example.n, len(row), example.step, example.data
    if n == m:
        return _SAME if _equal(data, row[::step]) else None
    if n > m:  # the collator truncated: the model sees what is left, compare that
        right = _equal(data[: -(-m // step)], row[::step])
        return _TRUNCATED if right or (step == 1 and _equal(data[n - m :], row)) else None
    for side, held, rest in (("right", row[:n], row[n:]), ("left", row[m - n :], row[: m - n])):
        if _equal(data, held[::step]):
            pad = _constant(rest)
            if pad is not None:
                return side, pad
    return None


def _examples(key: str, value: torch.Tensor, rows: Sequence[Mapping[str, Any]]) -> list[_Example] | None:
    examples = [_example(r[key], value.dtype) for r in rows]
    known = [e for e in examples if e is not None]
    return None if len(known) < len(examples) else known


def _rows_hold_their_examples(key: str, value: torch.Tensor, rows: Sequence[Mapping[str, Any]], name: str) -> bool:
    """Whether every row of ``batch[key]`` holds its own example's ``key``; raises if one holds another example's.

    Rows padded with different values, or on different sides, do not count as holding their example: a collator pads
    a batch one way, and a prefix of another example followed by a run of one token is not padding.
    """
    examples = _examples(key, value, rows)
    if examples is None:
        return False
    flat = value.detach().cpu().reshape(len(rows), -1)
    # Integer features given as lists are compared as Python lists (one .tolist(), no tensor per row).
    out = flat.tolist() if all(isinstance(e.data, list) for e in examples) else flat
    found = [_match(e, o) for e, o in zip(examples, out, strict=True)]
    padding = Counter(f for f in found if f is not None and len(f) == 2).most_common(1)
    usual = {_SAME, _TRUNCATED} | ({padding[0][0]} if padding else set())
    wrong = [i for i, f in enumerate(found) if f not in usual]
    if not wrong:
        return True
    for i in wrong:
        for j, example in enumerate(examples):
            if not example.same_as(examples[i]) and _match(example, out[i]) in usual:
                n = len(rows)
                raise CollatorLayoutError(
                    f"The data collator {name} changed the order of the examples: row {i} of the batch it returned "
                    f"holds {_which(j, n)} ({key!r} compared row by row), not {_which(i, n)}. DMIX hands it a "
                    f"training batch as [anchors; partners] and mixes row b with row {n // 2} + b, so a collator that "
                    f"sorts (by length, say), shuffles or repeats rows would mix pairs that were never drawn. {_FIX}"
                )
    return False  # no row holds another example's value: the collator computes this feature


def _which(j: int, n: int) -> str:
    b = n // 2
    return f"example {j} (anchor {j})" if j < b else f"example {j} (the partner of anchor {j - b})"


def _single_out(batch: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], keys: list[str]) -> bool:
    """Whether the values of ``keys`` differ between any two rows (then each row's example is known)."""
    if not keys:
        return False
    per_key = [e for e in (_examples(k, batch[k], rows) for k in keys) if e is not None]
    if len(per_key) < len(keys):
        return False
    seen = {tuple(examples[i].key() for examples in per_key) for i in range(len(rows))}
    return len(seen) == len(rows)


# ---------------------------------------------------------------------------------------------------- the probe


def _probe(batch: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], collate_fn: Callable, name: str) -> None:
    """Collate the same examples in another order; rows kept in order come back permuted the same way."""
    n = len(rows)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    if torch.equal(order, torch.arange(n)):
        order = order.roll(1)
    again = collate_fn([dict(rows[i]) for i in order.tolist()])
    if _permuted(batch, again, order):
        return
    random = not _permuted(batch, collate_fn([dict(r) for r in rows]), torch.arange(n))
    why = (
        "it returns a different batch for the same examples in the same order (is it random?), so DMIX cannot tell "
        "which row holds which example. Move random augmentation into the dataset (dataset.with_transform) so the "
        "collator is deterministic, or pass a feature through unchanged (a tokenized training set with input_ids)."
        if random
        else "its rows do not follow the order of the examples it is given (it sorts or reorders them), so DMIX would mix "
        f"pairs that were never drawn. {_FIX}"
    )
    raise CollatorLayoutError(
        f"The data collator {name} changed the order of the examples, or DMIX cannot tell: none of the features it "
        "returns passes through unchanged, so DMIX collated the same examples in another order to compare, and " + why
    )


def _permuted(batch: Mapping[str, Any], other: Mapping[str, Any], order: torch.Tensor) -> bool:
    """Whether ``other`` is ``batch`` with the rows of every per-row tensor taken in ``order``."""
    n = len(order)
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or not value.ndim or value.shape[0] != n:
            continue
        theirs, ours = other.get(key), value.detach().cpu()[order]
        if not isinstance(theirs, torch.Tensor) or theirs.shape != ours.shape:
            return False
        theirs = theirs.detach().cpu()
        # Floats: a collator that normalizes with batch statistics sums in another order when the rows move.
        same = (
            torch.allclose(theirs, ours, rtol=1e-5, atol=1e-6)
            if ours.is_floating_point()
            else torch.equal(theirs, ours)
        )
        if not same:
            return False
    return True
