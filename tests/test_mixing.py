"""Tests of the hook-based interpolative mixing (``hf_dmix.mixing``, paper eq. 1–3).

Batches are laid out ``[anchors; partners]`` (``2B`` rows). Every comparison is against a plain forward of the same
model, or against a hook-free re-implementation of eq. 1–3 built from the model's own submodules and masks.
"""

from __future__ import annotations

import random
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from conftest import ARCHITECTURES, tiny_model
from mixing_helpers import (
    ATOL,
    assert_ratio_one_keeps_and_zero_swaps,
    hook_counts,
    logits_of,
    mixed_logits,
    rows,
)
from transformers.masking_utils import create_bidirectional_mask

from hf_dmix.mixing import (
    SUPPORTED_MODEL_TYPES,
    HiddenStateMixer,
    _get_module,
    fill_keyless_rows,
    union_mask,
    unwrap_model,
)

# The default initializer_range (0.02) makes a tiny random classifier output nearly the same logits for every input
# (spread ~1e-4), too close to ATOL to tell examples apart; 0.2 gives logits that differ by ~0.1–1 between inputs.
INIT_RANGE = 0.2

# Same word counts row by row: identical padding, different tokens.
ANCHORS = ["good movie", "the plot was very bad and sad", "a film"]
PARTNERS_SAME_PADDING = ["bad film", "a story is very nice and happy", "the actor"]
# Short anchors, long partners: the anchors have padding where the partners have tokens.
SHORT = ["good movie", "a film"]
LONG = ["the plot was very bad and sad film", "the actor is a very nice and happy story"]
# Partners for ANCHORS with every relation: longer than its anchor, shorter, longer.
MIXED_PARTNERS = [LONG[0], "a film", LONG[1]]

LORA_CASES = {"lora-bert": "bert", "lora-roberta": "roberta"}
MODEL_CASES = [*ARCHITECTURES, *LORA_CASES]


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These models are tiny: intra-op threads only add synchronisation (5–10× slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(case: str, seed: int = 0, **overrides):
    """A tiny classifier of ``case`` (a family, or ``lora-<family>`` for a PEFT LoRA wrapper), in eval mode."""
    overrides.setdefault("initializer_range", INIT_RANGE)
    if case in LORA_CASES:
        from peft import LoraConfig, get_peft_model

        base = tiny_model(LORA_CASES[case], seed=seed, **overrides)
        config = LoraConfig(
            task_type="SEQ_CLS",
            r=4,
            lora_alpha=8,
            target_modules=["query", "value"],
            init_lora_weights=False,  # random B: the adapters really change the forward pass
        )
        torch.manual_seed(seed + 1)
        model = get_peft_model(base, config)
    else:
        model = tiny_model(case, seed=seed, **overrides)
    return model.eval()


def encode(tokenizer, anchors: list[str], partners: list[str]) -> dict[str, torch.Tensor]:
    """One ``[anchors; partners]`` batch padded to a common length (input_ids and attention_mask only)."""
    return dict(tokenizer(anchors + partners, padding=True, return_tensors="pt", return_token_type_ids=False))


# ---------------------------------------------------------------------------------------------------------------------
# 1. identities, for every family and through PEFT
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MODEL_CASES)
def test_partner_equal_to_anchor_is_identity_at_every_site(case, tokenizer):
    model = build(case)
    batch = encode(tokenizer, ANCHORS, [])
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    B = len(ANCHORS)
    plain = logits_of(model, batch)
    doubled = {k: torch.cat([v, v]) for k, v in batch.items()}
    mixer = HiddenStateMixer(model).attach()
    rng = random.Random(case)
    assert mixer.sentence_site == mixer.num_layers + 1 == 4
    for site in range(mixer.sentence_site + 1):
        ratio = rng.uniform(0.05, 0.95)
        out = mixed_logits(model, mixer, doubled, site, ratio, B)
        torch.testing.assert_close(out[:B], plain, atol=ATOL, rtol=0, msg=f"anchor rows, site {site}, r={ratio}")
        torch.testing.assert_close(out[B:], plain, atol=ATOL, rtol=0, msg=f"partner rows, site {site}, r={ratio}")
    mixer.detach()


