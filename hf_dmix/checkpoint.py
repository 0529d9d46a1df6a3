"""The DMIX state a checkpoint carries, so that a resumed run continues exactly where the killed one stopped.

What lives here: which checkpoint a resume uses (:func:`resolve_resume`: the last *complete* one of an output folder
for ``resume_from_checkpoint=True``, logged), the state file ``dmix_state.json`` (the random streams of DMIX and a
fingerprint of what the partner index was built from) with its atomic write and the refresh embeddings beside it, and
the checks that refuse a checkpoint of another dataset or other DMIX settings; and :class:`DMixCheckpointMixin`, the
trainer hooks that save that state with every checkpoint and restore it on resume. What does not: the training loop
(``trainer.py`` calls these when ``Trainer`` saves or resumes) or the streams themselves (``collator.py``,
``loss.py``).

The streams:

* partner draws — :class:`~hf_dmix.DMixDataCollator` derives batch ``b``'s draws from ``(seed, b)``, so its state is
  one integer: the number of training batches consumed (not collated: the dataloader collates ahead of the loop);
* the (layer, ratio) draws of ``compute_loss`` — a NumPy generator whose full bit-generator state is stored.

``Trainer`` restores its own streams (torch, CUDA, NumPy and Python global RNGs, the sampler) from ``rng_state*.pth``.

What the state also holds: the fingerprint (:func:`run_fingerprint`: the training set's content, where the
embeddings come from and what they were computed from — for the model being fine-tuned, the digest of the weights the
run *started* from, which a resume embeds with again (see :meth:`DMixCheckpointMixin._starting_weights`) — the base
model, every setting of ``config.RESUME_FIELDS``, the resolved mix layers and a digest
of the index) and the sum of the training losses so far, so that a resumed run reports the ``train_loss`` of the whole
run rather than of its resumed part. A resume that disagrees with the checkpoint on anything but the index digest is
refused with :class:`ResumeMismatchError`; the digest, which can differ in the last bit on other hardware, only warns.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import numpy as np
from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput
from transformers.utils import logging

from ._host import TrainerHost
from .collator import DMixDataCollator
from .config import RESUME_FIELDS
from .embeddings import weights_digest
from .families import unwrap_model
from .trainset import data_key, dataset_fingerprint, labels_of

logger = logging.get_logger(__name__)

DMIX_STATE_NAME = "dmix_state.json"
# The embeddings of the last partner refresh (DMixConfig.partner_refresh_epochs), in checkpoints after one.
REFRESH_EMBEDDINGS_NAME = "dmix_refresh_embeddings.pt"
STATE_FORMAT = 1
# Files a checkpoint folder must hold to be resumed from: Trainer's state (written last by Trainer) and ours.
_TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class ResumeMismatchError(ValueError):
    """A checkpoint was written by a run with other DMIX data or settings: resuming from it is refused."""


def index_digest(index: Any) -> str | None:
    """A hash of a partner index: its candidate lists, or its thresholds and ranking (``None`` for all-others).

    A changed digest only warns on resume: lists and thresholds are fully determined by the fingerprinted data,
    settings and model, but computed on other hardware they may differ in the last bit (and a near-tie then in one
    member).
    """
    candidates = getattr(index, "candidates", None)
    if candidates is not None:
        return hashlib.sha256(candidates.contiguous().numpy().astype(np.int32).tobytes()).hexdigest()[:16]
    thresholds = getattr(index, "thresholds", None)
    if thresholds is None:
        return None
    h = hashlib.sha256(f"{index.metric}/{index.order}/{index.rule}/{index.curvature}".encode())
    h.update(thresholds.detach().cpu().contiguous().numpy().astype(np.float32).tobytes())
    return h.hexdigest()[:16]


def run_fingerprint(
    args: Any,
    *,
    train_examples: int,
    train_data: str,
    embeddings: str,
    base_model: str | None,
    mix_layers: list[int],
    index: Any,
    embeddings_from: str | None = None,
) -> dict[str, Any]:
    """What a run's partner index and DMIX streams depend on, by name (stored in checkpoints, compared on resume).

    ``embeddings``: where they come from (``"precomputed"``, ``"embedding_model"``, ``"model"``: the model being
    fine-tuned); ``embeddings_from``: what they were computed from (the digest of the weights the run started from, the
    encoder's name, or a digest of the precomputed embeddings: see ``PartnerIndexer.origin``); the settings are those
    of ``config.RESUME_FIELDS``.
    """
    return {
        "train_examples": train_examples,
        "train_data": train_data,
        "embeddings": embeddings,
        "embeddings_from": embeddings_from,
        "base_model": base_model,
        **{name: getattr(args, name) for name in RESUME_FIELDS},
        "mix_layers": list(mix_layers),
        "index_digest": index_digest(index),
    }


def check_resume(checkpoint: str, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse (:class:`ResumeMismatchError`) a checkpoint whose fingerprint differs from this run's in anything but
    the index digest (checked before anything of the checkpoint is installed: see :func:`check_index_digest`).
    Entries that checkpoints of an older hf-dmix lack (``_LATER_ENTRIES``) are compared only when the checkpoint has
    them."""
    skipped = {"index_digest", *(k for k in _LATER_ENTRIES if k not in saved)}
    differences = fingerprint_differences(
        {k: v for k, v in saved.items() if k not in skipped},
        {k: v for k, v in current.items() if k not in skipped},
    )
    if differences:
        raise ResumeMismatchError(
            f"Cannot resume from {checkpoint}: it was trained with other DMIX data or settings. "
            + "; ".join(differences)
            + ". Resume with the settings and training set of that run, or start a fresh run in a new output_dir."
        )


# Fingerprint entries added after the state format was fixed (older checkpoints do not have them).
_LATER_ENTRIES = ("embeddings_from",)


def starting_weights_error(checkpoint: str, recorded: str, current: str) -> ResumeMismatchError:
    """Why a resume is refused when the model does not hold the weights the checkpoint's run started from."""
    return ResumeMismatchError(
        f"Cannot resume from {checkpoint}: its partner index was built from sentence embeddings of the weights its run "
        f"started from (digest {recorded}), and the model now holds other weights (digest {current}): fine-tuned "
        "ones, when this trainer has trained it since that run started, or another model. Embedding with them would "
        "select other partners than the ones the checkpoint was trained with. Resume on a new DMixTrainer whose model "
        "is built as that run's was (the same pretrained model, or model_init; the checkpoint's weights are loaded "
        "over it), or start a fresh run; to make the partner search independent of the weights, give it its own "
        "embeddings (DMixTrainer(sentence_embeddings=...) or DMixConfig(embedding_model=...))."
    )


def check_index_digest(checkpoint: str, saved: dict[str, Any], index: Any) -> None:
    """Warn when the index rebuilt for a resumed run is not the one the checkpoint was trained with."""
    if fingerprint_differences({"index_digest": saved.get("index_digest")}, {"index_digest": index_digest(index)}):
        logger.warning(
            f"The partner index rebuilt for this run differs from the one {checkpoint} was trained with, although "
            "data, settings and the weights the embeddings come from agree (embeddings computed on other hardware?). Training continues, but its "
            "partner draws will not replay the interrupted run exactly."
        )


def save_dmix_state(checkpoint_dir: str, state: dict[str, Any], refresh_embeddings: Any = None) -> str:
    """Write a checkpoint's DMIX part: the refresh embeddings (when the index was refreshed), then the state file.

    Called before ``Trainer`` writes the checkpoint (``trainer_state.json`` last), for every checkpoint — with
    ``save_only_model=True`` too — so that a folder with a ``trainer_state.json`` always has its DMIX state.
    """
    os.makedirs(checkpoint_dir, exist_ok=True)
    if refresh_embeddings is not None:
        # The refreshed index came from weights no checkpoint holds: keep its embeddings.
        write_tensor(checkpoint_dir, REFRESH_EMBEDDINGS_NAME, refresh_embeddings)
    return write_state(checkpoint_dir, state)


def load_dmix_state(checkpoint_dir: str, mixing: bool) -> dict[str, Any] | None:
    """The DMIX state of the checkpoint a run resumes from. A mixing run refuses a checkpoint without one
    (:class:`ResumeMismatchError`): nothing would show that it holds this run's data and settings."""
    state = read_state(checkpoint_dir)
    if state is None and mixing:
        raise ResumeMismatchError(
            f"Cannot resume from {checkpoint_dir}: it has no {DMIX_STATE_NAME}, so nothing shows that it was trained "
            "with this run's DMIX data and settings, and the partner and (layer, ratio) streams cannot continue (it "
            "was written by plain Trainer, by a run of an older hf-dmix, or it is not a checkpoint folder). Start a "
            "fresh run (load its weights as the model to fine-tune), or resume from a checkpoint of this run."
        )
    return state


def loss_before(state: dict[str, Any]) -> tuple[float, int] | None:
    """``(sum of the training losses, steps)`` up to a checkpoint (``None`` for states written without them)."""
    loss = state.get("train_loss")
    return None if not loss else (float(loss["sum"]), int(loss["steps"]))


def whole_run_loss(resumed_mean: float, global_step: int, before: tuple[float, int]) -> float:
    """The mean training loss of a whole resumed run, from ``Trainer``'s mean over the resumed steps only."""
    loss_sum, steps = before
    return (resumed_mean * (global_step - steps) + loss_sum) / max(global_step, 1)


def warn_if_inexact_resume(args: Any) -> None:
    """Say when a resume cannot replay the partner draws exactly (they were drawn inside dataloader workers)."""
    if args.dataloader_num_workers > 0:
        logger.warning(
            "Resuming with dataloader_num_workers > 0: partner draws inside workers are keyed on the workers' "
            "seeds, which restart with the resumed epoch; the (layer, ratio) stream continues exactly, partner "
            "draws do not. Use dataloader_num_workers=0 for an exact resume."
        )


def write_state(checkpoint_dir: str, state: dict[str, Any]) -> str:
    """Write ``dmix_state.json`` into a checkpoint folder atomically (a temporary file, then a rename)."""
    from .io import write_atomic

    path = os.path.join(checkpoint_dir, DMIX_STATE_NAME)
    write_atomic(path, json.dumps({"format": STATE_FORMAT, **state}, indent=2, sort_keys=True) + "\n")
    return path


def write_tensor(checkpoint_dir: str, name: str, tensor: Any) -> str:
    """``torch.save`` a tensor into a checkpoint folder atomically (a temporary file, then a rename)."""
    import io

    import torch

    from .io import write_atomic

    path = os.path.join(checkpoint_dir, name)
    buffer = io.BytesIO()
    torch.save(tensor.detach().cpu().contiguous(), buffer)
    write_atomic(path, buffer.getvalue())
    return path


def read_tensor(checkpoint_dir: str, name: str) -> Any:
    """A tensor written by :func:`write_tensor`; a missing file is an error naming the checkpoint."""
    import torch

    path = os.path.join(checkpoint_dir, name)
    if not os.path.isfile(path):
        raise ValueError(
            f"{checkpoint_dir} records a partner refresh but has no {name}: the checkpoint is incomplete. Resume from "
            "an earlier checkpoint."
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state(checkpoint_dir: str) -> dict[str, Any] | None:
    """The DMIX state of a checkpoint folder, or ``None`` when it has none (a plain ``Trainer`` checkpoint)."""
    path = os.path.join(checkpoint_dir, DMIX_STATE_NAME)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            state = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path} is not valid JSON ({err}); the checkpoint is damaged. Resume from an earlier one."
            ) from None
    if state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"{path} has DMIX state format {state.get('format')!r}; this version of hf-dmix reads format {STATE_FORMAT}."
        )
    return state


