"""DMIX beyond text: image (ViT, DeiT) and audio (wav2vec2, HuBERT, AST) classifiers.

The same guarantees as for text (``test_mixing.py``), checked for every new family at every site: ``r = 1`` and a
partner equal to its anchor give the plain forward, and a hook-free re-implementation of eq. 1–3 built from the
model's own submodules matches the hooked forward at ``r = 0.5`` and ``r = 0.3`` — for audio with clips of different
lengths, so that padding, the union of the pair's frame masks and the masked mean pooling of the head are all
exercised. Then the collator on image and audio columns, the embedding pass, and tiny ``DMixTrainer`` runs.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from mixing_helpers import (
    ATOL,
    assert_ratio_one_keeps_and_zero_swaps,
    hook_counts,
    logits_of,
    mixed_logits,
)
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    AutoModelForImageClassification,
    SwinConfig,
    SwinForImageClassification,
    Wav2Vec2FeatureExtractor,
)
from transformers.masking_utils import create_bidirectional_mask

from hf_dmix import DMixConfig, DMixDataCollator, DMixTrainer
from hf_dmix.embeddings import embed_batches
from hf_dmix.mixing import SUPPORTED_MODEL_TYPES, HiddenStateMixer, check_mixing_settings
from hf_dmix.partners import PartnerIndex

INIT_RANGE = 0.2  # see test_mixing.py: tiny random heads need it to tell inputs apart
NUM_LABELS = 3
IMAGE_SIZE = 16

_VISION = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=37,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
_SPEECH = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=37,
    conv_dim=(16, 16),
    conv_stride=(5, 2),
    conv_kernel=(10, 3),
    num_conv_pos_embeddings=8,
    num_conv_pos_embedding_groups=4,
    feat_extract_norm="layer",
    classifier_proj_size=16,
    layerdrop=0.0,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    final_dropout=0.0,
    mask_time_prob=0.0,
)
# case -> (model_type, auto class, config overrides)
CASES: dict[str, tuple[str, type, dict]] = {
    "vit": ("vit", AutoModelForImageClassification, dict(_VISION, image_size=IMAGE_SIZE, patch_size=4)),
    # DeiT maps to two classes in AutoModelForImageClassification; a config without `architectures` picks none.
    "deit": (
        "deit",
        AutoModelForImageClassification,
        dict(_VISION, image_size=IMAGE_SIZE, patch_size=4, architectures=["DeiTForImageClassification"]),
    ),
    "ast": (
        "audio-spectrogram-transformer",
        AutoModelForAudioClassification,
        dict(_VISION, num_mel_bins=16, max_length=24, patch_size=8, frequency_stride=4, time_stride=4),
    ),
    "wav2vec2": ("wav2vec2", AutoModelForAudioClassification, dict(_SPEECH)),
    "wav2vec2-stable": ("wav2vec2", AutoModelForAudioClassification, dict(_SPEECH, do_stable_layer_norm=True)),
    "hubert": ("hubert", AutoModelForAudioClassification, dict(_SPEECH)),
    # sdpa (the default) gets boolean layer masks, eager additive float ones: the union must handle both.
    "wav2vec2-eager": ("wav2vec2", AutoModelForAudioClassification, dict(_SPEECH, attn_implementation="eager")),
}
SPEECH = ("wav2vec2", "wav2vec2-stable", "hubert", "wav2vec2-eager")
# Anchors and partners in every length relation: partner longer, shorter, equal (longest clip: no padding).
ANCHOR_LENGTHS, PARTNER_LENGTHS = [250, 400, 300], [400, 180, 300]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LORA_CASES = {"lora-vit": "vit", "lora-wav2vec2": "wav2vec2"}


def build(case: str, seed: int = 0, **overrides):
    """A tiny classifier of ``case`` in eval mode (``lora-<case>``: wrapped by a PEFT LoRA with random adapters)."""
    if case in LORA_CASES:
        from peft import LoraConfig, get_peft_model

        base = build(LORA_CASES[case], seed=seed, **overrides)
        config = LoraConfig(
            task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        )
        torch.manual_seed(seed + 1)
        return get_peft_model(base, config).eval()
    model_type, auto, kwargs = CASES[case]
    kwargs = {**kwargs, **overrides}
    attn = kwargs.pop("attn_implementation", "sdpa")
    config = AutoConfig.for_model(model_type, num_labels=NUM_LABELS, initializer_range=INIT_RANGE, **kwargs)
    torch.manual_seed(seed)
    model = auto.from_config(config, attn_implementation=attn).eval()
    assert model.config._attn_implementation == attn
    return model


def pad_clips(clips: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Right-pad raw clips with zeros to one length, with the sample-level attention mask (as the extractor does)."""
    length = max(len(c) for c in clips)
    values = torch.zeros(len(clips), length)
    mask = torch.zeros(len(clips), length, dtype=torch.long)
    for i, clip in enumerate(clips):
        values[i, : len(clip)], mask[i, : len(clip)] = clip, 1
    return {"input_values": values, "attention_mask": mask}


