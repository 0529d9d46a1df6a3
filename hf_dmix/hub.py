"""Publishing DMIX models on the Hugging Face Hub, and reading their DMIX settings back.

What lives here: the DMIX *record* — ``dmix_config.json``, written next to every saved model and checkpoint: every
DMIX and training setting, the label names, the LoRA settings and the partner-index statistics; :func:`push_to_hub`,
which publishes an output folder (safetensors weights or LoRA adapter, tokenizer, the card as ``README.md``,
``results.json``, ``dmix_config.json``) in one commit — optionally merging a LoRA adapter into its base model first —
and turns every Hub failure into a one-line :class:`HubError` without touching the folder; :func:`load_dmix_info`,
which reads a published model's DMIX settings and results back (to reproduce a run).

What does not: the card's content (``cards.py``) and training (``trainer.py``). Using a published model needs nothing
from here: it is a plain ``AutoModelForSequenceClassification`` checkpoint (``from_pretrained`` / ``pipeline``).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cards import TAU_SWEEP_PLOT_NAME, card_metadata, display_name, hub_repo_id, render_model_card, results_of_run
from .config import DMIX_FIELDS, DMixConfig
from .io import write_atomic  # noqa: F401 - kept importable from here for older code
from .mixing import modality_of

DMIX_CONFIG_NAME = "dmix_config.json"
RESULTS_NAME = "results.json"
README_NAME = "README.md"
# Not published by default: checkpoints, private/temporary files, TensorBoard logs, and the test predictions (they
# hold the test texts, which may be private data).
DEFAULT_EXCLUDE: tuple[str, ...] = ("checkpoint-*", "_*", ".*", "runs", "*.tmp-*", "predictions.csv")
# Files that define what a repository *is* (full model vs. adapter): stale ones left over from an earlier push of the
# other kind are deleted in the same commit, or transformers would load the wrong thing.
_MODEL_FILES: tuple[str, ...] = (
    "config.json", "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
    "pytorch_model*.bin", "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin",
)
_WEIGHT_SUFFIXES = (".safetensors",)
_TRAINING_KEYS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "weight_decay", "warmup_steps", "lr_scheduler_type", "optim", "max_grad_norm", "label_smoothing_factor", "seed",
    "bf16", "fp16",
)
# The training settings :meth:`DMixInfo.to_dmix_config` carries over (precision flags depend on the hardware: not these).
_REPRODUCE_KEYS = tuple(k for k in _TRAINING_KEYS if k not in ("bf16", "fp16"))


class HubError(RuntimeError):
    """Publishing to or reading from the Hub failed: the message says what went wrong and how to fix it (one line).

    Raised for a rejected token (401), a namespace the token cannot write to (403), a missing or private repository,
    an unreachable Hub, and an output folder that cannot be published. Local files are never changed by a failed push.
    """


# ---------------------------------------------------------------------- the DMIX record (dmix_config.json)


def _hf_dmix_version() -> str:
    # From the installed distribution's metadata, not ``hf_dmix.__init__``: this module sits below the package's
    # public namespace and must not import it (the import would run in a cycle).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hf-dmix")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "unknown"


def _peft_config(model: Any) -> Any | None:
    while hasattr(model, "module") and not hasattr(model, "peft_config"):  # DDP / DataParallel wrappers
        model = model.module
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, Mapping) or not configs:
        return None
    name = getattr(model, "active_adapter", None)
    return configs.get(name) if isinstance(name, str) and name in configs else next(iter(configs.values()))


def _base_config(model: Any) -> Any | None:
    from .mixing import unwrap_model

    return getattr(unwrap_model(model), "config", None) if model is not None else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return getattr(value, "value", str(value))  # enums


def dmix_record(
    args: DMixConfig,
    model: Any = None,
    *,
    mix_layers: Sequence[int] | None = None,
    num_encoder_layers: int | None = None,
    partner_index_stats: Mapping[str, float] | None = None,
    base_model: str | None = None,
    embedding_source: str | None = None,
) -> dict[str, Any]:
    """The DMIX record of a run: what ``dmix_config.json`` holds and the model card shows.

    Args:
        args: the run's [`DMixConfig`]: every DMIX setting and the main training hyperparameters are recorded.
        model: the trained model (optionally PEFT-wrapped): label names, model type and LoRA settings.
        mix_layers, num_encoder_layers: the mixing layers actually used (``None`` in ``args`` means all of them).
        partner_index_stats: ``DMixTrainer.partner_index_stats`` (hubness diagnostics).
        base_model: name of the base model as given (Hub id, local path or ``package:NAME``); defaults to the
            adapter's or model config's ``name_or_path``. Only a Hub id is recorded as ``base_model``; local paths
            are reduced to their last component (``base_model_name``), so no path of this machine is published.
        embedding_source: ``"model"``, ``"embedding_model"`` or ``"precomputed"``: how partner-search embeddings
            were made (default: from ``args.embedding_model``).

    Returns:
        A JSON-serialisable dict (see the README's "Publishing to the Hub" section for the fields).
    """
    if not isinstance(args, DMixConfig):
        raise TypeError(f"dmix_record needs a DMixConfig, got {type(args).__name__}.")
    config = _base_config(model)
    peft_cfg = _peft_config(model) if model is not None else None
    if base_model is None:
        base_model = getattr(peft_cfg, "base_model_name_or_path", None) or getattr(config, "_name_or_path", None) or None
    label_names = None
    if config is not None and getattr(config, "id2label", None):
        label_names = [str(config.id2label[i]) for i in sorted(int(k) for k in config.id2label)]
    as_dict = args.to_dict()
    training = {k: _jsonable(as_dict[k]) for k in _TRAINING_KEYS if k in as_dict}
    training["world_size"] = int(args.world_size)
    training["total_train_batch_size"] = int(
        args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    )
    peft = None
    if peft_cfg is not None:
        peft = {
            "peft_type": _jsonable(getattr(peft_cfg, "peft_type", None)),
            "r": getattr(peft_cfg, "r", None),
            "lora_alpha": getattr(peft_cfg, "lora_alpha", None),
            "lora_dropout": getattr(peft_cfg, "lora_dropout", None),
            "target_modules": _jsonable(getattr(peft_cfg, "target_modules", None)),
            "modules_to_save": _jsonable(getattr(peft_cfg, "modules_to_save", None)),
            "merged": False,
        }
    if embedding_source is None:
        embedding_source = "embedding_model" if args.embedding_model else "model"
    return {
        "hf_dmix_version": _hf_dmix_version(),
        "dmix": {k: _jsonable(getattr(args, k)) for k in DMIX_FIELDS},
        "mix_layers_resolved": list(mix_layers) if mix_layers is not None else None,
        "num_encoder_layers": num_encoder_layers,
        "embedding_source": embedding_source,
        "training": training,
        "base_model": hub_repo_id(base_model),
        "base_model_name": display_name(base_model) if base_model else None,
        "model_type": getattr(config, "model_type", None),
        "modality": modality_of(getattr(config, "model_type", None)),
        "label_names": label_names,
        "peft": peft,
        "partner_index": _jsonable(dict(partner_index_stats or {})),
    }


def write_dmix_config(output_dir: str | os.PathLike, record: Mapping[str, Any]) -> str:
    """Write ``record`` as ``dmix_config.json`` in ``output_dir`` (atomically); returns the file's path."""
    path = os.path.join(os.fspath(output_dir), DMIX_CONFIG_NAME)
    write_atomic(path, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubError(f"{path.name} in {path.parent} is not valid JSON ({err}); fix or remove it.") from err


# ---------------------------------------------------------------------- errors


def _is_network_error(err: BaseException) -> bool:
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    names = {c.__name__ for c in type(err).__mro__}
    return bool(names & {"TransportError", "NetworkError", "ConnectError", "ConnectionError", "TimeoutException", "Timeout"})


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_error(err: BaseException, action: str, repo_id: str, secrets: Sequence[str | None] = ()) -> HubError | None:
    """A one-line :class:`HubError` for a failure of ``huggingface_hub``, or ``None`` if ``err`` is not one.

    ``action`` starts the message (``"Pushing out to 'alice/model'"``); ``secrets`` are the tokens in play (none
    given or found: a 401 means a token is missing, not wrong), each replaced by ``<token>`` in the message.
    """
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = _endpoint()
    namespace = repo_id.split("/")[0] if "/" in repo_id else None
    if isinstance(err, OfflineModeIsEnabled):
        msg = f"{action} failed: offline mode is on (HF_HUB_OFFLINE=1); set HF_HUB_OFFLINE=0 to reach the Hub."
    elif isinstance(err, RevisionNotFoundError):
        msg = f"{action} failed: the revision does not exist in '{repo_id}' (404)."
    elif isinstance(err, RepositoryNotFoundError):
        msg = (
            f"{action} failed: repository '{repo_id}' not found at {endpoint}, or it is private and this token cannot "
            "read it (pass the owner's token with token=/--hub_token or HF_TOKEN)."
        )
    elif isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401 and not any(secrets):
            msg = (
                f"{action} failed: no Hub token (401 Unauthorized from {endpoint}). Pass a write token with "
                "--hub_token or HF_TOKEN (or run `hf auth login`)."
            )
        elif status == 401:
            msg = (
                f"{action} failed: the Hub at {endpoint} rejected the token (401 Unauthorized). Pass a valid write "
                "token with --hub_token or HF_TOKEN (or run `hf auth login`)."
            )
        elif status == 403:
            where = f"namespace '{namespace}'" if namespace else f"'{repo_id}'"
            msg = (
                f"{action} failed: this token may not write to {where} (403 Forbidden). Push to your own namespace "
                f"or an organization you belong to, e.g. --hub_model_id YOUR_NAME/{repo_id.split('/')[-1]}."
            )
        else:
            detail = (getattr(err, "server_message", None) or str(err)).strip().splitlines()
            msg = f"{action} failed: HTTP {status} from {endpoint}: {detail[0] if detail else type(err).__name__}"
    elif _is_network_error(err):
        detail = str(err).strip().splitlines()
        msg = (
            f"{action} failed: could not reach the Hub at {endpoint} ({type(err).__name__}: "
            f"{detail[0] if detail else 'no response'}). Check the network / HF_ENDPOINT and try again."
        )
    else:
        return None
    for secret in secrets:
        if secret:
            msg = msg.replace(secret, "<token>")
    return HubError(" ".join(msg.split()))


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
    except Exception as err:  # noqa: BLE001 - only Hub/network failures are translated, the rest re-raised
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
            raise HubError(f"{folder} has adapter_config.json but no adapter_model.safetensors: save the adapter with safetensors.")
    else:
        if "config.json" not in files:
            raise HubError(f"{folder} holds no model (no config.json or adapter_config.json): save the model there first.")
        if "model.safetensors" not in files and "model.safetensors.index.json" not in files:
            found = sorted(f for f in files if f.endswith((".bin", ".pt", ".pth")))
            raise HubError(
                f"{folder} has no safetensors weights (model.safetensors){f'; found {found}' if found else ''}. "
                "Save the model with save_pretrained (safetensors is the default)."
            )
    if merge_lora and not adapter:
        raise HubError(f"merge_lora=True, but {folder} holds a full model, not a LoRA adapter (no adapter_config.json).")
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
            raise HubError(f"Refusing to publish {rel}: it contains your Hub token. Remove the token from it and push again.")


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
        raise (hub or HubError(
            f"Could not load the base model {display_name(base)!r} (adapter_config.json base_model_name_or_path) to "
            f"merge the LoRA adapter: {str(err).splitlines()[0]}"
        )) from err
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
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    if README_NAME not in patterns:
        patterns.append(README_NAME)  # the card is staged separately below
    files = _select_files(folder, patterns)
    _check_publishable(folder, files, merge_lora)
    record = _read_json(folder / DMIX_CONFIG_NAME)
    results = _read_json(folder / RESULTS_NAME)
    if results is not None and results_of_run(record, results) is None:
        # An earlier run's results.json left in a reused folder is not this model's: neither pushed nor quoted.
        logging.getLogger(__name__).warning(f"{folder / RESULTS_NAME} is another run's (run_id): not published.")
        files.pop(RESULTS_NAME, None)
    secrets = [token, get_token()]
    _scan_for_secrets(files, secrets)

    api = HfApi(token=token)  # token=None: huggingface_hub's own default (HF_TOKEN or the stored login)
    action = f"Pushing {folder} to '{repo_id}'"
    with tempfile.TemporaryDirectory(prefix="dmix-push-") as tmp:
        try:
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
            if revision is not None and revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            blobs = _staged_blobs(folder, files, repo_id, record, results, token, Path(tmp), merge_lora, card_metadata)
            _scan_for_secrets({k: v for k, v in blobs.items() if k not in files}, secrets)
            stale, info = _commit(api, repo_id, blobs, revision, commit_message, merge_lora)
        except HubError:
            raise
        except Exception as err:  # noqa: BLE001 - only Hub/network failures are translated, the rest re-raised
            hub = hub_error(err, action, repo_id, secrets)
            if hub is None:
                raise
            raise hub from None
    return PushResult(repo_id=repo_id, commit_url=str(info.commit_url), commit_oid=str(info.oid),
                      files=tuple(sorted(blobs)), deleted=tuple(stale), merged_lora=merge_lora)


def _checked_push_args(
    output_dir: str | os.PathLike, repo_id: str, revision: str | None, card_metadata: Mapping[str, Any] | None
) -> Path:
    """The output folder, after checking the arguments of :func:`push_to_hub` (a :class:`HubError` otherwise)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(output_dir)
    if not folder.is_dir():
        raise HubError(f"Output folder {os.fspath(output_dir)!r} does not exist; train first or pass the folder of a run.")
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
    folder: Path, files: Mapping[str, Path], repo_id: str, record: Mapping[str, Any], results: Mapping[str, Any] | None,
    token: str | None, tmp: Path, merge_lora: bool, card_metadata: Mapping[str, Any] | None,
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


def _commit(api: Any, repo_id: str, blobs: Mapping[str, Path | bytes], revision: str | None,
            commit_message: str | None, merge_lora: bool) -> tuple[list[str], Any]:
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
        if card is not None and "dmix" in (card.data.tags or []):
            if not merged and not overrides and not stale and card.data.model_name == repo_id:
                return text
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


# ---------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class DMixInfo:
    """The DMIX settings and results of a published (or local) DMIX model, as :func:`load_dmix_info` returns them.

    Attributes:
        repo_id: the repository id (or the local folder).
        revision: the commit the files were read at (``None`` for a local folder).
        record: the content of ``dmix_config.json``.
        results: the content of ``results.json``, or ``None`` when the repository has none.
    """

    repo_id: str
    revision: str | None
    record: dict[str, Any]
    results: dict[str, Any] | None = field(default=None)

    @property
    def settings(self) -> dict[str, Any]:
        """The DMIX settings (``mix_strategy``, ``partner_distance``, ``tau``, ``partner_order``, ``mix_alpha``, ...)."""
        return dict(self.record.get("dmix") or {})

    @property
    def training(self) -> dict[str, Any]:
        """The main training hyperparameters (learning rate, epochs, batch size, seed, ...)."""
        return dict(self.record.get("training") or {})

    @property
    def label_names(self) -> list[str]:
        """The class name of each label id."""
        return list(self.record.get("label_names") or [])

    @property
    def base_model(self) -> str | None:
        """Hub id of the base model (``None`` when it was a local model)."""
        return self.record.get("base_model")

    @property
    def peft(self) -> dict[str, Any] | None:
        """The LoRA settings (``r``, ``lora_alpha``, ``target_modules``, ``merged``), or ``None`` for full fine-tuning."""
        return self.record.get("peft")

    def metrics(self, split: str = "test") -> dict[str, float]:
        """The metrics of ``split`` (``"test"`` or ``"validation"``) from ``results.json``; empty when absent."""
        if split not in ("test", "validation"):
            raise ValueError(f"split must be 'test' or 'validation', got {split!r}.")
        return dict((((self.results or {}).get("metrics") or {}).get(split)) or {})

    def to_dmix_config(self, output_dir: str, **overrides: Any) -> DMixConfig:
        """A [`DMixConfig`] with this model's DMIX settings and training hyperparameters; ``overrides`` win."""
        kwargs: dict[str, Any] = {k: v for k, v in self.settings.items() if k in DMIX_FIELDS}
        kwargs.update({k: v for k, v in self.training.items() if k in _REPRODUCE_KEYS})
        kwargs.update(overrides)
        return DMixConfig(output_dir=output_dir, **kwargs)


def load_dmix_info(repo_id: str | os.PathLike, revision: str | None = None, token: str | None = None) -> DMixInfo:
    """Read the DMIX settings (``dmix_config.json``) and results (``results.json``) of a published DMIX model.

    Args:
        repo_id: a Hub repository id, or a local output folder.
        revision: branch, tag or commit (default ``main``); ignored for a local folder.
        token: a token that can read the repository (private repositories); default ``huggingface_hub``'s.

    Returns:
        A :class:`DMixInfo` (``settings``, ``training``, ``label_names``, ``results``, ``metrics()``,
        ``to_dmix_config()``), read at one commit.

    Raises:
        HubError: the repository does not exist or is not readable with this token, has no ``dmix_config.json``
            (not a DMIX model), or the Hub cannot be reached.
    """
    local = Path(repo_id)
    if local.is_dir():
        record = _read_json(local / DMIX_CONFIG_NAME)
        if record is None:
            raise HubError(f"{local} has no {DMIX_CONFIG_NAME}: it is not the output folder of a DMIX run.")
        results = results_of_run(record, _read_json(local / RESULTS_NAME))  # an earlier run's: not this model's
        return DMixInfo(repo_id=os.fspath(repo_id), revision=None, record=record, results=results)
    if not isinstance(repo_id, str) or not hub_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is neither a local folder nor a Hub repository id ('namespace/name').")

    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    action = f"Reading the DMIX settings of '{repo_id}'"
    try:
        sha = HfApi(token=token).model_info(repo_id, revision=revision, token=token).sha
        try:
            with open(hf_hub_download(repo_id, DMIX_CONFIG_NAME, revision=sha, token=token), encoding="utf-8") as f:
                record = json.load(f)
        except EntryNotFoundError as err:
            raise HubError(f"'{repo_id}' has no {DMIX_CONFIG_NAME}: it was not published by hf-dmix.") from err
        try:
            with open(hf_hub_download(repo_id, RESULTS_NAME, revision=sha, token=token), encoding="utf-8") as f:
                results = json.load(f)
        except EntryNotFoundError:
            results = None
    except HubError:
        raise
    except Exception as err:  # noqa: BLE001 - only Hub/network failures are translated
        from huggingface_hub import get_token

        hub = hub_error(err, action, repo_id, [token, get_token()])
        if hub is None:
            raise
        raise hub from None
    return DMixInfo(repo_id=repo_id, revision=sha, record=record, results=results)