@pytest.mark.parametrize("case", MODEL_CASES)
def test_ratio_one_keeps_and_ratio_zero_swaps_at_every_site(case, tokenizer):
    """r = 1 leaves both halves unchanged; r = 0 swaps them. Proves the hooks fire at every site (incl. PEFT)."""
    model = build(case)
    batch = encode(tokenizer, ANCHORS, PARTNERS_SAME_PADDING)
    B = len(ANCHORS)
    assert torch.equal(batch["attention_mask"][:B], batch["attention_mask"][B:])
    assert (batch["attention_mask"] == 0).any()
    assert_ratio_one_keeps_and_zero_swaps(model, batch, B)


@pytest.mark.parametrize("case", MODEL_CASES)
def test_sentence_site_is_input_of_final_linear_layer(case, tokenizer):
    """The final classifier is affine, so mixing its input mixes the logits — with no union mask applied anywhere
    (partners of different lengths)."""
    model = build(case)
    batch = encode(tokenizer, SHORT, LONG)
    B = len(SHORT)
    plain_a, plain_p = logits_of(model, rows(batch, slice(0, B))), logits_of(model, rows(batch, slice(B, None)))
    mixer = HiddenStateMixer(model).attach()
    r = 0.3
    out = mixed_logits(model, mixer, batch, mixer.sentence_site, r, B)
    torch.testing.assert_close(out[:B], r * plain_a + (1 - r) * plain_p, atol=ATOL, rtol=0)
    torch.testing.assert_close(out[B:], r * plain_p + (1 - r) * plain_a, atol=ATOL, rtol=0)


@contextmanager
def _keyless_rows_filled(model):
    """A plain forward as the mixer defines it: in sliding-window families (ModernBERT) the padding rows that allow no
    key are filled (``fill_keyless_rows``), which changes the states at padding positions only."""
    base = unwrap_model(model)
    handles = []
    if base.config.model_type == "modernbert":
        for layer in base.model.layers:
            handles.append(
                layer.register_forward_pre_hook(
                    lambda module, args, kwargs: (
                        args,
                        dict(kwargs, attention_mask=fill_keyless_rows(kwargs["attention_mask"])),
                    ),
                    with_kwargs=True,
                )
            )
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("case", list(ARCHITECTURES))
def test_output_hidden_states_report_the_mixed_state(case, tokenizer):
    """``hidden_states[k]`` of a mixed forward is h_k of eq. 2 (the mixed state), also when transformers' recording
    hooks were installed before ``attach()`` (they are installed by the first forward that asks for hidden states,
    e.g. the sentence embeddings computed before training)."""
    model = build(case)
    batch = encode(tokenizer, SHORT, LONG)
    B, r = len(SHORT), 0.3
    with torch.no_grad(), _keyless_rows_filled(model):
        plain = model(**batch, output_hidden_states=True).hidden_states  # rows unmixed, each with its own mask
    mixer = HiddenStateMixer(model).attach()
    last_outputs = []
    mixer.layers[-1].register_forward_hook(lambda module, args, out: last_outputs.append(out))  # after the mixer's
    with torch.no_grad(), _keyless_rows_filled(model):
        model(**batch)
    raw_last = last_outputs[0]  # unmixed output of layer N (before any final norm)
    for site in range(mixer.num_layers + 1):
        with torch.no_grad(), mixer.mixing(site, r, B):
            hidden = model(**batch, output_hidden_states=True).hidden_states
        for j in range(site):
            torch.testing.assert_close(hidden[j], plain[j], atol=ATOL, rtol=0, msg=f"site {site}, h_{j}")
        expected = r * plain[site] + (1 - r) * plain[site].roll(B, dims=0)
        if case == "modernbert" and site == mixer.num_layers:  # its last entry is last_hidden_state, after final_norm
            with torch.no_grad():
                expected = model.model.final_norm(r * raw_last + (1 - r) * raw_last.roll(B, dims=0))
        torch.testing.assert_close(hidden[site], expected, atol=ATOL, rtol=0, msg=f"site {site}, h_{site}")


