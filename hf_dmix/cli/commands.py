"""The ``hf-dmix`` command: ``hf-dmix SUBCOMMAND [flags]``, its subcommands, and how a command ends.

What lives here: :data:`COMMANDS`, the table of subcommands (``train``, ``push``), and :func:`main`, the console
entry point (``[project.scripts]`` in ``pyproject.toml``; also ``python -m hf_dmix`` and
``accelerate launch -m hf_dmix train ...``), which picks the subcommand and hands it the rest of the command line;
:func:`run_command`, shared with ``run_dmix.py``, turns the errors found before or instead of training into one line
and exit status 2 (argparse's convention) and a SIGTERM that stopped training into 143. What does not: what a
subcommand does (its own module).

Adding a subcommand is one entry in :data:`COMMANDS`: a name, ``"module:function"`` and a one-line help. The function
takes the rest of the command line (``argv: list[str]``) and does the work; its module is imported only when the
subcommand runs, so ``hf-dmix --help`` stays fast and a subcommand with extra needs costs the others nothing. While it
runs, ``sys.argv[0]`` is ``hf-dmix NAME``, so an ``argparse``/``HfArgumentParser`` parser built with the default
``prog`` shows that name in its usage line.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PROG = "hf-dmix"


@dataclass(frozen=True)
class Command:
    """A subcommand: ``target`` is ``"module:function"``, a function of the rest of the command line."""

    target: str
    help: str

    def load(self) -> Callable[[list[str]], Any]:
        """The function, imported now."""
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


COMMANDS: dict[str, Command] = {
    "train": Command("hf_dmix.cli.train:main", "fine-tune and evaluate a classifier with DMIX (or a Table 1 baseline)"),
    "push": Command("hf_dmix.cli.train:push", "publish an earlier run's output folder to the Hub, without retraining"),
    "compare": Command(
        "hf_dmix.compare:main", "should I use DMIX on my data? plain, Mixup, DMIX and a probe over seeds"
    ),
}


def usage() -> str:
    """The help of ``hf-dmix`` itself: the subcommands and where their flags are listed."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        f"usage: {PROG} {{{','.join(COMMANDS)}}} [flags]",
        "",
        "DMIX fine-tuning for Hugging Face classifiers.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {command.help}" for name, command in COMMANDS.items()]
    lines += [
        "",
        f"`{PROG} COMMAND --help` lists the flags of a command. Multi-process: "
        f"`accelerate launch -m hf_dmix train ...`.",
    ]
    return "\n".join(lines)


def run_command(function: Callable[[list[str]], Any], argv: Sequence[str], prog: str) -> int:
    """Run ``function(argv)``; the exit status: 0, or 2 for an error found before or instead of training (one line
    ``PROG: error: ...`` on stderr), or 143 when a SIGTERM stopped training (after saving a checkpoint)."""
    from ..checkpoint import ResumeMismatchError
    from ..data import DataError
    from ..hub_errors import HubError
    from .training import TrainingStopped

    try:
        function(list(argv))
    except (DataError, HubError, ResumeMismatchError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except TrainingStopped as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 143  # 128 + SIGTERM: schedulers read it as "terminated", e.g. to requeue the job
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``hf-dmix COMMAND [flags]``: run the subcommand; the exit status (see :func:`run_command`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from .._version import __version__

        print(f"{PROG} {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"{usage()}\n\n{PROG}: error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}.",
            file=sys.stderr,
        )
        return 2
    prog, saved = f"{PROG} {name}", sys.argv[0]
    sys.argv[0] = prog  # argparse's default prog is basename(sys.argv[0]): the usage line reads `hf-dmix NAME`
    try:
        return run_command(COMMANDS[name].load(), rest, prog)
    finally:
        sys.argv[0] = saved
