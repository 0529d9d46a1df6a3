"""Interpolative mixing inside one forward pass (paper eq. 1–3), implemented with module hooks.

What lives here: :class:`HiddenStateMixer`, which attaches hooks to a model so that a forward pass over a batch laid out
as ``[anchors; partners]`` (``2B`` rows) mixes the two halves at a chosen *site*:

* site ``0`` — the embedding output (``mix_strategy="input"``),
* site ``k`` in ``1..N`` — the output of encoder layer ``k`` (``mix_strategy="hidden"``, the paper),
* site ``N+1`` — the sentence vector entering the final linear classifier (``mix_strategy="sentence"``).

Rows ``b < B`` become ``r·h_anchor + (1−r)·h_partner``; rows ``b ≥ B`` become ``r·h_partner + (1−r)·h_anchor``: the
same selected pair at ratio ``1−r``, which has the same ``Beta(α, α)`` distribution as ``r``. So every row computed
after the mixing site is a valid mixed example and contributes to the loss; no compute is thrown away.

With ``anchors_only`` (``DMixConfig.anchor_dominant``) the caller passes ``r ≥ 0.5`` and only the ``B`` anchor-dominant
rows continue past the site: the first layer after it receives (and every later layer keeps) rows ``b < B`` only, so
the layers after the site cost half as much. At the last layer and at the classifier input nothing follows, and the
caller simply reads the first ``B`` logits.

Before the site each sequence attends with its own padding mask; after it, both rows of a pair attend to every
position that is valid in either sequence (the union of the two masks). The masks themselves are always the ones
transformers built for the model; we only combine them.

Mixing also mixes the anchor's *padding* positions with the partner's tokens there, and the union then lets later
layers read them; so the anchor's hidden states at its padding positions, which a plain forward never uses, must be
well defined. With global attention they are (a padding query attends to the sequence's tokens). ModernBERT's
sliding-window layers leave a padding query more than half a window past the last token with no key at all, and
such a fully masked row is implementation-defined (sdpa: zero output, eager: uniform weights over every position).
The residual stream carries that difference to every later layer, so the mixed result at every site from the first
sliding-window layer to ``N − 1`` would depend on the attention implementation. For families with such layers
(``EncoderFamily.keyless_rows``) each mask row with no key is therefore given the keys its sequence can attend to
(:func:`fill_keyless_rows`) while mixing is active: those rows then attend like a global layer's, in every
implementation; the rows of real tokens are untouched, so nothing a plain forward reads changes.

The same three kinds of site exist for images and audio (the rows of ``_FAMILIES`` in ``families.py``):

* ViT / DeiT (``*ForImageClassification``): site 0 is the patch embeddings (CLS [+ distillation] token, positions,
  dropout), sites ``1..N`` the transformer layers, site ``N+1`` the input of ``classifier``: the CLS vector after the
  final layer norm. Images of one size have no padding, so there is no mask to combine.
* Audio Spectrogram Transformer (``ASTForAudioClassification``): the same layout as DeiT over spectrogram patches;
  site ``N+1`` is the input of ``classifier.dense`` (the averaged CLS/distillation vector after the head's layer
  norm, as RoBERTa's site is the input of ``out_proj``). Spectrograms are padded to a fixed length: no mask.
* wav2vec2 / HuBERT (``*ForSequenceClassification``): site 0 is the input of the first transformer layer — the conv
  feature encoder's frames after ``feature_projection``, zeroing of padded frames, the positional convolution, (in
  the post-norm variant) the encoder layer norm and dropout, i.e. the output of ``encoder.dropout``. Up to there
  every clip is processed with its own mask (the convolutions see only its own, zeroed, padding). Sites ``1..N``
  are the transformer layers; site ``N+1`` is the input of ``classifier``: ``projector`` output mean-pooled over the
  clip's valid frames. Padding works as for text, with one addition: the model pools over the frame mask it
  derives from the sample-level ``attention_mask`` (``_get_feature_vector_attention_mask``), and after a mixing site
  ``<= N`` that frame mask is the pair's union too, so a mixed row averages over every frame the layers after the
  site let it attend to. (Mixing at ``N+1`` mixes two vectors each pooled over its own frames.) LayerDrop skips
  layers at random in training, and a skipped mixing layer would leave the batch unmixed: hidden-state mixing needs
  ``layerdrop=0``; ``use_weighted_layer_sum`` feeds the head with the unmixed layers before the site: it is
  supported with ``mix_strategy="sentence"`` only (:func:`check_mixing_settings`).

Swin (and other hierarchical vision models) are not supported: their blocks sit in stages separated by patch merging,
so there is no single list of same-shaped layers for ``k`` to index, and the family table would need nested paths.

What does not live here: the family table and model checks (``families.py``), choosing partners (``partners.py``),
the mixing schedule and the loss (``loss.py``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

# The family table and its lookups live in families.py; they are re-exported here, where they were defined before.
from .families import (  # noqa: F401
    _AUTO_CLASSES,
    _FAMILIES,
    SUPPORTED_MODEL_TYPES,
    EncoderFamily,
    _get_module,
    _layerdrop_message,
    check_mixing_settings,
    modality_of,
    num_layers,
    resolve_family,
    unwrap_model,
)

MixStrategy = Literal["hidden", "input", "sentence", "none"]
MIX_STRATEGIES: tuple[str, ...] = ("hidden", "input", "sentence", "none")


def _mix_rows(h: torch.Tensor, ratio: float, num_anchors: int) -> torch.Tensor:
    """``r·h + (1−r)·h_swapped`` where the swap exchanges the anchor half and the partner half of the batch."""
    if h.shape[0] != 2 * num_anchors:
        raise RuntimeError(
            f"DMIX expected a batch of {2 * num_anchors} rows ({num_anchors} anchors + partners), got {h.shape[0]}."
        )
    return ratio * h + (1.0 - ratio) * h.roll(num_anchors, dims=0)


def union_mask(mask: torch.Tensor | None, num_anchors: int, kind: Literal["key", "product"] = "key") -> Any:
    """Combine the prepared attention masks of each anchor/partner pair so both attend to either's valid tokens.

    Works on whatever transformers prepared: a boolean sdpa mask (``True`` = attend), an additive float mask
    (``0`` = attend, a large negative number = masked) or an integer 0/1 mask — in all three "attend" is the
    larger value, so the union is an element-wise maximum with the pair-swapped mask. ``None`` (no padding in
    the batch) stays ``None``. DeBERTa-v2 passes a query×key product mask, whose union is not the maximum of the
    two products; there the key validity is read off the mask and the product rebuilt in the same dtype.
    Masks of other forms (e.g. a dict per attention type) are combined value by value.
    """
    if mask is None:
        return None
    if isinstance(mask, dict):
        return {name: union_mask(m, num_anchors, kind) for name, m in mask.items()}
    if not isinstance(mask, torch.Tensor) or mask.shape[0] != 2 * num_anchors:
        return mask  # broadcast masks (batch dim 1) are shared by all rows already
    swapped = mask.roll(num_anchors, dims=0)
    if kind == "product":
        keys = torch.maximum(mask.amax(dim=-2, keepdim=True), swapped.amax(dim=-2, keepdim=True))  # (2B, 1, 1, L)
        return keys * keys.transpose(-1, -2)
    if mask.dtype == torch.bool:
        return mask | swapped
    return torch.maximum(mask, swapped)


def fill_keyless_rows(mask: Any) -> Any:
    """Give every query row of a prepared attention mask that allows no key the keys its sequence can attend to.

    A sliding-window layer leaves a padding query more than half a window past the last token with no key; the
    attention output of such a row is implementation-defined (sdpa returns zeros, eager a uniform average over every
    position, padding included). After filling, the row allows exactly the keys that some query of the same sequence
    allows (the sequence's tokens: each token sees at least itself), so every implementation computes the same
    softmax. Rows that allow any key are returned unchanged. Works on boolean (``True`` = attend), additive float
    (``0`` = attend, very negative = masked) and integer 0/1 masks of shape ``(..., L_query, L_key)``; ``None`` and
    dicts of masks as in :func:`union_mask`.
    """
    if mask is None:
        return None
    if isinstance(mask, dict):
        return {name: fill_keyless_rows(m) for name, m in mask.items()}
    if not isinstance(mask, torch.Tensor) or mask.ndim < 2 or mask.shape[-2] == 1:
        return mask  # a key-padding mask (one query row) leaves no real token without keys
    row_best = mask.amax(dim=-1, keepdim=True)
    if mask.dtype == torch.bool:
        keyless = ~row_best
    elif mask.is_floating_point():
        # Additive: transformers masks with finfo.min (or -inf); half of it is far below any real bias.
        keyless = row_best <= torch.finfo(mask.dtype).min / 2
    else:
        keyless = row_best <= 0
    if not keyless.any():
        return mask
    return torch.where(keyless, mask.amax(dim=-2, keepdim=True), mask)


def _anchor_rows(value: Any, num_anchors: int, seq_len: int | None) -> Any:
    """Keep rows ``b < B`` of per-row tensors ``(2B, L, ...)`` (and of tuples/dicts of them), leave others alone.

    Only tensors whose first two dimensions are ``(2B, L)`` are per-row inputs of a layer (hidden states, rotary
    position embeddings); requiring the sequence length too keeps shared tensors that happen to have ``2B`` rows
    (DeBERTa's relative-position embedding table has ``2·span``) untouched.
    """
    if isinstance(value, torch.Tensor):
        if value.ndim >= 2 and value.shape[0] == 2 * num_anchors and (seq_len is None or value.shape[1] == seq_len):
            return value[:num_anchors]
        return value
    if isinstance(value, tuple):
        return tuple(_anchor_rows(v, num_anchors, seq_len) for v in value)
    if isinstance(value, dict):
        return {k: _anchor_rows(v, num_anchors, seq_len) for k, v in value.items()}
    return value


def _mask_rows(mask: Any, num_anchors: int) -> Any:
    """Rows ``b < B`` of a prepared attention mask with ``2B`` rows (masks with one broadcast row stay as they are)."""
    if isinstance(mask, dict):
        return {k: _mask_rows(m, num_anchors) for k, m in mask.items()}
    if isinstance(mask, torch.Tensor) and mask.shape[0] == 2 * num_anchors:
        return mask[:num_anchors]
    return mask


@dataclass
class _MixState:
    site: int | None = None
    ratio: float = 1.0
    num_anchors: int = 0
    anchors_only: bool = False


class HiddenStateMixer:
    """Hooks that mix anchors and partners at one site of a classifier's forward pass (text, image or audio).

    The hooks are attached once and stay dormant until :meth:`activate` is called; they then act on every forward
    pass until :meth:`deactivate`. Staying active through the backward matters: with gradient checkpointing the
    forward of each layer is *recomputed during backward*, and the recomputation must mix exactly as the original
    forward did. ``DMixTrainer`` activates in ``compute_loss`` and deactivates when the training step (forward and
    backward) ends, so no other forward — evaluation, prediction, a callback's — ever mixes.

    Example::

        mixer = HiddenStateMixer(model).attach()
        with mixer.mixing(site=3, ratio=0.7, num_anchors=4):
            logits = model(**batch_of_8_rows).logits  # rows 0-3: anchors mixed with rows 4-7
    """

    def __init__(self, model: nn.Module) -> None:
        self.base = unwrap_model(model)
        self.family = resolve_family(self.base)
        self.layers = _get_module(self.base, self.family.layers)
        self.num_layers = len(self.layers)
        self.state = _MixState()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def sentence_site(self) -> int:
        """Site index of the sentence vector entering the classifier (``N + 1``)."""
        return self.num_layers + 1

    def attach(self) -> HiddenStateMixer:
        """Register the (dormant) hooks. Idempotent."""
        if self._handles:
            return self
        embeddings = _get_module(self.base, self.family.embeddings)
        # prepend=True: the mixed output must be what every other forward hook sees, in particular the hooks
        # transformers installs (lazily, on the first forward asking for them) to record `output_hidden_states`.
        self._handles.append(embeddings.register_forward_hook(self._output_hook(0), prepend=True))
        for i, layer in enumerate(self.layers, start=1):
            self._handles.append(layer.register_forward_pre_hook(self._mask_hook(i), with_kwargs=True))
            self._handles.append(layer.register_forward_hook(self._output_hook(i), prepend=True))
        head = _get_module(self.base, self.family.sentence_head)
        self._handles.append(head.register_forward_pre_hook(self._head_hook()))
        if self.family.frame_mask is not None:
            self._wrap_frame_mask(self.family.frame_mask)
        return self

    def detach(self) -> None:
        """Remove all hooks; the model behaves exactly as before :meth:`attach`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.family.frame_mask is not None:
            # Only the instance attribute set by _wrap_frame_mask goes; the class method shows through again.
            self.base.__dict__.pop(self.family.frame_mask, None)
        self.deactivate()

    def _wrap_frame_mask(self, name: str) -> None:
        """Make the classifier's frame mask (the mask its head pools with) the pair's union after a site ``<= N``.

        Speech classifiers compute the pooling mask inside ``forward`` by calling ``self.<name>(frames,
        attention_mask)`` on the *outer* model, while the encoder's own masks come from the same method of the inner
        base model (another instance). Shadowing the method on the outer instance therefore changes the pooling
        mask only; a forward hook cannot reach it. Dormant, the wrapper returns the original mask unchanged.
        """
        original = getattr(type(self.base), name).__get__(self.base)

        def frame_mask(*args: Any, **kwargs: Any) -> Any:
            mask = original(*args, **kwargs)
            state = self.state
            if state.site is None or state.site > self.num_layers:
                return mask  # unmixed, or mixed at the classifier input: each row pools over its own frames
            mask = union_mask(mask, state.num_anchors)
            if state.anchors_only and state.site < self.num_layers:
                mask = _mask_rows(mask, state.num_anchors)  # only the anchor rows reached the head
            return mask

        setattr(self.base, name, frame_mask)

    def activate(self, site: int, ratio: float, num_anchors: int, anchors_only: bool = False) -> None:
        """Mix at ``site`` with ratio ``r = ratio`` on the anchor, for batches of ``2 * num_anchors`` rows.

        ``anchors_only``: only the ``B`` anchor rows continue after the site (the model returns ``B`` logits when
        the site is before the last layer, ``2B`` otherwise, of which the first ``B`` are the anchors').
        """
        if not 0 <= site <= self.sentence_site:
            raise ValueError(f"Mixing site must lie in [0, {self.sentence_site}], got {site}.")
        if not self._handles:
            raise RuntimeError("HiddenStateMixer.activate() called before attach().")
        config = self.base.config
        if 1 <= site <= self.num_layers and self.base.training and float(getattr(config, "layerdrop", 0.0) or 0.0) > 0:
            raise ValueError(_layerdrop_message(config))
        self.state = _MixState(
            site=site, ratio=float(ratio), num_anchors=int(num_anchors), anchors_only=bool(anchors_only)
        )

    def deactivate(self) -> None:
        """Make every hook a no-op again."""
        self.state = _MixState()

    @contextmanager
    def mixing(self, site: int, ratio: float, num_anchors: int, anchors_only: bool = False):
        """Context manager form of :meth:`activate` / :meth:`deactivate` (no gradient checkpointing across it)."""
        self.activate(site, ratio, num_anchors, anchors_only)
        try:
            yield self
        finally:
            self.deactivate()

    def _output_hook(self, site: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            state = self.state
            if state.site != site:
                return None
            if isinstance(output, tuple):  # DeBERTa-v2 layers return (hidden_states, attentions)
                return (_mix_rows(output[0], state.ratio, state.num_anchors), *output[1:])
            return _mix_rows(output, state.ratio, state.num_anchors)

        return hook

    def _mask_hook(self, layer_index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
            state = self.state
            # Layers after the mixing site see the union of the pair's masks; layers up to it keep their own. In
            # sliding-window families every layer's keyless rows are filled too (module docstring).
            if state.site is None:
                return None
            after = layer_index > state.site
            fill = self.family.keyless_rows
            if not after and not fill:
                return None
            kind, b = self.family.mask_kind, state.num_anchors

            def combine(mask: Any) -> Any:
                if not after:
                    return fill_keyless_rows(mask)
                # Union first: an anchor padding row that the partner's tokens open must keep the partner's window,
                # not be filled from the anchor's own (keyless) row.
                mask = union_mask(mask, b, kind)
                if fill:
                    mask = fill_keyless_rows(mask)
                return _mask_rows(mask, b) if state.anchors_only else mask

            if "attention_mask" in kwargs:
                kwargs = dict(kwargs, attention_mask=combine(kwargs["attention_mask"]))
            elif len(args) > self.family.mask_arg:
                i = self.family.mask_arg
                args = (*args[:i], combine(args[i]), *args[i + 1 :])
            if state.anchors_only and after:
                hidden = args[0] if args else kwargs.get("hidden_states")
                seq_len = hidden.shape[1] if isinstance(hidden, torch.Tensor) and hidden.ndim >= 2 else None
                skip = {"attention_mask"}
                args = tuple(
                    a if i == self.family.mask_arg and "attention_mask" not in kwargs else _anchor_rows(a, b, seq_len)
                    for i, a in enumerate(args)
                )
                kwargs = {k: (v if k in skip else _anchor_rows(v, b, seq_len)) for k, v in kwargs.items()}
            return args, kwargs

        return hook

    def _head_hook(self):
        def hook(module: nn.Module, args: tuple) -> Any:
            state = self.state
            if state.site != self.sentence_site:
                return None
            mixed = _mix_rows(args[0], state.ratio, state.num_anchors)
            return (mixed[: state.num_anchors] if state.anchors_only else mixed, *args[1:])

        return hook