def make_inputs(case: str, num: int, seed: int, lengths: list[int] | None = None) -> list[dict[str, torch.Tensor]]:
    """``num`` single examples of ``case`` (unbatched)."""
    case = LORA_CASES.get(case, case)
    g = torch.Generator().manual_seed(seed)
    if case in ("vit", "deit"):
        return [{"pixel_values": torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=g)} for _ in range(num)]
    if case == "ast":
        return [{"input_values": torch.randn(24, 16, generator=g)} for _ in range(num)]
    lengths = lengths or [400] * num
    return [{"input_values": torch.randn(n, generator=g)} for n in lengths]


def batch_of(case: str, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if LORA_CASES.get(case, case) in SPEECH:
        return pad_clips([e["input_values"] for e in examples])
    return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}


def pair_batch(case: str, same_lengths: bool = False) -> dict[str, torch.Tensor]:
    """``[anchors; partners]`` of 3 + 3 examples; audio clips of different lengths unless ``same_lengths``."""
    anchors = make_inputs(case, 3, seed=1, lengths=ANCHOR_LENGTHS)
    partners = make_inputs(case, 3, seed=2, lengths=ANCHOR_LENGTHS if same_lengths else PARTNER_LENGTHS)
    return batch_of(case, anchors + partners)


# ---------------------------------------------------------------------------------------------------------------------
# hook-free references of eq. 1–3
# ---------------------------------------------------------------------------------------------------------------------


def _mix(ratio, a, p):
    return torch.cat([ratio * a + (1 - ratio) * p, ratio * p + (1 - ratio) * a])


def reference_vision_logits(model, batch, site, ratio, num_anchors):
    """ViT, DeiT, AST: embeddings and layers 1..k per half, mix, layers k+1..N; the head on the mixed state. No
    padding, so no mask anywhere. At N+1 the input of the final linear layer is mixed."""
    if model.config.model_type == "audio-spectrogram-transformer":
        base, x = model.audio_spectrogram_transformer, batch["input_values"]

        def final_linear_input(h):  # ASTModel pooling, then the head's layer norm (its input to `dense`)
            seq = base.layernorm(h)
            return model.classifier.layernorm((seq[:, 0] + seq[:, 1]) / 2)

        final_linear = model.classifier.dense
    else:
        base, x = getattr(model, model.base_model_prefix), batch["pixel_values"]

        def final_linear_input(h):
            return base.layernorm(h)[:, 0]

        final_linear = model.classifier
    B, layers = num_anchors, base.layers
    n = len(layers)
    h_a, h_p = base.embeddings(x[:B]), base.embeddings(x[B:])
    for layer in layers[: min(site, n)]:
        h_a, h_p = layer(h_a), layer(h_p)
    if site <= n:
        h = _mix(ratio, h_a, h_p)
        for layer in layers[site:]:
            h = layer(h)
        return final_linear(final_linear_input(h))
    return final_linear(_mix(ratio, final_linear_input(h_a), final_linear_input(h_p)))


