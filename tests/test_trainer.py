"""DMixTrainer end to end on tiny models: training, evaluation without mixing, gradient accumulation, bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_sentences, tiny_model
from datasets import Dataset
from transformers import AutoConfig, AutoModelForSequenceClassification, DataCollatorWithPadding, TrainingArguments

from hf_dmix import DMixConfig, DMixDataCollator, DMixTrainer, pairwise_distance, to_poincare_ball
from hf_dmix.mixing import MIX_STRATEGIES
from hf_dmix.partners import PARTNER_DISTANCES


def _args(tmp_path, **kw) -> DMixConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        max_steps=3,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        tau=0.3,
    )
    defaults.update(kw)
    return DMixConfig(**defaults)


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("strategy", MIX_STRATEGIES)
@pytest.mark.parametrize("distance", PARTNER_DISTANCES)
def test_train_every_strategy_and_distance(tmp_path, tokenizer, train_dataset, strategy, distance):
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    before = _params(model)
    args = _args(tmp_path, mix_strategy=strategy, partner_distance=distance)
    trainer = DMixTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer)
    activations = []
    if trainer.mixer is not None:
        original = trainer.mixer.activate
        trainer.mixer.activate = lambda *a, **k: (activations.append(a), original(*a, **k))[1]
    result = trainer.train()
    assert result.global_step == 3
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert changed, "training did not change any parameter"
    assert torch.isfinite(torch.tensor(result.training_loss))
    if strategy == "none":
        assert trainer.partner_index is None and trainer.mixer is None
        return
    assert len(activations) == 3  # one mixed forward per step
    n = len(train_dataset)
    index = trainer.partner_index
    assert index is not None and index.num_examples == n
    expected_k = n - 1 if distance == "random" else max(1, -(-3 * (n - 1) // 10))
    assert index.candidates_per_example == expected_k
    sites = {a[0] for a in activations}
    if strategy == "input":
        assert sites == {0}
    elif strategy == "sentence":
        assert sites == {trainer.num_encoder_layers + 1}
    else:
        assert sites <= set(range(1, trainer.num_encoder_layers + 1))
    # Hooks are removed after training: the model is a plain classifier again.
    assert not trainer.mixer._handles


def test_evaluate_does_not_mix(tmp_path, tokenizer, train_dataset):
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    args = _args(tmp_path, mix_layers=[2])
    trainer = DMixTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=train_dataset, processing_class=tokenizer
    )
    trainer.train()
    calls = []
    trainer.mixer.activate = lambda *a, **k: calls.append(a)
    trainer.mixer.attach()  # even with hooks attached, evaluation must run the plain forward
    metrics = trainer.evaluate()
    trainer.mixer.detach()
    assert calls == []
    # eval_loss equals the plain cross-entropy of the model over the evaluation set.
    model.eval()
    collate = DataCollatorWithPadding(tokenizer)
    feats = [
        {k: train_dataset[i][k] for k in ("input_ids", "attention_mask", "label")} for i in range(len(train_dataset))
    ]
    losses = []
    with torch.no_grad():
        for s in range(0, len(feats), 8):
            batch = collate(feats[s : s + 8])
            labels = batch.pop("labels")
            losses.append(F.cross_entropy(model(**batch).logits, labels))
    assert metrics["eval_loss"] == pytest.approx(float(torch.stack(losses).mean()), abs=1e-5)


def _one_update(tmp_path, tokenizer, dataset, batch_size, accumulation, tag):
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=3)
    args = _args(
        tmp_path / tag,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        max_grad_norm=0.0,
        partner_distance="cosine",
        partner_order="nearest",
        tau=1 / (len(dataset) - 1),  # exactly one candidate per example: partners are deterministic
        lr_scheduler_type="constant",
        weight_decay=0.0,
    )
    trainer = DMixTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.sample_mixing = lambda: (2, 0.3)
    before = _params(model)
    trainer.train()
    return before, _params(model)


def test_gradient_accumulation_matches_large_batch(tmp_path, tokenizer, train_dataset):
    before, big = _one_update(tmp_path, tokenizer, train_dataset, 8, 1, "b8")
    _, accumulated = _one_update(tmp_path, tokenizer, train_dataset, 4, 2, "b4x2")
    moved = max((big[k] - before[k]).abs().max().item() for k in big)
    assert moved > 1e-3, "the update is too small for the comparison to mean anything"
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], atol=1e-5, rtol=0)


def test_precomputed_embeddings_and_torch_dataset(tmp_path, tokenizer, train_dataset):
    rows = [
        {k: train_dataset[i][k] for k in ("input_ids", "attention_mask", "label")} for i in range(len(train_dataset))
    ]
    n = len(rows)
    # Two tight clusters: nearest partners must come from the anchor's own cluster.
    emb = torch.zeros(n, 4)
    emb[: n // 2, 0] = 1.0
    emb[n // 2 :, 1] = 1.0
    emb += 0.01 * torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    args = _args(tmp_path, partner_distance="euclidean", partner_order="nearest", tau=0.2)
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    trainer = DMixTrainer(
        model=model, args=args, train_dataset=rows, processing_class=tokenizer, sentence_embeddings=emb
    )
    index = trainer.build_partner_index()
    cluster = torch.arange(n) >= n // 2
    cands = index.candidates.long()
    assert torch.equal(cluster[cands], cluster[:, None].expand_as(cands))
    trainer.train()
    assert trainer.state.global_step == 3


def test_embedding_model_option(tmp_path, tokenizer, train_dataset):
    encoder_dir = tmp_path / "encoder"
    tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=7).save_pretrained(encoder_dir)
    tokenizer.save_pretrained(encoder_dir)
    args = _args(tmp_path, embedding_model=str(encoder_dir), embedding_text_column="text")
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    emb = trainer.compute_sentence_embeddings()
    assert emb.shape == (len(train_dataset), 32)
    # Differs from the fine-tuned model's own embeddings (another encoder, other weights).
    own = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    ).compute_sentence_embeddings()
    assert not torch.allclose(emb, own)
    bad = _args(tmp_path, embedding_model=str(encoder_dir), embedding_text_column="sentence")
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=bad,
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match=r"'sentence'.*'text'"):
        trainer.compute_sentence_embeddings()


def test_own_model_embeddings_are_mean_pooled_last_layer(tmp_path, tokenizer, train_dataset):
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    trainer = DMixTrainer(model=model, args=_args(tmp_path), train_dataset=train_dataset, processing_class=tokenizer)
    emb = trainer.compute_sentence_embeddings()
    row = train_dataset[5]
    with torch.no_grad():
        out = model.bert(input_ids=torch.tensor([row["input_ids"]]))
    torch.testing.assert_close(emb[5], out.last_hidden_state[0].mean(0), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"tau": 0.0}, r"tau must lie in \(0, 1\].*0\.0"),
        ({"tau": 1.5}, r"tau must lie in \(0, 1\].*1\.5"),
        ({"tau": -0.2}, r"tau.*-0\.2"),
        ({"mix_alpha": 0.0}, r"mix_alpha must be > 0.*0\.0"),
        ({"mix_alpha": -1.0}, r"mix_alpha.*-1\.0"),
        (
            {"partner_distance": "manhattan"},
            r"partner_distance='manhattan'.*'hyperbolic', 'euclidean', 'cosine', 'random'",
        ),
        ({"mix_strategy": "token"}, r"mix_strategy='token'.*'hidden', 'input', 'sentence', 'none'"),
        ({"partner_order": "middle"}, r"partner_order='middle'.*'farthest', 'nearest'"),
        ({"mix_layers": [0, 2]}, r"mix_layers.*1-based.*\[0, 2\]"),
        ({"curvature": 0.0}, r"curvature must be > 0"),
        ({"ball_median_radius": 1.0}, r"ball_median_radius.*\(0, 1\)"),
        ({"ball_clip_quantile": 0.3}, r"ball_clip_quantile.*0\.3"),
    ],
)
def test_config_rejects_bad_values(tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        _args(tmp_path, **kwargs)


def test_mix_layer_out_of_range(tmp_path, tokenizer, train_dataset):
    with pytest.raises(ValueError, match=r"mix_layers \[4\] out of range.*3 encoder layers.*1\.\.3"):
        DMixTrainer(
            model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
            args=_args(tmp_path, mix_layers=[1, 4]),
            train_dataset=train_dataset,
            processing_class=tokenizer,
        )


def test_too_few_examples(tmp_path, tokenizer, train_dataset):
    with pytest.raises(ValueError, match="at least 2 training examples to draw partners from, got 1"):
        DMixTrainer(
            model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
            args=_args(tmp_path),
            train_dataset=train_dataset.select([0]),
            processing_class=tokenizer,
        )


def test_missing_labels(tmp_path, tokenizer, train_dataset):
    with pytest.raises(ValueError, match=r"no label column.*\['labels', 'label', 'label_ids'\].*input_ids"):
        DMixTrainer(
            model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
            args=_args(tmp_path),
            train_dataset=train_dataset.remove_columns("label"),
            processing_class=tokenizer,
        )


def test_float_labels_rejected(tmp_path, tokenizer, train_dataset):
    ds = train_dataset.remove_columns("label").add_column("label", [0.5] * len(train_dataset))
    with pytest.raises(ValueError, match=r"integer class ids.*0\.5"):
        DMixTrainer(
            model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
            args=_args(tmp_path),
            train_dataset=ds,
            processing_class=tokenizer,
        )


def test_string_labels_rejected_naming_class_encode_column(tmp_path, tokenizer, train_dataset):
    # A CSV label column read as strings stays strings after a map writes ints into it (datasets 5.x).
    labels = [str(v) for v in train_dataset["label"]]
    ds = train_dataset.remove_columns("label").add_column("label", labels)
    with pytest.raises(ValueError, match=r"integer class ids, got the string '[01]'.*class_encode_column\('label'\)"):
        DMixTrainer(
            model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
            args=_args(tmp_path),
            train_dataset=ds,
            processing_class=tokenizer,
        )


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"num_labels": 1}, r"num_labels=1.*regression"),
        ({"problem_type": "multi_label_classification"}, r"problem_type='multi_label_classification'"),
        ({"problem_type": "regression", "num_labels": 3}, r"problem_type='regression'"),
    ],
)
def test_non_single_label_heads_rejected(tmp_path, tokenizer, train_dataset, overrides, pattern):
    num_labels = overrides.pop("num_labels", 2)
    model = tiny_model("bert", num_labels=num_labels, vocab_size=tokenizer.vocab_size, **overrides)
    with pytest.raises(ValueError, match=pattern):
        DMixTrainer(model=model, args=_args(tmp_path), train_dataset=train_dataset, processing_class=tokenizer)


def test_unsupported_architecture(tmp_path, tokenizer, train_dataset):
    config = AutoConfig.for_model(
        "gpt2",
        n_embd=32,
        n_layer=2,
        n_head=4,
        vocab_size=64,
        num_labels=2,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
    )
    model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(
        ValueError, match=r"model_type 'gpt2'.*BERT \(bert\).*RoBERTa.*ELECTRA.*DistilBERT.*DeBERTa-v2.*ModernBERT"
    ):
        DMixTrainer(model=model, args=_args(tmp_path), train_dataset=train_dataset, processing_class=tokenizer)


def test_plain_training_arguments_rejected(tmp_path, tokenizer, train_dataset):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    with pytest.raises(TypeError, match="needs a DMixConfig, got TrainingArguments"):
        DMixTrainer(
            model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
            args=args,
            train_dataset=train_dataset,
            processing_class=tokenizer,
        )


def test_users_collator_is_wrapped_and_mixes(tmp_path, tokenizer, train_dataset):
    # Issue 16, item 0: the script's own collator builds the 2B-row batch; DMIX attaches the partners.
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path),
        train_dataset=train_dataset,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
    )
    assert isinstance(trainer.data_collator, DMixDataCollator)
    seen = []
    original = trainer.mixer.activate
    trainer.mixer.activate = lambda *a, **k: (seen.append(a), original(*a, **k))[1]
    assert trainer.train().global_step == 3 and len(seen) == 3
    features = train_dataset.remove_columns("text")
    batch = trainer.data_collator([{**features[i], "dmix_index": i} for i in range(4)])
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] % 8 == 0


def test_collator_that_reorders_rows_is_refused(tmp_path, tokenizer, train_dataset):
    from hf_dmix.collator import CollatorLayoutError

    pad = DataCollatorWithPadding(tokenizer)

    def sort_by_label(rows):
        return pad(sorted(rows, key=lambda r: r["label"]))

    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path, tau=1.0),
        train_dataset=train_dataset,
        data_collator=sort_by_label,
    )
    with pytest.raises(CollatorLayoutError, match="sort_by_label changed the order of the examples"):
        trainer.train()


def test_streaming_dataset_rejected(tmp_path, tokenizer, train_dataset):
    with pytest.raises(ValueError, match="map-style training set"):
        DMixTrainer(
            model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
            args=_args(tmp_path),
            train_dataset=train_dataset.to_iterable_dataset(),
            processing_class=tokenizer,
        )


def test_multiclass_and_explicit_collator(tmp_path, tokenizer):
    texts, labels = make_sentences(30, seed=2, num_labels=3)
    ds = Dataset.from_dict({"text": texts, "label": labels}).map(lambda b: tokenizer(b["text"]), batched=True)
    model = tiny_model("roberta", num_labels=3, vocab_size=tokenizer.vocab_size)
    trainer = DMixTrainer(
        model=model,
        args=_args(tmp_path, partner_distance="hyperbolic", partner_order="nearest"),
        train_dataset=ds,
        data_collator=DMixDataCollator(tokenizer),
    )
    trainer.train()
    stats = trainer.partner_index_stats
    assert stats["candidates_per_example"] == 9
    # The same-label share is exactly the share of same-label slots in the candidate lists.
    labels = torch.tensor(ds["label"])
    expected = (labels[trainer.partner_index.candidates.long()] == labels[:, None]).float().mean().item()
    assert stats["same_label_share"] == pytest.approx(expected)


def test_deepcopy_safe_config(tmp_path):
    args = _args(tmp_path, mix_layers=[3, 1, 3])
    assert args.mix_layers == [1, 3]
    assert copy.deepcopy(args).mix_layers == [1, 3]
    assert args.ddp_find_unused_parameters is False and args.ddp_broadcast_buffers is False
    assert args.learning_rate == 1e-3
    # Swapping TrainingArguments for DMixConfig changes no hyperparameter (issue 16, item 0a).
    plain, dmix = TrainingArguments(output_dir=str(tmp_path)), DMixConfig(output_dir=str(tmp_path), report_to="none")
    assert (dmix.learning_rate, dmix.weight_decay) == (plain.learning_rate, plain.weight_decay) == (5e-5, 0.0)


def test_lora_model_trains_adapters_only(tmp_path, tokenizer, train_dataset):
    from peft import LoraConfig, get_peft_model

    base = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
    before = _params(model)
    trainer = DMixTrainer(
        model=model, args=_args(tmp_path, learning_rate=1e-2), train_dataset=train_dataset, processing_class=tokenizer
    )
    trainer.train()
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k or "classifier" in k for k in changed)
    assert any("lora_A" in k for k in changed)
    assert trainer.partner_index is not None


def test_hyperbolic_index_reports_cosine_overlap(tmp_path, tokenizer, train_dataset):
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    trainer.build_partner_index()
    stats = trainer.partner_index_stats
    k = trainer.partner_index.candidates_per_example
    assert stats["cosine_overlap_chance"] == pytest.approx(k / (len(train_dataset) - 1))
    # The overlap is that of the hyperbolic lists with the cosine top-k lists of the same embeddings.
    from hf_dmix.partners import top_tau_candidates

    emb = trainer.compute_sentence_embeddings()
    cosine = top_tau_candidates(emb, k, "cosine")
    hyper = trainer.partner_index.candidates
    shared = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(hyper, cosine, strict=True))
    assert stats["cosine_overlap"] == pytest.approx(shared / (len(train_dataset) * k))


def test_cosine_overlap_diagnostic_is_sampled_and_switchable(tmp_path, tokenizer, train_dataset):
    """Issue 15, item 5: the diagnostic runs on partner_overlap_anchors anchors (all of a small set), and 0 turns it
    off without changing the index."""

    def build(**kw):
        trainer = DMixTrainer(
            model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
            args=_args(tmp_path, **kw),
            train_dataset=train_dataset,
            processing_class=tokenizer,
        )
        trainer.build_partner_index()
        return trainer

    sampled, full, off = (
        build(partner_overlap_anchors=5),
        build(partner_overlap_anchors=-1),
        build(partner_overlap_anchors=0),
    )
    assert sampled.partner_index_stats["cosine_overlap_anchors"] == 5
    assert full.partner_index_stats["cosine_overlap_anchors"] == len(train_dataset)
    assert "cosine_overlap" not in off.partner_index_stats
    assert torch.equal(off.partner_index.candidates, full.partner_index.candidates)


def test_bf16_autocast_near_the_boundary_stays_finite(tmp_path, tokenizer, train_dataset):
    """bf16 mixed precision with ball points within 1e-5 of the boundary: finite loss, gradients and geometry."""
    n = len(train_dataset)
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(n, 16, generator=g) * torch.logspace(0, 4, n)[:, None]  # norms over four decades
    args = _args(
        tmp_path,
        bf16=True,
        logging_steps=1,
        max_steps=4,
        ball_median_radius=0.99999,
        ball_clip_quantile=1.0,
        ball_center=False,
        tau=0.2,
    )
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        sentence_embeddings=emb,
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        points = to_poincare_ball(emb, median_radius=0.99999, clip_quantile=None, center=False)
        dist = pairwise_distance(points, metric="hyperbolic")
    assert points.dtype == torch.float32 and dist.dtype == torch.float32
    assert (points.norm(dim=-1) < 1).all() and torch.isfinite(dist).all()
    assert (1 - points.norm(dim=-1)).min() < 1e-4  # the test really is near the boundary
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 4
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"]) for h in logs)
    assert trainer.partner_index.candidates.min() >= 0 and trainer.partner_index.candidates.max() < n
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_threshold_and_sampled_partner_search_in_training(tmp_path, tokenizer, train_dataset):
    """Indices too large for lists use thresholds with the same sets; sampled search trains too."""
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    lists = DMixTrainer(model=model, args=_args(tmp_path), train_dataset=train_dataset, processing_class=tokenizer)
    lists.build_partner_index()
    thr = DMixTrainer(
        model=model,
        args=_args(tmp_path, partner_index_max_mb=0),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    thr.build_partner_index()
    assert thr.partner_index.candidates is None and thr.partner_index.thresholds is not None
    for i in range(len(train_dataset)):
        assert thr.partner_index.candidate_set(i) == lists.partner_index.candidate_set(i)
    sampled = DMixTrainer(
        model=model,
        args=_args(tmp_path, partner_search="sampled", partner_search_sample_size=16),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    sampled.train()
    assert sampled.partner_index.thresholds is not None and sampled.state.global_step == 3
    assert "same_label_share" in sampled.partner_index_stats


# ---------------------------------------------------------------------------------------------------------------------
# hub-robust rules, anchor-dominant mixing, hyperparameter_search
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["centered", "mutual"])
def test_partner_rules_train_and_report_hubness(tmp_path, tokenizer, train_dataset, rule):
    from hf_dmix.partners import build_partner_index

    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    trainer = DMixTrainer(
        model=model, args=_args(tmp_path, partner_rule=rule), train_dataset=train_dataset, processing_class=tokenizer
    )
    # Embeddings of the model before training (train() changes the weights).
    emb = trainer.compute_sentence_embeddings()
    trainer.train()
    index, stats = trainer.partner_index, trainer.partner_index_stats
    # The index is the library function's result on the trainer's own points.
    ref = build_partner_index(to_poincare_ball(emb), len(train_dataset), tau=0.3, rule=rule, show_progress=False)
    assert torch.equal(index.candidates.sort(1).values, ref.candidates.sort(1).values)
    for key in (
        "k_occurrence_skewness",
        "random_k_occurrence_skewness",
        "random_top1pct_slot_share",
        "random_same_label_share",
        "degenerate",
    ):
        assert key in stats
    assert stats["degenerate"] == (trainer.partner_index_warning is not None)


def test_anchor_dominant_loss_uses_the_anchor_rows_only(tmp_path, tokenizer, train_dataset):
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    args = _args(tmp_path, anchor_dominant=True, mix_alpha=0.4, max_steps=8)
    trainer = DMixTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer)
    seen = []
    original = trainer.compute_loss

    def spy(model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = original(model, inputs, return_outputs=True)
        # The mixer stays armed until the next step: its state is this step's site and ratio.
        state = trainer.mixer.state
        seen.append(
            (
                state.site,
                state.ratio,
                state.anchors_only,
                outputs.logits.shape[0],
                inputs["dmix_partner_ids"].shape[0],
                loss,
                outputs.logits,
                inputs["labels"],
            )
        )
        return (loss, outputs) if return_outputs else loss

    trainer.compute_loss = spy
    trainer.train()
    assert len(seen) == 8
    last = trainer.num_encoder_layers
    sites = {site for site, *_ in seen}
    assert sites <= set(range(1, last + 1)) and len(sites) > 1  # several sites drawn, not only the last layer
    for site, ratio, only, rows, b, loss, logits, labels in seen:
        assert only and ratio >= 0.5
        # Partner rows are dropped after the site: B rows come back, 2B only when nothing follows the last layer.
        assert rows == (2 * b if site == last else b), (site, rows, b)
        lg = logits[:b].float()
        expected = ratio * F.cross_entropy(lg, labels[:b]) + (1 - ratio) * F.cross_entropy(lg, labels[b:])
        torch.testing.assert_close(loss, expected)


def test_hyperparameter_search_rebuilds_the_index_per_trial(tmp_path, tokenizer, train_dataset, monkeypatch):
    import optuna

    from hf_dmix.indexer import PartnerIndexer
    from hf_dmix.partners import num_candidates

    built = []
    real = PartnerIndexer.build

    def recording(self, inputs, embeddings=None):
        index = real(self, inputs, embeddings)
        built.append((inputs.args.tau, inputs.args.partner_rule, index.candidates_per_example, id(inputs.model)))
        return index

    def model_init(trial=None):
        return tiny_model("bert", vocab_size=tokenizer.vocab_size)

    monkeypatch.setattr(PartnerIndexer, "build", recording)
    trainer = DMixTrainer(
        model=None,
        model_init=model_init,
        args=_args(tmp_path, eval_strategy="no"),
        train_dataset=train_dataset,
        eval_dataset=train_dataset.select(range(8)),
        processing_class=tokenizer,
    )
    space = {"tau": [0.2, 0.6], "partner_rule": ["centered"]}
    best = trainer.hyperparameter_search(
        hp_space=lambda trial: {k: trial.suggest_categorical(k, v) for k, v in space.items()},
        backend="optuna",
        n_trials=2,
        direction="minimize",
        compute_objective=lambda metrics: metrics["eval_loss"],
        sampler=optuna.samplers.GridSampler(space),
    )
    n = len(train_dataset)
    # One index per trial, each built from that trial's tau and rule (not the first trial's), on that trial's model.
    assert sorted(t for t, *_ in built) == [0.2, 0.6]
    assert {(t, k) for t, _, k, _ in built} == {(0.2, num_candidates(n, 0.2)), (0.6, num_candidates(n, 0.6))}
    assert {r for _, r, _, _ in built} == {"centered"}
    assert len({m for *_, m in built}) == 2
    assert best.hyperparameters["tau"] in (0.2, 0.6)


def test_same_settings_reuse_the_index_and_a_changed_tau_rebuilds_it(tmp_path, tokenizer, train_dataset):
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    trainer = DMixTrainer(model=model, args=_args(tmp_path), train_dataset=train_dataset, processing_class=tokenizer)
    first = trainer.build_partner_index()
    trainer.train()
    assert trainer.partner_index is first  # built before train(), same settings: reused
    trainer.args.tau = 0.6
    trainer.train()
    assert trainer.partner_index is not first
    assert trainer.partner_index.candidates_per_example > first.candidates_per_example
    trainer.args.tau = 1.5
    with pytest.raises(ValueError, match="tau must lie in"):
        trainer.train()


def test_anchor_dominant_rejected_for_modernbert_mean_pooling(tmp_path, tokenizer, train_dataset):
    model = tiny_model("modernbert", vocab_size=tokenizer.vocab_size, classifier_pooling="mean")
    with pytest.raises(ValueError, match="classifier_pooling='mean'"):
        DMixTrainer(
            model=model,
            args=_args(tmp_path, anchor_dominant=True),
            train_dataset=train_dataset,
            processing_class=tokenizer,
        )


def test_evaluate_and_predict_on_training_rows_never_mix(tmp_path, tokenizer, train_dataset):
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    trainer = DMixTrainer(model=model, args=_args(tmp_path), train_dataset=train_dataset, processing_class=tokenizer)
    trainer.train()
    rows = trainer.train_dataset.select(range(10))  # carries the dmix_index column
    prediction = trainer.predict(rows)
    assert prediction.predictions.shape[0] == 10 and prediction.label_ids.shape[0] == 10
    plain = trainer.predict(train_dataset.select(range(10)))
    assert (prediction.predictions == plain.predictions).all()
    assert trainer.evaluate(rows)["eval_loss"] == pytest.approx(plain.metrics["test_loss"])
    assert trainer.data_collator.partner_index is trainer.partner_index  # restored for training


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_embeddings_are_rejected_before_training(tmp_path, tokenizer, train_dataset, value):
    emb = torch.randn(len(train_dataset), 8)
    emb[5, 3] = value
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        sentence_embeddings=emb,
    )
    with pytest.raises(ValueError, match=r"1 sentence embedding\(s\) contain NaN or inf \(training-set rows \[5\]\)"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_constant_embeddings_are_rejected(tmp_path, tokenizer, train_dataset):
    emb = torch.ones(len(train_dataset), 8)
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        sentence_embeddings=emb,
    )
    with pytest.raises(ValueError, match="All sentence embeddings are identical"):
        trainer.build_partner_index()


def test_labels_outside_the_head_and_single_class_are_rejected(tmp_path, tokenizer, train_dataset):
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size, num_labels=2)
    three = train_dataset.map(lambda r, i: {"label": i % 3}, with_indices=True)
    with pytest.raises(ValueError, match=r"label ids outside 0\.\.1 \(the model has num_labels=2\): \[2\]"):
        DMixTrainer(model=model, args=_args(tmp_path), train_dataset=three, processing_class=tokenizer)
    one = train_dataset.map(lambda r: {"label": 1})
    with pytest.raises(ValueError, match=r"single class \(label id 1\)"):
        DMixTrainer(model=model, args=_args(tmp_path), train_dataset=one, processing_class=tokenizer)


def test_fewer_than_one_candidate_is_rejected_before_training(tmp_path, tokenizer, train_dataset):
    n = len(train_dataset)  # 40: tau=0.02 asks for 0.78 candidates
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path, tau=0.02),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    with pytest.raises(
        ValueError,
        match=rf"tau=0.02 asks for 0.78 candidate partners.*{n - 1} other.*at least 51 examples, or tau >= 1/\(N-1\) = 0.02564",
    ):
        trainer.train()
    assert trainer.state.global_step == 0
    # Exactly one candidate is allowed.
    trainer.args.tau = 1 / (n - 1)
    assert trainer.build_partner_index().candidates_per_example == 1


# ---------------------------------------------------------------------- issue 14: one owner for the partner index


def test_a_trial_that_turns_mixing_on_trains_on_batches_with_partners(tmp_path, tokenizer, train_dataset):
    """A config that starts without mixing and an optuna trial that turns it on: every training batch is mixed."""
    import optuna

    from hf_dmix.collator import PARTNER_IDS_KEY

    batches = []

    class Recording(DMixTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                ids = inputs.get(PARTNER_IDS_KEY)
                batches.append(
                    (self.args.mix_strategy, None if ids is None else ids.shape[0], inputs["labels"].shape[0])
                )
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    trainer = Recording(
        model=None,
        model_init=lambda trial=None: tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path, mix_strategy="none", eval_strategy="no"),
        train_dataset=train_dataset,
        eval_dataset=train_dataset.select(range(8)),
        processing_class=tokenizer,
    )
    space = {"mix_strategy": ["hidden"]}
    trainer.hyperparameter_search(
        hp_space=lambda trial: {k: trial.suggest_categorical(k, v) for k, v in space.items()},
        backend="optuna",
        n_trials=1,
        direction="minimize",
        compute_objective=lambda m: m["eval_loss"],
        sampler=optuna.samplers.GridSampler(space),
    )
    assert len(batches) == 3
    # Each batch holds 4 anchors and their 4 partners: 8 rows, 4 partner ids.
    assert batches == [("hidden", 4, 8)] * 3


def test_embeddings_follow_the_model_of_each_model_init_trial(tmp_path, tokenizer, train_dataset):
    """model_init models of other seeds (another checkpoint, a config: model) get their own embeddings and index."""
    seeds = []

    def model_init(trial=None):
        seeds.append(len(seeds) + 1)  # Trainer calls it in __init__ and at every train()
        return tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=seeds[-1])

    trainer = DMixTrainer(
        model=None,
        model_init=model_init,
        args=_args(tmp_path, max_steps=1),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    first = trainer.partner_index.candidates.sort(1).values
    trainer.train()  # a new model from model_init, of another seed
    second = trainer.partner_index.candidates.sort(1).values
    fresh = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=seeds[-1]),
        args=_args(tmp_path),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    expected = fresh.build_partner_index().candidates.sort(1).values
    assert not torch.equal(first, expected)  # the two models really select other partners
    assert torch.equal(second, expected)


@pytest.mark.parametrize(
    "settings",
    [
        dict(),  # exact lists
        dict(partner_index_max_mb=0),  # exact thresholds
        dict(partner_search="sampled", partner_search_sample_size=16, partner_rule="mutual", seed=7),  # sampled
        dict(partner_distance="cosine", partner_rule="paper", partner_order="nearest", tau=0.2),
    ],
)
def test_the_public_search_gives_exactly_the_trainers_index(tmp_path, tokenizer, train_dataset, settings):
    """One search path: build_partner_index over the same embeddings and settings returns the trainer's index."""
    from hf_dmix.partners import build_partner_index

    args = _args(tmp_path, **settings)
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    index = trainer.build_partner_index()
    emb = trainer.compute_sentence_embeddings()
    points = (
        emb
        if args.partner_distance != "hyperbolic"
        else to_poincare_ball(
            emb,
            curvature=args.curvature,
            median_radius=args.ball_median_radius,
            clip_quantile=args.ball_clip_quantile,
            center=args.ball_center,
        )
    )
    sampled = args.partner_search == "sampled"
    public = build_partner_index(
        points,
        len(train_dataset),
        args.partner_distance,
        tau=args.tau,
        order=args.partner_order,
        curvature=args.curvature,
        memory_bytes=args.partner_search_memory_mb * 2**20,
        show_progress=False,
        representation="thresholds" if args.partner_index_max_mb == 0 else "lists",
        sample_size=args.partner_search_sample_size if sampled else None,
        rule=args.partner_rule,
        moment_reference_size=args.partner_search_sample_size,
        seed=args.seed,
    )
    if args.partner_index_max_mb == 0 or sampled:
        assert index.candidates is None and public.candidates is None
        assert torch.equal(index.thresholds, public.thresholds)
        assert index.expected_k == public.expected_k
        if public.moments is not None:
            assert all(torch.equal(a, b) for a, b in zip(index.moments, public.moments, strict=True))
    else:
        assert torch.equal(index.candidates, public.candidates)  # same lists, in the same order


