#!/usr/bin/env python
"""Fine-tune a text, image or audio classifier with DMIX (or one of the paper's Table 1 baselines) and evaluate it.

Launch with ``accelerate launch run_dmix.py ...`` (or plain ``python run_dmix.py ...``). Arguments are the fields of
``ModelArguments``, ``DataArguments`` and ``hf_dmix.DMixConfig``; a single YAML or JSON file may come first and
supplies defaults that command-line flags override::

    accelerate launch run_dmix.py configs/essc-minilm.yaml --seed 3 --preset mixup
    python run_dmix.py --model_name_or_path config:vit-tiny --dataset_name digits --preset dmix --output_dir out
    python run_dmix.py --model_name_or_path config:ast-tiny --dataset_name fsdd --preset dmix --output_dir out

The modality (text, image or audio) follows from the model's ``model_type`` (``--modality`` states it); the same
presets and DMIX flags apply to all three. Images and audio go through the model's processing class (image processor
or feature extractor, saved with the model) the way text goes through its tokenizer; see ``hf_dmix/media.py`` for the
``digits`` and ``fsdd`` datasets and the ``config:NAME`` architectures built with random weights.

Outputs in ``--output_dir``: ``results.json`` (settings, metrics, seed, versions, wall time, split, data and outcome
diagnostics), ``predictions.csv`` (test predictions), the trained model (or LoRA adapter) and tokenizer,
``dmix_config.json`` and the model card ``README.md``. Files are written atomically.

Publishing: ``--push_to_hub --hub_model_id NAMESPACE/NAME`` pushes the folder after evaluation (access is checked before
training). If the push fails, nothing is lost; push the folder again without retraining::

    python run_dmix.py --push_only --output_dir OUT --hub_model_id NAMESPACE/NAME [--merge_lora_before_push]

This file holds the order of the steps; the steps live in ``hf_dmix/cli/`` (arguments, per-modality inputs,
training, the report, publishing).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import transformers
from transformers import set_seed

from hf_dmix.checkpoint import ResumeMismatchError
from hf_dmix.cli.args import (  # noqa: F401 - the arguments and presets, importable from the script as before
    PRESETS,
    DataArguments,
    HubArguments,
    ModelArguments,
    log_preset,
    parse_args,
)
from hf_dmix.cli.inputs import INPUTS, resolve_modality
from hf_dmix.cli.models import resolve_model_path  # noqa: F401 - used by benchmarks/*.py
from hf_dmix.cli.outcome import check_outcome, log_data_diagnostics, majority_baseline  # noqa: F401
from hf_dmix.cli.publish import (
    card_metadata_from_args,
    check_access,
    check_hub_args,
    publish,
    push_only,
    save_model_and_card,
)
from hf_dmix.cli.report import build_results, predictions_csv, print_summary, write_report
from hf_dmix.cli.training import (
    TrainingStopped,
    build_trainer,
    evaluate,
    finish_distributed,
    partner_plots,
    resolve_resume,
    train,
)
from hf_dmix.data import DataError
from hf_dmix.hub import HubError


def set_up_logging(training_args) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if training_args.should_log and training_args.get_process_log_level() <= logging.INFO:
        transformers.utils.logging.set_verbosity_info()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """One run: check the arguments, load data and model, train, evaluate, report, save, publish.

    Every check that can fail before training (arguments, Hub access, the checkpoint to resume, data, model) runs
    before the first training step. Returns the content of results.json (plus ``hub`` after a push).
    """
    start = time.time()
    model_args, data_args, training_args, hub_args, explicit = parse_args(argv)
    set_up_logging(training_args)
    repo_id = check_hub_args(model_args, training_args, hub_args)
    if hub_args.push_only:
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

    trainer = build_trainer(model, training_args, encoded, processor, repo_id)
    trainer.set_model_card_metadata(repo_id=repo_id, **card_metadata_from_args(model_args, data_args, hub_args))
    train_result = train(trainer, training_args, resume)
    plots = partner_plots(trainer, data_args)
    evaluation = evaluate(trainer, encoded, data.label_names)
    results = build_results(
        model_args, data_args, training_args, inputs=inputs, model=model, num_parameters=num_parameters, data=data,
        encoded=encoded, evaluation=evaluation, train_metrics=train_result.metrics, resumed_from=resume,
        trainer=trainer, plots=plots, diagnostics=diagnostics, wall_time_s=round(time.time() - start, 2),
    )

    is_main = trainer.is_world_process_zero()
    if is_main:
        out = training_args.output_dir
        write_report(out, results, predictions_csv(data.splits["test"], inputs.row_key, evaluation.predictions["test"],
                                                   data.label_names))
        save_model_and_card(trainer, out, model_args, hub_args)
        print_summary(out, results, evaluation.labels["test"], data.label_names, plots)
    finish_distributed()
    if repo_id is not None and is_main:
        trainer.wait_for_hub_pushes()  # a late checkpoint upload must not overwrite the final model
        results["hub"] = publish(training_args.output_dir, repo_id, training_args, hub_args, after_training=True)
    return results


def run() -> None:
    """The command line: errors found before or instead of training are one line and exit 2 (argparse's
    convention); a SIGTERM that stopped training exits 143."""
    try:
        main()
    except (DataError, HubError, ResumeMismatchError) as err:
        print(f"run_dmix.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    except TrainingStopped as err:
        print(f"run_dmix.py: {err}", file=sys.stderr)
        sys.exit(143)  # 128 + SIGTERM: schedulers read it as "terminated", e.g. to requeue the job


if __name__ == "__main__":
    run()
