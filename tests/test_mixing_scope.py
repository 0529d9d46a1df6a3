"""Mixing happens only inside a training step's forward (issue 21, defect 2).

The hooks are armed by ``compute_loss`` for one training step and stay armed through its backward (gradient
checkpointing recomputes the mixed forward there); ``predict``/``evaluate`` called from a callback in the middle of
training, and a script's own forward between steps, run the plain model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model
from transformers import AutoModelForSequenceClassification, TrainerCallback

from hf_dmix import DMixConfig, DMixTrainer


def _args(tmp_path, **kw) -> DMixConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        tau=0.3,
    )
    return DMixConfig(**{**defaults, **kw})


def _plain_copy(model):
    """The same weights in a model without DMIX's hooks: its forward is the plain model's."""
    plain = AutoModelForSequenceClassification.from_config(model.config, attn_implementation="sdpa")
    plain.load_state_dict(model.state_dict())
    return plain.eval()


def _padded(tokenizer, rows):
    return tokenizer.pad(
        [{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]} for r in rows], return_tensors="pt"
    )


@pytest.mark.parametrize("eval_batch_size", [8, 5])  # 8 = 2B: the size a leftover mixing would silently mix
def test_predict_evaluate_and_own_forward_mid_training_never_mix(tmp_path, tokenizer, train_dataset, eval_batch_size):
    unlabeled = train_dataset.select(range(16)).remove_columns("label")
    labeled = train_dataset.select(range(16, 29))
    seen: dict = {}

    class MidTraining(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:  # a script's own forward between steps, model in training mode
                batch = _padded(tokenizer, [train_dataset[i] for i in range(8)])
                with torch.no_grad():
                    seen["own"] = model(**batch).logits
                    plain = _plain_copy(model).train()
                    seen["own_plain"] = plain(**batch).logits

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            seen["armed_site"] = trainer.mixer.state.site
            seen["predictions"] = trainer.predict(unlabeled).predictions
            seen["eval_loss"] = trainer.evaluate(labeled)["eval_loss"]
            plain = _plain_copy(model)
            with torch.no_grad():
                seen["plain"] = plain(**_padded(tokenizer, unlabeled)).logits
                logits = plain(**_padded(tokenizer, labeled)).logits
            seen["plain_loss"] = float(F.cross_entropy(logits, torch.tensor(labeled["label"])))

    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    args = _args(tmp_path, num_train_epochs=1, per_device_eval_batch_size=eval_batch_size)
    trainer = DMixTrainer(
        model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer, callbacks=[MidTraining()]
    )
    activations = []
    original = trainer.mixer.activate
    trainer.mixer.activate = lambda *a, **k: (activations.append(a), original(*a, **k))[1]
    assert trainer.train().global_step == 10
    assert len(activations) == 10, "every training step mixed"
    torch.testing.assert_close(torch.as_tensor(seen["predictions"]), seen["plain"], atol=1e-5, rtol=0)
    assert seen["eval_loss"] == pytest.approx(seen["plain_loss"], abs=1e-5)
    torch.testing.assert_close(seen["own"], seen["own_plain"], atol=1e-5, rtol=0)
    assert seen["armed_site"] is None, "the last step's mixing was still armed after its training step"


def test_gradient_checkpointing_trains_exactly_as_without_it(tmp_path, tokenizer, train_dataset):
    # The step's mixing stays armed through the backward, where checkpointing recomputes each layer's mixed forward.
    def train(checkpointing):
        model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
        args = _args(tmp_path / str(checkpointing), max_steps=3, gradient_checkpointing=checkpointing)
        trainer = DMixTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer)
        recomputed = []
        layer = trainer.mixer.layers[0].attention
        handle = layer.register_forward_hook(lambda *a: recomputed.append(torch.is_grad_enabled()))
        losses = [trainer.train().training_loss]
        handle.remove()
        return losses, {k: v.detach().clone() for k, v in model.named_parameters()}, len(recomputed)

    losses, params, forwards = train(False)
    losses_gc, params_gc, forwards_gc = train(True)
    assert forwards_gc > forwards, "checkpointing did not recompute the layers in the backward"
    assert losses_gc == pytest.approx(losses, abs=1e-6)
    for name in params:
        torch.testing.assert_close(params_gc[name], params[name], atol=1e-6, rtol=1e-5, msg=name)
