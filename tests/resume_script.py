"""Worker for tests/test_resume.py: a tiny DMIX run with checkpoints that can kill itself and be resumed.

    python tests/resume_script.py OUT_DIR TRACE [--seed S] [--kill-at-step K] [--resume] [--tau T]

Every training batch appends one JSON line to TRACE (global step, partner ids, mixing site and ratio, loss) and
fsyncs it, so the trace survives a SIGKILL. ``--kill-at-step K`` sends SIGKILL to this process when optimizer step K
ends (after the checkpoint of that step, if any, has been written): a real kill, not an exception. At the end the
script writes OUT_DIR/final.json (evaluation metrics and the log history).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import make_sentences, tiny_model, train_tokenizer
from datasets import Dataset
from transformers import TrainerCallback

from hf_dmix import DMixConfig, DMixTrainer
from hf_dmix.checkpoint import index_digest
from hf_dmix.collator import PARTNER_IDS_KEY

MAX_STEPS = 12
SAVE_STEPS = 4


class TracingTrainer(DMixTrainer):
    """Records what each training batch drew: the partner ids and the (site, ratio) of its mixing."""

    trace_path: str = ""

    def sample_mixing(self):
        site, ratio = super().sample_mixing()
        self._last_mixing = (site, ratio)
        return site, ratio

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        partners = inputs.get(PARTNER_IDS_KEY)
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if partners is not None and model.training:
            site, ratio = self._last_mixing
            value = loss[0] if isinstance(loss, tuple) else loss
            line = {
                "step": self.state.global_step + 1,
                "partners": partners.tolist(),
                "site": site,
                "ratio": ratio,
                "loss": float(value.detach()),
                "index": index_digest(self.data_collator.partner_index),
            }
            with open(self.trace_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return loss


class KillAt(TrainerCallback):
    def __init__(self, step: int, signum: int = signal.SIGKILL) -> None:
        self.step, self.signum = step, signum

    def on_step_begin(self, args, state, control, **kwargs):
        # SIGTERM arrives while step `step` (1-based) runs, as a scheduler's would: the step finishes, then the
        # trainer saves a checkpoint and stops.
        if self.signum == signal.SIGTERM and state.global_step + 1 == self.step:
            os.kill(os.getpid(), self.signum)

    def on_step_end(self, args, state, control, **kwargs):
        # SIGKILL once step `step` has ended, before its checkpoint (if any) is saved: kill at a step that does not save.
        if self.signum == signal.SIGKILL and state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("trace")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kill-at-step", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--sigterm-at-step", type=int, default=None)
    p.add_argument("--tau", type=float, default=0.3)
    p.add_argument("--train-size", type=int, default=40)
    p.add_argument("--max-steps", type=int, default=MAX_STEPS)
    p.add_argument("--refresh-epochs", type=int, default=0)
    a = p.parse_args()

    texts, labels = make_sentences(a.train_size + 24, seed=11)
    tokenizer = train_tokenizer(texts)
    data = Dataset.from_dict({"text": texts, "label": labels}).map(lambda b: tokenizer(b["text"]), batched=True)
    train, evaluation = data.select(range(a.train_size)), data.select(range(a.train_size, len(data)))
    args = DMixConfig(
        output_dir=a.out,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        seed=a.seed,
        data_seed=a.seed,
        max_steps=a.max_steps,
        partner_refresh_epochs=a.refresh_epochs,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        logging_steps=1,
        eval_strategy="no",
        tau=a.tau,
        mix_strategy="hidden",
        dataloader_num_workers=0,
    )
    trainer = TracingTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=3),
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        callbacks=[KillAt(a.kill_at_step)]
        if a.kill_at_step
        else ([KillAt(a.sigterm_at_step, signal.SIGTERM)] if a.sigterm_at_step else None),
    )
    trainer.trace_path = a.trace
    result = trainer.train(resume_from_checkpoint=True if a.resume else None)
    if trainer.stopped_by_signal:
        Path(a.out, "stopped.json").write_text(
            json.dumps({"signal": trainer.stopped_by_signal, "step": trainer.state.global_step})
        )
        return
    metrics = trainer.evaluate()
    history = [e for e in trainer.state.log_history if "loss" in e]
    Path(a.out, "final.json").write_text(
        json.dumps(
            {
                "metrics": metrics,
                "history": history,
                "refreshes": [r["epoch"] for r in trainer.partner_refreshes],
                "train_loss": result.training_loss,
                "resumed_from": trainer.resumed_checkpoint,
            }
        )
    )


if __name__ == "__main__":
    main()
