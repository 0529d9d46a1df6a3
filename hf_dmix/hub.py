"""Publishing DMIX models on the Hugging Face Hub: one commit per push, every failure a one-line error.

What lives here: :func:`check_push_access` (run before a long training run that ends with a push) and
:func:`push_to_hub`, which publishes an output folder (safetensors weights or LoRA adapter, tokenizer, the card as
``README.md``, ``results.json``, ``dmix_config.json``) in one commit — optionally merging a LoRA adapter into its base
model first — refusing any file that holds a token in play, and turns every Hub failure into a one-line
:class:`~hf_dmix.hub_errors.HubError` without touching the folder. A failed push is retried by pushing the same folder
again (``hf-dmix push``): nothing here keeps state between attempts.

What does not: the record itself and reading it back (``record.py``), the messages of Hub failures (``hub_errors.py``),
the card's content (``cards.py``) and training (``trainer.py``). Using a published model needs nothing from here: it is
a plain ``AutoModelForSequenceClassification`` checkpoint (``from_pretrained`` / ``pipeline``).

The Hub endpoint is ``huggingface_hub``'s (``HF_ENDPOINT``, read when ``huggingface_hub`` is imported); tokens default
to ``huggingface_hub``'s (``HF_TOKEN`` or ``hf auth login``). Tokens are never written, logged or put in messages.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cards import TAU_SWEEP_PLOT_NAME, card_metadata, render_model_card, results_of_run
from .hub_errors import HubError, hub_error
from .hub_names import display_name
from .record import DMIX_CONFIG_NAME, README_NAME, RESULTS_NAME, read_json

# Not published by default: checkpoints, private/temporary files, TensorBoard logs, and the test predictions (they
# hold the test texts, which may be private data).
DEFAULT_EXCLUDE: tuple[str, ...] = ("checkpoint-*", "_*", ".*", "runs", "*.tmp-*", "predictions.csv")
# Files that define what a repository *is* (full model vs. adapter): stale ones left over from an earlier push of the
# other kind are deleted in the same commit, or transformers would load the wrong thing.
_MODEL_FILES: tuple[str, ...] = (
    "config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
_WEIGHT_SUFFIXES = (".safetensors",)

# ---------------------------------------------------------------------- pushing


def check_push_access(repo_id: str, token: str | None = None, private: bool | None = None) -> str:
    """Create ``repo_id`` if it does not exist yet (``private`` applies then) and return its full id.

    Run it before a long training run that ends with a push: a rejected token, a foreign namespace or an unreachable
    Hub then fail in seconds, as a one-line :class:`HubError`, instead of after training.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise HubError(f"The Hub repository id must be 'namespace/name' or 'name', got {repo_id!r}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"Invalid Hub repository id {repo_id!r}: {str(err).splitlines()[0]}") from err
    try:
        return HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True).repo_id
    except Exception as err:  # only Hub/network failures are translated, the rest re-raised
        hub = hub_error(err, f"Creating the Hub repository '{repo_id}'", repo_id, [token, get_token()])
        if hub is None:
            raise
        raise hub from None


@dataclass(frozen=True)
class PushResult:
    """What :func:`push_to_hub` published: the repository, the commit and the files of the commit."""

    repo_id: str
    commit_url: str
    commit_oid: str
    files: tuple[str, ...]
    deleted: tuple[str, ...] = ()
    merged_lora: bool = False


def _excluded(rel: str, patterns: Sequence[str]) -> bool:
    parts = rel.split("/")
    candidates = [rel] + ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
    return any(fnmatch.fnmatch(c, p) for c in candidates for p in patterns)


def _select_files(folder: Path, exclude: Sequence[str]) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(folder).as_posix()
            if not _excluded(rel, exclude):
                files[rel] = path
    return files


