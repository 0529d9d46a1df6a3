"""The ``hf-dmix`` command: subcommands from one table, grouped ``--help``, one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hf_dmix.cli import commands
from hf_dmix.cli.commands import COMMANDS, Command

ROOT = Path(__file__).resolve().parents[1]
_CALLS: list[tuple[list[str], str]] = []


def _echo(argv: list[str]) -> None:
    """A subcommand for the test: records its command line and the program name argparse would show."""
    _CALLS.append((argv, sys.argv[0]))


def test_train_help_lists_the_flags_in_groups():
    """``python -m hf_dmix train --help`` (what ``hf-dmix train --help`` runs): model, data, DMIX, training and
    publishing flags each under their own heading, in that order, the usage line naming ``hf-dmix train``."""
    proc = subprocess.run(
        [sys.executable, "-m", "hf_dmix", "train", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert text.startswith("usage: hf-dmix train ")
    headings = [
        line[:-1] for line in text.splitlines() if line in ("model:", "data:", "DMIX:", "training:", "publishing:")
    ]
    assert headings == ["model", "data", "DMIX", "training", "publishing"]

    def section(flag: str) -> str:
        before = text[: text.index(f"\n  {flag} ")]
        return [h for h in headings if f"\n{h}:\n" in before][-1]

    assert section("--model_name_or_path") == "model" and section("--lora_r") == "model"
    assert section("--dataset_name") == "data" and section("--plot_partners") == "data"
    assert section("--tau") == "DMIX" and section("--partner_distance") == "DMIX" and section("--mix_alpha") == "DMIX"
    assert section("--learning_rate") == "training" and section("--output_dir") == "training"
    assert section("--push_only") == "publishing"


def test_a_subcommand_is_one_table_entry(monkeypatch, capsys):
    """Registering ``echo`` in COMMANDS is all it takes: it is listed, gets the rest of the command line, and runs
    with ``sys.argv[0] == "hf-dmix echo"`` (the prog of its own argparse parser)."""
    monkeypatch.setitem(COMMANDS, "echo", Command(f"{__name__}:_echo", "print nothing"))
    _CALLS.clear()
    assert commands.main(["echo", "a", "--b", "1"]) == 0
    assert _CALLS == [(["a", "--b", "1"], "hf-dmix echo")]
    assert sys.argv[0] != "hf-dmix echo"  # restored
    assert commands.main(["--help"]) == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["echo", "print", "nothing"] in listed and ["compare", *COMMANDS["compare"].help.split()] in listed


def test_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    """An unknown subcommand and an invalid setting: exit status 2 and one ``hf-dmix ...: error:`` line, no
    traceback; no subcommand at all prints the list of subcommands (exit status 2)."""
    assert commands.main(["tran"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "hf-dmix: error: unknown command 'tran'; choose one of: " + ", ".join(COMMANDS) + "."
    )
    assert commands.main(["train", "--output_dir", str(tmp_path), "--tau", "1.5", "--use_cpu", "true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hf-dmix train: error: tau must lie in (0, 1]"), err
    assert commands.main([]) == 2
    assert "commands:\n  train " in capsys.readouterr().err
