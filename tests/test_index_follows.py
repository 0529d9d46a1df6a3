"""The partner index follows the data and the weights, and the embedding pass feeds the script's own collator rows
it can handle (issue 21, defects 3-5).

* A training set replaced after construction (``trainer.train_dataset = other``, a torch ``Dataset`` of the same
  length) gets its own index and the construction checks again.
* A resume embeds with the weights the checkpoint's run started from (recorded in ``dmix_state.json``): on the same
  trainer object too, or it is refused with the reason.
* A hand-written collator that reads ``f["label"]`` and the tokenize-in-the-collator recipe
  (``remove_unused_columns=False``, raw text rows) train as they do with plain ``Trainer``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import make_sentences, tiny_model
from datasets import Dataset
from torch.utils.data import Dataset as TorchDataset
from transformers import TrainerCallback

from hf_dmix import DMixConfig, DMixTrainer, ResumeMismatchError
from hf_dmix.checkpoint import DMIX_STATE_NAME, index_digest


def _args(tmp_path, **kw) -> DMixConfig:
    settings = dict(
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
        dataloader_num_workers=0,
    )
    settings.update(kw)
    return DMixConfig(**settings)


class Rows(TorchDataset):
    """A plain torch map-style dataset of feature dicts (no ``datasets`` fingerprint)."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return dict(self.rows[i])


def _rows(tokenizer, seed: int, n: int = 40, labels=None) -> Rows:
    texts, default_labels = make_sentences(n, seed=seed)
    enc = tokenizer(texts, truncation=True, max_length=32)
    labels = default_labels if labels is None else labels
    return Rows(
        [
            {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "label": labels[i]}
            for i in range(n)
        ]
    )


def _sorted_candidates(index) -> torch.Tensor:
    return index.candidates.long().sort(dim=1).values


# ---------------------------------------------------------------------- defect 3: a swapped training set


def test_a_swapped_torch_dataset_of_the_same_length_gets_its_own_index(tmp_path, tokenizer):
    first, other = _rows(tokenizer, seed=0), _rows(tokenizer, seed=5)
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    start = copy.deepcopy(model)
    trainer = DMixTrainer(
        model=model, args=_args(tmp_path, learning_rate=0.0), train_dataset=first, processing_class=tokenizer
    )
    old = _sorted_candidates(trainer.build_partner_index())
    trainer.train_dataset = other  # same length, other rows
    trainer.train()
    assert trainer.state.global_step == 3
    fresh = DMixTrainer(model=start, args=_args(tmp_path), train_dataset=other, processing_class=tokenizer)
    expected = _sorted_candidates(fresh.build_partner_index())
    assert not torch.equal(old, expected)  # the two training sets really select other partners
    assert torch.equal(_sorted_candidates(trainer.partner_index), expected)
    # The collator draws partners from, and reads their features in, the new rows.
    assert trainer.data_collator.train_dataset is trainer.train_dataset
    assert trainer.train_dataset[7]["input_ids"] == other[7]["input_ids"]


def test_a_swapped_training_set_is_checked_again_before_any_step(tmp_path, tokenizer):
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path),
        train_dataset=_rows(tokenizer, seed=0),
        processing_class=tokenizer,
    )
    trainer.train_dataset = _rows(tokenizer, seed=0, labels=[1] * 40)
    with pytest.raises(ValueError, match=r"single class \(label id 1\)"):
        trainer.train()
    assert trainer.state.global_step == 0
    trainer.train_dataset = _rows(tokenizer, seed=0, labels=[i % 3 for i in range(40)])
    with pytest.raises(ValueError, match=r"label ids outside 0\.\.1 \(the model has num_labels=2\): \[2\]"):
        trainer.train()
    assert trainer.state.global_step == 0
    trainer.train_dataset = _rows(tokenizer, seed=0)  # a good set again: trains
    assert trainer.train().global_step == 3


# ---------------------------------------------------------------------- defect 4: resume and the starting weights