def _check_publishable(folder: Path, files: Mapping[str, Path], merge_lora: bool) -> str:
    """``"adapter"`` or ``"model"``; a :class:`HubError` naming what is missing otherwise."""
    if DMIX_CONFIG_NAME not in files:
        raise HubError(
            f"{folder} has no {DMIX_CONFIG_NAME}: it is not the output folder of a DMIX run (DMixTrainer.save_model "
            "writes it next to the model)."
        )
    adapter = "adapter_config.json" in files
    if adapter:
        if "adapter_model.safetensors" not in files:
            raise HubError(
                f"{folder} has adapter_config.json but no adapter_model.safetensors: save the adapter with safetensors."
            )
    else:
        if "config.json" not in files:
            raise HubError(
                f"{folder} holds no model (no config.json or adapter_config.json): save the model there first."
            )
        if "model.safetensors" not in files and "model.safetensors.index.json" not in files:
            found = sorted(f for f in files if f.endswith((".bin", ".pt", ".pth")))
            raise HubError(
                f"{folder} has no safetensors weights (model.safetensors){f'; found {found}' if found else ''}. "
                "Save the model with save_pretrained (safetensors is the default)."
            )
    if merge_lora and not adapter:
        raise HubError(
            f"merge_lora=True, but {folder} holds a full model, not a LoRA adapter (no adapter_config.json)."
        )
    return "adapter" if adapter else "model"


def _scan_for_secrets(blobs: Mapping[str, Path | bytes], secrets: Sequence[str | None]) -> None:
    needles = [s.encode() for s in secrets if s and len(s) >= 8]
    if not needles:
        return
    for rel, blob in blobs.items():
        if isinstance(blob, Path):
            if rel.endswith(_WEIGHT_SUFFIXES) or blob.stat().st_size > 64 * 2**20:
                continue  # tensors only (safetensors headers are JSON metadata written by us: no tokens)
            data = blob.read_bytes()
        else:
            data = blob
        if any(n in data for n in needles):
            raise HubError(
                f"Refusing to publish {rel}: it contains your Hub token. Remove the token from it and push again."
            )


def _merge_lora(folder: Path, record: Mapping[str, Any], token: str | None, into: Path) -> list[str]:
    """Merge the adapter in ``folder`` into its base model; save the merged model in ``into``; its file names."""
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForSequenceClassification

    peft_cfg = PeftConfig.from_pretrained(str(folder))
    base = peft_cfg.base_model_name_or_path
    labels = list(record.get("label_names") or [])
    id2label = dict(enumerate(labels))
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(labels),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            dtype=torch.float32,
            token=token,
            ignore_mismatched_sizes=True,  # the adapter carries the trained classification head
        )
    except OSError as err:
        from huggingface_hub import get_token

        hub = hub_error(err, "Loading the base model to merge the LoRA adapter", str(base), [token, get_token()])
        raise (
            hub
            or HubError(
                f"Could not load the base model {display_name(base)!r} (adapter_config.json base_model_name_or_path) to "
                f"merge the LoRA adapter: {str(err).splitlines()[0]}"
            )
        ) from err
    merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    merged.save_pretrained(str(into))
    return sorted(p.name for p in into.iterdir() if p.is_file())