def test_peft_resolver_hooks_the_active_modules_to_save_copy():
    model = build("lora-roberta")
    base = unwrap_model(model)
    wrapper = base.classifier
    assert type(wrapper).__name__ == "ModulesToSaveWrapper"
    active = wrapper.modules_to_save[wrapper.active_adapters[0]]
    assert _get_module(base, "classifier.out_proj") is active.out_proj
    assert _get_module(base, "classifier.out_proj") is not wrapper.original_module.out_proj
    mixer = HiddenStateMixer(model).attach()
    assert len(active.out_proj._forward_pre_hooks) == 1
    assert len(wrapper.original_module.out_proj._forward_pre_hooks) == 0
    mixer.detach()


# ---------------------------------------------------------------------------------------------------------------------
# 2. the math of eq. 1–3 against a hook-free reference (tiny BERT)
# ---------------------------------------------------------------------------------------------------------------------


def reference_bert_logits(model, batch, site: int, ratio: float, num_anchors: int) -> torch.Tensor:
    """Eq. 1–3 without hooks: layers 1..k per sequence with its own mask, mix, layers k+1..N with the union mask."""
    bert, B = model.bert, num_anchors
    layers = bert.encoder.layer
    n = len(layers)
    ids, mask2d = batch["input_ids"], batch["attention_mask"]

    def own_mask(hidden, m2d):
        return create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=m2d)

    def mix(h_a, h_p):
        return torch.cat([ratio * h_a + (1 - ratio) * h_p, ratio * h_p + (1 - ratio) * h_a])

    h_a, h_p = bert.embeddings(input_ids=ids[:B]), bert.embeddings(input_ids=ids[B:])
    mask_a, mask_p = own_mask(h_a, mask2d[:B]), own_mask(h_p, mask2d[B:])
    for layer in layers[: min(site, n)]:  # eq. 1
        h_a, h_p = layer(h_a, mask_a), layer(h_p, mask_p)
    if site <= n:
        h = mix(h_a, h_p)  # eq. 2
        union2d = torch.maximum(mask2d[:B], mask2d[B:]).repeat(2, 1)
        union = own_mask(h, union2d)
        for layer in layers[site:]:  # eq. 3
            h = layer(h, union)
        sentence = model.dropout(bert.pooler(h))
    else:  # sentence site: the pooled vectors entering the classifier are mixed
        sentence = mix(model.dropout(bert.pooler(h_a)), model.dropout(bert.pooler(h_p)))
    return model.classifier(sentence)


def mixup_loss(logits, labels, ratio, num_anchors):
    """``r·CE(y_own) + (1−r)·CE(y_pair)`` over the 2B rows, as the trainer computes it."""
    return ratio * F.cross_entropy(logits, labels) + (1 - ratio) * F.cross_entropy(
        logits, labels.roll(num_anchors, dims=0)
    )


def soft_label_loss(logits, labels, ratio, num_anchors, num_labels):
    """Cross-entropy against the mixed one-hot label ``r·y_own + (1−r)·y_pair`` (independent formulation)."""
    onehot = F.one_hot(labels, num_labels).float()
    target = ratio * onehot + (1 - ratio) * onehot.roll(num_anchors, dims=0)
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_bert_mixing_matches_hook_free_reference(attn, ratio, tokenizer):
    model = build("bert", num_labels=3, attn_implementation=attn)
    assert model.config._attn_implementation == attn
    batch = encode(tokenizer, ANCHORS, MIXED_PARTNERS)  # mixed lengths on both sides
    B = len(ANCHORS)
    mixer = HiddenStateMixer(model).attach()
    for site in range(mixer.sentence_site + 1):
        with torch.no_grad():
            ref = reference_bert_logits(model, batch, site, ratio, B)
        out = mixed_logits(model, mixer, batch, site, ratio, B)
        torch.testing.assert_close(out, ref, atol=ATOL, rtol=0, msg=f"site {site}")
        if ratio == 0.5:  # both rows of a pair are the same mixed example
            torch.testing.assert_close(out[:B], out[B:], atol=ATOL, rtol=0)
    # and the site really matters: different sites give different logits
    assert not torch.allclose(
        mixed_logits(model, mixer, batch, 1, ratio, B), mixed_logits(model, mixer, batch, 3, ratio, B), atol=1e-4
    )


