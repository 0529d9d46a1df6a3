"""Data and outcome diagnostics: problems a run's numbers do not show by themselves.

What lives here: pure computations over texts, token ids, labels and predictions, and the warnings they raise —

* **truncation** (:func:`truncation_stats`): the share of texts longer than ``max_seq_length`` tokens, which the model
  only sees cut off, and the 95th-percentile length that would keep 95 % of them whole;
* **tokenizer coverage** (:func:`tokenizer_coverage`): the share of unknown tokens and of tokens that are a single
  character, the two ways a tokenizer shows that it does not know the language of the data;
* **duplicates** (:func:`duplicate_stats`): identical texts, and how many sit in more than one split (leakage);
* **prediction collapse** (:func:`prediction_collapse`, :func:`outcome_diagnostics`): (nearly) every prediction one
  class that the labels do not justify — a model that scores about the majority baseline and learned little.

:func:`data_diagnostics` and :func:`data_warnings` put the data checks together for ``run_dmix.py``, which logs the
warnings and records everything in ``results.json`` (``data_diagnostics`` and ``outcome``).

What does not: loading and splitting data (``data.py``), tokenization and training (``run_dmix.py``), the model card
(``cards.py`` renders what ``results.json`` records).
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Above these shares a warning is logged. A tenth of the texts cut off loses real signal; a tokenizer that knows the
# language maps well under 1 % of the tokens to UNK and splits mostly into multi-character pieces (English WordPiece:
# ~10 % single characters, mostly "s", "a", "i"), so 5 % UNK or half single characters means it does not.
TRUNCATION_WARN_SHARE = 0.10
UNK_WARN_SHARE = 0.05
SINGLE_CHAR_WARN_SHARE = 0.50
MULTILINGUAL_MODELS = ("xlm-roberta-base", "bert-base-multilingual-cased")
SPLIT_ORDER = ("train", "validation", "test")
# Markers that tokenizers put on subword pieces: WordPiece continuation, byte-level BPE and SentencePiece word starts,
# the end-of-word suffix of CLIP/GPT-1 style BPE. They are not characters of the text.
_SUBWORD_PREFIXES = ("##", "Ġ", "▁")
_SUBWORD_SUFFIXES = ("</w>",)
# Scripts whose single characters are words or syllables: a good tokenizer splits them one character per token.
_CHARACTER_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC", "YI ")
# Near-collapse: one class takes at least this share of the predictions while it is under LABEL_SHARE of the labels.
# 95 % of predictions for a class that is 80 % of the labels or more can be a working classifier on skewed data (ESSC
# is 87 % ham); below 80 % it means the other classes are almost never predicted.
COLLAPSE_PREDICTION_SHARE = 0.95
COLLAPSE_LABEL_SHARE = 0.80
# transformers sets model_max_length to int(1e30) when the tokenizer does not know the model's limit.
_NO_LIMIT = 10**9
# Rows re-tokenized at once when measuring the full length of texts that hit max_seq_length.
_BATCH = 1000


def truncation_stats(lengths: Sequence[int] | np.ndarray, max_seq_length: int) -> dict[str, Any]:
    """How many texts are longer than ``max_seq_length`` tokens, i.e. truncated before the model sees them.

    Args:
        lengths: the full (untruncated) length in tokens of every text, special tokens included.
        max_seq_length: the truncation length.

    Returns:
        ``texts``, ``truncated`` (count), ``truncated_share``, ``p95_tokens`` (the 95th percentile of the lengths, an
        observed length: a ``max_seq_length`` that keeps 95 % of the texts whole) and ``max_tokens``.
    """
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, (int, np.integer)) or max_seq_length < 1:
        raise ValueError(f"max_seq_length must be a positive integer, got {max_seq_length!r}.")
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or lengths.size == 0:
        raise ValueError(f"lengths must be a non-empty list of token counts, got an array of shape {lengths.shape}.")
    truncated = int((lengths > max_seq_length).sum())
    return {
        "texts": int(lengths.size),
        "truncated": truncated,
        "truncated_share": truncated / int(lengths.size),
        "p95_tokens": int(np.percentile(lengths, 95, method="higher")),
        "max_tokens": int(lengths.max()),
    }


def full_token_lengths(
    tokenizer: Any, texts: Sequence[str] | Any, truncated_lengths: Sequence[int] | np.ndarray, max_seq_length: int
) -> np.ndarray:
    """The untruncated token length of every text, from the lengths of its truncated encoding.

    A text whose truncated encoding is shorter than ``max_seq_length`` was not cut: that is its length. Only the texts
    at the cap are tokenized again, without truncation, so the cost is a fraction of one tokenization pass equal to
    the truncated share, not a second pass over the data.

    ``texts`` is a list of strings or a pyarrow string array (read from a dataset without a Python list per row).
    """
    lengths = np.asarray(truncated_lengths, dtype=np.int64).copy()
    if len(lengths) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(lengths)} lengths: pass the lengths of these texts' encodings.")
    at_cap = np.flatnonzero(lengths >= max_seq_length)
    for start in range(0, len(at_cap), _BATCH):
        rows = at_cap[start : start + _BATCH]
        # verbose=False: transformers would warn once per call that these sequences exceed the model's length.
        batch = texts.take(rows).to_pylist() if hasattr(texts, "take") else [texts[int(i)] for i in rows]
        encoded = tokenizer(batch, truncation=False, verbose=False)["input_ids"]
        lengths[rows] = [len(ids) for ids in encoded]
    return lengths


def token_text(tokenizer: Any, token: str) -> str:
    """The text a vocabulary token stands for, without subword markers (``##``, ``Ġ``, ``▁``, ``</w>``).

    Byte-level tokens are decoded, so a lone byte of a multi-byte character becomes ``"\\ufffd"`` (one character).
    """
    for prefix in _SUBWORD_PREFIXES:
        if token.startswith(prefix) and len(token) > len(prefix):
            token = token[len(prefix) :]
    for suffix in _SUBWORD_SUFFIXES:
        if token.endswith(suffix) and len(token) > len(suffix):
            token = token[: -len(suffix)]
    return tokenizer.convert_tokens_to_string([token]).strip()


def graphemes(text: str) -> list[str]:
    """``text`` as user-perceived characters (Unicode extended grapheme clusters, UAX #29).

    A Gujarati or Devanagari syllable such as ``"કા"`` (consonant + vowel sign) is two code points and one character
    to a reader; counting code points would call it two.
    """
    import regex  # a transformers dependency; the stdlib ``re`` has no grapheme-cluster pattern

    return regex.findall(r"\X", text)


def is_single_character(text: str) -> bool:
    """Whether ``text`` is one letter-like character (one grapheme cluster) that is a fragment of a word.

    Counted by grapheme clusters, not code points: a consonant with its vowel sign is one character. A token made of
    combining marks only (a vowel sign the tokenizer split off its consonant, as WordPiece does in Indic scripts
    whether or not it knows them) is part of the previous token's character, not a character of its own, so it does
    not count. Punctuation, digits, whitespace and control characters are single characters in every language, and in
    the scripts where one character is a word or syllable (CJK, kana, Hangul) a good tokenizer splits them one by
    one: neither says anything about coverage, so neither counts.
    """
    clusters = graphemes(text)
    if len(clusters) != 1 or unicodedata.category(clusters[0][0])[0] not in "LS":
        return False
    return not unicodedata.name(clusters[0][0], "").startswith(_CHARACTER_SCRIPTS)


def tokenizer_coverage(tokenizer: Any, token_counts: np.ndarray) -> dict[str, Any]:
    """How well the tokenizer covers the text: the share of unknown and of single-character tokens.

    Args:
        tokenizer: the tokenizer that produced the ids.
        token_counts: how often each token id occurs (``np.bincount`` of all input ids of a split).

    Returns:
        ``tokens`` (counted: every token but the special ones like ``[CLS]`` or padding, which the tokenizer adds
        itself), ``unk_share`` (only when the tokenizer has an unknown token; byte-level BPE tokenizers without one
        show a missing script as single bytes instead) and ``single_char_share`` (see :func:`is_single_character`).
    """
    counts = np.asarray(token_counts, dtype=np.int64)
    unk_id = tokenizer.unk_token_id
    special = {int(i) for i in tokenizer.all_special_ids if i is not None and i != unk_id and 0 <= i < len(counts)}
    present = [int(i) for i in np.flatnonzero(counts) if int(i) not in special]
    total = int(sum(int(counts[i]) for i in present))
    out: dict[str, Any] = {"tokens": total}
    if unk_id is not None:
        out["unk_share"] = int(counts[unk_id]) / total if total and unk_id < len(counts) else 0.0
    tokens = tokenizer.convert_ids_to_tokens(present)
    single = sum(
        int(counts[i])
        for i, tok in zip(present, tokens, strict=True)
        if i != unk_id and is_single_character(token_text(tokenizer, tok))
    )
    out["single_char_share"] = single / total if total else 0.0
    return out


def duplicate_stats(
    texts_by_split: Mapping[str, Sequence[str]], labels_by_split: Mapping[str, Sequence[int]] | None = None
) -> dict[str, Any]:
    """Identical texts (after stripping whitespace) in the data, and how they are spread over the splits.

    Returns:
        ``groups`` (distinct texts that occur more than once), ``duplicate_rows`` (rows repeating an earlier text),
        ``texts_in_several_splits`` (distinct texts found in more than one split: test texts the model may have
        trained on), ``shared_by_splits`` (the same count per pair of splits, ``"train/test"`` etc.) and, with
        labels, ``conflicting_labels`` (groups whose rows do not all have the same label).
    """
    rows: dict[str, int] = defaultdict(int)
    where: dict[str, set[str]] = defaultdict(set)
    labels_of: dict[str, set[int]] = defaultdict(set)
    for split, texts in texts_by_split.items():
        split_labels = None if labels_by_split is None else labels_by_split[split]
        if split_labels is not None and len(split_labels) != len(texts):
            raise ValueError(f"The {split} split has {len(texts)} texts but {len(split_labels)} labels.")
        for i, text in enumerate(texts):
            key = text.strip()
            rows[key] += 1
            where[key].add(split)
            if split_labels is not None:
                labels_of[key].add(int(split_labels[i]))
    names = [s for s in SPLIT_ORDER if s in texts_by_split] + sorted(s for s in texts_by_split if s not in SPLIT_ORDER)
    pairs = [(a, b) for k, a in enumerate(names) for b in names[k + 1 :]]
    out: dict[str, Any] = {
        "groups": sum(1 for n in rows.values() if n > 1),
        "duplicate_rows": sum(n - 1 for n in rows.values()),
        "texts_in_several_splits": sum(1 for s in where.values() if len(s) > 1),
        "shared_by_splits": {f"{a}/{b}": sum(1 for s in where.values() if a in s and b in s) for a, b in pairs},
    }
    if labels_by_split is not None:
        out["conflicting_labels"] = sum(1 for s in labels_of.values() if len(s) > 1)
    return out


def _split_names(per_split: Mapping[str, Any]) -> list[str]:
    return [s for s in SPLIT_ORDER if s in per_split] + sorted(s for s in per_split if s not in SPLIT_ORDER)


def dataset_token_ids(dataset: Any, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The length of every row's ``input_ids`` and how often each token id occurs, read column-wise from Arrow.

    A ``datasets.Dataset`` stores ``input_ids`` as one flat Arrow array with offsets: both answers are vectorised
    over it, chunk by chunk, without building a Python list per row.
    """
    import pyarrow.compute as pc

    column = dataset.with_format("arrow")["input_ids"]
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = np.zeros(vocab_size, dtype=np.int64)
    for chunk in column.chunks:
        ids = chunk.flatten().to_numpy(zero_copy_only=False)
        if ids.size:
            # Ids past the vocabulary (added tokens counted in len(tokenizer) only) still get a bin.
            found = np.bincount(ids.astype(np.int64), minlength=vocab_size)
            if found.size > counts.size:
                counts = np.pad(counts, (0, found.size - counts.size))
            counts[: found.size] += found
    return lengths, counts


def data_diagnostics(
    tokenizer: Any,
    tokenized: Mapping[str, Any],
    max_seq_length: int,
    duplicates: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Truncation and tokenizer coverage of every tokenized split, with the duplicate statistics and the warnings.

    Coverage is measured on the tokens the model sees (after truncation); truncation on the full length of each text.

    Args:
        tokenizer: the tokenizer that produced ``tokenized``.
        tokenized: split name to a ``datasets.Dataset`` with ``text`` and ``input_ids`` (truncated at
            ``max_seq_length``), as ``run_dmix.py`` builds them.
        max_seq_length: the truncation length used.
        duplicates: :func:`duplicate_stats` of the loaded data (with ``handling``), if known.

    Returns:
        The ``data_diagnostics`` section of ``results.json``: ``max_seq_length``, ``model_max_length`` (the
        tokenizer's input limit, when it knows one), ``truncation`` and
        ``tokenizer_coverage`` per split, ``duplicates`` when given, and ``warnings`` (see :func:`data_warnings`).
    """
    out: dict[str, Any] = {"max_seq_length": max_seq_length}
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_LIMIT:
        out["model_max_length"] = limit
    out.update({"truncation": {}, "tokenizer_coverage": {}})
    for split in _split_names(tokenized):
        ds = tokenized[split]
        truncated_lengths, counts = dataset_token_ids(ds, len(tokenizer))
        texts = ds.with_format("arrow")["text"]
        lengths = full_token_lengths(tokenizer, texts, truncated_lengths, max_seq_length)
        out["truncation"][split] = truncation_stats(lengths, max_seq_length)
        out["tokenizer_coverage"][split] = tokenizer_coverage(tokenizer, counts)
    if duplicates is not None:
        out["duplicates"] = dict(duplicates)
    out["warnings"] = data_warnings(out)
    return out


def _pct(share: float) -> str:
    return f"{100 * share:.1f} %"


def data_warnings(diagnostics: Mapping[str, Any]) -> list[str]:
    """The problems :func:`data_diagnostics` found, one message each, naming the figures and the fix."""
    warnings = []
    max_len = diagnostics.get("max_seq_length")
    truncation = diagnostics.get("truncation") or {}
    high = {s: t for s, t in truncation.items() if t["truncated_share"] > TRUNCATION_WARN_SHARE}
    if high:
        shares = ", ".join(
            f"{s} {_pct(t['truncated_share'])} ({t['truncated']} of {t['texts']})" for s, t in high.items()
        )
        p95 = max(t["p95_tokens"] for t in high.values())
        limit = diagnostics.get("model_max_length")
        if limit is not None and p95 > limit:
            fix = f", beyond the model's limit of {limit}: raise --max_seq_length to {limit}, or use a model with longer inputs"
        else:
            fix = f": raise --max_seq_length to {p95}"
        warnings.append(
            f"Texts longer than --max_seq_length {max_len} tokens are truncated: {shares}. The model never sees the "
            f"cut-off tokens. 95 % of the texts fit in {p95} tokens{fix}."
        )
    coverage = diagnostics.get("tokenizer_coverage") or {}
    unk = {s: c for s, c in coverage.items() if c.get("unk_share", 0.0) > UNK_WARN_SHARE}
    single = {s: c for s, c in coverage.items() if c["single_char_share"] > SINGLE_CHAR_WARN_SHARE}
    if unk or single:
        found = [f"{_pct(c['unk_share'])} unknown tokens in {s}" for s, c in unk.items()]
        found += [f"{_pct(c['single_char_share'])} single-character tokens in {s}" for s, c in single.items()]
        warnings.append(
            f"The tokenizer does not cover the language of the data: {', '.join(found)} (a tokenizer that knows the "
            f"language gives under {_pct(UNK_WARN_SHARE)} unknown and under {_pct(SINGLE_CHAR_WARN_SHARE)} "
            "single-character tokens). The model sees little of the text: use a model whose tokenizer covers the "
            f"language, e.g. a multilingual one (--model_name_or_path {' or '.join(MULTILINGUAL_MODELS)})."
        )
    warnings += _shared_text_warnings(diagnostics.get("duplicates") or {})
    dup = diagnostics.get("duplicates") or {}
    if dup.get("conflicting_labels"):
        warnings.append(
            f"{dup['conflicting_labels']} duplicated texts carry different labels: label noise that caps every "
            "model's score. Check the labels of the identical texts."
        )
    return warnings


_SHARED_FIX = (
    "Remove the validation and test rows whose text is in train, or let run_dmix.py carve validation and test out of "
    "train (only --train_file, with --group_duplicates true), which keeps identical texts in one split."
)


def _shared_text_warnings(dup: Mapping[str, Any]) -> list[str]:
    """What texts shared between splits mean: with train, evaluation on trained-on texts; between validation and test
    only, two evaluations that are not independent (nothing was trained on)."""
    shared = {p: n for p, n in (dup.get("shared_by_splits") or {}).items() if n}
    with_train = {p: n for p, n in shared.items() if "train" in p.split("/")}
    between_eval = {p: n for p, n in shared.items() if p not in with_train}
    out = []
    if with_train:
        pairs = ", ".join(f"{p}: {n}" for p, n in with_train.items())
        out.append(
            f"Texts of the training split also appear in evaluation splits ({pairs}): the model is evaluated on texts "
            f"it trained on, so those scores are optimistic. {_SHARED_FIX}"
        )
    if between_eval:
        pairs = ", ".join(f"{p}: {n}" for p, n in between_eval.items())
        out.append(
            f"Validation and test share texts ({pairs}); none of them is in train, so the model did not train on them, "
            "but a choice made on validation is partly tested on the same texts: the test score is not fully "
            "independent of model selection. Drop the shared rows from one of the two splits."
        )
    return out


def prediction_collapse(predictions: Sequence[int], labels: Sequence[int]) -> int | None:
    """The class the predictions (nearly) collapsed to, or ``None``.

    A collapse is every prediction one class while the labels have several, or a near-collapse: one class takes at
    least ``COLLAPSE_PREDICTION_SHARE`` of the predictions while it is under ``COLLAPSE_LABEL_SHARE`` of the labels
    (the other classes are almost never predicted, though the labels hold many of them). Such a model scores about
    what predicting that class for every row scores, however good the mixing method is.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels: pass those of the same rows.")
    if not len(predictions) or len({int(y) for y in labels}) < 2:
        return None
    preds = np.asarray(predictions, dtype=np.int64)
    top = int(np.bincount(preds).argmax())
    pred_share = float((preds == top).mean())
    label_share = float((np.asarray(labels, dtype=np.int64) == top).mean())
    if pred_share == 1.0 or (pred_share >= COLLAPSE_PREDICTION_SHARE and label_share < COLLAPSE_LABEL_SHARE):
        return top
    return None


def outcome_diagnostics(
    predictions: Mapping[str, Sequence[int]], labels: Mapping[str, Sequence[int]], label_names: Sequence[str]
) -> dict[str, Any]:
    """The ``outcome`` section of ``results.json``: distinct predicted classes per split, and a collapse if any.

    ``prediction_collapse`` is ``{"split": ..., "class": ...}`` for the test split if it collapsed, else for the
    first collapsed split (validation), else ``None``; the distinct-class counts show every split.
    """
    distinct = {s: len({int(p) for p in predictions[s]}) for s in _split_names(predictions)}
    collapse = None
    for split in ["test", *(s for s in _split_names(predictions) if s != "test")]:
        if split not in predictions:
            continue
        cls = prediction_collapse(predictions[split], labels[split])
        if cls is not None:
            collapse = {"split": split, "class": label_names[cls], **_shares(predictions[split], labels[split], cls)}
            break
    return {"distinct_predicted_classes": distinct, "prediction_collapse": collapse}


def _shares(predictions: Sequence[int], labels: Sequence[int], cls: int) -> dict[str, float]:
    return {
        "prediction_share": float(np.mean(np.asarray(predictions, dtype=np.int64) == cls)),
        "label_share": float(np.mean(np.asarray(labels, dtype=np.int64) == cls)),
    }


def collapse_warning(
    split: str,
    class_name: str,
    rows: int,
    labels_present: int,
    baseline: Mapping[str, float],
    prediction_share: float = 1.0,
    label_share: float | None = None,
) -> str:
    """The warning for a (nearly) collapsed split, naming the class, its shares and the majority baseline."""
    if prediction_share >= 1.0:
        what = f"All {rows} {split} predictions are class {class_name!r} although the {split} labels have {labels_present} classes"
    else:
        what = (
            f"{100 * prediction_share:.1f} % of the {rows} {split} predictions are class {class_name!r}, which is "
            f"only {100 * (label_share or 0.0):.1f} % of the {split} labels ({labels_present} classes)"
        )
    return (
        f"{what}: the model (nearly) always predicts one class and learned little that separates them. The majority "
        f"baseline of the {split} set scores accuracy {baseline['accuracy']:.4f}, macro-F1 {baseline['macro_f1']:.4f}. "
        "Try a lower --learning_rate, more training steps (--num_train_epochs), or check that the training labels are "
        "not dominated by one class."
    )


def collapse_warnings(
    predictions: Mapping[str, Sequence[int]], labels: Mapping[str, Sequence[int]], label_names: Sequence[str]
) -> list[str]:
    """One :func:`collapse_warning` per split whose predictions (nearly) collapsed."""
    out = []
    for split in _split_names(predictions):
        cls = prediction_collapse(predictions[split], labels[split])
        if cls is None:
            continue
        present = len({int(y) for y in labels[split]})
        out.append(
            collapse_warning(
                split,
                label_names[cls],
                len(predictions[split]),
                present,
                majority_baseline(labels[split]),
                **_shares(predictions[split], labels[split], cls),
            )
        )
    return out


def majority_baseline(labels: Sequence[int]) -> dict[str, float]:
    """What predicting the most frequent class for every row would score: the floor a model must beat."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    share = float(counts.max() / counts.sum())
    classes = int((counts > 0).sum())
    # The majority class has F1 2p/(1+p) (precision p, recall 1); every other class present scores 0.
    return {"accuracy": share, "macro_f1": (2 * share / (1 + share)) / classes}
