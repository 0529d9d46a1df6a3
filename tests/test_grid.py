"""The grid runner's scheduling (``hf_dmix.grid.run_plan`` and ``run_jobs`` on it), driven with a stand-in training
command.

The stand-in is a real process, as a training run is: it sleeps for ``--sleep`` seconds, then writes ``results.json``
with the wall-clock times it started and ended, so a test can tell which runs overlapped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hf_dmix.grid import Job, run_jobs, run_plan

FAKE_TRAIN = """
import json, sys, time
from pathlib import Path
start = time.time()
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
if args.get("--fail") == "true":
    sys.exit(3)
time.sleep(float(args["--sleep"]))
out = Path(args["--output_dir"])
out.mkdir(parents=True, exist_ok=True)
(out / "results.json").write_text(json.dumps({"start": start, "end": time.time(), "metrics": {}}))
"""


def _jobs(tmp_path: Path, sleeps: dict[str, float], fail: tuple[str, ...] = ()) -> dict[str, Job]:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return {
        name: Job(
            name,
            {"sleep": sleep, **({"fail": "true"} if name in fail else {})},
            root=tmp_path / "runs",
            records=tmp_path / "records",
            command=[sys.executable, str(script)],
        )
        for name, sleep in sleeps.items()
    }


def _times(job: Job) -> tuple[float, float]:
    results = json.loads((job.out_dir / "results.json").read_text())
    return results["start"], results["end"]


def test_a_free_slot_starts_the_next_run_while_a_long_one_still_runs(tmp_path):
    """Runs of a grid differ in length (early stopping: 20 s to 19 min here); waiting for the slowest of a batch
    before starting the next leaves cores idle, and with ``--parallel 14`` on a GPU most of them."""
    jobs = _jobs(tmp_path, {"long": 4.0, "a": 0.1, "b": 0.1, "c": 0.1})
    finished, failed = run_plan(lambda: list(jobs.values()), parallel=2)
    assert (finished, failed) == (4, [])
    long_start, long_end = _times(jobs["long"])
    for name in ("a", "b", "c"):  # "a" starts with "long" (either may be first); "b" and "c" in the slot "a" frees
        start, end = _times(jobs[name])
        assert end < long_end and (name == "a" or long_start < start), f"run {name} did not run beside the long run"
    assert all(job.record_path.is_file() for job in jobs.values())


def test_runs_the_plan_planned_after_each_finished_run_and_never_a_recorded_or_running_one(tmp_path):
    """Stage 2 of a dataset becomes runnable as soon as its stage 1 is recorded: the plan is asked again each time a
    run finishes, in the same call."""
    jobs = _jobs(tmp_path, {"search": 0.1, "slow": 3.0, "stage2-a": 0.1, "stage2-b": 0.1})
    calls = []

    def plan() -> list[Job]:
        calls.append(1)
        later = [jobs["stage2-a"], jobs["stage2-b"]] if jobs["search"].cached() is not None else []
        return [jobs["search"], jobs["slow"], *later]

    finished, failed = run_plan(plan, parallel=2)
    assert (finished, failed) == (4, [])
    assert _times(jobs["stage2-a"])[0] < _times(jobs["slow"])[1], "stage 2 waited for an unrelated run"
    before = {name: _times(job) for name, job in jobs.items()}
    assert run_plan(plan, parallel=2) == (0, [])  # all recorded: nothing runs again
    assert {name: _times(job) for name, job in jobs.items()} == before
    assert len(calls) >= 4


def test_a_failed_run_is_reported_not_retried_and_the_rest_still_run(tmp_path, capsys):
    jobs = _jobs(tmp_path, {"broken": 0.0, "x": 0.1, "y": 0.1}, fail=("broken",))
    finished, failed = run_plan(lambda: list(jobs.values()), parallel=2)
    assert (finished, failed) == (2, ["broken"])
    assert jobs["broken"].cached() is None and jobs["x"].cached() is not None and jobs["y"].cached() is not None
    assert "FAILED run broken failed (exit 3)" in capsys.readouterr().out


def test_max_runs_stops_starting_runs(tmp_path):
    jobs = _jobs(tmp_path, {f"r{i}": 0.05 for i in range(5)})
    assert run_plan(lambda: list(jobs.values()), parallel=2, max_runs=3) == (3, [])
    assert sum(job.cached() is not None for job in jobs.values()) == 3


def test_run_jobs_stops_starting_runs_at_the_first_failure_unless_told_to_keep_going(tmp_path):
    """``hf-dmix compare`` stops at a failed run (its choice of recipe needs every search run): the runs queued
    behind the failure must not start — an hour of training after a crash that already decided the outcome."""
    jobs = _jobs(tmp_path, {"broken": 0.0, "x": 0.1, "y": 0.1}, fail=("broken",))
    with pytest.raises(RuntimeError, match="run broken failed"):
        run_jobs(list(jobs.values()), parallel=1, progress=False)
    assert jobs["x"].cached() is None and jobs["y"].cached() is None


def test_run_jobs_keeps_going_past_a_failure_and_returns_every_result_in_job_order(tmp_path, capsys):
    jobs = _jobs(tmp_path, {"x": 0.1, "broken": 0.0, "y": 0.1}, fail=("broken",))
    done = []
    results = run_jobs(
        list(jobs.values()), parallel=2, keep_going=True, progress=False, on_done=lambda job, r: done.append(job.name)
    )
    assert [r is not None for r in results] == [True, False, True]
    assert sorted(done) == ["x", "y"]
    assert "1 run(s) failed: broken" in capsys.readouterr().out
    assert run_jobs(list(jobs.values())[::2], progress=False) == [jobs["x"].cached(), jobs["y"].cached()]
