"""Real 2-process DDP (gloo, CPU) against a single process over the same global batch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_rank_runs, metrics_from_predictions, run_script, run_two_ranks_and_one

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    run_two_ranks_and_one(HERE / "ddp_script.py", out, master_port=29517)
    return load_rank_runs(out), out


def test_really_distributed(runs):
    _, out = runs
    for rank in (0, 1):
        info = json.loads((out / f"rank{rank}_of2.json").read_text())
        assert info["num_processes"] == 2 and "MULTI_CPU" in info["distributed_type"]
        assert info["ddp_find_unused_parameters"] is False and info["ddp_broadcast_buffers"] is False
        assert info["steps"] == 3


def test_ranks_hold_identical_parameters(runs):
    res, _ = runs
    a, b = res["rank0_of2"]["params"], res["rank1_of2"]["params"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_ranks_share_embeddings_and_partner_index(runs):
    res, _ = runs
    r0, r1, single = res["rank0_of2"], res["rank1_of2"], res["rank0_of1"]
    assert torch.equal(r0["embeddings"], r1["embeddings"])
    assert torch.equal(r0["candidates"], r1["candidates"])
    # Sharded and gathered, the index equals the one a single process builds.
    torch.testing.assert_close(r0["embeddings"], single["embeddings"], atol=1e-5, rtol=1e-5)
    assert torch.equal(r0["candidates"].sort(dim=1).values, single["candidates"].sort(dim=1).values)


def test_two_ranks_equal_one_process_over_the_global_batch(runs):
    res, _ = runs
    ddp, single, initial = res["rank0_of2"]["params"], res["rank0_of1"]["params"], res["rank0_of1"]["initial"]
    for name in ddp:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-5, rtol=0, msg=name)
    moved = max(float((single[name] - initial[name]).abs().max()) for name in single)
    assert moved > 1e-2, "training barely moved the parameters: the comparison would be vacuous"


def test_accelerate_config_launches_two_processes(tmp_path):
    """`accelerate launch --config_file accelerate_config.yaml run_dmix.py` (2 CPU processes over gloo)."""
    sys.path.insert(0, str(HERE))
    from conftest import make_sentences, tiny_model, train_tokenizer

    texts, labels = make_sentences(40, seed=8)
    tokenizer = train_tokenizer(texts)
    model_dir = tmp_path / "model"
    tiny_model("bert", vocab_size=tokenizer.vocab_size).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "".join(f"{t},{['neg', 'pos'][y]}\n" for t, y in zip(texts, labels, strict=True)))
    out = tmp_path / "out"
    run_script(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(HERE.parent / "accelerate_config.yaml"),
            "--num_processes",
            "2",
            "--mixed_precision",
            "no",
            "--main_process_port",
            "29519",
            str(HERE.parent / "run_dmix.py"),
            "--model_name_or_path",
            str(model_dir),
            "--train_file",
            str(data),
            "--output_dir",
            str(out),
            "--max_steps",
            "3",
            "--per_device_train_batch_size",
            "4",
            "--use_cpu",
            "true",
            "--report_to",
            "none",
            "--save_strategy",
            "no",
            "--disable_tqdm",
            "true",
            "--preset",
            "dmix",
        ],
    )
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2
    assert results["train"]["epoch"] > 0
    recomputed = metrics_from_predictions(out / "predictions.csv")
    assert results["metrics"]["test"]["macro_f1"] == pytest.approx(recomputed["macro_f1"])
    assert recomputed["rows"] == results["data"]["sizes"]["test"]  # every test row predicted once, not once per rank