def reference_speech_logits(model, batch, site, ratio, num_anchors):
    """wav2vec2 / HuBERT, spelled out: conv features, frame masks, projection, zeroed padding, positional conv (and
    layer norm) per half, each clip with its own mask; then layers 1..k per half, mix, layers k+1..N with the union
    of the pair's frame masks; projector and mean pooling over the union of the frames; classifier."""
    base = getattr(model, model.base_model_prefix)
    enc, config, B = base.encoder, model.config, num_anchors
    stable = config.do_stable_layer_norm
    layers = enc.layers
    n = len(layers)

    def encoder_input(values, sample_mask):
        feats = base.feature_extractor(values).transpose(1, 2)
        frames = base._get_feature_vector_attention_mask(feats.shape[1], sample_mask)
        hidden = base.feature_projection(feats)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # wav2vec2 also returns the normed features
        hidden = hidden.masked_fill(~frames[..., None], 0.0)
        hidden = hidden + enc.pos_conv_embed(hidden)
        if not stable:
            hidden = enc.layer_norm(hidden)
        return hidden, frames

    def run(hidden, frames, some_layers):
        mask = create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=frames)
        for layer in some_layers:
            hidden = layer(hidden, attention_mask=mask)
        return hidden

    def pooled(hidden, frames):
        if stable:
            hidden = enc.layer_norm(hidden)
        hidden = model.projector(hidden)
        f = frames[..., None].to(hidden.dtype)
        return (hidden * f).sum(1) / f.sum(1)

    x, m = batch["input_values"], batch["attention_mask"]
    h_a, f_a = encoder_input(x[:B], m[:B])
    h_p, f_p = encoder_input(x[B:], m[B:])
    h_a, h_p = run(h_a, f_a, layers[: min(site, n)]), run(h_p, f_p, layers[: min(site, n)])
    if site <= n:
        union = (f_a | f_p).repeat(2, 1)
        h = run(_mix(ratio, h_a, h_p), union, layers[site:])
        return model.classifier(pooled(h, union))
    return model.classifier(_mix(ratio, pooled(h_a, f_a), pooled(h_p, f_p)))


def reference_logits(case, model, batch, site, ratio, num_anchors):
    fn = reference_speech_logits if case in SPEECH else reference_vision_logits
    with torch.no_grad():
        return fn(model, batch, site, ratio, num_anchors)


# ---------------------------------------------------------------------------------------------------------------------
# 1. identities and the hook-free reference, every family, every site
# ---------------------------------------------------------------------------------------------------------------------


def test_new_families_are_supported():
    for model_type in ("vit", "deit", "wav2vec2", "hubert", "audio-spectrogram-transformer"):
        assert model_type in SUPPORTED_MODEL_TYPES


@pytest.mark.parametrize("case", [*CASES, *LORA_CASES])
def test_partner_equal_to_anchor_is_identity_at_every_site(case):
    model = build(case)
    examples = make_inputs(case, 3, seed=1, lengths=ANCHOR_LENGTHS)
    batch = batch_of(case, examples)
    if LORA_CASES.get(case, case) in SPEECH:
        assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    B = len(examples)
    plain = logits_of(model, batch)
    doubled = {k: torch.cat([v, v]) for k, v in batch.items()}
    mixer = HiddenStateMixer(model).attach()
    assert mixer.sentence_site == 4
    rng = random.Random(case)
    for site in range(mixer.sentence_site + 1):
        ratio = rng.uniform(0.05, 0.95)
        out = mixed_logits(model, mixer, doubled, site, ratio, B)
        torch.testing.assert_close(out[:B], plain, atol=ATOL, rtol=0, msg=f"anchors, site {site}, r={ratio}")
        torch.testing.assert_close(out[B:], plain, atol=ATOL, rtol=0, msg=f"partners, site {site}, r={ratio}")
    mixer.detach()


@pytest.mark.parametrize("case", [*CASES, *LORA_CASES])
def test_ratio_one_keeps_and_ratio_zero_swaps_at_every_site(case):
    """r = 1 leaves both halves unchanged, r = 0 swaps them: the hooks fire at every site, through PEFT too."""
    model = build(case)
    batch = pair_batch(case, same_lengths=True)
    B = 3
    assert_ratio_one_keeps_and_zero_swaps(model, batch, B)


