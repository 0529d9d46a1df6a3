"""Shared plumbing of the benchmarks: where the data are, report sections, and the grid engine re-exported.

The jobs, records and paired statistics live in the package (``hf_dmix.grid``), shared with ``hf-dmix compare``; they
are re-exported here so that every benchmark imports them from one place. Each job is one training process with its
own output folder; a finished job (its record exists and records the same settings) is never run again, so an
interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's hf_dmix, also when the package is not installed


def data_dir(cli_value: str | None) -> Path:
    """Where ``essc.csv`` lives: ``--data-dir``, else ``$DMIX_DATA_DIR``, else ``../shared/data`` beside the repo."""
    path = Path(cli_value or os.environ.get("DMIX_DATA_DIR") or ROOT.parent / "shared" / "data")
    if not (path / "essc.csv").is_file():
        sys.exit(
            f"essc.csv not found in {path}. Pass --data-dir DIR or set DMIX_DATA_DIR to the folder holding the SMS Spam "
            "Collection as essc.csv (columns text,label)."
        )
    return path


from hf_dmix.grid import (  # noqa: E402,F401 - the one grid engine, shared with `hf-dmix compare`
    NO_INTERVAL,
    Job,
    load_records,
    make_record,
    mean_sd_text,
    mean_std,
    paired_ci,
    portable,
    run_jobs,
    run_plan,
    verdict,
    write_json_atomic,
)


def paired_test(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int]:
    """Mean difference and two-sided paired t-test p-value over the seeds both rows share."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return float("nan"), float("nan"), len(seeds)
    x = [a[s] for s in seeds]
    y = [b[s] for s in seeds]
    diff = sum(xi - yi for xi, yi in zip(x, y, strict=True)) / len(seeds)
    if all(xi == yi for xi, yi in zip(x, y, strict=True)):
        return diff, 1.0, len(seeds)
    return diff, float(stats.ttest_rel(x, y).pvalue), len(seeds)


def write_section(path: Path, marker: str, body: str) -> None:
    """Replace the text between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` (append if absent)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_section(path: Path, marker: str) -> str | None:
    """The text between the ``marker`` comments of ``path`` (``None`` when absent)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = path.read_text() if path.exists() else ""
    if start not in text or end not in text:
        return None
    return text[text.index(start) + len(start) : text.index(end)].strip("\n")
