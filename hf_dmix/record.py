"""The DMIX record of a run: what ``dmix_config.json`` holds, how it is written, and how it is read back.

What lives here: :func:`dmix_record` (every DMIX and training setting, the label names, the LoRA settings and the
partner-index statistics of a run), :func:`write_dmix_config` (next to every saved model and checkpoint), and the way
back: :func:`load_dmix_info` reads a published (or local) model's ``dmix_config.json`` and ``results.json`` into a
:class:`DMixInfo`, which can rebuild the run's :class:`~hf_dmix.config.DMixConfig`. What does not: publishing
(``hub.py``), the card's content (``cards.py``), collecting the record from a trainer (``hub_mixin.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._version import __version__
from .cards import results_of_run
from .config import DMIX_FIELDS, DMixConfig
from .hub_errors import HubError, hub_error
from .hub_names import display_name, hub_repo_id
from .io import write_atomic
from .mixing import modality_of

DMIX_CONFIG_NAME = "dmix_config.json"
RESULTS_NAME = "results.json"
README_NAME = "README.md"
# The training settings a run records, in the order its model card lists them: the card renders this dict as it is,
# so this tuple is the one place both are decided. ``world_size`` and ``total_train_batch_size`` are derived from the
# arguments (see :func:`_training_settings`), the rest are ``TrainingArguments`` fields.
_TRAINING_KEYS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "world_size",
    "total_train_batch_size",
    "weight_decay",
    "warmup_steps",
    "lr_scheduler_type",
    "optim",
    "max_grad_norm",
    "label_smoothing_factor",
    "seed",
    "bf16",
    "fp16",
)
# The training settings :meth:`DMixInfo.to_dmix_config` carries over (precision flags depend on the hardware, and
# derived values are not arguments: not these).
_REPRODUCE_KEYS = tuple(k for k in _TRAINING_KEYS if k not in ("bf16", "fp16", "world_size", "total_train_batch_size"))


def _training_settings(args: DMixConfig) -> dict[str, Any]:
    """The ``training`` section of ``results.json``: :data:`_TRAINING_KEYS` in their order, the derived ones computed."""
    derived = {
        "world_size": int(args.world_size),
        "total_train_batch_size": int(
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        ),
    }
    as_dict = args.to_dict()
    return {
        k: derived[k] if k in derived else _jsonable(as_dict[k]) for k in _TRAINING_KEYS if k in derived or k in as_dict
    }


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
        base_model = (
            getattr(peft_cfg, "base_model_name_or_path", None) or getattr(config, "_name_or_path", None) or None
        )
    label_names = None
    if config is not None and getattr(config, "id2label", None):
        label_names = [str(config.id2label[i]) for i in sorted(int(k) for k in config.id2label)]
    training = _training_settings(args)
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
        "hf_dmix_version": __version__,
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


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (``None`` when there is no such file); invalid JSON is a :class:`HubError`."""
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubError(f"{path.name} in {path.parent} is not valid JSON ({err}); fix or remove it.") from err


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
        record = read_json(local / DMIX_CONFIG_NAME)
        if record is None:
            raise HubError(f"{local} has no {DMIX_CONFIG_NAME}: it is not the output folder of a DMIX run.")
        own = results_of_run(record, read_json(local / RESULTS_NAME))  # an earlier run's: not this model's
        results = dict(own) if own is not None else None
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
    except Exception as err:
        from huggingface_hub import get_token

        hub = hub_error(err, action, repo_id, [token, get_token()])
        if hub is None:
            raise
        raise hub from None
    return DMixInfo(repo_id=repo_id, revision=sha, record=record, results=results)
