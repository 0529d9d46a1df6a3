"""run_dmix.py beyond text: images (scikit-learn's digits) and audio (a generated FSDD-like Parquet of WAV clips).

Each CLI test trains a small ``config:NAME`` model for a few steps and checks what a user gets: ``results.json``
records the modality and the metrics, the card names the image/audio task, the processing class is saved beside the
model and ``transformers.pipeline`` classifies a new input with the published folder. The real FSDD file is never
read here: the clips are sine waves written by the test.
"""

from __future__ import annotations

import io
import json
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import run_dmix  # noqa: E402
from hf_dmix.data import DataError  # noqa: E402
from hf_dmix.media import MODEL_CONFIGS, build_model_from_config, count_parameters, read_wav  # noqa: E402

RATE = 8000


@pytest.fixture(autouse=True)
def _single_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _clip(label: int, rng: np.random.Generator) -> np.ndarray:
    """0.1–0.25 s of a tone whose pitch is the class, with a little noise."""
    t = np.arange(int(rng.integers(800, 2001))) / RATE
    return 0.5 * np.sin(2 * np.pi * (300 + 500 * label) * t) + 0.02 * rng.standard_normal(len(t))


def write_fsdd_like(path: Path, labels: int = 3, speakers: int = 2, per_speaker: int = 8) -> Path:
    """A Parquet file with FSDD's columns; recordings with index 0–1 form the official test split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    rows = []
    for label in range(labels):
        for s in range(speakers):
            for index in range(per_speaker):
                clip = _clip(label, rng)
                rows.append(
                    {
                        "file": f"{label}_spk{s}_{index}.wav",
                        "label": label,
                        "speaker": f"spk{s}",
                        "index": index,
                        "split": "test" if index < 2 else "train",
                        "sampling_rate": RATE,
                        "num_samples": len(clip),
                        "wav": _wav_bytes(clip),
                    }
                )
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _args(out: Path, *extra: str) -> list[str]:
    return [
        "--output_dir",
        str(out),
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "16",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--learning_rate",
        "1e-3",
        "--embedding_batch_size",
        "16",
        *extra,
    ]


def _card_header(out: Path) -> dict:
    text = (out / "README.md").read_text(encoding="utf-8")
    return yaml.safe_load(text[4:].split("\n---\n", 1)[0])


def _check_outputs(out: Path, modality: str, results: dict) -> dict:
    saved = json.loads((out / "results.json").read_text())
    assert saved["modality"] == results["modality"] == modality
    for split in ("validation", "test"):
        assert {"accuracy", "macro_f1", "weighted_f1", "loss"} <= set(saved["metrics"][split])
        assert np.isfinite(saved["metrics"][split]["macro_f1"])
    assert saved["data_diagnostics"] is None  # text checks are skipped
    assert saved["model_parameters"] > 0
    header = _card_header(out)
    assert header["pipeline_tag"] == f"{modality}-classification"
    assert f"{modality}-classification" in header["tags"] and "text-classification" not in header["tags"]
    assert header["model-index"][0]["results"][0]["task"]["type"] == f"{modality}-classification"
    body = (out / "README.md").read_text(encoding="utf-8")
    assert f'pipeline("{modality}-classification"' in body
    assert (out / "preprocessor_config.json").is_file()
    assert json.loads((out / "dmix_config.json").read_text())["modality"] == modality
    return saved


def test_image_cli_on_digits(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "vit"
    results = run_dmix.main(
        _args(
            out,
            "--model_name_or_path",
            "config:vit-tiny",
            "--dataset_name",
            "digits",
            "--preset",
            "dmix",
            "--max_train_samples",
            "80",
            "--max_eval_samples",
            "40",
        )
    )
    saved = _check_outputs(out, "image", results)
    assert saved["model_type"] == "vit" and saved["dmix"]["partner_distance"] == "hyperbolic"
    # The fixed split of the 1,797 digits (20 % test, 10 % validation, stratified, seed 42) before subsampling.
    assert saved["data"]["sizes"] == {"train": 1259, "validation": 179, "test": 359}
    assert saved["data"]["used_sizes"] == {"train": 80, "validation": 40, "test": 40}
    assert saved["partner_index"]["candidates_per_example"] > 0

    from PIL import Image
    from transformers import pipeline

    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    predictions = pipeline("image-classification", model=str(out))(image)
    assert {p["label"] for p in predictions} <= {str(d) for d in range(10)}


@pytest.mark.parametrize("model,source", [("ast-tiny", "dataset_name"), ("wav2vec2-tiny", "train_file")])
def test_audio_cli_on_generated_clips(tmp_path, model, source):
    data = write_fsdd_like(tmp_path / "fsdd.parquet")
    out = tmp_path / model
    where = (
        ["--dataset_name", "fsdd", "--data_dir", str(tmp_path)]
        if source == "dataset_name"
        else ["--train_file", str(data)]
    )
    overrides = {"ast-tiny": {"max_length": 24, "num_mel_bins": 16, "num_hidden_layers": 2}}.get(
        model, {"num_hidden_layers": 2}
    )
    results = run_dmix.main(
        _args(
            out,
            "--model_name_or_path",
            f"config:{model}",
            *where,
            "--preset",
            "dmix",
            "--model_config_overrides",
            json.dumps(overrides),
            "--tau",
            "0.5",
        )
    )
    saved = _check_outputs(out, "audio", results)
    # The official split by recording index (0–1: test), validation carved from train by label x speaker.
    assert saved["data"]["sizes"]["test"] == 12 and saved["data"]["sampling_rate"] == RATE
    assert saved["data"]["split_method"] == "stratified by label x speaker"
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("id,label,prediction") and len(rows) == 13 and rows[1].endswith(tuple("0123456789"))

    from transformers import pipeline

    clip = _clip(1, np.random.default_rng(5)).astype(np.float32)
    predictions = pipeline("audio-classification", model=str(out))({"raw": clip, "sampling_rate": RATE})
    assert {p["label"] for p in predictions} <= {"0", "1", "2"}


def test_modality_is_inferred_from_the_model_and_contradictions_are_errors(tmp_path):
    def modality(*flags):
        model_args, data_args, *_ = run_dmix.parse_args(["--output_dir", str(tmp_path), *flags])
        return run_dmix.resolve_modality(model_args, data_args)

    assert modality("--model_name_or_path", "config:vit-tiny") == "image"
    assert modality("--model_name_or_path", "config:ast-tiny") == "audio"
    assert modality("--model_name_or_path", "config:wav2vec2", "--modality", "audio") == "audio"
    with pytest.raises(DataError, match="--modality is audio, the model 'config:vit-tiny' is image"):
        modality("--model_name_or_path", "config:vit-tiny", "--modality", "audio")
    with pytest.raises(DataError, match="the model 'config:ast-tiny' is audio, --dataset_name digits is image"):
        modality("--model_name_or_path", "config:ast-tiny", "--dataset_name", "digits")
    assert modality("--model_name_or_path", "./no-such-model", "--dataset_name", "fsdd") == "audio"
    with pytest.raises(DataError, match="unknown config"):
        modality("--model_name_or_path", "config:bert")


def test_fsdd_without_the_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("DMIX_DATA_DIR", raising=False)
    with pytest.raises(DataError, match=r"fsdd\.parquet not found in .*--data_dir"):
        run_dmix.main(
            _args(
                tmp_path / "out",
                "--model_name_or_path",
                "config:ast-tiny",
                "--dataset_name",
                "fsdd",
                "--data_dir",
                str(tmp_path / "nowhere"),
            )
        )


def test_model_config_overrides_must_be_a_json_object(tmp_path):
    pytest.importorskip("sklearn")
    for bad, pattern in (("{not json", "not valid JSON"), ("[2]", "must be a JSON object")):
        with pytest.raises(DataError, match=pattern):
            run_dmix.main(
                _args(
                    tmp_path / "out",
                    "--model_name_or_path",
                    "config:vit-tiny",
                    "--dataset_name",
                    "digits",
                    "--model_config_overrides",
                    bad,
                )
            )


def test_read_wav_round_trip():
    samples = np.sin(np.linspace(0, 20, 500)) * 0.8
    decoded, rate = read_wav(_wav_bytes(samples, 16000))
    assert rate == 16000 and decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, samples, atol=1e-4)  # 16-bit quantisation, scaled by 32767 then 1/32768


def test_config_models_have_the_stated_sizes():
    labels = [str(d) for d in range(10)]
    sizes = {
        name: count_parameters(build_model_from_config(f"config:{name}", labels, image_size=8))
        for name in MODEL_CONFIGS
    }
    # The sizes README.md and docs/results/beyond-text.md state (10-class heads, 8×8 images for the vision models).
    assert sizes["vit-tiny"] == 136_650 and sizes["ast-tiny"] == 142_282 and sizes["wav2vec2-tiny"] == 130_650
