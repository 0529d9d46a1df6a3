"""``hf-dmix train`` (and ``run_dmix.py``): one run, in the order of its steps; ``hf-dmix push``: publish a folder.

What lives here: :func:`main`, the order of a run's steps — check the arguments, load data and model, train,
evaluate, report, save, publish — and :func:`push`, which publishes an earlier run's output folder without retraining
(``--push_only``). Every step lives in a module of its own beside this one (``args``, ``inputs``, ``training``,
``report``, ``publish``). What does not: the command-line wrapper (exit codes, one-line errors: ``commands.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import transformers
from transformers import set_seed

from .args import log_preset, parse_args
from .inputs import INPUTS, resolve_modality
from .publish import card_metadata_from_args, check_access, check_hub_args, publish, push_only, save_model_and_card
from .report import build_results, predictions_csv, print_summary, write_report
from .training import build_trainer, evaluate, finish_distributed, partner_plots, resolve_resume, train


def set_up_logging(training_args) -> None:
    """Log lines with time, level and module; transformers' own at info level on the main process."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if training_args.should_log and training_args.get_process_log_level() <= logging.INFO:
        transformers.utils.logging.set_verbosity_info()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """One run: check the arguments, load data and model, train, evaluate, report, save, publish.

    ``argv``: ``[config.yaml|config.json] [--flag value ...]`` (default ``sys.argv[1:]``). Every check that can fail
    before training (arguments, Hub access, the checkpoint to resume, data, model) runs before the first training
    step. Returns the content of results.json (plus ``hub`` after a push).
    """
    start = time.time()
    model_args, data_args, training_args, hub_args, explicit = parse_args(argv)
    set_up_logging(training_args)
    repo_id = check_hub_args(model_args, training_args, hub_args)
    if hub_args.push_only:
        assert repo_id is not None  # check_hub_args refuses --push_only without --hub_model_id
        return push_only(training_args, hub_args, repo_id)
    repo_id = check_access(repo_id, training_args)
    log_preset(data_args, training_args, explicit)
    resume = resolve_resume(training_args)
    set_seed(training_args.seed)

    # Data (validated before any model is loaded), the model, and the inputs its processing class makes.
    inputs = INPUTS[resolve_modality(model_args, data_args)]
    data = inputs.load_data(data_args, explicit)
    model, processor, num_parameters = inputs.load_model(model_args, data, training_args.seed)
    encoded = inputs.encode(data, processor, data_args, training_args)
    diagnostics = inputs.diagnostics(processor, encoded, data, data_args)

    trainer = build_trainer(model, training_args, encoded, processor, repo_id, data_args.early_stopping_patience)
    trainer.set_model_card_metadata(repo_id=repo_id, **card_metadata_from_args(model_args, data_args, hub_args))
    train_result = train(trainer, training_args, resume)
    plots = partner_plots(trainer, data_args)
    evaluation = evaluate(trainer, encoded, data.label_names)
    results = build_results(
        model_args,
        data_args,
        training_args,
        inputs=inputs,
        model=model,
        num_parameters=num_parameters,
        data=data,
        encoded=encoded,
        evaluation=evaluation,
        train_metrics=train_result.metrics,
        resumed_from=resume,
        trainer=trainer,
        plots=plots,
        diagnostics=diagnostics,
        wall_time_s=round(time.time() - start, 2),
    )

    is_main = trainer.is_world_process_zero()
    if is_main:
        out = training_args.output_dir
        assert out is not None  # TrainingArguments.__post_init__ sets its default
        write_report(
            out,
            results,
            predictions_csv(data.splits["test"], inputs.row_key, evaluation.predictions["test"], data.label_names),
        )
        save_model_and_card(trainer, out, model_args, hub_args)
        print_summary(out, results, evaluation.labels["test"], data.label_names, plots)
    finish_distributed()
    if repo_id is not None and is_main:
        trainer.wait_for_hub_pushes()  # a late checkpoint upload must not overwrite the final model
        results["hub"] = publish(training_args.output_dir or "", repo_id, training_args, hub_args, after_training=True)
    return results


def push(argv: list[str]) -> dict[str, Any]:
    """``hf-dmix push --output_dir OUT --hub_model_id NAMESPACE/NAME [...]``: ``main`` with ``--push_only``.

    Publishes the folder of an earlier run (e.g. after a failed push) without loading data or a model; the flags that
    matter are ``--output_dir``, ``--hub_model_id``, ``--hub_token``, ``--hub_private_repo``, ``--hub_revision``,
    ``--merge_lora_before_push`` and the ``--card_*`` flags.
    """
    return main(["--push_only", *argv])
