"""Which names are Hub repositories, and how a published text names a local one.

A model card's ``base_model`` and ``datasets`` metadata and the text of a card or a record may name only Hub ids; a local
folder, a ``package:NAME`` spec or a generated dataset is named by what a reader can use (its last path component).
Used by the card (``cards.py``, ``card_sections.py``), the record (``record.py``) and publishing (``hub.py``).
"""

from __future__ import annotations

import os
from typing import Any


def hub_repo_id(name: Any) -> str | None:
    """``name`` if it names a Hub repository (``"bert-base-cased"``, ``"org/model"``), else ``None``.

    Local folders (existing paths, or anything starting with ``/``, ``.``, ``~``), ``package:NAME`` specs and other
    strings that are not valid repo ids are not Hub repositories: a card must not name them as ``base_model`` or
    ``datasets`` (the Hub would reject the metadata, and a local path says nothing to a reader).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(name, str) or not name or name.startswith(("package:", ".", "/", "~")) or "\\" in name:
        return None
    if name.count("/") > 1 or os.path.exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def display_name(name: Any) -> str:
    """A name for ``name`` that is fit to publish: a Hub id as is, a local path by its last component only."""
    if not isinstance(name, str) or not name:
        return "unknown"
    if hub_repo_id(name) or name.startswith("package:"):
        return name
    return os.path.basename(os.path.normpath(os.path.expanduser(name))) or name
