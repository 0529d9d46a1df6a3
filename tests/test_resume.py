"""Exact resume: a SIGKILLed run resumed from its last checkpoint replays the uninterrupted run; same seed, same run.

The runs are real processes (tests/resume_script.py): the kill is a SIGKILL, not an exception.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "resume_script.py"
KILL_AT = 6  # checkpoints are written every 4 steps: the last complete one is checkpoint-4
# Losses of a resumed run are computed by the same code on the same CPU from the same restored state; we allow
# float32 round-off in case a restored optimizer state is re-laid out, but observe exact equality.
LOSS_TOLERANCE = 1e-6


def _run(out: Path, trace: Path, *extra: str, expect_kill: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(trace), *extra],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    if expect_kill:
        assert proc.returncode == -9, f"expected SIGKILL, got {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _trace(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _final(out: Path) -> dict:
    return json.loads((out / "final.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    for name, extra in (("full", ()), ("again", ()), ("seed1", ("--seed", "1"))):
        _ok(_run(tmp / name, tmp / f"{name}.jsonl", *extra))
    _run(tmp / "killed", tmp / "killed.jsonl", "--kill-at-step", str(KILL_AT), expect_kill=True)
    killed_trace = _trace(tmp / "killed.jsonl")
    # A checkpoint folder the kill interrupted while it was being written: no trainer_state.json, no dmix_state.json.
    partial = tmp / "killed" / "checkpoint-8"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    resumed = _run(tmp / "killed", tmp / "killed.jsonl", "--resume")
    _ok(resumed)
    return tmp, killed_trace, resumed


def test_the_kill_really_interrupted_the_run(runs):
    tmp, killed_trace, _ = runs
    assert [t["step"] for t in killed_trace] == list(range(1, KILL_AT + 1))
    assert (tmp / "killed" / "checkpoint-4" / "dmix_state.json").is_file()
    state = json.loads((tmp / "killed" / "checkpoint-4" / "dmix_state.json").read_text())
    assert state["batches_consumed"] == 4
    assert state["fingerprint"]["tau"] == 0.3 and state["fingerprint"]["train_examples"] == 40


def test_resume_skips_the_incomplete_checkpoint_and_says_so(runs):
    tmp, _, resumed = runs
    assert "checkpoint-8: it is incomplete" in resumed.stderr
    # It resumed from checkpoint-4: its first traced step is 5.
    trace = _trace(tmp / "killed.jsonl")
    assert trace[KILL_AT]["step"] == 5


def test_resumed_run_replays_partners_mixing_and_losses(runs):
    tmp, _, _ = runs
    full = {t["step"]: t for t in _trace(tmp / "full.jsonl")}
    resumed = _trace(tmp / "killed.jsonl")[KILL_AT:]
    assert [t["step"] for t in resumed] == list(range(5, 13))
    for t in resumed:
        ref = full[t["step"]]
        assert t["partners"] == ref["partners"], t["step"]
        assert (t["site"], t["ratio"]) == (ref["site"], ref["ratio"]), t["step"]
        assert abs(t["loss"] - ref["loss"]) <= LOSS_TOLERANCE, (t["step"], t["loss"], ref["loss"])
    # The steps the killed run did after checkpoint-4 (5 and 6) were replayed identically, too.
    killed_tail = {t["step"]: t for t in _trace(tmp / "killed.jsonl")[4:KILL_AT]}
    for step, t in killed_tail.items():
        assert t["partners"] == full[step]["partners"] and t["ratio"] == full[step]["ratio"]


def test_resumed_run_ends_with_the_same_log_and_metrics(runs):
    tmp, _, _ = runs
    full, resumed = _final(tmp / "full"), _final(tmp / "killed")
    assert [h["step"] for h in resumed["history"]] == [h["step"] for h in full["history"]]
    for a, b in zip(resumed["history"], full["history"], strict=True):
        assert abs(a["loss"] - b["loss"]) <= LOSS_TOLERANCE * max(1.0, abs(b["loss"])), (a, b)
    for key in ("eval_loss", "eval_accuracy", "eval_macro_f1"):
        if key in full["metrics"]:
            assert resumed["metrics"][key] == pytest.approx(full["metrics"][key], abs=LOSS_TOLERANCE), key
    # The reported train_loss is the whole run's mean, not the mean of the steps after the resume.
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=LOSS_TOLERANCE)
    assert resumed["resumed_from"].endswith("checkpoint-4") and full["resumed_from"] is None


def test_same_seed_is_bit_identical_and_another_seed_differs(runs):
    tmp, _, _ = runs
    full, again, seed1 = (_trace(tmp / f"{n}.jsonl") for n in ("full", "again", "seed1"))
    assert full == again  # partners, sites, ratios and losses, to the bit
    assert _final(tmp / "full")["metrics"]["eval_loss"] == _final(tmp / "again")["metrics"]["eval_loss"]
    assert [t["partners"] for t in full] != [t["partners"] for t in seed1]
    assert [t["ratio"] for t in full] != [t["ratio"] for t in seed1]
    assert [t["loss"] for t in full] != [t["loss"] for t in seed1]


def test_checkpoint_of_other_settings_or_data_is_refused(runs, tmp_path):
    tmp, _, _ = runs
    import shutil

    for extra, named in (
        (("--tau", "0.5"), "tau: checkpoint=0.3, this run=0.5"),
        (("--train-size", "36"), "train_examples"),
    ):
        out = tmp_path / "other"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(tmp / "full" / "checkpoint-4", out / "checkpoint-4")
        proc = _run(out, tmp_path / "t.jsonl", "--resume", *extra)
        assert proc.returncode != 0
        assert "Cannot resume from" in proc.stderr and named in proc.stderr, proc.stderr[-2000:]


# ---------------------------------------------------------------------- with partner refreshes (beyond the paper)
# 40 examples in batches of 4: 10 steps per epoch; 30 steps = 3 epochs; the index is rebuilt at steps 11 and 21.
REFRESH = ("--refresh-epochs", "1", "--max-steps", "30")


@pytest.fixture(scope="module")
def refresh_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refresh")
    _ok(_run(tmp / "full", tmp / "full.jsonl", *REFRESH))
    # Killed mid-epoch 1 (last checkpoint: step 12, after the first refresh) and at the end of epoch 1 (last
    # checkpoint: step 20, the second refresh not yet done).
    for kill in (15, 22):
        name = f"killed{kill}"
        _run(tmp / name, tmp / f"{name}.jsonl", *REFRESH, "--kill-at-step", str(kill), expect_kill=True)
        _ok(_run(tmp / name, tmp / f"{name}.jsonl", *REFRESH, "--resume"))
    return tmp


@pytest.mark.parametrize("kill, checkpoint", [(15, 12), (22, 20)])
def test_resumed_run_refreshes_at_the_same_epochs_with_the_same_partners(refresh_runs, kill, checkpoint):
    tmp = refresh_runs
    full = {t["step"]: t for t in _trace(tmp / "full.jsonl")}
    assert len({full[s]["index"] for s in range(1, 11)}) == 1
    assert full[10]["index"] != full[11]["index"] != full[21]["index"]  # rebuilt at epochs 1 and 2
    trace = _trace(tmp / f"killed{kill}.jsonl")
    resumed = trace[kill:]
    assert [t["step"] for t in resumed] == list(range(checkpoint + 1, 31))
    for t in resumed:
        ref = full[t["step"]]
        assert (t["index"], t["partners"], t["site"], t["ratio"]) == (
            ref["index"],
            ref["partners"],
            ref["site"],
            ref["ratio"],
        )
        assert abs(t["loss"] - ref["loss"]) <= LOSS_TOLERANCE
    state = json.loads((tmp / f"killed{kill}" / f"checkpoint-{checkpoint}" / "dmix_state.json").read_text())
    assert state["refreshed_epoch"] == 1
    assert (tmp / f"killed{kill}" / f"checkpoint-{checkpoint}" / "dmix_refresh_embeddings.pt").is_file()
    # The resumed process itself refreshed only where the uninterrupted run did after the checkpoint.
    assert _final(tmp / f"killed{kill}")["refreshes"] == ([2.0] if checkpoint < 21 else [])
    assert _final(tmp / "full")["refreshes"] == [1.0, 2.0]
    assert _final(tmp / f"killed{kill}")["metrics"]["eval_loss"] == pytest.approx(
        _final(tmp / "full")["metrics"]["eval_loss"], abs=LOSS_TOLERANCE
    )


# ---------------------------------------------------------------------- SIGTERM: save, stop, resume


def test_sigterm_saves_a_checkpoint_stops_and_resumes_exactly(runs, tmp_path):
    tmp, _, _ = runs
    out, trace = tmp_path / "term", tmp_path / "term.jsonl"
    # SIGTERM arrives during step 7 (no save is due: checkpoints every 4 steps).
    first = _run(out, trace, "--sigterm-at-step", "7")
    _ok(first)  # a clean stop, not a crash
    assert json.loads((out / "stopped.json").read_text()) == {"signal": "SIGTERM", "step": 7}
    assert "SIGTERM received: finishing the current step" in first.stderr
    assert json.loads((out / "checkpoint-7" / "dmix_state.json").read_text())["batches_consumed"] == 7
    assert [t["step"] for t in _trace(trace)] == list(range(1, 8))
    _ok(_run(out, trace, "--resume"))
    full = _trace(tmp / "full.jsonl")
    resumed = _trace(trace)
    assert [t["step"] for t in resumed] == list(range(1, 13))  # nothing lost, nothing repeated
    for a, b in zip(resumed, full, strict=True):
        assert (a["partners"], a["site"], a["ratio"]) == (b["partners"], b["site"], b["ratio"])
        assert abs(a["loss"] - b["loss"]) <= LOSS_TOLERANCE