@pytest.mark.parametrize("ratio", [0.5, 0.3])
@pytest.mark.parametrize("case", list(CASES))
def test_mixing_matches_hook_free_reference_at_every_site(case, ratio):
    model = build(case)
    batch = pair_batch(case)  # audio: partner longer, shorter and as long as its anchor
    B = 3
    if case in SPEECH:
        m = batch["attention_mask"]
        assert (m[:B].sum(1) < m[B:].sum(1)).any() and (m[:B].sum(1) > m[B:].sum(1)).any()
    labels = torch.tensor([0, 1, 2, 2, 0, 1])
    mixer = HiddenStateMixer(model).attach()
    for site in range(mixer.sentence_site + 1):
        ref = reference_logits(case, model, batch, site, ratio, B)
        out = mixed_logits(model, mixer, batch, site, ratio, B)
        torch.testing.assert_close(out, ref, atol=ATOL, rtol=0, msg=f"{case} site {site}")
        if ratio == 0.5:  # both rows of a pair are the same mixed example (for audio: the same frames pooled)
            torch.testing.assert_close(out[:B], out[B:], atol=ATOL, rtol=0, msg=f"{case} site {site}")
        loss = ratio * F.cross_entropy(out, labels) + (1 - ratio) * F.cross_entropy(out, labels.roll(B))
        onehot = F.one_hot(labels, NUM_LABELS).float()
        target = ratio * onehot + (1 - ratio) * onehot.roll(B, dims=0)
        torch.testing.assert_close(loss, -(target * F.log_softmax(ref, -1)).sum(-1).mean(), atol=ATOL, rtol=0)
    assert not torch.allclose(
        mixed_logits(model, mixer, batch, 1, ratio, B), mixed_logits(model, mixer, batch, 3, ratio, B), atol=1e-4
    ), "the site must matter"
    mixer.detach()


@pytest.mark.parametrize("case", [*SPEECH, "lora-wav2vec2"])
def test_speech_union_reaches_layers_and_pooling_only_after_the_site(case):
    """r = 1 with longer partners: the anchor rows change when (and only when) a layer or the pooling after the site
    sees the partner's extra frames; mixing the classifier input pools each clip over its own frames."""
    model = build(case)
    anchors = make_inputs(case, 2, seed=1, lengths=[200, 250])
    partners = make_inputs(case, 2, seed=2, lengths=[400, 400])
    batch = batch_of(case, anchors + partners)
    plain_a = logits_of(model, batch_of(case, anchors))
    mixer = HiddenStateMixer(model).attach()
    for site in range(mixer.sentence_site + 1):
        out = mixed_logits(model, mixer, batch, site, 1.0, 2)
        if site == mixer.sentence_site:
            torch.testing.assert_close(out[:2], plain_a, atol=ATOL, rtol=0)
        else:  # the anchor's padded frames, opened after the site, enter the pooled mean (and later layers)
            assert not torch.allclose(out[:2], plain_a, atol=1e-4), site
    # At the last layer no layer follows: only the pooling sees the union. r = 0.5 pools both rows alike.
    last = mixed_logits(model, mixer, batch, mixer.num_layers, 0.5, 2)
    torch.testing.assert_close(last[:2], last[2:], atol=ATOL, rtol=0)
    mixer.detach()


@pytest.mark.parametrize("case", list(CASES))
def test_anchor_dominant_rows_equal_the_full_forward(case):
    model = build(case)
    batch = pair_batch(case)
    B, ratio = 3, 0.8
    mixer = HiddenStateMixer(model).attach()
    for site in range(mixer.sentence_site + 1):
        full = mixed_logits(model, mixer, batch, site, ratio, B)
        out = mixed_logits(model, mixer, batch, site, ratio, B, anchors_only=True)
        assert out.shape[0] == (2 * B if site == mixer.num_layers else B), site
        torch.testing.assert_close(out[:B], full[:B], atol=ATOL, rtol=0, msg=f"{case} site {site}")
    mixer.detach()


@pytest.mark.parametrize("case", ["vit", "wav2vec2"])
def test_dormant_hooks_and_detach_restore_plain_behaviour(case):
    model = build(case)
    batch = pair_batch(case)
    plain = logits_of(model, batch)
    hooks_before = hook_counts(model)  # the model's own (e.g. the positional conv's weight norm)
    mixer = HiddenStateMixer(model).attach()
    assert hook_counts(model) == hooks_before + 2 * mixer.num_layers + 2
    torch.testing.assert_close(logits_of(model, batch), plain, atol=0, rtol=0)
    assert not torch.allclose(mixed_logits(model, mixer, batch, 2, 0.5, 3), plain, atol=1e-4)
    torch.testing.assert_close(logits_of(model, batch), plain, atol=0, rtol=0)
    if case in SPEECH:
        assert "_get_feature_vector_attention_mask" in vars(model)  # the pooling-mask wrapper on the outer model
        assert "_get_feature_vector_attention_mask" not in vars(model.wav2vec2)  # the encoder's masks: untouched
    mixer.detach()
    assert "_get_feature_vector_attention_mask" not in vars(model)
    assert hook_counts(model) == hooks_before
    torch.testing.assert_close(logits_of(model, batch), plain, atol=0, rtol=0)