@pytest.mark.parametrize("log_level, shown", [("passive", True), ("info", True), ("warning", False), ("error", False)])
def test_partner_index_summary_is_shown_to_a_plain_script(tmp_path, tokenizer, train_dataset, caplog, log_level, shown):
    # A script that configured no logging: the root logger drops INFO, as it does for a plain Python user.
    import logging

    caplog.set_level(logging.WARNING)
    trainer = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
        args=_args(tmp_path, log_level=log_level),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    trainer.build_partner_index()
    summary = [r for r in caplog.records if r.getMessage().startswith("DMIX partner index (")]
    assert len(summary) == (1 if shown else 0), [r.getMessage() for r in caplog.records]
    if shown:
        assert "candidates per example" in summary[0].getMessage()


def test_partner_index_summary_only_on_the_main_process():
    import logging
    from types import SimpleNamespace

    from hf_dmix.indexer import show_summary

    def args(should_log, level, log_level="info"):
        return SimpleNamespace(should_log=should_log, log_level=log_level, get_process_log_level=lambda: level)

    assert show_summary(args(True, logging.INFO), "x")
    assert not show_summary(args(False, logging.DEBUG), "x")  # a replica, whatever log_level_replica says
    assert not show_summary(args(True, logging.ERROR, "passive"), "x")  # the script silenced transformers
