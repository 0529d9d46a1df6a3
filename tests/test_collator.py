"""Tests of ``DMixDataCollator`` with literal inputs and exact expected tensors (TRL-style)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from datasets import Dataset

from hf_dmix.collator import INDEX_COLUMN, PARTNER_IDS_KEY, DMixDataCollator
from hf_dmix.partners import PartnerIndex

# Four tokenized training rows. Token ids are arbitrary; [PAD] is id 0 and padding is on the right.
ROWS: list[dict[str, Any]] = [
    {"text": "zero", "input_ids": [2, 10, 3], "attention_mask": [1, 1, 1], "label": 0},
    {"text": "one", "input_ids": [2, 11, 12, 13, 3], "attention_mask": [1, 1, 1, 1, 1], "label": 1},
    {"text": "two", "input_ids": [2, 3], "attention_mask": [1, 1], "label": 0},
    {"text": "three", "input_ids": [2, 14, 15, 3], "attention_mask": [1, 1, 1, 1], "label": 1},
]
# One candidate per anchor, so draws are deterministic: 0→3, 1→2, 2→1, 3→0.
FIXED_INDEX = PartnerIndex(num_examples=4, candidates=torch.tensor([[3], [2], [1], [0]], dtype=torch.int32))


def make_train_dataset(rows: list[dict[str, Any]] = ROWS) -> Dataset:
    """A ``datasets.Dataset`` with the ``dmix_index`` column DMixTrainer adds (and a non-model ``text`` column)."""
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    columns[INDEX_COLUMN] = list(range(len(rows)))
    return Dataset.from_dict(columns)


def anchor_features(ids: list[int], rows: list[dict[str, Any]] = ROWS) -> list[dict[str, Any]]:
    """Features as Trainer hands them to the collator: model inputs, label and ``dmix_index`` (``text`` removed)."""
    return [{**{k: v for k, v in rows[i].items() if k != "text"}, INDEX_COLUMN: i} for i in ids]


class ListDataset(torch.utils.data.Dataset):
    """A plain map-style torch dataset of dicts."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(self.rows[i])


def unpadded(batch: dict[str, torch.Tensor], row: int) -> list[int]:
    """The input ids of one output row without its padding."""
    return batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()


# ---------------------------------------------------------------------------------------------------------------
# Training batches: exact tensors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset_kind", ["datasets", "torch", "list"])
def test_training_batch_exact_when_partner_is_longest(tokenizer, dataset_kind: str) -> None:
    train = {"datasets": make_train_dataset(), "torch": ListDataset(ROWS), "list": list(ROWS)}[dataset_kind]
    collator = DMixDataCollator(tokenizer, train_dataset=train, partner_index=FIXED_INDEX)
    batch = collator(anchor_features([0, 2]))
    assert set(batch) == {"input_ids", "attention_mask", "labels", PARTNER_IDS_KEY}
    # Anchors 0 and 2 first, then their partners 3 and 1; all padded to the longest of the four (partner 1: 5).
    assert batch["input_ids"].tolist() == [
        [2, 10, 3, 0, 0],
        [2, 3, 0, 0, 0],
        [2, 14, 15, 3, 0],
        [2, 11, 12, 13, 3],
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
    ]
    assert batch["labels"].tolist() == [0, 0, 1, 1]
    assert batch[PARTNER_IDS_KEY].tolist() == [3, 1]
    assert batch[PARTNER_IDS_KEY].dtype == torch.int64


def test_training_batch_exact_when_anchor_is_longest(tokenizer) -> None:
    collator = DMixDataCollator(tokenizer, train_dataset=make_train_dataset(), partner_index=FIXED_INDEX)
    batch = collator(anchor_features([1, 3, 0]))
    assert batch["input_ids"].tolist() == [
        [2, 11, 12, 13, 3],
        [2, 14, 15, 3, 0],
        [2, 10, 3, 0, 0],
        [2, 3, 0, 0, 0],
        [2, 10, 3, 0, 0],
        [2, 14, 15, 3, 0],
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
    ]
    assert batch["labels"].tolist() == [1, 1, 0, 0, 0, 1]
    assert batch[PARTNER_IDS_KEY].tolist() == [2, 0, 3]
    assert "text" not in batch and INDEX_COLUMN not in batch


