#!/usr/bin/env python
"""Fine-tune a text, image or audio classifier with DMIX (or one of the paper's Table 1 baselines) and evaluate it.

The same command as ``hf-dmix train`` (installed with the package; ``python -m hf_dmix train`` too): launch with
``accelerate launch run_dmix.py ...`` (or plain ``python run_dmix.py ...``). Arguments are the fields of
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
    hf-dmix push --output_dir OUT --hub_model_id NAMESPACE/NAME  # the same

This file is a few lines over ``hf_dmix.cli.train.main`` (the order of the steps); the steps live in
``hf_dmix/cli/`` (arguments, per-modality inputs, training, the report, publishing).
"""

from __future__ import annotations

import sys

from hf_dmix.cli.args import PRESETS, DataArguments, HubArguments, ModelArguments, log_preset, parse_args
from hf_dmix.cli.commands import run_command
from hf_dmix.cli.inputs import resolve_modality
from hf_dmix.cli.models import resolve_model_path
from hf_dmix.cli.outcome import check_outcome, log_data_diagnostics, majority_baseline
from hf_dmix.cli.train import main, set_up_logging

# Importable from the script as before (tests and benchmarks/*.py use them).
__all__ = [
    "PRESETS",
    "DataArguments",
    "HubArguments",
    "ModelArguments",
    "check_outcome",
    "log_data_diagnostics",
    "log_preset",
    "main",
    "majority_baseline",
    "parse_args",
    "resolve_modality",
    "resolve_model_path",
    "run",
    "set_up_logging",
]


def run() -> None:
    """The command line: errors found before or instead of training are one line and exit 2 (argparse's
    convention); a SIGTERM that stopped training exits 143."""
    sys.exit(run_command(main, sys.argv[1:], "run_dmix.py"))


if __name__ == "__main__":
    run()
