"""Stop on ``SIGTERM`` (``DMixConfig.save_on_sigterm``): finish the step, save a checkpoint, stop training.

What lives here: :class:`StopOnTermination`, a ``TrainerCallback`` that installs a ``SIGTERM`` handler for the
duration of ``train()`` (the handler only sets a flag) and, at each step end, shares the request across processes
(one scalar all-reduce) and asks ``Trainer`` to save and stop. What does not: the checkpoint itself (``Trainer``'s and
``checkpoint.py``'s) and resuming (``train(resume_from_checkpoint=True)``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import torch
from transformers import TrainerCallback
from transformers.utils import logging

logger = logging.get_logger(__name__)


class StopOnTermination(TrainerCallback):
    """At each step end: if a SIGTERM arrived (on any process), save a checkpoint now and stop training.

    Attributes:
        stopped_by_signal: the signal that stopped the last ``train()`` early, or ``None`` when it ran to the end.
    """

    def __init__(self) -> None:
        self.stopped_by_signal: str | None = None
        self._requested: str | None = None

    def catch(self, enabled: bool) -> Callable[[], None]:
        """Install the handler for one ``train()`` (when ``enabled``); returns the function that removes it."""
        self.stopped_by_signal = self._requested = None
        if not enabled or threading.current_thread() is not threading.main_thread():
            return lambda: None  # signal handlers can only be set from the main thread
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            # Only a flag here: the step in progress finishes, then on_step_end saves and stops.
            self._requested = signal.Signals(signum).name
            logger.warning(
                f"{self._requested} received: finishing the current step, then saving a checkpoint and "
                "stopping. Resume with resume_from_checkpoint=True."
            )

        signal.signal(signal.SIGTERM, handler)

        def restore() -> None:
            signal.signal(signal.SIGTERM, previous)

        return restore

    def requested(self, world_size: int, device: torch.device | str) -> str | None:
        """The signal that asked this run to stop, agreed by every process (any process's request counts)."""
        local = self._requested
        if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([1.0 if local else 0.0], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            return (local or "SIGTERM") if flag.item() > 0 else None
        return local

    def on_step_end(self, args, state, control, **kwargs):
        signal_name = self.requested(args.world_size, args.device) if args.save_on_sigterm else None
        if signal_name is not None:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_by_signal = signal_name
        return control