def test_pad_to_multiple_of_applies_to_whole_batch(tokenizer) -> None:
    collator = DMixDataCollator(
        tokenizer, train_dataset=make_train_dataset(), partner_index=FIXED_INDEX, pad_to_multiple_of=4
    )
    batch = collator(anchor_features([2]))  # anchor [2, 3], partner 1 has length 5 -> padded to 8
    assert batch["input_ids"].tolist() == [[2, 3, 0, 0, 0, 0, 0, 0], [2, 11, 12, 13, 3, 0, 0, 0]]
    assert batch["labels"].tolist() == [0, 1]
    assert batch[PARTNER_IDS_KEY].tolist() == [1]


def test_anchor_columns_decide_partner_columns(tokenizer) -> None:
    """Partners carry exactly the anchors' columns: extra dataset columns (here token_type_ids) are not fetched."""
    rows = [{**row, "token_type_ids": [0] * len(row["input_ids"])} for row in ROWS]
    collator = DMixDataCollator(tokenizer, train_dataset=make_train_dataset(rows), partner_index=FIXED_INDEX)
    batch = collator(anchor_features([0], ROWS))
    assert set(batch) == {"input_ids", "attention_mask", "labels", PARTNER_IDS_KEY}
    assert batch["input_ids"].tolist() == [[2, 10, 3, 0], [2, 14, 15, 3]]
    # With token_type_ids on the anchors, the partners get theirs (padded with 0) as well.
    batch = collator(anchor_features([0], rows))
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0]]


# ---------------------------------------------------------------------------------------------------------------
# Evaluation batches and misuse
# ---------------------------------------------------------------------------------------------------------------