@pytest.mark.parametrize("case", ["vit", "wav2vec2"])
def test_media_gradient_checkpointing_gives_the_same_gradients(case):
    batch = pair_batch(case)
    labels = torch.tensor([0, 1, 2, 2, 0, 1])
    B, site, ratio = 3, 2, 0.35

    def grads(model):
        model.train()
        mixer = HiddenStateMixer(model).attach()
        mixer.activate(site, ratio, B)  # stays active through backward: the recomputation must mix too
        out = model(**batch).logits
        (ratio * F.cross_entropy(out, labels) + (1 - ratio) * F.cross_entropy(out, labels.roll(B))).backward()
        mixer.detach()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    ref = grads(build(case))
    model = build(case)
    model.gradient_checkpointing_enable()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    got = grads(model)
    assert got.keys() == ref.keys() and got
    for name in got:
        torch.testing.assert_close(got[name], ref[name], atol=ATOL, rtol=1e-4, msg=name)


# ---------------------------------------------------------------------------------------------------------------------
# 2. settings and families DMIX rejects
# ---------------------------------------------------------------------------------------------------------------------


def test_layerdrop_is_rejected_for_hidden_mixing():
    model = build("wav2vec2", layerdrop=0.1)
    with pytest.raises(ValueError, match=r"layerdrop=0\.1"):
        check_mixing_settings(model, "hidden")
    check_mixing_settings(model, "input")  # layers skipped after the site do not stop the mixing
    check_mixing_settings(model, "sentence")
    mixer = HiddenStateMixer(model).attach()
    model.train()
    with pytest.raises(ValueError, match="layerdrop"):
        mixer.activate(2, 0.5, 1)
    mixer.activate(0, 0.5, 1)
    mixer.activate(mixer.sentence_site, 0.5, 1)
    model.eval()
    mixer.activate(2, 0.5, 1)  # no layer is dropped in eval mode
    mixer.detach()


def test_weighted_layer_sum_only_with_sentence_mixing():
    model = build("hubert", use_weighted_layer_sum=True)
    for strategy in ("hidden", "input"):
        with pytest.raises(ValueError, match="use_weighted_layer_sum"):
            check_mixing_settings(model, strategy)
    check_mixing_settings(model, "sentence")


def test_swin_is_rejected_with_the_supported_families():
    model = SwinForImageClassification(
        SwinConfig(
            image_size=16, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=2, num_labels=2
        )
    )
    with pytest.raises(ValueError, match="AutoModelForImageClassification") as info:
        HiddenStateMixer(model)
    message = str(info.value)
    for family in (
        "ViT (vit)",
        "DeiT (deit)",
        "wav2vec2 (wav2vec2)",
        "HuBERT (hubert)",
        "AST (audio-spectrogram-transformer)",
        "AutoModelForImageClassification",
    ):
        assert family in message


def test_deit_with_teacher_is_rejected_with_a_hint():
    from transformers import DeiTForImageClassificationWithTeacher

    config = AutoConfig.for_model("deit", num_labels=2, **CASES["deit"][2])
    with pytest.raises(ValueError, match=r"DeiTForImageClassification\.from_pretrained"):
        HiddenStateMixer(DeiTForImageClassificationWithTeacher(config))


# ---------------------------------------------------------------------------------------------------------------------
# 3. collation and embeddings
# ---------------------------------------------------------------------------------------------------------------------


def _extractor():
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, return_attention_mask=True)


