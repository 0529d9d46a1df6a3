"""What a ``run_dmix.py`` run reports: ``results.json``, ``predictions.csv`` and the table printed at the end.

What lives here: :func:`build_results` (its DMIX record is ``DMixConfig.effective_dmix_settings()``, the config's one
decision of which settings took effect), :func:`write_report` (both files, atomically) and :func:`print_summary`. What
does not: the baseline and collapse checks (``outcome``), the model card and the Hub (``publish``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from typing import Any

import numpy as np

from .._version import __version__
from ..io import write_atomic
from ..partners import describe_partner_index
from .outcome import describe_majority_baseline, majority_baseline

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.csv"
SPLITS = ("validation", "test")


def public_args(training_args) -> dict[str, Any]:
    """Training arguments as JSON, with every token-like value removed."""
    out = {}
    for key, value in training_args.to_dict().items():
        if "token" in key and key not in ("include_num_input_tokens_seen",) and value not in (None, False):
            value = "<redacted>"
        out[key] = value
    return out


def library_versions() -> dict[str, str]:
    import accelerate
    import datasets
    import evaluate
    import huggingface_hub
    import peft
    import torch
    import transformers

    return {
        "hf_dmix": __version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "evaluate": evaluate.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


def _device(training_args) -> str:
    import torch

    return str(training_args.device) + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "")


def build_results(
    model_args,
    data_args,
    training_args,
    *,
    inputs,
    model,
    num_parameters: int,
    data,
    encoded,
    evaluation,
    train_metrics: dict[str, Any],
    resumed_from: str | None,
    trainer,
    plots: dict[str, str],
    diagnostics: dict[str, Any] | None,
    wall_time_s: float,
) -> dict[str, Any]:
    """The content of results.json: settings, metrics, seed, versions, wall time, split, data and outcome checks."""
    test_labels = evaluation.labels["test"]
    used_sizes = {s: len(encoded[s]) for s in ("train", "validation", "test")}
    return {
        "run_id": trainer.run_id,  # the same id as dmix_config.json's: the card quotes only its own run's results
        "preset": data_args.preset,
        "modality": inputs.modality,
        "model": model_args.model_name_or_path,
        "model_type": model.config.model_type if hasattr(model, "config") else None,
        "model_parameters": num_parameters,
        "seed": training_args.seed,
        "dmix": training_args.effective_dmix_settings(),
        "majority_baseline": majority_baseline(test_labels),
        "metrics": {s: evaluation.metrics[s] for s in SPLITS},
        "outcome": evaluation.outcome,
        "train": dict(train_metrics),
        "resumed_from_checkpoint": resumed_from,  # the checkpoint this run continued from; None: a fresh start
        "partner_index": trainer.partner_index_stats,
        "partner_index_warning": trainer.partner_index_warning,
        # Only runs that refresh their index (partner_refresh_epochs) have refreshes to report.
        **({"partner_refreshes": trainer.partner_refreshes} if trainer.partner_refreshes else {}),
        "plots": {name: os.path.basename(path) for name, path in plots.items()},
        "data": {
            **data.split_info,
            "label_names": data.label_names,
            **inputs.data_record(data_args),
            "used_sizes": used_sizes,
        },
        "data_diagnostics": diagnostics,
        "training_args": public_args(training_args),
        "versions": library_versions(),
        "device": _device(training_args),
        "world_size": training_args.world_size,
        "wall_time_s": wall_time_s,
    }


def predictions_csv(test_rows, row_key: str, test_output, label_names: list[str]) -> str:
    """``predictions.csv``: one row per test example (its text — both texts of a sentence pair, as ``text`` and
    ``text_pair`` — or its id for images and clips), the true label, the predicted one and the probability of every
    class."""
    import torch

    probs = torch.softmax(torch.as_tensor(test_output.predictions), dim=-1).numpy()
    keys = [row_key] + (["text_pair"] if row_key == "text" and "text_pair" in test_rows.column_names else [])
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([*keys, "label", "prediction", *[f"p_{n}" for n in label_names]])
    for *key, label, p in zip(*(test_rows[k] for k in keys), test_rows["label"], probs, strict=True):
        writer.writerow([*key, label_names[label], label_names[int(np.argmax(p))], *[f"{x:.6f}" for x in p]])
    return buf.getvalue()


def write_report(output_dir: str, results: dict[str, Any], predictions: str) -> None:
    """``predictions.csv`` and ``results.json`` in ``output_dir``, each written atomically."""
    write_atomic(os.path.join(output_dir, PREDICTIONS_FILE), predictions)
    write_atomic(os.path.join(output_dir, RESULTS_FILE), json.dumps(results, indent=2, default=str) + "\n")


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A small Markdown table of metrics per split."""
    names = ["macro_f1", "weighted_f1", "accuracy", "loss"]
    lines = ["| split | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for split, metrics in rows.items():
        cells = [f"{metrics[n]:.4f}" if n in metrics else "" for n in names]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_summary(
    output_dir: str, results: dict[str, Any], test_labels: list[int], label_names: list[str], plots: dict[str, str]
) -> None:
    """The metrics table, the majority baseline, the partner index in one line, the pictures and where results are."""
    print("\n" + format_table(results["metrics"]) + "\n")
    print(describe_majority_baseline(results["majority_baseline"], test_labels, label_names))
    summary = describe_partner_index(results["partner_index"])
    if summary:
        print(f"Partner index: {summary}")
    for name, path in plots.items():
        print(f"Partner-index picture ({name.replace('_', '-')}): {path}")
    print(f"Results written to {os.path.join(output_dir, RESULTS_FILE)}")
