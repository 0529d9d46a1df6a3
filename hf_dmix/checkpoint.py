"""The DMIX state a checkpoint carries, so that a resumed run continues exactly where the killed one stopped.

What lives here: the state file ``dmix_state.json`` (the random streams of DMIX and a fingerprint of what the partner
index was built from), its atomic write, the comparison that refuses a checkpoint from another dataset or other DMIX
settings, and the choice of the last *complete* checkpoint of an output folder. What does not: the training loop
(``trainer.py`` calls these when ``Trainer`` saves or resumes).

The streams:

* partner draws — :class:`~hf_dmix.DMixDataCollator` derives batch ``b``'s draws from ``(seed, b)``, so its state is
  one integer: the number of training batches consumed (not collated: the dataloader collates ahead of the loop);
* the (layer, ratio) draws of ``compute_loss`` — a NumPy generator whose full bit-generator state is stored.

``Trainer`` restores its own streams (torch, CUDA, NumPy and Python global RNGs, the sampler) from ``rng_state*.pth``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import numpy as np

DMIX_STATE_NAME = "dmix_state.json"
# The embeddings of the last partner refresh (DMixConfig.partner_refresh_epochs), in checkpoints after one.
REFRESH_EMBEDDINGS_NAME = "dmix_refresh_embeddings.pt"
STATE_FORMAT = 1
# Files a checkpoint folder must hold to be resumed from: Trainer's state (written last by Trainer) and ours.
_TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def dataset_fingerprint(dataset: Any, labels: Any = None) -> str:
    """A content hash of a training set: its size, its labels and its token ids (when it has ``input_ids``).

    ``datasets`` fingerprints are not used: they describe how a dataset was built, not its rows, and a transform
    ``datasets`` cannot hash (a closure over an unpicklable object) gets a random one, so the same data would look
    different in the resumed process. The hash reads the logical rows (after any
    ``select``/``shuffle``), so the same rows in another order hash differently — they would be other partner ids.
    """
    h = hashlib.sha256()
    h.update(str(len(dataset)).encode())
    if labels is not None:
        h.update(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes())
    if hasattr(dataset, "column_names") and "input_ids" in (dataset.column_names or []):
        import pyarrow.compute as pc

        column = dataset.with_format("arrow")[:]["input_ids"]
        h.update(np.asarray(pc.list_value_length(column), dtype=np.int64).tobytes())
        h.update(np.asarray(pc.list_flatten(column), dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def index_digest(index: Any) -> str | None:
    """A hash of a partner index's candidate lists (``None`` for thresholds or all-others indices).

    Only the integer lists are hashed: threshold indices hold floats that may differ in the last bit on other
    hardware, and they are fully determined by the fingerprinted settings and embeddings anyway.
    """
    candidates = getattr(index, "candidates", None)
    if candidates is None:
        return None
    return hashlib.sha256(candidates.contiguous().numpy().astype(np.int32).tobytes()).hexdigest()[:16]


def write_state(checkpoint_dir: str, state: dict[str, Any]) -> str:
    """Write ``dmix_state.json`` into a checkpoint folder atomically (a temporary file, then a rename)."""
    from .hub import write_atomic

    path = os.path.join(checkpoint_dir, DMIX_STATE_NAME)
    write_atomic(path, json.dumps({"format": STATE_FORMAT, **state}, indent=2, sort_keys=True) + "\n")
    return path


def write_tensor(checkpoint_dir: str, name: str, tensor: Any) -> str:
    """``torch.save`` a tensor into a checkpoint folder atomically (a temporary file, then a rename)."""
    import torch

    path = os.path.join(checkpoint_dir, name)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(tensor.detach().cpu().contiguous(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
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
            raise ValueError(f"{path} is not valid JSON ({err}); the checkpoint is damaged. Resume from an earlier one.") from None
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
    skipped = []
    for _, name in steps:
        path = os.path.join(output_dir, name)
        if not os.path.isdir(path):
            continue
        if is_complete_checkpoint(path, need_dmix_state):
            return path, skipped
        skipped.append(path)
    return None, skipped


class ResumeMismatchError(ValueError):
    """A checkpoint was written by a run with other DMIX data or settings: resuming from it is refused."""