@pytest.mark.parametrize("kind", ["datasets", "list"])
def test_collator_pads_audio_anchors_and_partners_together(kind):
    clips = [np.arange(1, n + 1, dtype=np.float32) for n in (300, 120, 400, 50)]
    if kind == "datasets":
        dataset = Dataset.from_dict({"input_values": [c.tolist() for c in clips], "label": [0, 1, 2, 0]})
        dataset = dataset.add_column("dmix_index", list(range(4)))
    else:  # a torch-style dataset: a list of dicts holding tensors
        dataset = [{"input_values": torch.from_numpy(c), "label": i % 3, "dmix_index": i} for i, c in enumerate(clips)]
    collator = DMixDataCollator(_extractor(), train_dataset=dataset)
    collator.partner_index = PartnerIndex(num_examples=4, candidates=torch.tensor([[2], [3], [0], [1]]))
    batch = collator([dataset[0], dataset[1]])
    assert batch["input_values"].shape == (4, 400) and batch["input_values"].dtype == torch.float32
    assert batch["attention_mask"].sum(1).tolist() == [300, 120, 400, 50]
    assert batch["labels"].tolist() == [0, 1, 2, 0] and batch["dmix_partner_ids"].tolist() == [2, 3]
    for row, clip in zip(batch["input_values"], [clips[0], clips[1], clips[2], clips[3]], strict=True):
        torch.testing.assert_close(row[: len(clip)], torch.from_numpy(clip))
        assert (row[len(clip) :] == 0).all()
    plain = collator([{k: v for k, v in dataset[i].items() if k != "dmix_index"} for i in (0, 1)])  # evaluation
    assert plain["input_values"].shape == (2, 300) and "dmix_partner_ids" not in plain


@pytest.mark.parametrize("kind", ["datasets", "numpy", "torch"])
def test_collator_stacks_images_without_a_processor(kind):
    images = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    if kind == "datasets":
        dataset = Dataset.from_dict({"pixel_values": images.tolist(), "label": [0, 1, 2, 0]})
        dataset = dataset.add_column("dmix_index", list(range(4)))
    else:
        as_value = torch.from_numpy if kind == "torch" else (lambda a: a)
        dataset = [{"pixel_values": as_value(images[i]), "label": i % 3, "dmix_index": i} for i in range(4)]
    collator = DMixDataCollator(None, train_dataset=dataset)
    collator.partner_index = PartnerIndex(num_examples=4, candidates=torch.tensor([[3], [2], [1], [0]]))
    batch = collator([dataset[0], dataset[1]])
    assert batch["pixel_values"].dtype == torch.float32
    torch.testing.assert_close(batch["pixel_values"], torch.from_numpy(images[[0, 1, 3, 2]]))
    assert batch["labels"].tolist() == [0, 1, 0, 2]


def test_collator_without_processor_rejects_clips_of_different_lengths():
    with pytest.raises(ValueError, match="processing_class=feature_extractor"):
        DMixDataCollator(None)([{"input_values": [0.1] * 5, "label": 0}, {"input_values": [0.2] * 7, "label": 1}])


@pytest.mark.parametrize("case", ["wav2vec2", "hubert"])
def test_embedding_pass_pools_over_each_clips_own_frames(case):
    """The mean over valid frames of a padded batch equals the embedding of each clip alone (no padding)."""
    model = build(case)
    clips = make_inputs(case, 3, seed=4, lengths=[400, 150, 260])
    padded = embed_batches(model, [batch_of(case, clips)], show_progress=False)
    alone = torch.cat([embed_batches(model, [batch_of(case, [c])], show_progress=False) for c in clips])
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-4)


