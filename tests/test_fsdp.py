"""FSDP2 (``fully_shard``) on CPU with 2 gloo processes: DMIX's embedding pass, partner index, mixing hooks and
gradients on a sharded tiny BERT, ViT and wav2vec2 equal a single unsharded process (worker: fsdp_script.py).

Tolerance: 1e-5 absolute and relative (float32; the sharded run all-gathers the same weights and reduce-scatters
the gradients, averaging two identical per-rank gradients, so only summation order differs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import load_rank_runs, run_two_ranks_and_one

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
CASES = ("bert", "vit", "wav2vec2")
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    run_two_ranks_and_one(HERE / "fsdp_script.py", out, master_port=29537)
    return load_rank_runs(out, CASES), out


@pytest.mark.parametrize("case", CASES)
def test_fsdp2_model_is_really_sharded(runs, case):
    _, out = runs
    for rank in (0, 1):
        info = json.loads((out / f"{case}_rank{rank}_of2.json").read_text())
        assert info["world_size"] == 2
        assert info["dtensor_params"] == info["params"] and info["plain_params"] == []
        assert info["fsdp_layers"] == 4  # 3 encoder layers + the root
    assert json.loads((out / f"{case}_rank0_of1.json").read_text())["dtensor_params"] == 0


@pytest.mark.parametrize("case", CASES)
def test_fsdp2_embedding_pass_and_partner_index_equal_one_process(runs, case):
    """Shards of 17 and 16 rows (5 and 4 batches): the shorter one pads its batch count, or the collective forward
    would hang; the gathered embeddings and the index are the same on both ranks and equal one process's."""
    res, _ = runs
    r0, r1, single = res[f"{case}_rank0_of2"], res[f"{case}_rank1_of2"], res[f"{case}_rank0_of1"]
    assert r0["embeddings"].shape[0] == 33
    assert torch.equal(r0["embeddings"], r1["embeddings"]) and torch.equal(r0["candidates"], r1["candidates"])
    torch.testing.assert_close(r0["embeddings"], single["embeddings"], **TOL)
    assert torch.equal(r0["candidates"], single["candidates"])
    assert torch.equal(r0["partner_ids"], single["partner_ids"])


@pytest.mark.parametrize("case", CASES)
def test_fsdp2_mixed_forward_and_gathered_gradients_equal_one_process(runs, case):
    res, _ = runs
    single = res[f"{case}_rank0_of1"]
    assert not torch.allclose(single["logits"], single["plain_logits"]), "mixing changed nothing: vacuous"
    for rank in (0, 1):
        r = res[f"{case}_rank{rank}_of2"]
        # The hooks fired on the sharded layers: mixed logits differ from the plain ones exactly as in one process.
        torch.testing.assert_close(r["logits"], single["logits"], **TOL)
        torch.testing.assert_close(r["plain_logits"], single["plain_logits"], **TOL)
        torch.testing.assert_close(r["loss"], single["loss"], **TOL)
        assert r["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            torch.testing.assert_close(r["grads"][name], grad, **TOL, msg=name)
