"""Shared plumbing of the ESSC benchmarks: run ``run_dmix.py`` jobs (cached, resumable, optionally in parallel),
collect their ``results.json``, and summarise them.

Each job is one ``run_dmix.py`` process with its own output folder. A finished job (its ``results.json`` exists and
records the same settings) is never run again, so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def data_dir(cli_value: str | None) -> Path:
    """Where ``essc.csv`` lives: ``--data-dir``, else ``$DMIX_DATA_DIR``, else ``../shared/data`` beside the repo."""
    path = Path(cli_value or os.environ.get("DMIX_DATA_DIR") or ROOT.parent / "shared" / "data")
    if not (path / "essc.csv").is_file():
        sys.exit(
            f"essc.csv not found in {path}. Pass --data-dir DIR or set DMIX_DATA_DIR to the folder holding the SMS Spam "
            "Collection as essc.csv (columns text,label)."
        )
    return path


@dataclass
class Job:
    """One fine-tuning run: ``run_dmix.py`` flags plus where its outputs go."""

    name: str
    flags: dict[str, Any]
    root: Path
    meta: dict[str, Any] = field(default_factory=dict)
    records: Path | None = None  # committed folder of per-run records (see ``make_record``)

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.flags, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @property
    def out_dir(self) -> Path:
        return self.root / f"{self.name}-{self.key}"

    @property
    def record_path(self) -> Path | None:
        return None if self.records is None else self.records / f"{self.name}.json"

    def cached(self) -> dict[str, Any] | None:
        """The finished run of *these* flags: its committed record, else its ``results.json`` in the runs folder.

        Flags are compared in their portable form (data files by folder and name), so a record made on another
        machine, with the data in another folder, still counts as this run.
        """
        flags = portable(json.loads(json.dumps(self.flags, default=str)))
        for path in (self.record_path, self.out_dir / "results.json"):
            if path is not None and path.is_file():
                results = json.loads(path.read_text())
                if portable(results.get("benchmark_flags")) == flags:
                    return results
        return None

    def argv(self) -> list[str]:
        args = [sys.executable, str(ROOT / "run_dmix.py")]
        for key, value in self.flags.items():
            if isinstance(value, (list, tuple)):
                args += [f"--{key}", *map(str, value)]
            else:
                args += [f"--{key}", str(value)]
        return args + ["--output_dir", str(self.out_dir)]


def run_jobs(
    jobs: list[Job], parallel: int = 1, log_dir: Path | None = None, keep_going: bool = False
) -> list[dict[str, Any] | None]:
    """Run every job not already cached (``parallel`` at a time) and return all results in job order.

    ``keep_going``: a failed run is reported and left out (``None`` in the result) instead of stopping the rest.
    With ``parallel > 1`` each run gets one intra-op thread: the runs themselves fill the cores.
    """
    todo = [j for j in jobs if j.cached() is None]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs cached; running {len(todo)} ({parallel} at a time).", flush=True)
    started = time.time()
    done = 0

    def run(job: Job) -> None:
        nonlocal done
        job.out_dir.mkdir(parents=True, exist_ok=True)
        log = job.out_dir / "run.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        if parallel > 1:
            env.setdefault("OMP_NUM_THREADS", "1")
            env.setdefault("TOKENIZERS_PARALLELISM", "false")
        with open(log, "w") as f:
            proc = subprocess.run(job.argv(), stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        if proc.returncode != 0:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"run {job.name} failed (exit {proc.returncode}); log {log}:\n{tail}")
        # Record the flags so that the cache can tell a finished run of *these* settings from a stale one.
        path = job.out_dir / "results.json"
        results = json.loads(path.read_text())
        results["benchmark_flags"] = json.loads(json.dumps(job.flags, default=str))
        results["benchmark_meta"] = job.meta
        write_json_atomic(path, results)
        if job.record_path is not None:
            write_json_atomic(job.record_path, make_record(results))
        done += 1
        elapsed = time.time() - started
        print(f"[{done}/{len(todo)}] {job.name}: test macro-F1 {results['metrics']['test']['macro_f1']:.4f} "
              f"({results['wall_time_s']:.0f} s; {elapsed:.0f} s elapsed)", flush=True)

    failures = []
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for job, future in [(j, pool.submit(run, j)) for j in todo]:
            try:
                future.result()
            except RuntimeError as err:
                if not keep_going:
                    raise
                failures.append(job.name)
                print(f"FAILED {err}", flush=True)
    if failures:
        print(f"{len(failures)} run(s) failed: {', '.join(failures)}", flush=True)
    return [j.cached() for j in jobs]


# What a committed record keeps of a run's results.json: enough to recompute every figure of a report, small enough to
# commit one per run (a few KB). Predictions, logs, training arguments and plots stay in the (ignored) runs folder.
RECORD_KEYS = ("benchmark_flags", "benchmark_meta", "seed", "model", "dmix", "metrics", "majority_baseline",
               "partner_index", "partner_index_warning", "partner_refreshes", "device", "world_size", "wall_time_s")


def make_record(results: dict[str, Any]) -> dict[str, Any]:
    """One run's record: settings, seed, split sizes, validation and test metrics, index statistics (with the random
    baselines for the run's own candidate count), device and wall time, plus the code version that produced it."""
    record = {k: results[k] for k in RECORD_KEYS if k in results}
    data = results.get("data", {})
    record["sizes"] = data.get("used_sizes")
    record["split_info"] = {k: v for k, v in data.items() if k not in ("used_sizes", "label_names")}
    record["train_loss"] = results.get("train", {}).get("train_loss")
    record["versions"] = {k: results.get("versions", {}).get(k) for k in ("hf_dmix", "torch", "transformers")}
    record["code_commit"] = _git_commit()
    return portable(record)