def push_to_hub(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    merge_lora: bool = False,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    card_metadata: Mapping[str, Any] | None = None,
) -> PushResult:
    """Publish the output folder of a DMIX run to the Hub, in one commit, without changing the folder.

    Uploads the model (``model.safetensors`` + ``config.json``) or the LoRA adapter (``adapter_model.safetensors`` +
    ``adapter_config.json``), the tokenizer, ``dmix_config.json``, ``results.json`` (when present and of the run that
    wrote ``dmix_config.json``: the same ``run_id``), a τ-sweep plot
    (``tau_sweep.png``, when present), ``training_args.bin`` and the DMIX card as ``README.md``. The folder's
    ``README.md`` is published as is when it is this repository's DMIX card; otherwise (no card, another repository
    id, a merged LoRA model) the card is rendered again from the folder's files, keeping the existing card's
    metadata. Model files of the other kind left in the repository by an earlier push (an adapter when publishing a
    full model, or the reverse) are deleted in the same commit.

    Args:
        output_dir: folder written by ``run_dmix.py`` or ``DMixTrainer.save_model`` + ``create_model_card``.
        repo_id: ``"namespace/name"`` (or ``"name"``: the token's own namespace). Created if missing.
        token: a write token; default ``huggingface_hub``'s (``HF_TOKEN`` or the stored login).
        private: create the repository private (no effect on an existing repository).
        revision: branch to commit to (created from ``main`` if missing); default ``main``.
        commit_message: default ``"Upload DMIX model"``.
        merge_lora: the folder holds a LoRA adapter: merge it into its base model (``adapter_config.json``
            ``base_model_name_or_path``) and publish the full model instead; the folder keeps the adapter.
        exclude: glob patterns of files and folders not to publish (default :data:`DEFAULT_EXCLUDE`: checkpoints,
            hidden and temporary files, ``runs/`` and ``predictions.csv``, which holds the test texts).
        card_metadata: card metadata to change (``language``, ``license``, ``datasets``, ``base_model``, ``tags``:
            keyword arguments of :func:`hf_dmix.cards.render_model_card`); the card is then rendered again.

    Returns:
        A :class:`PushResult`.

    Raises:
        HubError: a rejected token (401), a namespace the token may not write to (403), an unreachable Hub, or a
            folder that cannot be published; the message is one line and names the problem. Nothing local changes.
    """
    from huggingface_hub import HfApi, get_token

    folder = _checked_push_args(output_dir, repo_id, revision, card_metadata)
    files, record, results = _publishable_files(folder, exclude, merge_lora)
    secrets = [token, get_token()]
    _scan_for_secrets(files, secrets)

    api = HfApi(token=token)  # token=None: huggingface_hub's own default (HF_TOKEN or the stored login)
    action = f"Pushing {folder} to '{repo_id}'"
    with tempfile.TemporaryDirectory(prefix="dmix-push-") as tmp:
        try:
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
            if revision is not None and revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            blobs = _staged_blobs(
                folder, files, repo_id, record or {}, results, token, Path(tmp), merge_lora, card_metadata
            )
            _scan_for_secrets({k: v for k, v in blobs.items() if k not in files}, secrets)
            stale, info = _commit(api, repo_id, blobs, revision, commit_message, merge_lora)
        except HubError:
            raise
        except Exception as err:  # only Hub/network failures are translated, the rest re-raised
            hub = hub_error(err, action, repo_id, secrets)
            if hub is None:
                raise
            raise hub from None
    return PushResult(
        repo_id=repo_id,
        commit_url=str(info.commit_url),
        commit_oid=str(info.oid),
        files=tuple(sorted(blobs)),
        deleted=tuple(stale),
        merged_lora=merge_lora,
    )


def _publishable_files(
    folder: Path, exclude: Sequence[str], merge_lora: bool
) -> tuple[dict[str, Path], dict[str, Any] | None, dict[str, Any] | None]:
    """The folder's files to publish, its record (``dmix_config.json``) and its ``results.json`` (or ``None``).

    Leaves out the ``exclude`` patterns, the card (``README.md``: staged separately) and an earlier run's
    ``results.json``; a folder that holds no publishable model is a :class:`HubError` (:func:`_check_publishable`).
    """
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    if README_NAME not in patterns:
        patterns.append(README_NAME)  # the card is staged separately, by _staged_blobs
    files = _select_files(folder, patterns)
    _check_publishable(folder, files, merge_lora)
    record = read_json(folder / DMIX_CONFIG_NAME)
    results = read_json(folder / RESULTS_NAME)
    if results is not None and results_of_run(record, results) is None:
        # An earlier run's results.json left in a reused folder is not this model's: neither pushed nor quoted.
        logging.getLogger(__name__).warning(f"{folder / RESULTS_NAME} is another run's (run_id): not published.")
        files.pop(RESULTS_NAME, None)
    return files, record, results


