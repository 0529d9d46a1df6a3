"""Exact pair checks through the Trainer (issue 21, defect 1): a script's collator that reorders rows is refused at
the first training batch, before any step, whatever the labels; collators that keep the order train.

``tests/test_collator.py`` checks the collator alone with literal rows (every kind of reordering, and the collators
that must pass); here the checks run inside ``trainer.train()`` on real datasets.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_sentences, tiny_model
from datasets import Dataset
from transformers import DataCollatorWithPadding

from hf_dmix import CollatorLayoutError, DMixConfig, DMixTrainer


def _args(tmp_path, **kw) -> DMixConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        tau=0.3,
    )
    return DMixConfig(**{**defaults, **kw})


class _Recording(DMixTrainer):
    """Counts the training batches that reached the loss."""

    steps = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            type(self).steps += 1
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def _skewed(rare: int) -> Dataset:
    """40 raw sentences of 3 to 12 words, 39 of label 0 and one, row ``rare``, of label 1 (a 39:1 label set).

    Which batch holds the rare row decides when a check of the labels alone notices a sorted batch: with row 17 it
    never does in 3 steps (the old check trained on 3 sorted batches), with row 25 at the third batch.
    """
    texts, _ = make_sentences(40, seed=5)
    return Dataset.from_dict({"text": texts, "label": [1 if i == rare else 0 for i in range(40)]})


def test_sort_by_length_collator_on_a_39_to_1_set_is_refused_at_the_first_training_batch(tmp_path, tokenizer):
    # With labels nearly all equal, a label check passes every batch the collator sorted (the old check trained on).
    pad = DataCollatorWithPadding(tokenizer)

    def sort_by_length(rows):
        return pad(sorted(rows, key=lambda r: len(r["input_ids"])))

    train = _skewed(rare=17).map(lambda b: tokenizer(b["text"], truncation=True, max_length=32), batched=True)
    _Recording.steps = 0
    trainer = _Recording(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path),
        train_dataset=train,
        data_collator=sort_by_length,
    )
    with pytest.raises(
        CollatorLayoutError,
        match=r"sort_by_length changed the order of the examples: row \d+ of the "
        r"batch it returned holds example \d+ .*group_by_length=True",
    ):
        trainer.train()
    assert _Recording.steps == 0 and trainer.state.global_step == 0, "a reordered batch reached the model"
    assert trainer.data_collator.batches_drawn == 1, "refused at the first training batch"


def test_collator_that_tokenizes_and_sorts_by_length_is_refused_and_one_that_only_tokenizes_trains(tmp_path, tokenizer):
    # The tokenize-in-the-collator recipe (remove_unused_columns=False, raw text rows): no feature passes through the
    # collator unchanged, so the row order is checked by collating the examples once more in another order.
    raw = _skewed(rare=25)
    # The embedding pass of the partner index reads tokenized features: give it embeddings (one per row).
    embeddings = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))

    def tokenize(rows):
        batch = tokenizer([r["text"] for r in rows], padding=True, truncation=True, max_length=32, return_tensors="pt")
        return {**batch, "labels": torch.tensor([r["label"] for r in rows])}

    def tokenize_sorted(rows):
        return tokenize(sorted(rows, key=lambda r: len(r["text"].split())))

    args = dict(remove_unused_columns=False)
    _Recording.steps = 0
    trainer = _Recording(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path, **args),
        train_dataset=raw,
        data_collator=tokenize_sorted,
        sentence_embeddings=embeddings,
    )
    with pytest.raises(CollatorLayoutError, match=r"tokenize_sorted changed the order of the examples"):
        trainer.train()
    assert _Recording.steps == 0, "a reordered batch reached the model"

    trainer = _Recording(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path, **args),
        train_dataset=raw,
        data_collator=tokenize,
        sentence_embeddings=embeddings,
    )
    assert trainer.train().global_step == 3 and _Recording.steps == 3
