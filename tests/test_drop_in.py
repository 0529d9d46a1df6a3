"""DMIX dropped into transformers' example-script flow, at the script's defaults (issue 16, item 0).

``tests/run_classification_flow.py`` is ``run_classification.py``'s flow with only its import lines changed
(``Trainer``/``TrainingArguments`` → ``DMixTrainer``/``DMixConfig``). At its default ``--pad_to_max_length true`` it
tokenizes with ``padding="max_length"`` and passes ``default_data_collator``: DMixTrainer wraps that collator.
"""

from __future__ import annotations

import csv
import os

import pytest
import torch
from conftest import make_sentences, tiny_model, train_tokenizer
from run_classification_flow import main

from hf_dmix.partners import PartnerIndex


def _write_csv(path, texts, labels) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels, strict=True))
    return str(path)


@pytest.mark.parametrize("pad_to_max_length", ["true", "false"])
def test_run_classification_flow_at_its_defaults_mixes_with_default_data_collator(
    tmp_path, monkeypatch, pad_to_max_length
):
    # "true" is the script's default (padding="max_length" + default_data_collator); "false" passes no collator.
    texts, labels = make_sentences(60, seed=3)
    tokenizer = train_tokenizer(texts)
    model_dir = tmp_path / "model"
    tiny_model("bert", vocab_size=tokenizer.vocab_size).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    files = {
        split: _write_csv(tmp_path / f"{split}.csv", texts[a:b], labels[a:b])
        for split, a, b in (("train", 0, 40), ("validation", 40, 50), ("test", 50, 60))
    }

    draws: list[tuple[torch.Tensor, torch.Tensor]] = []  # (anchors, partners) of every partner draw, in order
    original_sample = PartnerIndex.sample

    def recording_sample(self, anchors, generator):
        partners = original_sample(self, anchors, generator)
        draws.append((anchors.clone(), partners.clone()))
        return partners

    monkeypatch.setattr(PartnerIndex, "sample", recording_sample)
    batches: list[dict[str, torch.Tensor]] = []
    from hf_dmix import DMixTrainer

    original_compute_loss = DMixTrainer.compute_loss

    def recording_compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            batches.append({k: v.clone() for k, v in inputs.items()})
        return original_compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(DMixTrainer, "compute_loss", recording_compute_loss)
    activations = []

    out = tmp_path / "out"
    argv = [
        "--model_name_or_path",
        str(model_dir),
        "--train_file",
        files["train"],
        "--validation_file",
        files["validation"],
        "--test_file",
        files["test"],
        "--text_column_names",
        "text",
        "--max_seq_length",
        "24",
        "--do_train",
        "--do_eval",
        "--do_predict",
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        "4",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--tau",
        "0.3",
        "--seed",
        "0",
        "--pad_to_max_length",
        pad_to_max_length,
    ]
    from hf_dmix.mixing import HiddenStateMixer

    original_activate = HiddenStateMixer.activate
    monkeypatch.setattr(
        HiddenStateMixer, "activate", lambda self, *a, **k: (activations.append(a), original_activate(self, *a, **k))[1]
    )
    trainer, predictions = main(argv)

    # The script's own collator built the batches: padding="max_length" rows, 2B of them, no DMIX padding.
    wrapped = trainer.data_collator.collate_fn
    assert (wrapped.__name__ == "default_data_collator") if pad_to_max_length == "true" else wrapped is None
    assert trainer.state.global_step == 4 and len(activations) == 4, "every training step mixed"
    assert len(batches) == 4
    train = trainer.train_dataset
    candidates = trainer.partner_index.candidates
    # The data loader can collate (and so draw partners for) a batch ahead of the last trained one: zip truncates.
    for batch, (anchors, partners) in zip(batches, draws, strict=False):
        assert batch["input_ids"].shape[0] == 8
        if pad_to_max_length == "true":
            assert batch["input_ids"].shape == (8, 24)
        assert torch.equal(batch["dmix_partner_ids"], partners)
        for row, example in enumerate(anchors.tolist() + partners.tolist()):
            ids = batch["input_ids"][row][: len(train[example]["input_ids"])].tolist()
            assert ids == train[example]["input_ids"]
            assert int(batch["labels"][row]) == train[example]["label"]
        for anchor, partner in zip(anchors.tolist(), partners.tolist(), strict=True):
            assert partner != anchor and partner in candidates[anchor].tolist()
    # evaluate and predict (the test split has no labels) ran the plain forward on exactly their rows.
    assert predictions.shape == (10,)
    assert os.path.isfile(out / "eval_results.json") and os.path.isfile(out / "predict_results.txt")
    assert os.path.isfile(out / "model.safetensors")