class _StopAt(TrainerCallback):
    """Ends training after step ``step`` (after that step's checkpoint): an interrupted run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


@pytest.fixture
def small_data(tokenizer):
    texts, labels = make_sentences(24, seed=7)
    return Dataset.from_dict({"text": texts, "label": labels}).map(lambda b: tokenizer(b["text"]), batched=True)


def _checkpoint_args(tmp_path, **kw) -> DMixConfig:
    return _args(tmp_path, **{"max_steps": 8, "save_strategy": "steps", "save_steps": 4, "logging_steps": 1, **kw})


# (refresh epochs, the step the run is interrupted at, max_steps): 24 examples in batches of 4 are 6 steps per epoch;
# with refreshes, checkpoint-8 holds the index refreshed at the start of epoch 1.
@pytest.mark.parametrize("refresh, stop_at, max_steps", [(0, 4, 8), (1, 8, 12)])
def test_resume_on_the_same_trainer_rebuilds_the_checkpoints_index(
    tmp_path, tokenizer, small_data, caplog, refresh, stop_at, max_steps
):
    settings = dict(partner_refresh_epochs=refresh, max_steps=max_steps)
    stop = _StopAt(stop_at)
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=1),
        args=_checkpoint_args(tmp_path, **settings),
        train_dataset=small_data,
        processing_class=tokenizer,
        callbacks=[stop],
    )
    trainer.train()  # interrupted after its last checkpoint; the model now holds fine-tuned weights
    trained_with = trainer.partner_index.candidates.clone()
    checkpoint = tmp_path / "out" / f"checkpoint-{stop_at}"
    saved = json.loads((checkpoint / DMIX_STATE_NAME).read_text())["fingerprint"]
    assert saved["index_digest"] == index_digest(trainer.partner_index)
    trainer.remove_callback(stop)
    with caplog.at_level("WARNING"):
        result = trainer.train(resume_from_checkpoint=True)
    assert result.global_step == max_steps and trainer.resumed_checkpoint == str(checkpoint)
    assert torch.equal(trainer.partner_index.candidates, trained_with)
    assert "differs from the one" not in caplog.text and "other hardware" not in caplog.text
    # A fresh process resuming the same checkpoint (the model built as the interrupted run built it) agrees.
    fresh = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=1),
        args=_checkpoint_args(tmp_path, **settings),
        train_dataset=small_data,
        processing_class=tokenizer,
    )
    fresh.train(resume_from_checkpoint=str(checkpoint))
    assert torch.equal(fresh.partner_index.candidates, trained_with)


def test_a_resume_from_other_starting_weights_is_refused_with_the_reason(tmp_path, tokenizer, small_data):
    DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=1),
        args=_checkpoint_args(tmp_path),
        train_dataset=small_data,
        processing_class=tokenizer,
        callbacks=[_StopAt(4)],
    ).train()
    other = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=2),
        args=_checkpoint_args(tmp_path),
        train_dataset=small_data,
        processing_class=tokenizer,
    )
    with pytest.raises(ResumeMismatchError, match=r"checkpoint-4.*weights.*started from") as err:
        other.train(resume_from_checkpoint=True)
    assert "other hardware" not in str(err.value)
    assert "sentence_embeddings" in str(err.value)  # the fix is named
    assert other.state.global_step == 0


def test_the_checkpoint_records_what_the_embeddings_came_from(tmp_path, tokenizer, small_data):
    from hf_dmix.embeddings import weights_digest

    model = tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=1)
    start = weights_digest(model)
    DMixTrainer(
        model=model, args=_checkpoint_args(tmp_path, max_steps=4), train_dataset=small_data, processing_class=tokenizer
    ).train()
    saved = json.loads((tmp_path / "out" / "checkpoint-4" / DMIX_STATE_NAME).read_text())["fingerprint"]
    assert saved["embeddings_from"] == start != weights_digest(model)  # the starting weights, not the trained ones


# ---------------------------------------------------------------------- defect 5: the script's own collator


def test_a_collator_that_reads_the_label_trains_and_embeds_like_the_default(tmp_path, tokenizer, train_dataset):
    def collate(features):  # a hand-written collator, as in many scripts
        batch = tokenizer.pad(
            [{k: f[k] for k in ("input_ids", "attention_mask")} for f in features], return_tensors="pt"
        )
        batch["labels"] = torch.tensor([f["label"] for f in features])
        return batch

    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    reference = DMixTrainer(
        model=copy.deepcopy(model), args=_args(tmp_path), train_dataset=train_dataset, processing_class=tokenizer
    ).compute_sentence_embeddings()
    trainer = DMixTrainer(model=model, args=_args(tmp_path), train_dataset=train_dataset, data_collator=collate)
    mixed = []
    original = trainer.mixer.activate
    trainer.mixer.activate = lambda *a, **k: (mixed.append(a), original(*a, **k))[1]
    torch.testing.assert_close(trainer.compute_sentence_embeddings(), reference)
    assert trainer.train().global_step == 3 and len(mixed) == 3


@pytest.mark.parametrize("kind", ["datasets", "torch"])
def test_the_tokenize_in_the_collator_recipe_trains(tmp_path, tokenizer, train_dataset, sentences, kind):
    texts, labels = sentences
    raw = Dataset.from_dict({"text": texts, "label": labels})
    if kind == "torch":
        raw = Rows([{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)])

    def collate(features):  # raw text rows in, model inputs out: the script tokenizes in its collator
        batch = tokenizer(
            [f["text"] for f in features], padding=True, truncation=True, max_length=32, return_tensors="pt"
        )
        batch["labels"] = torch.tensor([f["label"] for f in features])
        return batch

    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    reference = DMixTrainer(
        model=copy.deepcopy(model), args=_args(tmp_path), train_dataset=train_dataset, processing_class=tokenizer
    ).compute_sentence_embeddings()
    trainer = DMixTrainer(
        model=model, args=_args(tmp_path, remove_unused_columns=False), train_dataset=raw, data_collator=collate
    )
    torch.testing.assert_close(trainer.compute_sentence_embeddings(), reference, atol=1e-5, rtol=1e-5)
    mixed = []
    original = trainer.mixer.activate
    trainer.mixer.activate = lambda *a, **k: (mixed.append(a), original(*a, **k))[1]
    assert trainer.train().global_step == 3 and len(mixed) == 3


def test_a_collator_that_cannot_embed_the_training_rows_is_refused_with_the_fix(tmp_path, tokenizer, sentences):
    texts, labels = sentences
    raw = Dataset.from_dict({"text": texts, "label": labels})

    def collate(features):
        return tokenizer([f["text"] for f in features], padding=True, return_tensors="pt")

    # The recipe without remove_unused_columns=False: Trainer would drop the text column the collator reads.
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path),
        train_dataset=raw,
        data_collator=collate,
    )
    with pytest.raises(ValueError, match=r"remove_unused_columns=False.*sentence_embeddings=.*embedding_model="):
        trainer.train()
    assert trainer.state.global_step == 0
