"""The supported library versions (issue 21, defect 7): floors declared once and tested in CI, and the private
``Trainer`` methods DMIX depends on checked — by these tests and, at import, by the package itself."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from transformers import Trainer

from hf_dmix import DMixConfig, DMixTrainer

# hf_dmix.compat is imported inside the tests, so that each test of the import check also runs against code that has
# no such module (it then fails for what it checks, not at collection).
ROOT = Path(__file__).resolve().parents[1]
FLOOR_PACKAGES = ("transformers", "accelerate", "datasets", "peft", "huggingface-hub")


def _declared() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return {re.split(r"[<>=!~ ]", d, maxsplit=1)[0]: d for d in deps}


def test_floors_are_declared_once_and_tested_in_ci():
    """pyproject.toml's floors are the versions CI installs in its floor environment (.ci/floors.txt), and
    hf_dmix.compat refuses what is below the transformers floor: the three cannot drift apart."""
    declared = _declared()
    pins = dict(line.split("==") for line in (ROOT / ".ci/floors.txt").read_text().split() if "==" in line)
    assert set(pins) == set(FLOOR_PACKAGES)
    from hf_dmix.compat import SUPPORTED_TRANSFORMERS, TRANSFORMERS_FLOOR

    for name, version in pins.items():
        assert f">={version}" in declared[name][len(name) :].split(","), (declared[name], version)
    assert (
        declared["transformers"] == f"transformers{SUPPORTED_TRANSFORMERS}"
        and pins["transformers"] == TRANSFORMERS_FLOOR
    )
    ci = (ROOT / ".ci/run").read_text()
    floors = (ROOT / ".ci/floors.sh").read_text()
    assert "bash .ci/floors.sh" in ci and '-m "slow or not slow"' in ci  # newest: everything; floors: the default
    assert "-c .ci/floors.txt" in floors and "torch==2.13.0" in floors and "set -euo pipefail" in floors


def _private_trainer_names_used() -> set[str]:
    """Every private ``Trainer`` method that DMixTrainer's modules override, call on ``self`` or call via ``super()``."""
    used = set()
    for cls in DMixTrainer.__mro__[: DMixTrainer.__mro__.index(Trainer)]:
        used |= {
            n for n in vars(cls) if n.startswith("_") and not n.startswith("__") and callable(getattr(Trainer, n, None))
        }
    for module in ("trainer", "checkpoint", "hub_mixin"):
        tree = ast.parse((ROOT / "hf_dmix" / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = ast.unparse(node.value)
                if owner in ("self", "super()") and callable(getattr(Trainer, node.attr, None)):
                    used.add(node.attr)
    return used


def test_every_private_trainer_method_dmix_relies_on_exists_with_its_parameters():
    """Fails on a transformers whose Trainer lacks (or changed the parameters of) a private method DMIX overrides or
    calls — e.g. 5.0-5.2, which have no ``_run_epoch``: the partner-index refresh would silently never run."""
    from hf_dmix.compat import TRAINER_INTERNALS, missing_trainer_internals

    assert _private_trainer_names_used() <= set(TRAINER_INTERNALS), "list it in hf_dmix.compat.TRAINER_INTERNALS"
    assert missing_trainer_internals() == []
    # The keyword arguments the overrides read are passed by keyword by the Trainer loop that calls them.
    loop = inspect.getsource(Trainer._inner_training_loop)
    assert re.search(r"self\._run_epoch\([^)]*\bepoch=epoch", loop, re.S)
    assert re.search(r"inner_training_loop\([^)]*\bresume_from_checkpoint=", inspect.getsource(Trainer.train), re.S)


def test_private_trainer_state_dmix_reads_exists(tmp_path, tokenizer, train_dataset):
    """checkpoint.py reads Trainer's running loss (``_total_loss_scalar``, ``_tr_loss``) when it saves dmix_state.json
    and trainer.py extends ``_signature_columns``; a rename would silently record a wrong loss."""
    from conftest import tiny_model

    seen = {}

    class Recording(DMixTrainer):
        def dmix_state(self):
            seen.update({n: hasattr(self, n) for n in ("_total_loss_scalar", "_tr_loss", "_signature_columns")})
            return super().dmix_state()

    args = DMixConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        save_strategy="steps",
        save_steps=1,
        use_cpu=True,
        per_device_train_batch_size=4,
        report_to="none",
        disable_tqdm=True,
        tau=0.5,
    )
    Recording(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
    ).train()
    assert seen == {"_total_loss_scalar": True, "_tr_loss": True, "_signature_columns": True}


def _without(name: str) -> type:
    from hf_dmix.compat import TRAINER_INTERNALS

    return type("OldTrainer", (), {n: getattr(Trainer, n) for n in TRAINER_INTERNALS if n != name})


def test_unsupported_transformers_is_refused_with_the_supported_range():
    from hf_dmix.compat import SUPPORTED_TRANSFORMERS, check_transformers

    with pytest.raises(ImportError, match=re.escape(f"transformers{SUPPORTED_TRANSFORMERS}")):
        check_transformers(version="5.2.0")
    with pytest.raises(ImportError, match=r"Trainer\._run_epoch does not exist"):
        check_transformers(version="5.24.0", trainer_class=_without("_run_epoch"))

    def _run_epoch(self, model, ep, train_dataloader):  # a changed signature: no ``epoch`` to read
        pass

    changed = type("ChangedTrainer", (_without("_run_epoch"),), {"_run_epoch": _run_epoch})
    with pytest.raises(ImportError, match=r"Trainer\._run_epoch has no parameter 'epoch'"):
        check_transformers(version="5.24.0", trainer_class=changed)
    with pytest.warns(UserWarning, match="tested with transformers"):
        check_transformers(version="6.0.0")


def test_importing_hf_dmix_on_a_trainer_without_run_epoch_fails_clearly():
    """Issue 21, defect 7: on transformers 5.0-5.2 (no ``Trainer._run_epoch``) ``import hf_dmix`` succeeded and
    ``partner_refresh_epochs`` silently never refreshed. Now the import fails and names the supported range."""
    code = "import transformers\ndel transformers.Trainer._run_epoch\nimport hf_dmix\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0, "hf_dmix imported on a Trainer without _run_epoch"
    from hf_dmix.compat import SUPPORTED_TRANSFORMERS

    assert "ImportError" in run.stderr and f"transformers{SUPPORTED_TRANSFORMERS}" in run.stderr
    assert "Trainer._run_epoch does not exist" in run.stderr
