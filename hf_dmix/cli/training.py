"""Training and evaluating in ``run_dmix.py``: the trainer, resuming, stopping on a signal, and the test predictions.

What lives here: :func:`resolve_resume` (which checkpoint ``--resume_from_checkpoint`` means; it is logged and
recorded), :func:`build_trainer`, :func:`train` (raises :class:`TrainingStopped` when a SIGTERM ended training
early), :func:`evaluate` (validation and test predictions, metrics and the outcome checks), the partner-index
pictures, and the tear-down of distributed runs. What does not: DMIX itself (``hf_dmix.trainer``), what is written
afterwards (``report``, ``publish``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..checkpoint import last_complete_checkpoint
from ..checkpoint import resolve_resume as library_resolve_resume
from ..collator import DMixDataCollator
from ..convergence import training_summary, undertraining_warning
from ..data import DataError
from ..metrics import load_metric, make_compute_metrics
from .args import logger
from .outcome import check_outcome


class TrainingStopped(RuntimeError):
    """Training stopped early on SIGTERM (``DMixConfig.save_on_sigterm``) after saving a checkpoint; exit code 143."""


def resume_argument(value: str | None) -> str | bool | None:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``true``/``last`` for the last complete one in
    ``--output_dir`` (half-written checkpoints of a killed job are skipped)."""
    if value is None or str(value).lower() in ("", "false", "no", "none"):
        return None
    if str(value).lower() in ("true", "last", "yes"):
        return True
    if not os.path.isdir(value):
        raise DataError(
            f"--resume_from_checkpoint {value!r} is not a folder. Pass a checkpoint folder (OUT/checkpoint-N), or "
            "'true' for the last complete checkpoint in --output_dir."
        )
    return value


def resolve_resume(training_args) -> str | None:
    """The checkpoint this run resumes from (``None``: a fresh start), set on ``training_args`` so that results.json
    records the folder rather than ``true``. The choice itself (and its log line) is the library's
    (:func:`hf_dmix.checkpoint.resolve_resume`); here it is made before any data or model is loaded."""
    value = resume_argument(training_args.resume_from_checkpoint)
    try:
        path = library_resolve_resume(
            value, training_args.output_dir, need_dmix_state=training_args.mix_strategy != "none"
        )
    except ValueError as err:
        raise DataError(str(err).replace("resume_from_checkpoint=True", "--resume_from_checkpoint true")) from None
    training_args.resume_from_checkpoint = path
    return path


def build_trainer(
    model, training_args, encoded, processor, repo_id: str | None, early_stopping_patience: int | None = None
):
    """A ``DMixTrainer`` on the encoded splits; its model and data checks become :class:`DataError`.

    ``early_stopping_patience``: add transformers' ``EarlyStoppingCallback`` (the flags it needs were checked when
    the arguments were parsed)."""
    from transformers import EarlyStoppingCallback

    from ..trainer import DMixTrainer

    callbacks = [EarlyStoppingCallback(early_stopping_patience)] if early_stopping_patience else None

    try:
        return DMixTrainer(
            model=model,
            args=training_args,
            train_dataset=encoded["train"],
            eval_dataset=encoded["validation"],
            processing_class=processor,
            data_collator=DMixDataCollator(processor),
            compute_metrics=make_compute_metrics(load_metric()),
            callbacks=callbacks,
        )
    except ValueError as err:  # model/data checks of DMixTrainer: still before any training
        raise DataError(str(err)) from err
    except OSError as err:  # with --push_to_hub, Trainer creates the Hub repository here
        from huggingface_hub import get_token

        from ..hub_errors import hub_error

        hub = hub_error(
            err, f"Creating the Hub repository '{repo_id}'", str(repo_id), [training_args.hub_token, get_token()]
        )
        if hub is None:
            raise
        raise hub from None


def train(trainer, training_args, resume: str | None):
    """``trainer.train``; a SIGTERM that stopped it early becomes :class:`TrainingStopped` naming the checkpoint.

    The metrics returned gain what the training curve says (:func:`hf_dmix.convergence.training_summary`: epochs run,
    best epoch, final training loss, the curve), and a model whose loss ended near chance is warned about."""
    result = trainer.train(resume_from_checkpoint=resume)
    if trainer.stopped_by_signal:
        checkpoint, _ = last_complete_checkpoint(
            training_args.output_dir, need_dmix_state=training_args.mix_strategy != "none"
        )
        raise TrainingStopped(
            f"{trainer.stopped_by_signal} received: training stopped at step {trainer.state.global_step} and saved "
            f"{checkpoint}. Nothing was evaluated. Continue with the same command plus --resume_from_checkpoint true."
        )
    result.metrics.update(training_summary(trainer.state))
    num_labels = getattr(getattr(trainer.model, "config", None), "num_labels", None)
    warning = undertraining_warning(trainer.state.log_history, num_labels) if num_labels and num_labels > 1 else None
    if warning:
        logger.warning(warning)
    result.metrics["undertraining_warning"] = warning
    return result


def partner_plots(trainer, data_args) -> dict[str, str]:
    """``--plot_partners``: the pictures of the partner index (name -> path), each logged."""
    plots = trainer.plot_partner_index() if data_args.plot_partners else {}
    for name, path in plots.items():
        logger.info(f"Wrote the {name.replace('_', '-')} picture of the partner index to {path}")
    return plots


@dataclass
class Evaluation:
    """The validation and test predictions of the trained model, their metrics and the outcome checks."""

    predictions: dict[str, Any]  # split -> transformers PredictionOutput
    labels: dict[str, list[int]]
    metrics: dict[str, dict[str, float]]
    outcome: dict[str, Any]


def _strip_prefix(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {
        k[len(prefix) :]: float(v) for k, v in metrics.items() if k.startswith(prefix) and isinstance(v, (int, float))
    }


def evaluate(trainer, encoded, label_names: list[str]) -> Evaluation:
    """Predict validation and test once each (the collapse check needs the predictions, not only the metrics)."""
    predictions = {}
    for split in ("validation", "test"):
        predictions[split] = trainer.predict(encoded[split], metric_key_prefix=split)
        if split == "validation":
            trainer.log(dict(predictions[split].metrics))  # keeps what evaluate() would have logged
    labels = {s: list(encoded[s]["label"]) for s in predictions}
    return Evaluation(
        predictions=predictions,
        labels=labels,
        metrics={s: _strip_prefix(p.metrics, f"{s}_") for s, p in predictions.items()},
        outcome=check_outcome(predictions, labels, label_names),
    )


def finish_distributed() -> None:
    """Two-process gloo runs can abort at exit after a successful run; a barrier and an explicit teardown avoid it."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
