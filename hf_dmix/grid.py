"""Grids of fine-tuning runs: one process per run, one record per finished run, paired statistics over seeds.

What lives here, shared by ``hf-dmix compare`` (``compare.py``) and the benchmarks (``benchmarks/suite.py``), so that
a user's comparison and the project's published grid are computed by the same code:

* :class:`Job` — one run: the training command's flags, its output folder, and the committed record it leaves;
  :func:`run_plan` runs the jobs of a plan that have no record yet, keeping ``parallel`` in flight and asking the
  plan again as runs finish (a later stage chosen from an earlier one's records), so a grid resumes after an
  interruption and can span machines and days; :func:`run_jobs` is the same runner over a fixed list of jobs;
* :func:`make_record` / :func:`portable` / :func:`load_records` — what a record keeps of a run's ``results.json``
  (every figure of a report is recomputed from records alone), with no path of the machine that made it;
* :func:`choose_value` — a recipe choice on validation (the best mean over seeds, ties to the first candidate);
* :func:`paired_ci` / :func:`verdict` / :func:`mean_std` — the paired mean difference over seeds with its Student-t
  interval, and win / tie / loss by that interval.

What does not: which grid is run (the callers build the jobs) and what is trained (the training command).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import write_atomic

__all__ = [
    "Job",
    "choose_value",
    "load_records",
    "make_record",
    "mean_std",
    "paired_ci",
    "portable",
    "run_jobs",
    "run_plan",
    "train_command",
    "verdict",
    "write_json_atomic",
]

# The repository root when the package runs from a source checkout (``run_dmix.py`` beside it); in an installed
# wheel this is site-packages and the module entry point is used instead.
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def train_command() -> list[str]:
    """The command that runs one training run: the checkout's ``run_dmix.py`` when there is one, else the installed
    package's module entry point."""
    script = _SOURCE_ROOT / "run_dmix.py"
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "hf_dmix", "train"]


