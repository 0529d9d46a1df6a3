"""Engines DMIX runs on: DeepSpeed ZeRO-3 refusal, the FSDP-on-CPU warning, torch.compile (equal to eager, bounded
recompilations, no graph break) and its refusal with gradient checkpointing. FSDP2 itself: test_fsdp.py."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_sentences, tiny_model
from datasets import Dataset

from hf_dmix import DMixConfig, DMixTrainer
from hf_dmix.engines import deepspeed_zero_stage


@pytest.fixture
def data(tokenizer):
    texts, labels = make_sentences(24, seed=7)
    return Dataset.from_dict({"text": texts, "label": labels}).map(lambda b: tokenizer(b["text"]), batched=True)


def _args(tmp_path, **kw) -> DMixConfig:
    settings = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        per_device_train_batch_size=4,
        max_steps=6,
        logging_steps=1,
        learning_rate=1e-3,
        partner_distance="cosine",
        tau=0.5,
    )
    return DMixConfig(**{**settings, **kw})


def _trainer(args, tokenizer, data, **kw) -> DMixTrainer:
    return DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=1),
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        **kw,
    )


ZERO3 = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"}


def test_zero3_with_the_default_embedding_pass_is_refused_with_the_fix(tmp_path, tokenizer, data):
    # TrainingArguments needs deepspeed installed to accept the setting; the check reads the config dict itself.
    args = _args(tmp_path)
    args.deepspeed = ZERO3
    with pytest.raises(ValueError, match=r"ZeRO-3.*sentence_embeddings=.*embedding_model="):
        _trainer(args, tokenizer, data)
    # Embeddings from elsewhere: accepted; so are ZeRO-2 and no mixing.
    _trainer(args, tokenizer, data, sentence_embeddings=torch.randn(len(data), 8))
    args.deepspeed = {"zero_optimization": {"stage": 2}}
    _trainer(args, tokenizer, data)
    args.deepspeed = ZERO3
    args.mix_strategy = "none"
    _trainer(args, tokenizer, data)


def test_zero3_is_read_from_a_json_file_and_from_accelerate_launch(tmp_path, monkeypatch):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ZERO3))
    assert deepspeed_zero_stage(type("A", (), {"deepspeed": str(path)})()) == 3
    assert deepspeed_zero_stage(type("A", (), {"deepspeed": None})()) is None
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert deepspeed_zero_stage(type("A", (), {"deepspeed": None})()) == 3


def test_zero3_refusal_is_checked_again_when_training_starts(tmp_path, tokenizer, data):
    trainer = _trainer(_args(tmp_path), tokenizer, data)
    trainer.args.deepspeed = ZERO3  # e.g. a hyperparameter_search trial's settings
    with pytest.raises(ValueError, match="ZeRO-3"):
        trainer.train()


def test_fsdp_request_on_cpu_warns_that_it_trains_without_sharding(tmp_path, caplog, monkeypatch):
    with caplog.at_level("WARNING"):
        _args(tmp_path, fsdp=True, fsdp_config={"fsdp_version": 2})
    assert "FSDP was requested" in caplog.text and "use_cpu=True" in caplog.text and "DDP" in caplog.text
    caplog.clear()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate launch with an FSDP config
    with caplog.at_level("WARNING"):
        _args(tmp_path)
    assert "FSDP was requested" in caplog.text
    caplog.clear()
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    with caplog.at_level("WARNING"):
        _args(tmp_path)
    assert "FSDP was requested" not in caplog.text


def test_torch_compile_with_gradient_checkpointing_is_refused_before_training(tmp_path, tokenizer, data):
    args = _args(tmp_path, torch_compile=True, gradient_checkpointing=True)
    with pytest.raises(ValueError, match=r"torch_compile=True with gradient_checkpointing=True.*Turn off one"):
        _trainer(args, tokenizer, data)
    _trainer(_args(tmp_path, torch_compile=True, gradient_checkpointing=True, mix_strategy="none"), tokenizer, data)


def _losses(trainer: DMixTrainer) -> list[float]:
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def _compile_trainer(case, args, tokenizer, data):
    if case == "bert":
        return _trainer(args, tokenizer, data)
    from test_modalities import _clip_dataset, _extractor, _image_dataset, build

    if case == "vit":
        return DMixTrainer(model=build("vit", seed=1).train(), args=args, train_dataset=_image_dataset(24, seed=7))
    return DMixTrainer(
        model=build(case, seed=1).train(),
        args=args,
        train_dataset=_clip_dataset(24, seed=7),
        processing_class=_extractor(),
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", ["bert", "vit", "wav2vec2"])
def test_torch_compile_trains_like_eager_with_bounded_recompilations(case, tmp_path, tokenizer, data, caplog):
    """Two mixing sites and six steps, each with its own ratio: one graph per site plus the one recompilation when the
    ratio (a Python float) first changes and dynamo makes it a dynamic input — not one per step; no graph break.
    wav2vec2: the same losses, but the model's own forward breaks the graph every step, which DMIX warns about.
    The aot_eager backend (dynamo + AOTAutograd, no code generation) keeps the test short on the CPU; graph capture,
    guards and recompilations are dynamo's and do not depend on the backend."""
    from torch._dynamo.utils import counters

    eager = _losses(_compile_trainer(case, _args(tmp_path / "eager", mix_layers=[1, 2]), tokenizer, data))
    torch._dynamo.reset()
    counters.clear()
    args = _args(tmp_path / "compiled", mix_layers=[1, 2], torch_compile=True, torch_compile_backend="aot_eager")
    with caplog.at_level("WARNING"):
        trainer = _compile_trainer(case, args, tokenizer, data)
    trainer_warned = "torch_compile=True with a wav2vec2/HuBERT classifier" in caplog.text
    assert trainer_warned == (case == "wav2vec2")
    compiled = _losses(trainer)
    sites = {h["dmix/mix_layer"] for h in trainer.state.log_history if "dmix/mix_layer" in h}
    assert len(compiled) == len(eager) == 6 and sites == {1, 2}
    assert compiled == pytest.approx(eager, abs=1e-5)
    if case == "wav2vec2":  # correct but no gain: the model's own forward breaks the graph (warned)
        assert counters["graph_break"] and trainer_warned
        return
    assert 1 <= counters["stats"]["unique_graphs"] <= len(sites) + 1 < len(compiled)
    assert not counters["graph_break"], dict(counters["graph_break"])