def test_bert_mixed_backward_reaches_every_part_and_matches_reference(tokenizer):
    model = build("bert", num_labels=3)
    batch = encode(tokenizer, ANCHORS, MIXED_PARTNERS)
    B, site, ratio = len(ANCHORS), 2, 0.3
    labels = torch.tensor([0, 1, 2, 2, 0, 1])
    mixer = HiddenStateMixer(model).attach()
    assert 1 < site < mixer.num_layers

    with mixer.mixing(site, ratio, B):
        mixup_loss(model(**batch).logits, labels, ratio, B).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    soft_label_loss(reference_bert_logits(model, batch, site, ratio, B), labels, ratio, B, 3).backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    for name in (
        "bert.embeddings.word_embeddings.weight",
        "bert.encoder.layer.0.attention.self.query.weight",  # layer 1 < k
        "bert.encoder.layer.2.attention.self.query.weight",  # layer 3 > k
        "bert.encoder.layer.2.output.dense.weight",
        "classifier.weight",
    ):
        assert grads[name].abs().sum() > 0, name
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=ATOL, rtol=1e-4, msg=name)


# ---------------------------------------------------------------------------------------------------------------------
# 3. the union mask
# ---------------------------------------------------------------------------------------------------------------------


def _allowed_by_layer(model, layer_index: int, length: int) -> torch.Tensor:
    """Query×key pairs a layer may attend to by construction (ModernBERT's local layers have a window)."""
    config = unwrap_model(model).config
    allowed = torch.ones(length, length, dtype=torch.bool)
    layer_types = getattr(config, "layer_types", None)
    if config.model_type == "modernbert" and layer_types[layer_index - 1] == "sliding_attention":
        pos = torch.arange(length)
        allowed = (pos[:, None] - pos[None, :]).abs() <= config.local_attention // 2
    return allowed


