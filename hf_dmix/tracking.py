"""What the experiment tracker of a run (``report_to``) receives from DMIX: the partner index and its pictures.

What lives here: :func:`partner_index_scalars` (the partner-index statistics as ``dmix/partner_index/*`` scalars),
:class:`PartnerIndexFeed`, which adds them to the first training log after the index is built or refreshed, and
:func:`log_images`, which sends the partner-index pictures (``DMixTrainer.plot_partner_index``) to each tracker of the
run that takes images, through the table :data:`IMAGE_SENDERS`.

How it reaches a tracker: the scalars — these and the step metrics ``dmix/mix_layer``, ``dmix/ratio`` and
``dmix/partner_same_label`` (``loss.StepMetrics``) — are added to the logs in ``DMixTrainer.log``, so they travel the
way the loss does: ``Trainer.log`` → every ``report_to`` callback's ``on_log`` (TensorBoard, trackio, MLflow, W&B,
...), with no code here per tracker. ``on_log`` takes numbers only, so pictures go to the tracker's own image call:
one sender per callback class in :data:`IMAGE_SENDERS` (TensorBoard, trackio); a tracker without one gets the scalars
only. What does not: computing the statistics (``hubness.py``) and drawing the pictures (``plotting.py``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

PREFIX = "dmix/partner_index/"


def partner_index_scalars(stats: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among ``DMixTrainer.partner_index_stats`` as ``dmix/partner_index/NAME`` log entries."""
    out = {}
    for name, value in stats.items():
        if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
            out[PREFIX + name] = float(value)
    return out


class PartnerIndexFeed:
    """Puts the statistics of each new partner index (built, rebuilt or refreshed) into one training log.

    A new index comes with a new statistics dict (``PartnerIndexer`` replaces it), so "new" is "not the dict logged
    last"; :meth:`reset` at the start of each ``train()`` logs an index reused from an earlier run again, for the new
    run's tracker.
    """

    def __init__(self) -> None:
        self._logged: Mapping[str, Any] | None = None

    def reset(self) -> None:
        """The next training log carries the current statistics again."""
        self._logged = None

    def flush_into(self, logs: dict[str, float], stats: Mapping[str, Any] | None) -> None:
        """Add the statistics to ``logs`` if they are new and ``logs`` is a training log (it has a loss)."""
        if stats and stats is not self._logged and ("loss" in logs or "train_loss" in logs):
            logs.update(partner_index_scalars(stats))
            self._logged = stats


def _read_png(path: str) -> Any:
    """The picture as a ``(height, width, 3)`` uint8 array."""
    import numpy as np
    from PIL import Image  # Pillow: a dependency of matplotlib, which drew the picture

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _to_tensorboard(callback: Any, trainer: Any, images: Mapping[str, str]) -> None:
    """``SummaryWriter.add_image`` into the callback's run folder; a writer of our own when the callback's is closed
    (``TensorBoardCallback`` closes it when training ends, and the pictures are drawn after that)."""
    writer = getattr(callback, "tb_writer", None)
    own = writer is None
    if own:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # transformers falls back to tensorboardX the same way
            from tensorboardX import SummaryWriter  # type: ignore[no-redef]
        from transformers.integrations.integration_utils import default_logdir

        log_dir = getattr(callback, "logging_dir", None) or os.path.join(trainer.args.output_dir, default_logdir())
        writer = SummaryWriter(log_dir=log_dir)
    assert writer is not None  # the callback's, or the one made above
    for name, path in images.items():
        writer.add_image(f"dmix/{name}", _read_png(path), trainer.state.global_step, dataformats="HWC")
    writer.flush()
    if own:
        writer.close()


def _to_trackio(callback: Any, trainer: Any, images: Mapping[str, str]) -> None:
    """``trackio.log`` of ``trackio.Image`` values; the callback's ``setup`` opens the run again when training ended
    it (as the callback itself does for logs after training)."""
    import trackio
    from trackio import context_vars

    if context_vars.current_run.get() is None:
        callback.setup(trainer.args, trainer.state, trainer.model)
    trackio.log(
        {f"dmix/{name}": trackio.Image(path, caption=name) for name, path in images.items()},
        step=trainer.state.global_step,
    )


# Callback class name (as transformers names it) -> how that tracker receives pictures. One entry per tracker.
IMAGE_SENDERS: dict[str, Callable[[Any, Any, Mapping[str, str]], None]] = {
    "TensorBoardCallback": _to_tensorboard,
    "TrackioCallback": _to_trackio,
}


def log_images(trainer: Any, images: Mapping[str, str]) -> list[str]:
    """Send the pictures (name -> PNG path) to every tracker of ``trainer`` that has a sender, as ``dmix/NAME`` at the
    current global step; the names of the trackers reached. Main process only (the caller's concern)."""
    reached: list[str] = []
    if not images:
        return reached
    for callback in trainer.callback_handler.callbacks:
        send = IMAGE_SENDERS.get(type(callback).__name__)
        if send is not None:
            send(callback, trainer, images)
            reached.append(type(callback).__name__)
    return reached