def test_embedding_pass_on_images_means_over_all_positions():
    model = build("vit")
    batch = batch_of("vit", make_inputs("vit", 2, seed=4))
    emb = embed_batches(model, [batch], show_progress=False)
    with torch.no_grad():
        last = model(**batch, output_hidden_states=True).hidden_states[-1]
    assert last.shape[1] == 1 + (IMAGE_SIZE // 4) ** 2
    torch.testing.assert_close(emb, last.mean(1))


# ---------------------------------------------------------------------------------------------------------------------
# 4. DMixTrainer end to end: 2B-row training batches, plain evaluation
# ---------------------------------------------------------------------------------------------------------------------


class RecordingTrainer(DMixTrainer):
    """Records, per compute_loss call, the rows the model received and whether the mixer was active."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        main = inputs.get("pixel_values", inputs.get("input_values"))
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        self.calls.append(
            (model.training, main.shape[0], "dmix_partner_ids" in inputs, self.mixer.state.site, float(loss.detach()))
        )
        return result


def _image_dataset(n: int, seed: int) -> Dataset:
    """Images whose class is written in their mean brightness, as a datasets column of nested lists."""
    rng = np.random.default_rng(seed)
    labels = [i % NUM_LABELS for i in range(n)]
    images = [rng.standard_normal((3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32) + y for y in labels]
    return Dataset.from_dict({"pixel_values": [im.tolist() for im in images], "label": labels})


def _clip_dataset(n: int, seed: int) -> Dataset:
    """Clips of 120..400 samples whose class is their frequency."""
    rng = np.random.default_rng(seed)
    labels = [i % NUM_LABELS for i in range(n)]
    clips = []
    for y in labels:
        t = np.arange(int(rng.integers(120, 401)))
        clips.append((np.sin(t * (0.05 + 0.2 * y)) + 0.1 * rng.standard_normal(len(t))).astype(np.float32).tolist())
    return Dataset.from_dict({"input_values": clips, "label": labels})


def _args(tmp_path, **overrides) -> DMixConfig:
    common = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=4,
        learning_rate=1e-3,
        logging_steps=1,
        partner_distance="cosine",
        tau=0.5,
        embedding_batch_size=8,
    )
    return DMixConfig(**{**common, **overrides})


def _check_run(trainer: RecordingTrainer, eval_size: int) -> None:
    train_calls = [c for c in trainer.calls if c[0]]
    assert len(train_calls) == 4
    for _training, rows_, partnered, site, loss in train_calls:
        assert rows_ == 8 and partnered and site is not None and np.isfinite(loss)  # 2B rows, every one mixed
    assert trainer.partner_index is not None and trainer.partner_index.candidates is not None
    trainer.calls.clear()
    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_loss"])
    eval_calls = trainer.calls
    assert eval_calls
    assert all(not training and not partnered and site is None for training, _, partnered, site, _ in eval_calls)
    assert sum(c[1] for c in eval_calls) == eval_size  # exactly the rows given, no partner rows
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all(np.isfinite(h["loss"]) for h in logged)


def test_trainer_smoke_vit(tmp_path):
    train, dev = _image_dataset(24, seed=0), _image_dataset(6, seed=1)
    trainer = RecordingTrainer(model=build("vit"), args=_args(tmp_path), train_dataset=train, eval_dataset=dev)
    trainer.calls = []
    assert "image-classification" in trainer.model.model_tags
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.named_parameters())
    # The partner index was built from the model's own image embeddings (mean over positions), not at random.
    assert trainer.partner_points is not None and trainer.partner_points.shape == (24, 32)
    _check_run(trainer, eval_size=6)


def test_trainer_smoke_vit_with_an_on_the_fly_transform(tmp_path):
    """The usual image recipe: raw images in the dataset, the processor applied by ``with_transform``."""
    raw = _image_dataset(24, seed=0).rename_column("pixel_values", "image")

    def transform(batch):
        return {
            "pixel_values": [np.asarray(im, dtype=np.float32) * 0.5 for im in batch["image"]],
            "label": batch["label"],
        }

    train = raw.with_transform(transform)
    dev = _image_dataset(6, seed=1).rename_column("pixel_values", "image").with_transform(transform)
    args = _args(tmp_path, remove_unused_columns=False)  # the transform needs "image", as in transformers' examples
    trainer = RecordingTrainer(model=build("vit"), args=args, train_dataset=train, eval_dataset=dev)
    trainer.calls = []
    trainer.train()
    _check_run(trainer, eval_size=6)


def test_trainer_smoke_wav2vec2(tmp_path):
    train, dev = _clip_dataset(24, seed=0), _clip_dataset(6, seed=1)
    trainer = RecordingTrainer(
        model=build("wav2vec2"),
        args=_args(tmp_path, mix_layers=[1, 2, 3]),
        train_dataset=train,
        eval_dataset=dev,
        processing_class=_extractor(),
    )
    trainer.calls = []
    assert "audio-classification" in trainer.model.model_tags
    trainer.train()
    assert trainer.partner_points is not None and trainer.partner_points.shape == (24, 32)
    _check_run(trainer, eval_size=6)
    predictions = trainer.predict(dev)
    assert predictions.predictions.shape == (6, NUM_LABELS)


def test_trainer_rejects_layerdrop_before_training(tmp_path):
    with pytest.raises(ValueError, match="layerdrop"):
        DMixTrainer(
            model=build("wav2vec2", layerdrop=0.05),
            args=_args(tmp_path),
            train_dataset=_clip_dataset(6, 0),
            processing_class=_extractor(),
        )