@pytest.mark.parametrize("case", list(ARCHITECTURES))
def test_union_mask_opens_partner_positions_only_after_the_site(case, tokenizer):
    model = build(case, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    batch = encode(tokenizer, SHORT, LONG)
    B = len(SHORT)
    mask = batch["attention_mask"].bool()
    mixer = HiddenStateMixer(model).attach()
    n, length = mixer.num_layers, mask.shape[1]
    for site in range(mixer.sentence_site + 1):
        with torch.no_grad(), mixer.mixing(site, 0.6, B):
            attentions = model(**batch, output_attentions=True).attentions
        assert len(attentions) == n
        for layer_index, probs in enumerate(attentions, start=1):
            union_expected = layer_index > site and site <= n
            for b in range(B):
                queries = mask[b]  # the anchor's own tokens
                partner_only = mask[b + B] & ~mask[b]
                assert partner_only.any()
                p = probs[b][:, queries][:, :, partner_only]  # (heads, q, k)
                if union_expected:
                    allowed = _allowed_by_layer(model, layer_index, length)[queries][:, partner_only]
                    assert allowed.any()
                    assert (p[:, allowed] > 0).all(), f"site {site}, layer {layer_index}: partner tokens masked"
                else:
                    assert (p == 0).all(), f"site {site}, layer {layer_index}: partner tokens visible"
                # the union never opens positions that are padding in both sequences
                both_pad = ~(mask[b] | mask[b + B])
                assert (probs[b][:, queries][:, :, both_pad] == 0).all()


@pytest.mark.parametrize("case", [c for c in ARCHITECTURES if c != "deberta-v2"])  # DeBERTa-v2 is eager only
def test_union_mixing_sdpa_equals_eager(case, tokenizer):
    batch = encode(tokenizer, SHORT, LONG)
    B = len(SHORT)
    sdpa, eager = build(case, attn_implementation="sdpa"), build(case, attn_implementation="eager")
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    eager.load_state_dict(sdpa.state_dict())
    mixer_s, mixer_e = HiddenStateMixer(sdpa).attach(), HiddenStateMixer(eager).attach()
    for site in (0, 1, 2):
        out_s = mixed_logits(sdpa, mixer_s, batch, site, 0.3, B)
        out_e = mixed_logits(eager, mixer_e, batch, site, 0.3, B)
        torch.testing.assert_close(out_s, out_e, atol=ATOL, rtol=0, msg=f"site {site}")


def test_modernbert_mixing_is_implementation_independent_at_every_site(tokenizer):
    """Sliding-window layers leave far padding queries with no key (sdpa: zero output, eager: uniform weights); the
    residual stream carries that to every later layer, and the union exposes the anchor's padding positions. Without
    filling those rows, every site from the first sliding layer to N − 1 differed between sdpa and eager (up to 0.03
    in these logits); with them filled, every site agrees."""
    batch = encode(tokenizer, SHORT, LONG)
    B = len(SHORT)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    sdpa = build("modernbert", attn_implementation="sdpa", num_hidden_layers=5)
    eager = build("modernbert", attn_implementation="eager", num_hidden_layers=5)
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config.layer_types == ["full_attention", "sliding_attention"] * 2 + ["full_attention"]
    # The anchors' padding reaches more than half a window past their last token: keyless rows exist.
    assert max(lengths) - 1 - min(lengths[:B]) > sdpa.config.sliding_window
    mixer_s, mixer_e = HiddenStateMixer(sdpa).attach(), HiddenStateMixer(eager).attach()
    for anchors_only in (False, True):
        for site in range(mixer_s.sentence_site + 1):
            with (
                torch.no_grad(),
                mixer_s.mixing(site, 0.7, B, anchors_only),
                mixer_e.mixing(site, 0.7, B, anchors_only),
            ):
                out_s, out_e = sdpa(**batch).logits, eager(**batch).logits
            torch.testing.assert_close(out_s, out_e, atol=ATOL, rtol=0, msg=f"site {site}, anchors_only={anchors_only}")


def test_fill_keyless_rows_bool_additive_and_integer():
    """Row 2 allows no key (a padding query past a sliding window); it gets the keys some query allows: 0 and 1."""
    allowed = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 0]]).bool()[None, None]  # (1, 1, L, L)
    expected = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0]]).bool()[None, None]
    assert torch.equal(fill_keyless_rows(allowed), expected)
    low = torch.finfo(torch.float32).min
    additive = torch.where(allowed, 0.0, low)
    assert torch.equal(fill_keyless_rows(additive), torch.where(expected, 0.0, low))
    assert torch.equal(fill_keyless_rows(allowed.long()), expected.long())
    # Nothing keyless, key-padding masks (one query row) and None come back as they are.
    full = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    assert fill_keyless_rows(full) is full
    key_padding = torch.tensor([[1, 0, 0]]).bool()[:, None, None, :]
    assert fill_keyless_rows(key_padding) is key_padding
    assert fill_keyless_rows(None) is None
    assert torch.equal(fill_keyless_rows({"sliding_attention": allowed})["sliding_attention"], expected)


def test_union_changes_the_result_when_partner_is_longer(tokenizer):
    """With r = 1 a short anchor still sees the partner-only positions after the site: logits change vs. plain."""
    model = build("bert")
    batch = encode(tokenizer, SHORT, LONG)
    B = len(SHORT)
    plain_a = logits_of(model, rows(batch, slice(0, B)))
    mixer = HiddenStateMixer(model).attach()
    last = mixed_logits(model, mixer, batch, mixer.num_layers, 1.0, B)  # no layer after the site: no union
    torch.testing.assert_close(last[:B], plain_a, atol=ATOL, rtol=0)
    early = mixed_logits(model, mixer, batch, 1, 1.0, B)
    assert not torch.allclose(early[:B], plain_a, atol=1e-4)


# union_mask on hand-written masks: B = 2 pairs (rows 0,1 anchors; rows 2,3 partners), length 4. Pair 0 is nested
# (anchor [1,0,0,0] inside partner [1,1,0,0]); pair 1 is not ([1,1,0,0] vs [1,0,1,0]); position 3 is padding in all.
KEYS = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0]])
UNION_KEYS = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0]])


