"""The tracker of a run (``report_to``) sees DMIX: the step metrics, the partner-index statistics and the pictures.

Each test runs the command line on a tiny BERT and the bundled demo data with a real tracker, then reads what the
tracker stored back with that tracker's own reader: TensorBoard event files (``EventAccumulator``) and trackio's
local SQLite store (``TRACKIO_DIR``; trackio needs no network for it).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_sentences, tiny_model, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import run_dmix  # noqa: E402

STEP_METRICS = ("dmix/mix_layer", "dmix/ratio", "dmix/partner_same_label")
INDEX_METRICS = ("candidates_per_example", "distinct_candidate_share", "top1pct_slot_share", "same_label_share")
STEPS = 3


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    texts = make_sentences(60, seed=0, num_labels=3)[0]
    tokenizer = train_tokenizer(texts)
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_model("bert", num_labels=2, vocab_size=tokenizer.vocab_size).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _args(model_dir: Path, out: Path, report_to: str) -> list[str]:
    return [
        "--model_name_or_path",
        str(model_dir),
        "--dataset_name",
        "demo",
        "--preset",
        "dmix",
        "--tau",
        "0.5",
        "--max_train_samples",
        "60",
        "--max_eval_samples",
        "40",
        "--max_seq_length",
        "24",
        "--max_steps",
        str(STEPS),
        "--logging_steps",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "16",
        "--use_cpu",
        "true",
        "--save_strategy",
        "no",
        "--save_model",
        "false",
        "--disable_tqdm",
        "true",
        "--plot_partners",
        "true",
        "--report_to",
        report_to,
        "--output_dir",
        str(out),
    ]


def _read_tensorboard(log_root: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list]]:
    """Every scalar (tag -> [(step, value)]) and image (tag -> events) in the event files under ``log_root``."""
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    images: dict[str, list] = {}
    folders = sorted({p.parent for p in log_root.rglob("events.out.tfevents.*")})
    assert folders, f"no TensorBoard event files under {log_root}"
    for folder in folders:
        acc = EventAccumulator(str(folder), size_guidance={SCALARS: 0, IMAGES: 0}).Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["images"]:
            images.setdefault(tag, []).extend(acc.Images(tag))
    return scalars, images


def test_tensorboard_receives_dmix_scalars_and_partner_pictures(tmp_path, tiny_model_dir):
    """``--report_to tensorboard --plot_partners``: real event files hold the DMIX step metrics at every logged step,
    the partner-index statistics (equal to results.json's) and both pictures, pixel for pixel the PNGs written."""
    from PIL import Image

    out = tmp_path / "out"
    results = run_dmix.main(_args(tiny_model_dir, out, "tensorboard"))
    scalars, images = _read_tensorboard(out / "runs")

    for name in STEP_METRICS:
        logged = scalars.get(f"train/{name}")
        assert logged is not None, sorted(scalars)
        assert [step for step, _ in logged] == list(range(1, STEPS + 1))
    assert all(0.0 <= v <= 1.0 for _, v in scalars["train/dmix/ratio"])
    assert all(v == int(v) for _, v in scalars["train/dmix/mix_layer"])
    stats = results["partner_index"]
    for name in INDEX_METRICS:
        logged = scalars.get(f"train/dmix/partner_index/{name}")
        assert logged is not None, sorted(scalars)
        assert len(logged) == 1 and logged[0][1] == pytest.approx(stats[name], rel=1e-6)  # once per index
    assert scalars["train/dmix/partner_index/candidates_per_example"][0][1] == 30  # ⌈τ · 59⌉ others, τ = 0.5

    for name in ("partners", "k_occurrence"):
        events = images.get(f"dmix/{name}")
        assert events, sorted(images)
        written = Image.open(out / f"{name}.png").convert("RGB")
        logged = Image.open(io.BytesIO(events[-1].encoded_image_string)).convert("RGB")
        assert (events[-1].width, events[-1].height) == written.size
        assert logged.tobytes() == written.tobytes()


def test_trackio_receives_dmix_scalars_and_partner_pictures(tmp_path, tiny_model_dir):
    """``--report_to trackio``, offline: trackio's local store holds the DMIX step metrics, the partner-index
    statistics and both pictures (as trackio images, their files in trackio's media folder)."""
    pytest.importorskip("trackio", reason="trackio is in the test extra; see README 'Trackers'")
    store = tmp_path / "trackio"
    out = tmp_path / "out"
    # TRACKIO_DIR is read when trackio is imported: a process of its own for the run and for reading back.
    env = {
        **os.environ,
        "TRACKIO_DIR": str(store),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    args = _args(tiny_model_dir, out, "trackio") + ["--project", "dmix-test", "--run_name", "tiny"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_dmix.py"), *args], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    read = (
        "import json; from trackio.sqlite_storage import SQLiteStorage as S; "
        "print(json.dumps(S.get_logs('dmix-test', 'tiny'), default=str))"
    )
    back = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, env=env, timeout=300)
    assert back.returncode == 0, back.stderr[-4000:]
    logs = json.loads(back.stdout.strip().splitlines()[-1])

    for name in STEP_METRICS:
        # TrackioCallback logs the global step as a value (trackio numbers its own steps from 0).
        assert sorted(e["train/global_step"] for e in logs if f"train/{name}" in e) == list(range(1, STEPS + 1))
    stats = json.loads((out / "results.json").read_text())["partner_index"]
    for name in INDEX_METRICS:
        logged = [e[f"train/dmix/partner_index/{name}"] for e in logs if f"train/dmix/partner_index/{name}" in e]
        assert logged == [pytest.approx(stats[name], rel=1e-6)]
    for name in ("partners", "k_occurrence"):
        pictures = [e[f"dmix/{name}"] for e in logs if f"dmix/{name}" in e]
        assert len(pictures) == 1 and pictures[0]["_type"] == "trackio.image", logs
        assert (store / "media" / pictures[0]["file_path"]).is_file()
