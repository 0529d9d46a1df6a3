"""The best-epoch machinery of transformers (evaluate and save every epoch, load_best_model_at_end, early stopping)
with DMIX: every checkpoint carries the DMIX state, the model kept is the best checkpoint's, and a resume from that
(not the last) checkpoint is accepted and continues its draws."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from conftest import tiny_model
from safetensors.torch import load_file
from transformers import EarlyStoppingCallback, TrainerCallback

from hf_dmix import DMixConfig, DMixDataCollator, DMixTrainer
from hf_dmix.checkpoint import DMIX_STATE_NAME, read_state


def _metrics_that_peak_at_epoch_two():
    # A scripted validation metric (0.5, 0.9, 0.6, 0.4, ...): the best epoch is the second, whatever the tiny model
    # learns, and early stopping with patience 2 ends training after the fourth.
    scores = iter([0.5, 0.9, 0.6, 0.4, 0.3, 0.2])
    return lambda _pred: {"macro_f1": next(scores)}


class _LastEpochWeights(TrainerCallback):
    """Keeps a copy of the weights at the end of the last epoch (before the best model is loaded back)."""

    weights: ClassVar[dict] = {}

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        type(self).weights = {k: v.detach().clone() for k, v in model.state_dict().items()}


last_epoch = _LastEpochWeights


def _trainer(tmp_path, train_dataset, tokenizer, **overrides):
    args = DMixConfig(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=6,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        save_only_model=True,
        save_total_limit=1,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        mix_strategy="hidden",
        partner_distance="euclidean",
        tau=0.5,
        **overrides,
    )
    return DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=args,
        train_dataset=train_dataset,
        eval_dataset=train_dataset,
        data_collator=DMixDataCollator(tokenizer),
        compute_metrics=_metrics_that_peak_at_epoch_two(),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2), _LastEpochWeights()],
    )


def test_best_epoch_is_kept_with_dmix_state_and_early_stopping_ends_training(tmp_path, train_dataset, tokenizer):
    trainer = _trainer(tmp_path, train_dataset, tokenizer)
    trainer.train()
    state = trainer.state
    steps_per_epoch = len(train_dataset) // 8
    # Early stopping after two epochs without improvement on the best (second) epoch.
    assert state.epoch == 4 and state.best_metric == 0.9
    assert state.best_global_step == 2 * steps_per_epoch
    best = Path(state.best_model_checkpoint)
    # save_total_limit=1 with load_best_model_at_end: the best checkpoint is what is left, with its DMIX state.
    assert [p.name for p in (tmp_path / "out").glob("checkpoint-*")] == [best.name]
    assert (best / DMIX_STATE_NAME).is_file()
    # The model the trainer holds now is the best checkpoint's, not the last epoch's.
    saved = load_file(str(best / "model.safetensors"))
    current = trainer.model.state_dict()
    assert all(torch.equal(saved[k], current[k]) for k in saved)
    assert any(not torch.equal(last_epoch.weights[k], current[k]) for k in saved)
    # The best checkpoint's DMIX state is the draw position after two epochs.
    assert read_state(str(best))["batches_consumed"] == 2 * steps_per_epoch


def test_resuming_from_the_best_checkpoint_continues_its_draws(tmp_path, train_dataset, tokenizer):
    trainer = _trainer(tmp_path, train_dataset, tokenizer, logging_steps=1)
    trainer.train()
    best = trainer.state.best_model_checkpoint
    uninterrupted = {e["step"]: e["dmix/ratio"] for e in trainer.state.log_history if "dmix/ratio" in e}
    fresh = _trainer(tmp_path, train_dataset, tokenizer, logging_steps=1)
    fresh.train(resume_from_checkpoint=best)
    best_step = json.loads((Path(best) / "trainer_state.json").read_text())["global_step"]
    # The state's history starts with the checkpoint's own (steps up to the best); the resumed steps follow it.
    resumed = {
        e["step"]: e["dmix/ratio"] for e in fresh.state.log_history if "dmix/ratio" in e and e["step"] > best_step
    }
    # The resumed run draws the same mixing ratios the uninterrupted run drew at the same steps: the best
    # checkpoint's DMIX state, not the last epoch's, was restored.
    assert min(resumed) == best_step + 1
    common = sorted(set(resumed) & set(uninterrupted))
    assert len(common) >= 4
    assert np.allclose([resumed[s] for s in common], [uninterrupted[s] for s in common])