def test_union_mask_bool():
    mask = KEYS.bool()[:, None, None, :]  # (2B, 1, 1, L) sdpa-style key mask
    T, F_ = True, False
    expected = torch.tensor([[T, T, F_, F_], [T, T, T, F_], [T, T, F_, F_], [T, T, T, F_]])[:, None, None, :]
    out = union_mask(mask, 2)
    assert out.dtype == torch.bool and torch.equal(out, expected)
    full = mask.expand(4, 1, 4, 4)  # (2B, 1, Q, K) as transformers' sdpa_mask builds it
    assert torch.equal(union_mask(full, 2), expected.expand(4, 1, 4, 4))


def test_union_mask_additive_float():
    neg = torch.finfo(torch.float32).min
    mask = torch.where(KEYS.bool(), 0.0, neg)[:, None, None, :].expand(4, 1, 4, 4)
    expected = torch.tensor([[0.0, 0.0, neg, neg], [0.0, 0.0, 0.0, neg], [0.0, 0.0, neg, neg], [0.0, 0.0, 0.0, neg]])[
        :, None, None, :
    ].expand(4, 1, 4, 4)
    out = union_mask(mask, 2)
    assert out.dtype == torch.float32 and torch.equal(out, expected)


def test_union_mask_int():
    out = union_mask(KEYS[:, None, None, :], 2)
    assert out.dtype == KEYS.dtype and torch.equal(out, UNION_KEYS[:, None, None, :])


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_union_mask_product(dtype):
    """DeBERTa-v2's query×key product mask: the union is the product of the unioned key validity."""
    v = KEYS.to(dtype)
    mask = (v[:, None, :, None] * v[:, None, None, :]).to(dtype)  # (2B, 1, L, L)
    out = union_mask(mask, 2, kind="product")
    assert out.dtype == dtype and out.shape == (4, 1, 4, 4)
    outer_110 = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    outer_111 = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
    expected = torch.stack([outer_110, outer_111, outer_110, outer_111])[:, None].to(dtype)
    assert torch.equal(out, expected)
    # the element-wise maximum of two products is not the union for the non-nested pair: (1, 2) and (2, 1) missing
    assert not torch.equal(union_mask(mask, 2, kind="key"), expected)


def test_union_mask_none_dict_and_broadcast():
    assert union_mask(None, 2) is None
    shared = torch.ones(1, 1, 3, 3, dtype=torch.bool)  # batch dim 1: already shared by every row
    assert union_mask(shared, 2) is shared
    masks = {"full_attention": KEYS.bool()[:, None, None, :], "sliding_attention": None}
    out = union_mask(masks, 2)
    assert out["sliding_attention"] is None
    assert torch.equal(out["full_attention"], UNION_KEYS.bool()[:, None, None, :])


# ---------------------------------------------------------------------------------------------------------------------
# 4. lifecycle and errors
# ---------------------------------------------------------------------------------------------------------------------


def _unsupported_models():
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertModel,
        GPT2Config,
        GPT2ForSequenceClassification,
        T5Config,
        T5ForSequenceClassification,
    )

    bert = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)
    return {
        "gpt2": lambda: GPT2ForSequenceClassification(
            GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=4, n_positions=64, pad_token_id=0)
        ),
        "t5": lambda: T5ForSequenceClassification(
            T5Config(vocab_size=64, d_model=32, d_ff=37, d_kv=8, num_layers=1, num_heads=4)
        ),
        "bert-no-head": lambda: BertModel(bert),
        "bert-mlm": lambda: BertForMaskedLM(bert),
    }


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_unsupported_architecture_names_supported_families(name):
    model = _unsupported_models()[name]()
    with pytest.raises(ValueError, match=name) as info:
        HiddenStateMixer(model)
    message = str(info.value)
    assert name in message
    for family in ("BERT", "RoBERTa", "XLM-R", "ELECTRA", "DistilBERT", "DeBERTa-v2", "ModernBERT"):
        assert family in message
    for model_type in SUPPORTED_MODEL_TYPES:
        assert f"({model_type})" in message


