"""Sentence embeddings for partner search, computed once before training.

What lives here: pooling of a last hidden state, and the two ways of embedding a training set — with the model
being fine-tuned (over its already-prepared features: token ids, ``pixel_values`` or ``input_values``) or with a
separate encoder (over raw text). What does not: geometry (``geometry.py``) and partner selection (``partners.py``).

"Sentence" embedding is the paper's word; for images it is the mean over every position of the last hidden state
(the CLS [and distillation] token and the patches — the same way text pools include ``[CLS]``/``[SEP]``), for audio
the mean over the clip's valid feature frames (the model maps its sample-level ``attention_mask`` to frames).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .mixing import unwrap_model


def pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str = "mean") -> torch.Tensor:
    """Pool ``(B, L, H)`` hidden states into ``(B, H)`` float32 sentence vectors.

    ``mean`` averages over the positions the attention mask marks as valid; ``cls`` takes the first token.
    """
    hidden = last_hidden_state.float()
    if pooling == "cls":
        return hidden[:, 0]
    if pooling != "mean":
        raise ValueError(f"Unknown pooling {pooling!r}; expected 'mean' or 'cls'.")
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    # A row with no valid token (never produced by a tokenizer) would divide by zero; it pools to the zero vector.
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def position_mask(model: nn.Module, attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """The mask over the ``length`` positions of the last hidden state, from the batch's ``attention_mask``.

    Text: the attention mask itself. Speech models (wav2vec2, HuBERT, …) take a mask over input *samples* and run a
    strided convolution first; their ``_get_feature_vector_attention_mask`` gives the mask over the feature frames,
    the one their own classification head pools with. No mask (images, fixed-size spectrograms): ``None``.
    """
    if attention_mask is None or attention_mask.shape[-1] == length:
        return attention_mask
    to_frames = getattr(unwrap_model(model), "_get_feature_vector_attention_mask", None)
    if to_frames is None:
        raise ValueError(
            f"The attention_mask covers {attention_mask.shape[-1]} positions but the model's last hidden state has "
            f"{length}, and {type(unwrap_model(model)).__name__} has no _get_feature_vector_attention_mask to map one "
            "to the other."
        )
    return to_frames(length, attention_mask)


@torch.no_grad()
def embed_batches(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    pooling: str = "mean",
    total: int | None = None,
    show_progress: bool = True,
    desc: str = "DMIX sentence embeddings",
) -> torch.Tensor:
    """Run ``model`` over padded batches and pool its last hidden state; returns ``(N, H)`` float32 on the CPU.

    Works with text, image and audio classifiers (through ``output_hidden_states``), with bare encoders
    (``last_hidden_state``) and with PEFT-wrapped models; the mean is over valid positions (:func:`position_mask`).
    The model is put in eval mode for the pass (no dropout, so the embeddings are deterministic) and restored to its
    previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    try:
        for batch in tqdm(batches, total=total, desc=desc, disable=not show_progress):
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            outputs = model(**batch, output_hidden_states=True)
            hidden = getattr(outputs, "last_hidden_state", None)
            if hidden is None:
                hidden = outputs.hidden_states[-1]
            mask = position_mask(model, batch.get("attention_mask"), hidden.shape[1])
            chunks.append(pool(hidden, mask, pooling).cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def iter_feature_batches(
    rows: Callable[[Sequence[int]], list[dict[str, Any]]],
    row_range: range,
    batch_size: int,
    collate: Callable[[list[dict[str, Any]]], Mapping[str, torch.Tensor]],
) -> Iterable[Mapping[str, torch.Tensor]]:
    """Batches of the rows in ``row_range``, in order, read with ``rows(indices)`` and padded with ``collate``."""
    for start in range(row_range.start, row_range.stop, batch_size):
        yield collate(rows(range(start, min(start + batch_size, row_range.stop))))


def embed_texts(
    model_name_or_path: str,
    texts: Sequence[str],
    pooling: str = "mean",
    batch_size: int = 64,
    max_length: int = 256,
    device: torch.device | str | None = None,
    show_progress: bool = True,
) -> torch.Tensor:
    """Embed raw texts with a separate encoder (``AutoModel`` + ``AutoTokenizer``), e.g. a sentence encoder."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        encoder = AutoModel.from_pretrained(model_name_or_path, dtype=torch.float32)
    except OSError as err:
        raise OSError(
            f"Could not load the embedding encoder {model_name_or_path!r}: {err}. Pass a local folder with "
            "config.json, weights and tokenizer files, or a Hub id while online."
        ) from err
    if device is not None:
        encoder.to(device)

    def collate(indices: Sequence[int]) -> Mapping[str, torch.Tensor]:
        return tokenizer(
            [texts[i] for i in indices], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )

    batches = (collate(range(s, min(s + batch_size, len(texts)))) for s in range(0, len(texts), batch_size))
    total = -(-len(texts) // batch_size)
    return embed_batches(encoder, batches, pooling, total=total, show_progress=show_progress)
