"""Sentence embeddings for partner search, computed once before training (and at each partner refresh).

What lives here: pooling of a last hidden state; the two ways of embedding a training set — with the model
being fine-tuned (over its already-prepared features: token ids, ``pixel_values`` or ``input_values``) or with a
separate encoder (over raw text); :func:`embed_training_set`, which picks the source (precomputed, encoder, the model),
embeds this process's shard and gathers the shards; :func:`check_embeddings`; and :func:`weights_digest`, the part
of the embedding cache key that identifies the model's weights. What does not: geometry (``geometry.py``), partner
selection (``partners.py``), the cache itself (``indexer.py``).

"Sentence" embedding is the paper's word; for images it is the mean over every position of the last hidden state
(the CLS [and distillation] token and the patches — the same way text pools include ``[CLS]``/``[SEP]``), for audio
the mean over the clip's valid feature frames (the model maps its sample-level ``attention_mask`` to frames).
"""

from __future__ import annotations

import hashlib
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
    keep: int | None = None,
) -> torch.Tensor:
    """Run ``model`` over padded batches and pool its last hidden state; returns ``(N, H)`` float32 on the CPU.

    ``keep``: only the first ``keep`` rows are returned (the rest pooled filler batches, see
    :func:`iter_feature_batches`).

    Works with text, image and audio classifiers (through ``output_hidden_states``), with bare encoders
    (``last_hidden_state``) and with PEFT-wrapped models; the mean is over valid positions (:func:`position_mask`).
    The model is put in eval mode for the pass (no dropout, so the embeddings are deterministic) and restored to its
    previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    check_materialized(model)
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
    if not chunks:
        return torch.zeros(0, 0)
    out = torch.cat(chunks)
    return out if keep is None else out[:keep]


def check_materialized(model: nn.Module) -> None:
    """Refuse to embed with a model whose weights are not in this process (``meta`` tensors, e.g. FSDP's
    ``cpu_ram_efficient_loading`` before the weights are broadcast): the embeddings would be garbage or fail late."""
    if any(p.is_meta for p in model.parameters()):
        raise ValueError(
            "The model's weights are not loaded in this process (meta tensors), so DMIX cannot embed the training "
            "set with it. Turn off FSDP's cpu_ram_efficient_loading, or give the partner search its own embeddings "
            "(DMixTrainer(sentence_embeddings=...) or embedding_model=...)."
        )


def iter_feature_batches(
    rows: Callable[[Sequence[int]], list[dict[str, Any]]],
    row_range: range,
    batch_size: int,
    collate: Callable[[list[dict[str, Any]]], Mapping[str, torch.Tensor]],
    num_batches: int | None = None,
) -> Iterable[Mapping[str, torch.Tensor]]:
    """Batches of the rows in ``row_range``, in order, read with ``rows(indices)`` and padded with ``collate``.

    ``num_batches``: yield exactly this many batches, the missing ones being one-row filler batches (the shard's first
    row, or row 0 for an empty shard) whose outputs the caller drops. A sharded model (FSDP2, ZeRO-3) runs each forward
    as a collective — every process must call it equally often, or the processes hang — so every process pads its
    shard's batch count to that of the largest shard.
    """
    count = 0
    for start in range(row_range.start, row_range.stop, batch_size):
        count += 1
        yield collate(rows(range(start, min(start + batch_size, row_range.stop))))
    filler = row_range.start if len(row_range) else 0
    for _ in range(count, num_batches or 0):
        yield collate(rows(range(filler, filler + 1)))


def embed_texts(
    model_name_or_path: str,
    texts: Sequence[str],
    pooling: str = "mean",
    batch_size: int = 64,
    max_length: int = 256,
    device: torch.device | str | None = None,
    show_progress: bool = True,
) -> torch.Tensor:
    """Embed raw texts with a separate encoder (``AutoModel`` + ``AutoTokenizer``), e.g. a sentence encoder.

    ``texts`` holds strings, or ``(text, text_pair)`` tuples for sentence pairs (tokenized together as one pair)."""
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
        batch = [texts[i] for i in indices]
        # Sentence pairs (text, text_pair) are tokenized as a pair, as a pair classifier reads them.
        pair = [b for _, b in batch] if batch and isinstance(batch[0], tuple) else None
        first = [a for a, _ in batch] if pair is not None else batch
        return tokenizer(first, pair, padding=True, truncation=True, max_length=max_length, return_tensors="pt")

    batches = (collate(range(s, min(s + batch_size, len(texts)))) for s in range(0, len(texts), batch_size))
    total = -(-len(texts) // batch_size)
    return embed_batches(encoder, batches, pooling, total=total, show_progress=show_progress)


def embedding_source(precomputed: Any, embedding_model: str | None) -> str:
    """Where a run's partner-search embeddings come from: ``"precomputed"``, ``"embedding_model"`` or ``"model"``."""
    if precomputed is not None:
        return "precomputed"
    return "embedding_model" if embedding_model is not None else "model"