@pytest.mark.parametrize("name", ["bert-no-head", "bert-mlm"])
def test_supported_family_without_classification_head_is_rejected(name):
    model = _unsupported_models()[name]()
    with pytest.raises(ValueError, match="AutoModelForSequenceClassification"):
        HiddenStateMixer(model)


@pytest.mark.parametrize("case", ["bert", "deberta-v2", "lora-roberta"])
def test_dormant_hooks_and_detach_restore_plain_behaviour(case, tokenizer):
    model = build(case)
    batch = encode(tokenizer, SHORT, LONG)  # different padding: a stray union mask would show
    B = len(SHORT)
    plain = logits_of(model, batch)
    hooks_before = hook_counts(model)

    mixer = HiddenStateMixer(model)
    assert hook_counts(model) == hooks_before, "constructing the mixer must not hook anything"
    assert mixer.attach() is mixer and mixer.attach() is mixer  # idempotent
    assert hook_counts(model) == hooks_before + 2 * mixer.num_layers + 2
    torch.testing.assert_close(logits_of(model, batch), plain, atol=0, rtol=0)  # dormant: bit-identical

    for site in range(mixer.sentence_site + 1):
        mixed = mixed_logits(model, mixer, batch, site, 0.5, B)
        assert not torch.allclose(mixed, plain, atol=1e-4), f"site {site} did not mix"
        assert mixer.state.site is None  # the context manager deactivated
        torch.testing.assert_close(logits_of(model, batch), plain, atol=0, rtol=0)

    mixer.activate(1, 0.5, B)
    mixer.deactivate()
    torch.testing.assert_close(logits_of(model, batch), plain, atol=0, rtol=0)

    with pytest.raises(KeyError), mixer.mixing(2, 0.5, B):  # deactivated even when the body raises
        raise KeyError("boom")
    torch.testing.assert_close(logits_of(model, batch), plain, atol=0, rtol=0)

    mixer.activate(2, 0.5, B)
    mixer.detach()  # also deactivates
    assert hook_counts(model) == hooks_before
    assert mixer.state.site is None
    torch.testing.assert_close(logits_of(model, batch), plain, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="attach"):
        mixer.activate(1, 0.5, B)

    mixer.attach()  # re-attaching works after a detach
    assert hook_counts(model) == hooks_before + 2 * mixer.num_layers + 2
    assert not torch.allclose(mixed_logits(model, mixer, batch, 1, 0.5, B), plain, atol=1e-4)
    mixer.detach()


def test_site_outside_range_is_rejected():
    model = build("bert")
    mixer = HiddenStateMixer(model).attach()
    n = mixer.num_layers
    for bad in (-1, n + 2, 100):
        with pytest.raises(ValueError, match=rf"\[0, {n + 1}\]"):
            mixer.activate(bad, 0.5, 2)
        with pytest.raises(ValueError, match=rf"\[0, {n + 1}\]"), mixer.mixing(bad, 0.5, 2):
            pass
        assert mixer.state.site is None
    for good in (0, n + 1):
        mixer.activate(good, 0.5, 2)
        assert mixer.state.site == good
    mixer.detach()


@pytest.mark.parametrize("case", ["bert", "deberta-v2", "modernbert"])
def test_batch_not_twice_the_anchors_raises(case, tokenizer):
    model = build(case)
    batch = encode(tokenizer, ANCHORS, [])  # 3 rows
    mixer = HiddenStateMixer(model).attach()
    for site in range(mixer.sentence_site + 1):
        for num_anchors in (1, 2):  # expects 2 and 4 rows
            with pytest.raises(RuntimeError, match=rf"expected a batch of {2 * num_anchors} rows.*got 3"):
                mixed_logits(model, mixer, batch, site, 0.5, num_anchors)
    mixer.detach()


# ---------------------------------------------------------------------------------------------------------------------
# 5. gradient checkpointing
# ---------------------------------------------------------------------------------------------------------------------