def portable(value: Any, key: str = "") -> Any:
    """``value`` with every file path shortened to its last two components (``.../data/essc.csv`` ->
    ``data/essc.csv``): committed records name no folder of the machine that made them.

    Absolute paths are shortened wherever they are; under a ``*_file`` key a relative path is shortened as well, so
    a run given ``--data-dir ../shared/data`` or ``--runs-dir runs/x`` matches the record of the same run made with
    absolute folders (the cache compares flags in this form).
    """
    if isinstance(value, dict):
        return {k: portable(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, key) for v in value]
    if isinstance(value, str) and os.sep in value.strip(os.sep) and (os.path.isabs(value) or key.endswith("_file")):
        return "/".join(Path(value).parts[-2:])
    return value


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON through a temporary file and a rename: an interrupted write never leaves a half record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def load_records(folder: Path) -> list[dict[str, Any]]:
    """Every committed record in ``folder``, in name order (reports are rebuilt from these alone)."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


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


def paired_ci(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> dict[str, float]:
    """Paired comparison of ``a`` against ``b`` over the seeds both have: mean difference ``a − b``, its ``level``
    confidence interval (Student t with n − 1 degrees of freedom), the two-sided paired t-test p-value, and n.

    With fewer than two common seeds, or identical values, the interval is undefined (NaN) and p is NaN or 1.
    """
    import numpy as np
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    diffs = np.array([a[s] - b[s] for s in seeds], dtype=float)
    n = len(diffs)
    if n < 2:
        mean = float(diffs.mean()) if n else float("nan")
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "p": float("nan"), "n": n}
    mean, sd = float(diffs.mean()), float(diffs.std(ddof=1))
    if sd == 0.0:
        return {"mean": mean, "low": mean, "high": mean, "p": 1.0 if mean == 0 else 0.0, "n": n}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / n**0.5
    p = float(2 * stats.t.sf(abs(mean) / (sd / n**0.5), n - 1))
    return {"mean": mean, "low": mean - half, "high": mean + half, "p": p, "n": n}


def verdict(ci: dict[str, float]) -> str:
    """Win / tie / loss by the stated rule: the 95 % interval of the paired difference entirely above 0 is a win,
    entirely below 0 a loss, anything else (including an undefined interval) a tie."""
    if ci["low"] == ci["low"] and ci["low"] > 0:
        return "win"
    if ci["high"] == ci["high"] and ci["high"] < 0:
        return "loss"
    return "tie"


def write_section(path: Path, marker: str, body: str) -> None:
    """Replace the text between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` (append if absent)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
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
    return text[text.index(start) + len(start): text.index(end)].strip("\n")


def mean_std(values: list[float]) -> tuple[float, float]:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
