"""Real 2-process DDP (gloo, CPU) for an image (ViT) and an audio (wav2vec2, clips of different lengths) model,
against a single process over the same global batch (the text version: test_distributed.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import load_rank_runs, run_two_ranks_and_one

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
CASES = ("vit", "wav2vec2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-modal")
    run_two_ranks_and_one(HERE / "ddp_modal_script.py", out, master_port=29527)
    return load_rank_runs(out, CASES), out


@pytest.mark.parametrize("case", CASES)
def test_really_distributed_with_2b_row_batches(runs, case):
    _, out = runs
    for rank in (0, 1):
        info = json.loads((out / f"{case}_rank{rank}_of2.json").read_text())
        assert info["num_processes"] == 2 and "MULTI_CPU" in info["distributed_type"]
        assert info["steps"] == 3
        assert info["rows_seen"] == [[8, 4]] * 3  # per rank: 4 anchors + their 4 partners, one forward per step
    single = json.loads((out / f"{case}_rank0_of1.json").read_text())
    assert single["rows_seen"] == [[16, 8]] * 3


@pytest.mark.parametrize("case", CASES)
def test_ranks_share_embeddings_and_partner_index(runs, case):
    res, _ = runs
    r0, r1, single = res[f"{case}_rank0_of2"], res[f"{case}_rank1_of2"], res[f"{case}_rank0_of1"]
    assert torch.equal(r0["embeddings"], r1["embeddings"]) and torch.equal(r0["candidates"], r1["candidates"])
    # Sharded (audio: each shard padded to its own longest clip) and gathered, they equal one process's.
    torch.testing.assert_close(r0["embeddings"], single["embeddings"], atol=1e-5, rtol=1e-5)
    assert torch.equal(r0["candidates"], single["candidates"])


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_equal_one_process_over_the_global_batch(runs, case):
    res, _ = runs
    a, b = res[f"{case}_rank0_of2"]["params"], res[f"{case}_rank1_of2"]["params"]
    single, initial = res[f"{case}_rank0_of1"]["params"], res[f"{case}_rank0_of1"]["initial"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
        torch.testing.assert_close(a[name], single[name], atol=1e-5, rtol=0, msg=name)
    moved = max(float((single[name] - initial[name]).abs().max()) for name in single)
    assert moved > 1e-2, "training barely moved the parameters: the comparison would be vacuous"