def _enable_checkpointing(model) -> None:
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def _mixed_grads(model, batch, labels, site, ratio, num_anchors):
    model.train()
    mixer = HiddenStateMixer(model).attach()
    mixer.activate(site, ratio, num_anchors)  # stays active through backward (recomputation must mix too)
    loss = mixup_loss(model(**batch).logits, labels, ratio, num_anchors)
    loss.backward()
    mixer.deactivate()
    mixer.detach()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    ("case", "site"),
    [(c, 2) for c in MODEL_CASES] + [("bert", 0), ("bert", 3), ("bert", 4)],
)
def test_gradient_checkpointing_gives_the_same_gradients(case, site, tokenizer):
    batch = encode(tokenizer, ANCHORS, MIXED_PARTNERS)
    B, ratio = len(ANCHORS), 0.35
    labels = torch.tensor([0, 1, 1, 1, 0, 0])
    loss_ref, grads_ref = _mixed_grads(build(case), batch, labels, site, ratio, B)

    model = build(case)
    _enable_checkpointing(model)
    layers = _get_module(unwrap_model(model), HiddenStateMixer(model).family.layers)
    assert all(getattr(layer, "gradient_checkpointing", False) for layer in layers)
    inner = next(m for m in layers[0].modules() if m is not layers[0])
    calls = []
    handle = inner.register_forward_hook(lambda *a: calls.append(1))
    loss, grads = _mixed_grads(model, batch, labels, site, ratio, B)
    handle.remove()
    assert len(calls) == 2, "checkpointing must recompute the layer during backward"

    torch.testing.assert_close(loss, loss_ref, atol=ATOL, rtol=0)
    assert grads.keys() == grads_ref.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], atol=ATOL, rtol=1e-4, msg=name)


# ---------------------------------------------------------------------------------------------------------------------
# anchor-dominant mixing: only the B anchor rows continue past the site
# ---------------------------------------------------------------------------------------------------------------------


def anchors_only_logits(model, mixer, batch, site, ratio, num_anchors) -> torch.Tensor:
    with torch.no_grad(), mixer.mixing(site, ratio, num_anchors, anchors_only=True):
        return model(**batch).logits


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_anchor_dominant_bert_matches_hook_free_reference(attn, tokenizer):
    model = build("bert", num_labels=3, attn_implementation=attn)
    batch = encode(tokenizer, ANCHORS, MIXED_PARTNERS)
    B, ratio = len(ANCHORS), 0.7  # r' = max(r, 1 - r) >= 0.5 on the anchor
    mixer = HiddenStateMixer(model).attach()
    for site in range(mixer.sentence_site + 1):
        with torch.no_grad():
            ref = reference_bert_logits(model, batch, site, ratio, B)[:B]
        out = anchors_only_logits(model, mixer, batch, site, ratio, B)
        # Sites before the last layer return B rows; at the last layer nothing follows, so 2B come back.
        assert out.shape[0] == (2 * B if site == mixer.num_layers else B), site
        torch.testing.assert_close(out[:B], ref, atol=ATOL, rtol=0, msg=f"site {site}")


@pytest.mark.parametrize("case", MODEL_CASES)
def test_anchor_dominant_rows_equal_the_full_forward_and_skip_partner_rows(case, tokenizer):
    model = build(case, num_labels=3)
    batch = encode(tokenizer, ANCHORS, MIXED_PARTNERS)
    B, ratio = len(ANCHORS), 0.8
    mixer = HiddenStateMixer(model).attach()
    seen: list[int] = []
    handles = [
        layer.register_forward_pre_hook(
            lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).shape[0]), with_kwargs=True
        )
        for layer in mixer.layers
    ]
    try:
        for site in range(mixer.sentence_site + 1):
            full = mixed_logits(model, mixer, batch, site, ratio, B)
            seen.clear()
            out = anchors_only_logits(model, mixer, batch, site, ratio, B)
            torch.testing.assert_close(out[:B], full[:B], atol=ATOL, rtol=0, msg=f"{case} site {site}")
            # The hooks see layer inputs after the mixer's pre-hook trimmed them: 2B rows up to the site, B after.
            after = seen[site:] if site <= mixer.num_layers else []
            assert all(rows == B for rows in after), (case, site, seen)
            assert all(rows == 2 * B for rows in seen[:site]), (case, site, seen)
    finally:
        for h in handles:
            h.remove()
