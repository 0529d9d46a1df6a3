"""Publishing from ``run_dmix.py``: the publishing flags, the saved model and its card, and pushes to the Hub.

What lives here: :func:`check_hub_args` (the LoRA and card flags and the repository to push to, checked before
anything is loaded), :func:`check_access` (a rejected token fails in seconds, not after training),
:func:`card_metadata_from_args`, :func:`save_model_and_card`, :func:`publish` and :func:`push_only` (``--push_only``:
publish an earlier run's folder). A failed push is a one-line :class:`hf_dmix.hub.HubError` that says how to retry
without retraining. What does not: the card's content (``hf_dmix.cards``) and the push itself (``hf_dmix.hub``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..cards import TAU_SWEEP_PLOT_NAME
from ..data import DataError
from ..hub import HubError, check_push_access, push_to_hub
from ..hub_names import hub_repo_id
from ..io import write_atomic
from .args import logger
from .inputs import NAMED_DATASETS
from .models import card_base_model, check_lora_args


def check_hub_args(model_args, training_args, hub_args) -> str | None:
    """Validate the LoRA and publishing flags before anything is loaded; the repository to push to (None: no push)."""
    check_lora_args(model_args)
    if hub_args.merge_lora_before_push and not (model_args.use_lora or hub_args.push_only):
        raise DataError(
            "--merge_lora_before_push needs --use_lora: it merges the trained LoRA adapter into its base model."
        )
    for flag, value in (("--card_base_model", hub_args.card_base_model), ("--card_dataset", hub_args.card_dataset)):
        if value is not None and not hub_repo_id(value):
            raise DataError(f"{flag} {value!r} is not a Hub repository id (namespace/name).")
    if hub_args.card_license is not None and (
        not hub_args.card_license.strip() or " " in hub_args.card_license.strip()
    ):
        raise DataError(
            f"--card_license {hub_args.card_license!r} is not a license id (e.g. apache-2.0, mit, cc-by-4.0)."
        )
    for code in hub_args.card_language or []:
        if not code.strip() or " " in code.strip():
            raise DataError(f"--card_language {code!r} is not a language code (e.g. en, gu).")
    plot = hub_args.tau_sweep_plot
    if plot is not None and (not os.path.isfile(plot) or not plot.lower().endswith(".png")):
        raise DataError(f"--tau_sweep_plot {plot!r} must be an existing .png file.")
    if hub_args.push_only:
        if not training_args.hub_model_id:
            raise DataError("--push_only needs --hub_model_id NAMESPACE/NAME (the repository to push --output_dir to).")
        return training_args.hub_model_id
    if not training_args.push_to_hub:
        return None
    if not model_args.save_model:
        raise DataError("--push_to_hub needs --save_model true: the pushed files are the saved model in --output_dir.")
    # As Trainer does: without --hub_model_id, the repository is named after the output folder.
    return training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))


def check_access(repo_id: str | None, training_args) -> str | None:
    """Create the repository (main process) before training, so that a rejected token, a foreign namespace or an
    unreachable Hub fail in seconds; the repository's full id."""
    if repo_id is not None and training_args.process_index == 0:
        repo_id = check_push_access(repo_id, token=training_args.hub_token, private=training_args.hub_private_repo)
        training_args.hub_model_id = repo_id
    return repo_id


def copy_tau_sweep_plot(plot: str, output_dir: str) -> None:
    """``--tau_sweep_plot``: the picture as ``tau_sweep.png`` in ``output_dir`` (the card shows it)."""
    write_atomic(os.path.join(output_dir, TAU_SWEEP_PLOT_NAME), Path(plot).read_bytes())


def card_metadata_from_args(model_args, data_args, hub_args) -> dict[str, Any]:
    """What the model card says about the base model, data, languages and license (None: unknown / not set)."""
    base = card_base_model(hub_args.card_base_model or model_args.model_name_or_path)
    dataset = hub_args.card_dataset
    if (
        dataset is None
        and data_args.dataset_name not in (None, *NAMED_DATASETS)
        and hub_repo_id(data_args.dataset_name)
    ):
        dataset = data_args.dataset_name
    return {
        "finetuned_from": base,
        "dataset": dataset,
        "language": hub_args.card_language,
        "license": hub_args.card_license,
    }


def save_model_and_card(trainer, output_dir: str, model_args, hub_args) -> None:
    """The model (or LoRA adapter) and processing class, the τ-sweep picture, and the card as README.md."""
    if not model_args.save_model:
        return
    # _internal_call: Trainer would push right away (without results and card); the push comes last, in publish().
    trainer.save_model(output_dir, _internal_call=True)
    if hub_args.tau_sweep_plot:
        copy_tau_sweep_plot(hub_args.tau_sweep_plot, output_dir)
    try:
        trainer.create_model_card()  # README.md: the DMIX card, with the test metrics of results.json
    except ValueError as err:  # card metadata are validated before training; never lose a run over the card
        logger.warning(f"The model card was not written: {err}")


def publish(
    out: str, repo_id: str, training_args, hub_args, after_training: bool, card_metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Push ``out`` to ``repo_id``; a failure is a one-line ``HubError`` that says how to retry without retraining."""
    logger.info(f"Pushing {out} to the Hub repository {repo_id!r}")
    try:
        result = push_to_hub(
            out,
            repo_id,
            token=training_args.hub_token,
            private=training_args.hub_private_repo,
            revision=training_args.hub_revision,
            merge_lora=hub_args.merge_lora_before_push,
            card_metadata=card_metadata,
        )
    except HubError as err:
        retry = f"python run_dmix.py --push_only --output_dir {out} --hub_model_id {repo_id}" + (
            " --merge_lora_before_push" if hub_args.merge_lora_before_push else ""
        )
        what = "the model, card and results are saved in" if after_training else "nothing was changed in"
        raise HubError(f"{err} Nothing is lost: {what} {out}; push them without retraining: {retry}") from None
    print(f"Pushed {len(result.files)} files to {result.repo_id}: {result.commit_url}")
    return {
        "repo_id": result.repo_id,
        "commit": result.commit_oid,
        "files": list(result.files),
        "merged_lora": result.merged_lora,
    }


def push_only(training_args, hub_args, repo_id: str) -> dict[str, Any]:
    """``--push_only``: publish an existing output folder (no data, no model loading, no training)."""
    out = training_args.output_dir
    if not os.path.isdir(out):
        raise DataError(f"--output_dir {out!r} does not exist: --push_only publishes the folder of an earlier run.")
    if hub_args.tau_sweep_plot:
        copy_tau_sweep_plot(hub_args.tau_sweep_plot, out)
    overrides = {
        "language": hub_args.card_language,
        "license": hub_args.card_license,
        "base_model": hub_args.card_base_model,
        "datasets": [hub_args.card_dataset] if hub_args.card_dataset else None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return {
        "hub": publish(out, repo_id, training_args, hub_args, after_training=False, card_metadata=overrides or None)
    }