@dataclass
class Job:
    """One run: the training command's flags, where its outputs go, and (``records``) the folder of its record.

    ``command``: the program and leading arguments (default :func:`train_command`); the flags follow as ``--key value``
    and ``--output_dir`` last. The program must write ``results.json`` into its output folder.
    """

    name: str
    flags: dict[str, Any]
    root: Path
    meta: dict[str, Any] = field(default_factory=dict)
    records: Path | None = None
    command: list[str] | None = None

    @property
    def key(self) -> str:
        """A short digest of the flags: the output folder of a run with other flags is another folder."""
        return hashlib.sha256(json.dumps(self.flags, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @property
    def out_dir(self) -> Path:
        return Path(self.root) / f"{self.name}-{self.key}"

    @property
    def record_path(self) -> Path | None:
        return None if self.records is None else Path(self.records) / f"{self.name}.json"

    def cached(self) -> dict[str, Any] | None:
        """The finished run of *these* flags: its record, else its ``results.json`` in the runs folder.

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
        args = list(self.command or train_command())
        for key, value in self.flags.items():
            if isinstance(value, (list, tuple)):
                args += [f"--{key}", *map(str, value)]
            else:
                args += [f"--{key}", str(value)]
        return args + ["--output_dir", str(self.out_dir)]


def _run_one(job: Job, parallel: int) -> dict[str, Any]:
    """Run ``job`` in its own process (log in its output folder) and write its record; raises on failure."""
    job.out_dir.mkdir(parents=True, exist_ok=True)
    log = job.out_dir / "run.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    if parallel > 1:  # the runs themselves fill the cores; more threads per run would only contend
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with open(log, "w") as f:
        proc = subprocess.run(job.argv(), stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"run {job.name} failed (exit {proc.returncode}); log {log}:\n{log.read_text()[-3000:]}")
    # The flags and the grid's own labels go into results.json, so the cache can tell a finished run of *these*
    # settings from a stale one.
    path = job.out_dir / "results.json"
    results = json.loads(path.read_text())
    results["benchmark_flags"] = json.loads(json.dumps(job.flags, default=str))
    results["benchmark_meta"] = job.meta
    write_json_atomic(path, results)
    if job.record_path is not None:
        write_json_atomic(job.record_path, make_record(results))
    return results


def run_jobs(
    jobs: Sequence[Job],
    parallel: int = 1,
    keep_going: bool = False,
    progress: bool = True,
    on_done: Callable[[Job, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any] | None]:
    """Run every job that has no record (``parallel`` at a time) and return all results in job order.

    ``keep_going``: a failed run is reported and left out (``None`` in the result) instead of stopping the rest; without
    it the first failure starts no further run, lets the running ones finish (their records are kept) and is raised.
    ``progress``: a tqdm bar over runs (on stderr). ``on_done(job, results)`` is called after each finished run.
    """
    todo = [j for j in jobs if j.cached() is None]
    print(
        f"{len(jobs) - len(todo)} of {len(jobs)} runs recorded; running {len(todo)} ({parallel} at a time).", flush=True
    )
    run_plan(lambda: todo, parallel, stop_on_failure=not keep_going, progress=progress, on_done=on_done)
    return [j.cached() for j in jobs]


def _finished_line(job: Job, results: Mapping[str, Any], started: float) -> str:
    f1 = results.get("metrics", {}).get("test", {}).get("macro_f1")
    if f1 is None:
        return f"{job.name}: done"
    return (
        f"{job.name}: test macro-F1 {f1:.4f} ({results.get('wall_time_s', 0):.0f} s; "
        f"{time.time() - started:.0f} s elapsed)"
    )


def run_plan(
    plan: Callable[[], Sequence[Job]],
    parallel: int = 1,
    max_runs: int | None = None,
    stop_on_failure: bool = False,
    progress: bool = False,
    on_done: Callable[[Job, dict[str, Any]], None] | None = None,
) -> tuple[int, list[str]]:
    """Run a plan that grows as runs finish, keeping ``parallel`` runs in flight, until every job it plans is recorded.

    Whenever a slot is free, ``plan()`` is asked again (it may read the records written so far, e.g. to queue a later
    stage once an earlier one is recorded) and its first jobs with no record, not running and not failed in this call,
    are started. Slots are refilled one by one rather than batch by batch: runs of one grid differ in length many times
    over (early stopping), and waiting for the slowest of a batch would leave the other slots idle.

    A failed run is reported (its log's tail) and not retried in this call; the others go on, unless
    ``stop_on_failure``: then no further run starts, the running ones finish, and the first failure is raised.
    ``max_runs``: start no more than this many runs (a time-boxed session). ``progress``: a tqdm bar over the runs
    planned so far (its total grows with the plan). ``on_done(job, results)`` is called after each finished run.
    Returns the number of runs finished and the names of those that failed.
    """
    from tqdm.auto import tqdm

    running: dict[Future, Job] = {}
    failed: list[str] = []
    first_error: RuntimeError | None = None
    launched = finished = 0
    started = time.time()
    bar = tqdm(total=0, unit="run", disable=not progress, dynamic_ncols=True)
    say = bar.write if progress else lambda line: print(line, flush=True)
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        while True:
            free = max(1, parallel) - len(running)
            if max_runs is not None:
                free = min(free, max_runs - launched)
            if first_error is not None:
                free = 0
            if free > 0:
                busy = {job.name for job in running.values()}
                todo = [j for j in plan() if j.name not in busy and j.name not in failed and j.cached() is None]
                bar.total = bar.n + len(running) + len(todo)
                bar.refresh()
                for i, job in enumerate(todo[:free]):
                    running[pool.submit(_run_one, job, parallel)] = job
                    launched += 1
                    if not progress:  # the bar says as much
                        say(f"started {job.name} ({len(todo) - i - 1} more planned, not recorded)")
            if not running:
                break
            for future in wait(running, return_when=FIRST_COMPLETED).done:
                job = running.pop(future)
                bar.update(1)
                try:
                    results = future.result()
                except RuntimeError as err:
                    failed.append(job.name)
                    if stop_on_failure and first_error is None:
                        first_error = err
                    say(f"FAILED {err}")
                    continue
                finished += 1
                say(_finished_line(job, results, started))
                if on_done is not None:
                    on_done(job, results)
    bar.close()
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}", flush=True)
    if first_error is not None:
        raise first_error
    return finished, failed


# What a record keeps of a run's results.json: enough to recompute every figure of a report, small enough to commit
# one per run (a few KB). Predictions, logs, training arguments and plots stay in the (ignored) runs folder.
RECORD_KEYS = (
    "benchmark_flags",
    "benchmark_meta",
    "seed",
    "model",
    "dmix",
    "metrics",
    "majority_baseline",
    "partner_index",
    "partner_index_warning",
    "partner_refreshes",
    "device",
    "world_size",
    "wall_time_s",
    "comparator",
)
# What a record keeps of the training summary (``hf_dmix.convergence.training_summary``).
TRAIN_KEYS = ("epochs_trained", "best_epoch", "best_metric", "final_train_loss", "loss_curve", "undertraining_warning")


def make_record(results: dict[str, Any]) -> dict[str, Any]:
    """One run's record: settings, seed, split sizes, validation and test metrics, index statistics (with the random
    baselines for the run's own candidate count), the training curve's summary, device and wall time, and the code
    version that produced it."""
    record = {k: results[k] for k in RECORD_KEYS if k in results}
    data = results.get("data", {})
    record["sizes"] = data.get("used_sizes")
    record["split_info"] = {k: v for k, v in data.items() if k not in ("used_sizes", "label_names")}
    train = results.get("train", {})
    record["train_loss"] = train.get("train_loss")
    record.update({k: train[k] for k in TRAIN_KEYS if k in train})
    record["versions"] = {k: results.get("versions", {}).get(k) for k in ("hf_dmix", "torch", "transformers")}
    record["code_commit"] = _git_commit()
    return portable(record)


def portable(value: Any, key: str = "") -> Any:
    """``value`` with every file path shortened to its last two components (``.../data/essc.csv`` ->
    ``data/essc.csv``): committed records name no folder of the machine that made them.

    Absolute paths are shortened wherever they are; under a ``*_file`` key a relative path is shortened as well, so
    a run given ``--data-dir ../shared/data`` matches the record of the same run made with absolute folders (the
    cache compares flags in this form).
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
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_SOURCE_ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """JSON through :func:`hf_dmix.io.write_atomic`: an interrupted write never leaves half a record."""
    write_atomic(path, json.dumps(payload, indent=1, default=str) + "\n")


def load_records(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record in ``folder``, in name order (reports are rebuilt from these alone)."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


def choose_value(scores: Mapping[Any, Iterable[float]], candidates: Sequence[Any]) -> tuple[Any, dict[Any, float]]:
    """The candidate with the highest mean score (e.g. a learning rate by its mean validation macro-F1 over seeds);
    on an exact tie the one listed first in ``candidates``. Returns the choice and the mean of every candidate.

    Raises ``ValueError`` naming a candidate without scores (a choice among incomplete runs would not be the rule's).
    """
    means = {}
    for value in candidates:
        values = list(scores.get(value, []))
        if not values:
            raise ValueError(f"no scores for candidate {value!r}; every candidate of {list(candidates)} needs some")
        means[value] = sum(values) / len(values)
    best = max(candidates, key=lambda v: (means[v], -list(candidates).index(v)))
    return best, means


def paired_ci(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> dict[str, float]:
    """Paired comparison of ``a`` against ``b`` over the seeds both have: mean difference ``a − b``, its ``level``
    confidence interval (Student t with n − 1 degrees of freedom), the two-sided paired t-test p-value, and n.

    With fewer than two common seeds the interval is undefined (NaN); with identical differences it has width 0.
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


NO_INTERVAL = "no interval"


def verdict(ci: dict[str, float]) -> str:
    """Win / tie / loss by the 95 % interval of the paired difference: entirely above 0 is a win, entirely below 0 a
    loss, an interval containing 0 a tie. With fewer than two paired seeds there is no interval and no verdict
    (:data:`NO_INTERVAL`): one seed's difference is no evidence of a tie."""
    if ci["low"] != ci["low"] or ci["high"] != ci["high"]:  # NaN: fewer than two paired seeds
        return NO_INTERVAL
    if ci["low"] > 0:
        return "win"
    if ci["high"] < 0:
        return "loss"
    return "tie"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def mean_sd_text(values: Sequence[float]) -> str:
    """``"mean ± sd"`` to two decimals; the value alone for a single run, which has no spread to report."""
    m, sd = mean_std(values)
    return f"{m:.2f} ± {sd:.2f}" if len(values) > 1 else f"{m:.2f}"