def _checked_push_args(
    output_dir: str | os.PathLike, repo_id: str, revision: str | None, card_metadata: Mapping[str, Any] | None
) -> Path:
    """The output folder, after checking the arguments of :func:`push_to_hub` (a :class:`HubError` otherwise)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(output_dir)
    if not folder.is_dir():
        raise HubError(
            f"Output folder {os.fspath(output_dir)!r} does not exist; train first or pass the folder of a run."
        )
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise HubError(f"repo_id must be 'namespace/name' or 'name', got {repo_id!r}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"Invalid repo id {repo_id!r}: {str(err).splitlines()[0]}") from err
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise HubError(f"revision must be a branch name, got {revision!r}.")
    unknown = sorted(set(card_metadata or {}) - {"language", "license", "datasets", "base_model", "tags"})
    if unknown:
        raise HubError(f"Unknown card metadata {unknown}; accepted: language, license, datasets, base_model, tags.")
    return folder


def _staged_blobs(
    folder: Path,
    files: Mapping[str, Path],
    repo_id: str,
    record: Mapping[str, Any],
    results: Mapping[str, Any] | None,
    token: str | None,
    tmp: Path,
    merge_lora: bool,
    card_metadata: Mapping[str, Any] | None,
) -> dict[str, Path | bytes]:
    """What the commit holds: the folder's files, the merged model in place of a LoRA adapter, and the card."""
    blobs: dict[str, Path | bytes] = dict(files)
    if merge_lora:
        for name in [n for n in blobs if n.startswith("adapter_") or n == "config.json"]:
            del blobs[name]
        for name in _merge_lora(folder, record, token, tmp):
            blobs[name] = tmp / name
        record = {**record, "peft": {**(record.get("peft") or {}), "merged": True}}
        blobs[DMIX_CONFIG_NAME] = (json.dumps(record, indent=2) + "\n").encode()
    blobs[README_NAME] = _card_for(folder, repo_id, record, results, merged=merge_lora, overrides=card_metadata)
    return blobs


def _commit(
    api: Any,
    repo_id: str,
    blobs: Mapping[str, Path | bytes],
    revision: str | None,
    commit_message: str | None,
    merge_lora: bool,
) -> tuple[list[str], Any]:
    """One commit of ``blobs`` that also deletes model files of the other kind; the deleted names and its info."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    existing = api.list_repo_files(repo_id, revision=revision)
    stale = sorted(f for f in existing if f not in blobs and any(fnmatch.fnmatch(f, p) for p in _MODEL_FILES))
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=blob if isinstance(blob, bytes) else str(blob))
        for name, blob in sorted(blobs.items())
    ] + [CommitOperationDelete(path_in_repo=name) for name in stale]
    info = api.create_commit(
        repo_id,
        operations=operations,
        commit_message=commit_message or ("Upload DMIX model (LoRA merged)" if merge_lora else "Upload DMIX model"),
        revision=revision,
    )
    return stale, info


def _card_for(
    folder: Path,
    repo_id: str,
    record: Mapping[str, Any],
    results: Mapping[str, Any] | None,
    *,
    merged: bool,
    overrides: Mapping[str, Any] | None = None,
) -> bytes:
    """The README.md to publish: the folder's own card if it is this repository's DMIX card, else a new rendering.

    When ``results`` is another run's (:func:`~hf_dmix.cards.results_of_run`), the folder's card may quote it: the
    card is rendered again, without those results and without the metrics of the folder's card.
    """
    from huggingface_hub import ModelCard

    path = folder / README_NAME
    metadata: dict[str, Any] = {}
    own_results = results_of_run(record, results)
    stale = results is not None and own_results is None
    if path.is_file():
        text = path.read_bytes()
        try:
            card = ModelCard(text.decode("utf-8"))
        except Exception:  # noqa: BLE001 - not a parseable card: render a new one
            card = None
        data: Any = card.data if card is not None else None  # a ModelCardData (typed as its CardData base)
        if data is not None and "dmix" in (data.tags or []):
            if not merged and not overrides and not stale and data.model_name == repo_id:
                return text
            assert card is not None  # data came from it
            metadata = card_metadata(card)
            if stale:  # what the folder's card took from that results.json
                metadata.pop("eval_results", None)
                metadata.pop("datasets", None)
    metadata.update(overrides or {})
    plot = TAU_SWEEP_PLOT_NAME if (folder / TAU_SWEEP_PLOT_NAME).is_file() else None
    try:
        card = render_model_card(record, own_results, repo_id=repo_id, tau_sweep_plot=plot, **metadata)
    except ValueError as err:
        raise HubError(f"Cannot render the model card from {folder}: {err}") from err
    return str(card).encode("utf-8")