def weights_digest(model: nn.Module) -> str:
    """A digest of a model's trainable and frozen weights: the embedding cache's key for "the same model".

    Two models built from other checkpoints, or initialised with other seeds, differ in it; the same weights give
    the same digest in any process. Per tensor, the name, shape and float64 sum and sum of squares are hashed:
    ``O(parameters)`` reads, no copy of the model.
    """
    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in unwrap_model(model).state_dict().items():
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                continue
            if hasattr(tensor, "full_tensor"):  # a DTensor shard (FSDP2): every process digests the whole tensor
                tensor = tensor.full_tensor()
            t = tensor.detach().double()
            h.update(f"{name}{tuple(tensor.shape)}".encode())
            h.update(torch.stack([t.sum(), (t * t).sum()]).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def check_embeddings(emb: torch.Tensor) -> None:
    """Finite, non-constant sentence embeddings: one NaN row would make every ball point NaN and every candidate set
    the same arbitrary block; identical rows leave no distance to rank by."""
    bad = (~torch.isfinite(emb)).any(dim=1)
    if bad.any():
        rows = torch.nonzero(bad).reshape(-1)
        raise ValueError(
            f"{len(rows)} sentence embedding(s) contain NaN or inf (training-set rows {rows[:10].tolist()}). Check "
            "those examples (empty after tokenization?) and the embedding model (half precision overflow?), or pass "
            "finite sentence_embeddings=."
        )
    if emb.shape[0] > 1 and float((emb - emb[0]).abs().max()) == 0.0:
        raise ValueError(
            "All sentence embeddings are identical, so no example is nearer or farther than another. Check that the "
            "embedding model is a trained encoder and that the texts differ (embedding_model=, embedding_pooling=)."
        )


def texts_of(dataset: Any, column: str, rows: range, pair_column: str | None = None) -> list[Any]:
    """The raw texts of ``rows`` (``(text, text_pair)`` tuples when ``pair_column`` names a second text column)."""
    if hasattr(dataset, "column_names"):
        for col, name in ((column, "embedding_text_column"), (pair_column, "embedding_text_pair_column")):
            if col is not None and col not in dataset.column_names:
                raise ValueError(
                    f"{name}={col!r} is not a column of the training set; it has "
                    f"{dataset.column_names}. Keep the raw text column in the dataset you pass to DMixTrainer."
                )
        if not len(rows):
            return []
        part = dataset.select(rows)
        return list(part[column]) if pair_column is None else list(zip(part[column], part[pair_column], strict=True))
    if pair_column is None:
        return [dataset[i][column] for i in rows]
    return [(dataset[i][column], dataset[i][pair_column]) for i in rows]


def embed_training_set(
    num_examples: int,
    *,
    precomputed: Any = None,
    embedding_model: str | None = None,
    texts: Callable[[range], list[str]] | None = None,
    model: nn.Module | None = None,
    feature_rows: Callable[[Sequence[int]], list[dict[str, Any]]] | None = None,
    collate: Callable[[list[dict[str, Any]]], Mapping[str, torch.Tensor]] | None = None,
    pooling: str = "mean",
    batch_size: int = 64,
    max_length: int = 256,
    device: torch.device | str | None = None,
    rows: range | None = None,
    gather: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    show_progress: bool = False,
    num_batches: int | None = None,
) -> torch.Tensor:
    """``(N, d)`` float32 embeddings of a training set, row ``i`` for example ``i``.

    In order of preference: ``precomputed`` (checked for shape); the encoder ``embedding_model`` over
    ``texts(rows)``; the ``model`` being fine-tuned (its current weights) over ``feature_rows``, padded by ``collate``.
    Each process embeds its contiguous shard ``rows`` and ``gather(local, N)`` concatenates the shards in rank order
    on every process (default: all rows in one process). ``num_batches``: the number of forward calls every process
    makes with ``model`` (see :func:`iter_feature_batches`; the embedding pass through a sharded model is a
    collective).
    """
    n = num_examples
    rows = range(n) if rows is None else rows
    gather = gather or (lambda local, _n: local)
    if precomputed is not None:
        emb = torch.as_tensor(precomputed, dtype=torch.float32)
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(
                f"sentence_embeddings must have shape ({n}, d) to match the training set, got {tuple(emb.shape)}."
            )
        return emb
    if embedding_model is not None:
        if texts is None:
            raise ValueError("embedding_model needs texts, the function that returns the texts of given rows.")
        local = embed_texts(
            embedding_model,
            texts(rows),
            pooling=pooling,
            batch_size=batch_size,
            max_length=max_length,
            device=device,
            show_progress=show_progress,
        )
        return gather(local, n)
    if model is None or feature_rows is None or collate is None:
        raise ValueError("Without precomputed embeddings or an embedding_model, pass model, feature_rows and collate.")
    total = max(-(-len(rows) // batch_size), num_batches or 0)
    local = embed_batches(
        model,
        iter_feature_batches(feature_rows, rows, batch_size, collate, num_batches),
        pooling=pooling,
        total=total,
        show_progress=show_progress,
        keep=len(rows),
    )
    return gather(local, n)