def test_evaluation_batch_padded_plainly(tokenizer) -> None:
    collator = DMixDataCollator(tokenizer, train_dataset=make_train_dataset(), partner_index=FIXED_INDEX)
    features = [{k: v for k, v in ROWS[i].items() if k != "text"} for i in (2, 1)]
    batch = collator(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[2, 3, 0, 0, 0], [2, 11, 12, 13, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [0, 1]


def test_without_partner_index_training_features_are_padded_plainly(tokenizer) -> None:
    """Before the index exists (or without mixing) the collator pads anchors alone and drops dmix_index."""
    collator = DMixDataCollator(tokenizer, train_dataset=make_train_dataset())
    batch = collator(anchor_features([0, 2]))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[2, 10, 3], [2, 3, 0]]


def test_partner_index_without_train_dataset_raises(tokenizer) -> None:
    collator = DMixDataCollator(tokenizer, partner_index=FIXED_INDEX)
    with pytest.raises(RuntimeError, match="no train_dataset"):
        collator(anchor_features([0]))


def test_empty_batch_raises(tokenizer) -> None:
    collator = DMixDataCollator(tokenizer, train_dataset=make_train_dataset(), partner_index=FIXED_INDEX)
    with pytest.raises(ValueError, match="empty batch"):
        collator([])


def test_only_pytorch_tensors(tokenizer) -> None:
    with pytest.raises(ValueError, match="PyTorch"):
        DMixDataCollator(tokenizer, return_tensors="np")


def test_anchor_outside_index_raises(tokenizer) -> None:
    collator = DMixDataCollator(tokenizer, train_dataset=make_train_dataset(), partner_index=FIXED_INDEX)
    features = anchor_features([0])
    features[0][INDEX_COLUMN] = 4
    with pytest.raises(IndexError):
        collator(features)


# ---------------------------------------------------------------------------------------------------------------
# Random draws: reproducibility, correctness of fetched rows, dataloader workers
# ---------------------------------------------------------------------------------------------------------------


def test_random_draws_fetch_the_right_rows_and_are_reproducible(tokenizer, train_dataset) -> None:
    n = len(train_dataset)
    ids = [0, 5, 9, 17]
    features = [{k: train_dataset[i][k] for k in ("input_ids", "attention_mask", "label")} for i in ids]
    features = [{**f, INDEX_COLUMN: i} for f, i in zip(features, ids, strict=True)]

    def run(seed: int) -> list[dict[str, torch.Tensor]]:
        collator = DMixDataCollator(tokenizer, train_dataset=train_dataset, partner_index=PartnerIndex(n), seed=seed)
        return [collator(features) for _ in range(3)]

    first, again, other = run(5), run(5), run(6)
    for a, b in zip(first, again, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    draws = [b[PARTNER_IDS_KEY].tolist() for b in first]
    assert draws[0] != draws[1] or draws[1] != draws[2]  # the stream advances between calls
    assert draws != [b[PARTNER_IDS_KEY].tolist() for b in other]  # another seed, other draws
    for batch in first:
        partners = batch[PARTNER_IDS_KEY].tolist()
        assert batch["input_ids"].shape[0] == 2 * len(ids)
        assert all(p != a for p, a in zip(partners, ids, strict=True))
        for j, (a, p) in enumerate(zip(ids, partners, strict=True)):
            assert unpadded(batch, j) == train_dataset[a]["input_ids"]
            assert unpadded(batch, len(ids) + j) == train_dataset[p]["input_ids"]
            assert batch["labels"][j] == train_dataset[a]["label"]
            assert batch["labels"][len(ids) + j] == train_dataset[p]["label"]


class _RepeatingAnchors(torch.utils.data.Dataset):
    """Items ``0..len-1`` whose anchors repeat every ``period`` items, so every worker sees the same anchors."""

    def __init__(self, rows: list[dict[str, Any]], length: int, period: int) -> None:
        self.rows, self.length, self.period = rows, length, period

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = i % self.period
        return {"input_ids": self.rows[j]["input_ids"], "label": self.rows[j]["label"], INDEX_COLUMN: j}


def test_dataloader_workers_draw_different_partners(tokenizer) -> None:
    rows = [{"input_ids": [2, 5 + i % 20, 3], "label": i % 2} for i in range(60)]
    collator = DMixDataCollator(tokenizer, train_dataset=rows, partner_index=PartnerIndex(len(rows)), seed=0)
    # Batch b holds anchors 0..4 for every b; batches alternate between the two workers.
    loader = torch.utils.data.DataLoader(
        _RepeatingAnchors(rows, length=40, period=5),
        batch_size=5,
        num_workers=2,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(0),
    )
    draws = [batch[PARTNER_IDS_KEY].tolist() for batch in loader]
    assert len(draws) == 8
    worker0, worker1 = draws[0::2], draws[1::2]
    assert worker0 != worker1  # workers seeded alike would draw identical sequences for identical anchors
    for batch_draws in draws:
        assert all(p != a for p, a in zip(batch_draws, range(5), strict=True))
    # In the main process the seed alone decides the draws.
    dataset = _RepeatingAnchors(rows, length=10, period=5)
    main = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=0, collate_fn=collator)
    fresh = DMixDataCollator(tokenizer, train_dataset=rows, partner_index=PartnerIndex(len(rows)), seed=0)
    features = [dataset[i] for i in range(5)]
    expected = [fresh(features)[PARTNER_IDS_KEY].tolist() for _ in range(2)]
    assert [b[PARTNER_IDS_KEY].tolist() for b in main] == expected


# ---------------------------------------------------------------------------------------------------------------
# The user's own collator (issue 16, item 0): it builds the 2B-row batch, DMIX attaches the partners
# ---------------------------------------------------------------------------------------------------------------

# The same rows padded to a fixed length, as run_classification.py's padding="max_length" leaves them.
FIXED_ROWS: list[dict[str, Any]] = [
    {
        **r,
        "input_ids": r["input_ids"] + [0] * (6 - len(r["input_ids"])),
        "attention_mask": r["attention_mask"] + [0] * (6 - len(r["attention_mask"])),
    }
    for r in ROWS
]


def _user_collators():
    from conftest import train_tokenizer
    from transformers import DataCollatorWithPadding, default_data_collator

    tok = train_tokenizer(["zero one two three"])
    return {
        "default_data_collator": (default_data_collator, FIXED_ROWS, 6),
        "DataCollatorWithPadding": (DataCollatorWithPadding(tok), ROWS, 5),
        "DataCollatorWithPadding(pad_to_multiple_of=8)": (DataCollatorWithPadding(tok, pad_to_multiple_of=8), ROWS, 8),
        "custom callable": (lambda rows: default_data_collator(rows), FIXED_ROWS, 6),
    }


@pytest.mark.parametrize("name", list(_user_collators()))
def test_user_collator_builds_the_pair_batch_and_dmix_attaches_partners(name):
    collate_fn, rows, length = _user_collators()[name]
    collator = DMixDataCollator(
        None, train_dataset=make_train_dataset(rows), partner_index=FIXED_INDEX, collate_fn=collate_fn
    )
    batch = collator(anchor_features([0, 1], rows))
    assert batch[PARTNER_IDS_KEY].tolist() == [3, 2]
    assert batch["labels"].tolist() == [0, 1, 1, 0]  # anchors 0, 1, then partners 3, 2
    assert batch["input_ids"].shape == (4, length)
    assert [unpadded(batch, i) for i in range(4)] == [ROWS[i]["input_ids"] for i in (0, 1, 3, 2)]
    # Evaluation rows (no dmix_index) go through the user's collator unchanged.
    plain = [{k: v for k, v in rows[i].items() if k != "text"} for i in (2, 3)]
    evaluated = collator(plain)
    assert PARTNER_IDS_KEY not in evaluated
    expected = collate_fn(plain)
    assert set(evaluated) == set(expected) and all(torch.equal(evaluated[k], expected[k]) for k in expected)


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda rows: rows[: len(rows) // 2], r"returned \{.*\(2, 6\).*4 examples \(2 anchors"),
        (lambda rows: sorted(rows, key=lambda r: -r["label"]), "changed the order of the examples"),
        (lambda rows: [{k: v for k, v in r.items() if k != "label"} for r in rows], "returned no labels"),
    ],
)
def test_user_collator_that_drops_or_reorders_rows_is_refused(change, pattern):
    from transformers import default_data_collator

    from hf_dmix.collator import CollatorLayoutError

    collator = DMixDataCollator(
        None,
        train_dataset=make_train_dataset(FIXED_ROWS),
        partner_index=FIXED_INDEX,
        collate_fn=lambda rows: default_data_collator(change(rows)),
    )
    with pytest.raises(CollatorLayoutError, match=pattern):
        collator(anchor_features([0, 1], FIXED_ROWS))