def _variant(name: str) -> dict:
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parent.parent / "accelerate_config.yaml").read_text(encoding="utf-8")
    block = re.search(rf"^# --- variant: {name} ---\n(.*?)^# --- end ---", text, re.M | re.S)
    assert block, f"accelerate_config.yaml has no {name} variant"
    return yaml.safe_load("\n".join(line[2:] for line in block.group(1).splitlines()))


def test_accelerate_config_variants_parse_as_accelerate_configs(tmp_path):
    from pathlib import Path

    import yaml
    from accelerate.commands.config.config_args import ClusterConfig

    main = yaml.safe_load((Path(__file__).resolve().parent.parent / "accelerate_config.yaml").read_text())
    assert main["distributed_type"] == "MULTI_GPU" and main["num_machines"] == 1  # the uncommented default: DDP
    fsdp = _variant("fsdp2")
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_version"] == 2
    assert fsdp["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] is False and fsdp["use_cpu"] is False
    nodes = _variant("multi-node")
    assert nodes["num_machines"] == 2 and nodes["num_processes"] % nodes["num_machines"] == 0
    assert {"main_process_ip", "main_process_port", "machine_rank"} <= nodes.keys()
    for i, config in enumerate((main, fsdp, nodes)):
        path = tmp_path / f"{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        loaded = ClusterConfig.from_yaml_file(str(path))  # refuses keys accelerate does not know
        assert str(loaded.distributed_type).endswith(config["distributed_type"])


def test_group_by_length_trains_and_mixes(tmp_path, tokenizer, data):
    """``train_sampling_strategy="group_by_length"`` (5.x's ``group_by_length``): the length-grouped sampler orders
    the anchors; the collator still adds one partner per anchor and every step mixes."""
    args = _args(tmp_path, train_sampling_strategy="group_by_length", max_steps=3)
    trainer = _trainer(args, tokenizer, data)
    steps = [h for h in trainer.train() and trainer.state.log_history if "dmix/ratio" in h]
    assert len(steps) == 3 and all(0.0 <= h["dmix/ratio"] <= 1.0 for h in steps)
    assert type(trainer._get_train_sampler()).__name__ == "LengthGroupedSampler"


def _vit_update(tmp_path, batch_size, accumulation):
    from test_modalities import _image_dataset, build

    model = build("vit", seed=3)
    dataset = _image_dataset(16, seed=7)
    args = _args(
        tmp_path / f"{batch_size}x{accumulation}",
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        max_grad_norm=0.0,
        partner_order="nearest",
        tau=1 / 15,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        embedding_batch_size=8,
    )
    trainer = DMixTrainer(model=model, args=args, train_dataset=dataset)
    trainer.sample_mixing = lambda: (2, 0.3)
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer.train()
    return before, {k: v.detach().clone() for k, v in model.named_parameters()}


def test_vit_gradient_accumulation_matches_large_batch(tmp_path):
    before, big = _vit_update(tmp_path, 8, 1)
    _, accumulated = _vit_update(tmp_path, 4, 2)
    assert max((big[k] - before[k]).abs().max().item() for k in big) > 1e-3, "too small an update to compare"
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], atol=1e-5, rtol=0, msg=name)


def test_embedding_pass_makes_equally_many_forward_calls_on_every_process(tokenizer, data):
    """Shards of 5 and 4 rows in batches of 2: 3 and 2 batches, so the second process adds one one-row filler batch
    (its output dropped) — a forward through a sharded model (FSDP2) is a collective every process must join."""
    from transformers import DataCollatorWithPadding

    from hf_dmix.embeddings import embed_training_set
    from hf_dmix.indexer import Sharding
    from hf_dmix.trainset import feature_rows

    model = tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=1)
    calls = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    n, batch = 9, 2
    dataset = data.select(range(n))
    common = dict(
        model=model,
        feature_rows=feature_rows(dataset, {"input_ids", "attention_mask"}),
        collate=DataCollatorWithPadding(tokenizer),
        batch_size=batch,
    )
    whole = embed_training_set(n, **common)
    for rank, expected in ((0, [2, 2, 1]), (1, [2, 2, 1])):
        sharding = Sharding(world_size=2, rank=rank)
        calls.clear()
        local = embed_training_set(n, rows=sharding.rows(n), num_batches=-(-sharding.shard_size(n) // batch), **common)
        assert calls == expected
        rows = sharding.rows(n)
        torch.testing.assert_close(local, whole[rows.start : rows.stop], atol=1e-5, rtol=1e-5)


def test_embedding_pass_refuses_weights_that_are_not_in_the_process(tokenizer):
    """FSDP's cpu_ram_efficient_loading leaves other ranks' weights on ``meta`` until the engine broadcasts them."""
    from hf_dmix.embeddings import embed_batches

    model = tiny_model("bert", vocab_size=tokenizer.vocab_size).to("meta")
    batch = {"input_ids": torch.ones(2, 4, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"meta tensors.*cpu_ram_efficient_loading.*sentence_embeddings="):
        embed_batches(model, [batch], show_progress=False)