def fingerprint_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"key: checkpoint=… , this run=…"`` for each fingerprint entry that differs (empty when they agree).

    Entries that only one side has are reported too, except ``index_digest`` when either side has none (threshold
    indices carry no digest).
    """
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if key == "index_digest" and (a is None or b is None):
            continue
        if _normalise(a) != _normalise(b):
            out.append(f"{key}: checkpoint={a!r}, this run={b!r}")
    return out


def _normalise(value: Any) -> Any:
    # JSON turns tuples into lists; compare them as equal.
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def resolve_resume(resume_from_checkpoint: str | bool | None, output_dir: str, need_dmix_state: bool) -> str | None:
    """The checkpoint folder a run resumes from (``None``: it does not resume), logged at WARNING.

    ``True`` picks the last *complete* checkpoint of ``output_dir`` (incomplete folders above it are skipped, each
    with a warning saying what it lacks); a path is used as given.
    """
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        path, skipped = last_complete_checkpoint(output_dir, need_dmix_state=need_dmix_state)
        for folder in skipped:
            logger.warning(f"Skipping {folder}: {incomplete_reason(folder, need_dmix_state)}.")
        if path is None:
            raise ValueError(
                f"resume_from_checkpoint=True but {output_dir!r} holds no complete checkpoint"
                + (f" (skipped incomplete: {skipped})" if skipped else "")
                + ". Pass a checkpoint folder explicitly, or start without resume_from_checkpoint."
            )
    else:
        path = os.fspath(resume_from_checkpoint)
    logger.warning(f"Resuming training from {path}.")
    if os.path.isdir(path) and not any(name.startswith("rng_state") for name in os.listdir(path)):
        logger.warning(
            f"{path} holds no optimizer, scheduler or RNG state (saved with save_only_model=True): training continues "
            "from its weights and DMIX streams with a fresh optimizer, so it will not replay the interrupted run."
        )
    return path


def incomplete_reason(path: str, need_dmix_state: bool) -> str:
    """Why :func:`is_complete_checkpoint` rejects a folder, in words."""
    if not os.path.isfile(os.path.join(path, _TRAINER_STATE_NAME)):
        return (
            f"it is incomplete (no {_TRAINER_STATE_NAME}, which Trainer writes last), most likely because the run "
            "was killed while writing it"
        )
    return (
        f"it is incomplete for a DMIX run (no {DMIX_STATE_NAME}): it was written by plain Trainer, a run without "
        "mixing or an older hf-dmix"
    )


def is_complete_checkpoint(path: str, need_dmix_state: bool) -> bool:
    """Whether a checkpoint folder was written to the end: ``trainer_state.json`` (Trainer writes it last) and, for
    DMIX runs, ``dmix_state.json`` (written before it)."""
    if not os.path.isfile(os.path.join(path, _TRAINER_STATE_NAME)):
        return False
    return not need_dmix_state or os.path.isfile(os.path.join(path, DMIX_STATE_NAME))


def last_complete_checkpoint(output_dir: str, need_dmix_state: bool) -> tuple[str | None, list[str]]:
    """The highest-step complete checkpoint in ``output_dir`` and the incomplete ones above it that were skipped.

    ``transformers.trainer_utils.get_last_checkpoint`` returns the highest-numbered folder even when the process
    was killed while writing it; resuming from that one fails or, worse, silently restarts from step 0.
    """
    if not os.path.isdir(output_dir):
        return None, []
    steps = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT_RE.match(name))),
        reverse=True,
    )
    skipped: list[str] = []
    for _, name in steps:
        path = os.path.join(output_dir, name)
        if not os.path.isdir(path):
            continue
        if is_complete_checkpoint(path, need_dmix_state):
            return path, skipped
        skipped.append(path)
    return None, skipped


# ---------------------------------------------------------------------- the trainer's checkpoint hooks


class DMixCheckpointMixin(TrainerHost):
    """``DMixTrainer``'s checkpoint hooks: the DMIX state saved with every checkpoint, and resuming from one.

    The host is a ``transformers.Trainer`` that also has ``_indexer`` (a :class:`~hf_dmix.indexer.PartnerIndexer`),
    ``_schedule`` (a :class:`~hf_dmix.loss.MixingSchedule`) with ``_new_schedule()``, ``_dmix_batches``,
    ``_loss_offset``, ``_data_fingerprint``, ``_run_weights``, ``resumed_checkpoint``, ``_mixing``, ``mix_layers``,
    ``_prepare_dmix()`` and ``_index_inputs()``.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Build the partner index *before* the checkpoint's weights replace the initial ones.

        The interrupted run embedded its training set with the initial (pretrained) weights; embedding with the
        checkpoint's fine-tuned weights would select other partners, and the resumed run would not be the same run.
        """
        if self.args.mix_strategy != "none" and self.train_dataset is not None and model is None:
            self._prepare_dmix()
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _resolve_resume_arguments(self, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        """``train()``'s arguments with ``resume_from_checkpoint`` replaced by the folder :func:`resolve_resume` picks
        (``True``: the last complete checkpoint of ``output_dir``), which is kept as ``resumed_checkpoint``."""
        resume = args[0] if args else kwargs.get("resume_from_checkpoint")
        assert self.args.output_dir is not None  # TrainingArguments.__post_init__ sets its default
        self.resumed_checkpoint = resolve_resume(resume, self.args.output_dir, need_dmix_state=self._mixing)
        if args:
            args = (self.resumed_checkpoint, *args[1:])
        elif "resume_from_checkpoint" in kwargs:
            kwargs["resume_from_checkpoint"] = self.resumed_checkpoint
        return args, kwargs

    def _whole_run_output(self, result: TrainOutput) -> TrainOutput:
        """``train()``'s result with the whole run's ``train_loss`` after a resume (``log`` put it in the metrics)."""
        if self._loss_offset is None:
            return result
        return TrainOutput(result.global_step, result.metrics["train_loss"], result.metrics)

    def dmix_fingerprint(self) -> dict[str, Any]:
        """What the partner index and the DMIX streams of this run depend on, by name (stored in checkpoints).

        A checkpoint whose fingerprint differs in any entry but ``index_digest`` is refused on resume.
        """
        dataset = self.train_dataset
        if dataset is None:
            raise ValueError("dmix_fingerprint describes a training set: this trainer has no train_dataset.")
        key = (id(dataset), data_key(dataset))
        if self._data_fingerprint is None or self._data_fingerprint[0] != key:
            self._data_fingerprint = (key, dataset_fingerprint(dataset, labels_of(dataset)))
        return run_fingerprint(
            self.args,
            train_examples=len(dataset),
            train_data=self._data_fingerprint[1],
            embeddings=self._indexer.source(self.args),
            mix_layers=self.mix_layers,
            index=self.partner_index,
            embeddings_from=self._indexer.origin(self.args, self.model, self._run_weights),
            base_model=getattr(getattr(unwrap_model(self.model), "config", None), "_name_or_path", None),
        )

    def _starting_weights(self) -> str:
        """The digest of the weights this run's embeddings come from (``_prepare_dmix``): the model's as the run starts,
        or — resuming — those the checkpoint's run started from, as its fingerprint records them.

        The model holds them in a fresh process that built it as the interrupted run did. On a trainer that has
        trained it since, it holds fine-tuned ones: the embeddings of the starting weights are then reused when this
        trainer still holds them (``train()`` then ``train(resume_from_checkpoint=True)``), and the resume is refused
        with the reason otherwise (:func:`starting_weights_error`) — embedding with other weights would rebuild
        another index than the checkpoint was trained with.
        """
        current = weights_digest(self.model)
        state = read_state(self.resumed_checkpoint) if self.resumed_checkpoint else None
        recorded = ((state or {}).get("fingerprint") or {}).get("embeddings_from")
        if recorded is None or recorded == current or self._indexer.source(self.args) != "model":
            return current
        inputs = self._index_inputs()
        inputs.weights = recorded
        needs_embeddings = self.args.partner_search_settings().needs_points(len(self.train_dataset))
        if self._indexer.has_embeddings(inputs) or not needs_embeddings:
            return recorded
        raise starting_weights_error(str(self.resumed_checkpoint), recorded, current)

    def dmix_state(self) -> dict[str, Any]:
        """The DMIX part of a checkpoint: the stream positions, the loss sum so far and :meth:`dmix_fingerprint`."""
        before = self._loss_offset[0] if self._loss_offset else 0.0
        unlogged = getattr(self, "_tr_loss", None)
        loss_sum = (
            before + getattr(self, "_total_loss_scalar", 0.0) + (float(unlogged) if unlogged is not None else 0.0)
        )
        return {
            "batches_consumed": self._dmix_batches,
            "refreshed_epoch": self._indexer.refreshed_epoch,
            "mix_rng": self._schedule.state_dict(),
            "train_loss": {"sum": loss_sum, "steps": self.state.global_step},
            "fingerprint": self.dmix_fingerprint(),
        }

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        # dmix_state.json first, for every checkpoint (save_only_model too): Trainer writes trainer_state.json last,
        # so a checkpoint folder that has one has both.
        if self.args.should_save and self.train_dataset is not None:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            refreshed = self._indexer.current_embeddings if self._indexer.refreshed_epoch is not None else None
            save_dmix_state(folder, self.dmix_state(), refreshed)
        super()._save_checkpoint(model, trial)

    def _start_dmix_streams(self, checkpoint: str | None) -> None:
        """Start the partner and (layer, ratio) streams from the seed, or continue a checkpoint's."""
        a, collator = self.args, self.data_collator
        self._schedule, self._dmix_batches = self._new_schedule(), 0
        if isinstance(collator, DMixDataCollator):
            collator.seed, collator.batches_drawn = a.seed + 1_000_003 * a.process_index, 0
        mixing = self._mixing and self.partner_index is not None
        state = None if checkpoint is None else load_dmix_state(checkpoint, mixing=mixing)
        if state is None or checkpoint is None:
            return
        # Data and settings first: a checkpoint of another run is refused before anything of it is installed.
        check_resume(checkpoint, state["fingerprint"], self.dmix_fingerprint())
        if state.get("refreshed_epoch") is not None and mixing:
            embeddings = read_tensor(checkpoint, REFRESH_EMBEDDINGS_NAME)
            self._indexer.install(self._index_inputs(), embeddings, int(state["refreshed_epoch"]))
            self._indexer.publish(collator)
        check_index_digest(checkpoint, state["fingerprint"], self.partner_index)
        self._dmix_batches = int(state["batches_consumed"])
        self._schedule.load_state_dict(state["mix_rng"])
        self._loss_offset = loss_before(state)
        if isinstance(collator, DMixDataCollator):
            collator.batches_drawn = self._dmix_batches
        warn_if_inexact_resume(a)
