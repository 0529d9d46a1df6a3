"""Writing files so that readers never see half of one.

What lives here: :func:`write_atomic`, the one atomic writer of the package (``results.json``, ``predictions.csv``,
``dmix_config.json``, model cards, plots, checkpoint state). What does not: what is written (the callers decide).
"""

from __future__ import annotations

import os


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through a temporary file and a rename.

    The temporary file ``PATH.tmp-PID`` sits in the same folder (a rename across file systems would not be atomic)
    and is flushed to disk before the rename, so a reader, or a run killed mid-write, sees the old file or the new
    one, never a partial one. The folder is created if missing.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