# ---------------------------------------------------------------------------------------------------------------
# Exact pair checks (issue 21, defect 1): every row must hold its own example, whatever the labels
# ---------------------------------------------------------------------------------------------------------------

# Raw-text rows for collators that tokenize. Anchors 0, 1 and partners 3, 2 (FIXED_INDEX) have labels 0, 1, 1, 0 and
# word counts 4, 2, 3, 1: sorting them by length gives 2, 1, 3, 0, whose labels are 0, 1, 1, 0 again.
TEXT_ROWS: list[dict[str, Any]] = [
    {"text": "c a b c", "label": 0},
    {"text": "a b", "label": 1},
    {"text": "b", "label": 0},
    {"text": "a b c", "label": 1},
]
# Image-like rows: float features of one shape, as a datasets column of Python floats gives them.
PIXEL_ROWS: list[dict[str, Any]] = [
    {"pixel_values": (torch.arange(12, dtype=torch.float64).reshape(3, 2, 2) / (i + 3)).tolist(), "label": i % 2}
    for i in range(4)
]


def _features(ids: list[int], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``anchor_features``, keeping the text of raw-text rows (a collator that tokenizes reads it)."""
    return anchor_features(ids, rows) if "input_ids" in rows[0] else [{**rows[i], INDEX_COLUMN: i} for i in ids]


# Audio-like rows: clips of different lengths as flat lists of Python floats (compared at sampled positions).
CLIP_ROWS: list[dict[str, Any]] = [
    {"input_values": [((i + 1) * (t + 1) % 7) / 7 for t in range(3000 + 500 * i)], "label": i % 2} for i in range(4)
]


def _pad_clips(rows):
    """Right-pads float clips with 0.0, as a feature extractor's ``pad`` does."""
    longest = max(len(r["input_values"]) for r in rows)
    values = torch.tensor([r["input_values"] + [0.0] * (longest - len(r["input_values"])) for r in rows])
    return {"input_values": values, "labels": torch.tensor([r["label"] for r in rows])}


def _text_tokenizer(**kwargs):
    from conftest import train_tokenizer

    tok = train_tokenizer(["a b c"])
    for key, value in kwargs.items():
        setattr(tok, key, value)
    return tok


def _tokenize(tok, shuffle=None, augment=False):
    """A collator that tokenizes raw text (the tokenize-in-the-collator recipe); ``shuffle`` reorders rows first,
    ``augment`` replaces one random position of each row by ``[UNK]``."""

    def tokenize_text(rows):
        rows = shuffle(rows) if shuffle else rows
        batch = tok([r["text"] for r in rows], padding=True, return_tensors="pt")
        if augment:
            ids = batch["input_ids"]
            ids[torch.arange(len(rows)), torch.randint(ids.shape[1], (len(rows),))] = tok.unk_token_id
        return {**batch, "labels": torch.tensor([r["label"] for r in rows])}

    return tokenize_text


def _pop_label(rows):
    from transformers import default_data_collator

    labels = [r.pop("label") for r in rows]  # mutates the dicts it is given, as some scripts' collators do
    return {**default_data_collator(rows), "labels": torch.tensor(labels)}


def _legit_collators():
    from transformers import DataCollatorWithPadding, default_data_collator

    def truncate(rows):
        return default_data_collator([{k: v[:4] if k != "label" else v for k, v in r.items()} for r in rows])

    return {
        "left padding": (DataCollatorWithPadding(_text_tokenizer(padding_side="left")), ROWS),
        "truncation to 4": (truncate, FIXED_ROWS),
        "pops the label": (_pop_label, FIXED_ROWS),
        "tokenizes raw text": (_tokenize(_text_tokenizer()), TEXT_ROWS),
        "stacks float features": (default_data_collator, PIXEL_ROWS),
        "pads float clips": (_pad_clips, CLIP_ROWS),
    }


@pytest.mark.parametrize("name", list(_legit_collators()))
def test_user_collators_that_keep_the_order_pass_the_exact_check(name):
    collate_fn, rows = _legit_collators()[name]
    collator = DMixDataCollator(
        None, train_dataset=make_train_dataset(rows), partner_index=FIXED_INDEX, collate_fn=collate_fn
    )
    batch = collator(_features([0, 1], rows))
    assert batch[PARTNER_IDS_KEY].tolist() == [3, 2]
    assert batch["labels"].tolist() == [rows[i]["label"] for i in (0, 1, 3, 2)]


def _swap_first_and_last(rows):
    return [rows[-1], *rows[1:-1], rows[0]]  # anchor 0 and the partner of anchor 1: both label 0


@pytest.mark.parametrize(
    "name, collate_fn, rows, pattern",
    [
        (
            "moves rows of one label",
            lambda rows: __import__("transformers").default_data_collator(_swap_first_and_last(rows)),
            FIXED_ROWS,
            r"row 0 of the batch it returned holds example 3 \(the partner of anchor 1\) \('input_ids'",
        ),
        (
            "moves float features",
            lambda rows: __import__("transformers").default_data_collator(_swap_first_and_last(rows)),
            PIXEL_ROWS,
            r"row 0 .* holds example 3 .*'pixel_values'",
        ),
        (
            "moves float clips",
            lambda rows: _pad_clips(_swap_first_and_last(rows)),
            CLIP_ROWS,
            r"row 0 .* holds example 3 .*'input_values'",
        ),
        (
            "tokenizes and sorts by length",
            _tokenize(_text_tokenizer(), lambda rs: sorted(rs, key=lambda r: len(r["text"]))),
            TEXT_ROWS,
            (
                r"tokenize_text changed the order .* none of the features it returns passes through unchanged"
                r".*do not follow the order .*group_by_length=True"
            ),
        ),
        (
            "tokenizes and augments at random",
            _tokenize(_text_tokenizer(), augment=True),
            TEXT_ROWS,
            r"different batch for the same examples in the same order \(is it random\?\).*with_transform",
        ),
    ],
)
def test_user_collator_that_reorders_rows_with_labels_in_order_is_refused(name, collate_fn, rows, pattern):
    from hf_dmix.collator import CollatorLayoutError

    collator = DMixDataCollator(
        None, train_dataset=make_train_dataset(rows), partner_index=FIXED_INDEX, collate_fn=collate_fn
    )
    features = _features([0, 1], rows)
    torch.manual_seed(0)  # the augmenting collator's draws: two calls differ (with these rows, almost surely)
    with pytest.raises(CollatorLayoutError, match=pattern):
        collator(features)
