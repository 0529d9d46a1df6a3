"""The ``transformers`` versions DMIX supports, and the private ``Trainer`` methods it depends on.

What lives here: the supported range (:data:`SUPPORTED_TRANSFORMERS`, equal to ``pyproject.toml``'s requirement and
to the CI floor environment, ``.ci/floors.txt``: ``tests/test_compat.py`` checks all three), the private ``Trainer``
methods that ``DMixTrainer`` (``trainer.py``, ``checkpoint.py``, ``hub_mixin.py``) overrides or calls, each with the
parameters it passes or reads by name (:data:`TRAINER_INTERNALS`), and :func:`check_transformers`, which the package
runs at import. What does not: the overrides themselves.

Why at import: a subclass's override of a method its base class does not have is never called, silently. On
transformers 5.0-5.2 (no ``Trainer._run_epoch``) the partner index would never be refreshed; on a version that renamed
``_save`` no ``dmix_config.json`` would be written. Refusing at import, with the range that works, is the only place
that cannot be skipped.
"""

from __future__ import annotations

import inspect
import warnings

from packaging.version import Version  # a dependency of transformers

# The floor is the first release on which the default test suite passes (see docs/reliability.md, issue 21): the
# layer layouts of the image/audio families (5.9, 5.16), Trainer's train_loss of a resumed run (5.19).
TRANSFORMERS_FLOOR = "5.19.0"
TRANSFORMERS_CEILING = "6"
SUPPORTED_TRANSFORMERS = f">={TRANSFORMERS_FLOOR},<{TRANSFORMERS_CEILING}"

# name -> the parameters DMIX passes or reads by name (an override reads ``kwargs["epoch"]``, say).
TRAINER_INTERNALS: dict[str, tuple[str, ...]] = {
    "_inner_training_loop": ("resume_from_checkpoint",),  # trainer.py: index and streams before the loop
    "_run_epoch": ("epoch",),  # trainer.py: refresh of the partner index (partner_refresh_epochs)
    "_set_signature_columns_if_needed": (),  # trainer.py: keeps the dmix_index column
    "_load_from_checkpoint": ("resume_from_checkpoint", "model"),  # checkpoint.py: the resume checks
    "_save_checkpoint": ("model", "trial"),  # checkpoint.py: dmix_state.json
    "_get_output_dir": ("trial",),  # checkpoint.py
    "_save": ("output_dir", "state_dict"),  # hub_mixin.py: dmix_config.json beside every model
    "_push_from_checkpoint": ("checkpoint_folder",),  # hub_mixin.py: the card of checkpoint pushes
    "_finish_current_push": (),  # hub_mixin.py: wait_for_hub_pushes
}


def missing_trainer_internals(trainer_class: type | None = None) -> list[str]:
    """What :data:`TRAINER_INTERNALS` expects and ``trainer_class`` (default ``transformers.Trainer``) lacks: one
    entry per missing method or parameter (``[]``: everything is there)."""
    if trainer_class is None:
        from transformers import Trainer as trainer_class
    problems = []
    for name, params in TRAINER_INTERNALS.items():
        method = getattr(trainer_class, name, None)
        if not callable(method):
            problems.append(f"Trainer.{name} does not exist")
            continue
        signature = inspect.signature(method).parameters
        problems += [f"Trainer.{name} has no parameter {p!r}" for p in params if p not in signature]
    return problems


def check_transformers(version: str | None = None, trainer_class: type | None = None) -> None:
    """Refuse a ``transformers`` DMIX would silently misbehave on; run when ``hf_dmix`` is imported.

    Raises:
        ImportError: ``version`` (default the installed one) is below :data:`TRANSFORMERS_FLOOR`, or ``Trainer``
            lacks a method (or a parameter of one) that DMIX overrides or calls; the message names the supported
            range and the ``pip install`` that fixes it.
    """
    if version is None:
        import transformers

        version = transformers.__version__
    fix = f'pip install "transformers{SUPPORTED_TRANSFORMERS}"'
    if Version(version) < Version(TRANSFORMERS_FLOOR):
        raise ImportError(f"hf-dmix supports transformers {SUPPORTED_TRANSFORMERS}, found {version}: {fix}.")
    problems = missing_trainer_internals(trainer_class)
    if problems:
        raise ImportError(
            f"hf-dmix supports transformers {SUPPORTED_TRANSFORMERS}; the installed {version} differs in what DMixTrainer "
            f"overrides ({'; '.join(problems)}), so DMIX would silently skip a step: {fix}."
        )
    if Version(version) >= Version(TRANSFORMERS_CEILING):
        warnings.warn(f"hf-dmix is tested with transformers {SUPPORTED_TRANSFORMERS}, found {version}.", stacklevel=2)


check_transformers()  # at import of hf_dmix (its __init__ imports this module first)
