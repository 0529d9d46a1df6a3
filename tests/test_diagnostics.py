"""Data and outcome diagnostics: truncation, tokenizer coverage, duplicates and prediction collapse, on hand-made
inputs with known answers and on tokenizers trained here (English) fed text in other scripts."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import make_sentences, train_tokenizer
from datasets import Dataset, DatasetDict
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from hf_dmix.data import load_classification_data
from hf_dmix.diagnostics import (
    SINGLE_CHAR_WARN_SHARE,
    collapse_warning,
    collapse_warnings,
    data_diagnostics,
    data_warnings,
    duplicate_stats,
    full_token_lengths,
    graphemes,
    is_single_character,
    outcome_diagnostics,
    prediction_collapse,
    token_text,
    tokenizer_coverage,
    truncation_stats,
)

ENGLISH = make_sentences(200, seed=0)[0]
DATA = Path(__file__).resolve().parent / "data"


def wordpiece_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer trained on ``texts``: characters it never saw make a word [UNK]."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=300, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


def byte_level_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A RoBERTa-style byte-level BPE trained on ``texts``: unseen scripts fall apart into single bytes, never UNK."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<s>", "</s>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _script_words(first: int, last: int, n: int, length: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(chr(rng.randint(first, last)) for _ in range(length)) for _ in range(n)]


ARABIC = [" ".join(_script_words(0x0627, 0x064A, 5, 4, seed=i)) for i in range(20)]  # Arabic letters alef..yeh
GUJARATI = [" ".join(_script_words(0x0A95, 0x0AB9, 5, 2, seed=i)) for i in range(20)]  # Gujarati consonants ka..ha


def _tokenized(tokenizer, texts: list[str], max_seq_length: int) -> DatasetDict:
    ds = Dataset.from_dict({"text": texts, "label": [0] * len(texts)})
    return DatasetDict(
        {"train": ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=max_seq_length), batched=True)}
    )


# ---------------------------------------------------------------------- truncation


def test_truncation_stats_of_known_lengths():
    # 3 of 10 texts exceed 8 tokens; one sits exactly at 8 and is whole. The 95th percentile is an observed length.
    stats = truncation_stats([5, 5, 6, 6, 7, 7, 8, 9, 10, 12], max_seq_length=8)
    assert stats == {"texts": 10, "truncated": 3, "truncated_share": 0.3, "p95_tokens": 12, "max_tokens": 12}
    with pytest.raises(ValueError, match="max_seq_length must be a positive integer, got 0"):
        truncation_stats([1], 0)
    with pytest.raises(ValueError, match="non-empty"):
        truncation_stats([], 8)


def test_truncated_share_from_the_tokenized_dataset_and_its_warning():
    tokenizer = train_tokenizer(ENGLISH)
    # [CLS] + words + [SEP]: 7 words are 9 tokens (truncated at 8), 6 words exactly 8 (at the cap, not truncated).
    texts = ["good movie was very nice bad sad"] * 3 + ["good movie was very nice bad"] * 2 + ["the film is good"] * 5
    tokenized = _tokenized(tokenizer, texts, max_seq_length=8)
    assert max(map(len, tokenized["train"]["input_ids"])) == 8
    lengths = full_token_lengths(tokenizer, texts, [len(x) for x in tokenized["train"]["input_ids"]], 8)
    assert lengths.tolist() == [9] * 3 + [8] * 2 + [6] * 5
    diag = data_diagnostics(tokenizer, tokenized, max_seq_length=8)
    assert diag["truncation"]["train"] == {
        "texts": 10,
        "truncated": 3,
        "truncated_share": 0.3,
        "p95_tokens": 9,
        "max_tokens": 9,
    }
    [warning] = diag["warnings"]
    assert "--max_seq_length 8" in warning and "train 30.0 % (3 of 10)" in warning
    assert "95 % of the texts fit in 9 tokens: raise --max_seq_length to 9" in warning
    # 1 of 10 truncated (10 %) does not warn: the threshold is "more than 10 %".
    one_of_ten = _tokenized(tokenizer, texts[2:] + ["the film"] * 2, 8)
    diag = data_diagnostics(tokenizer, one_of_ten, 8)
    assert diag["truncation"]["train"]["truncated_share"] == 0.1 and diag["warnings"] == []


def test_truncation_beyond_the_models_limit_names_the_limit():
    diag = {
        "max_seq_length": 128,
        "model_max_length": 512,
        "truncation": {"train": {"texts": 4, "truncated": 2, "truncated_share": 0.5, "p95_tokens": 900}},
    }
    [warning] = data_warnings(diag)
    assert (
        "95 % of the texts fit in 900 tokens, beyond the model's limit of 512: raise --max_seq_length to 512" in warning
    )


# ---------------------------------------------------------------------- tokenizer coverage


def test_single_character_rule():
    assert is_single_character("a") and is_single_character("ક") and is_single_character("\ufffd")
    for text in ("", "ab", ".", "7", " ", "中", "あ", "한"):
        assert not is_single_character(text), text
    # Grapheme clusters, not code points: consonant + vowel sign is one character; a lone vowel sign is none.
    assert is_single_character("કા") and is_single_character("ने")
    assert not is_single_character("ા") and not is_single_character("ે")


def test_token_text_strips_subword_markers():
    tokenizer = wordpiece_tokenizer(ENGLISH)
    assert token_text(tokenizer, "##s") == "s" and token_text(tokenizer, "##") == "##"
    assert token_text(byte_level_tokenizer(ENGLISH), "Ġa") == "a"


def test_coverage_of_known_tokens():
    tokenizer = train_tokenizer(ENGLISH)  # word level: an unseen word is one [UNK]
    tokenized = _tokenized(tokenizer, ["good movie", "good zzz"], max_seq_length=16)
    cov = data_diagnostics(tokenizer, tokenized, 16)["tokenizer_coverage"]["train"]
    # [CLS] and [SEP] are not counted; 1 of the 4 word tokens is [UNK]; "a"-like pieces: none.
    assert cov == {"tokens": 4, "unk_share": 0.25, "single_char_share": 0.0}
    ids = [i for row in tokenized["train"]["input_ids"] for i in row]
    assert tokenizer_coverage(tokenizer, np.bincount(ids, minlength=len(tokenizer))) == cov


def test_unknown_script_warns_with_a_wordpiece_tokenizer_trained_on_english():
    tokenizer = wordpiece_tokenizer(ENGLISH)
    english = data_diagnostics(tokenizer, _tokenized(tokenizer, ENGLISH[:20], 64), 64)
    assert english["tokenizer_coverage"]["train"]["unk_share"] == 0.0 and english["warnings"] == []
    arabic = data_diagnostics(tokenizer, _tokenized(tokenizer, ARABIC, 64), 64)
    assert arabic["tokenizer_coverage"]["train"]["unk_share"] == 1.0  # 100 words, every one [UNK]
    assert arabic["tokenizer_coverage"]["train"]["tokens"] == 100
    [warning] = arabic["warnings"]
    assert "does not cover the language" in warning and "100.0 % unknown tokens in train" in warning
    assert "xlm-roberta-base" in warning and "bert-base-multilingual-cased" in warning


def test_unknown_script_warns_with_a_byte_level_tokenizer_trained_on_english():
    tokenizer = byte_level_tokenizer(ENGLISH)
    english = data_diagnostics(tokenizer, _tokenized(tokenizer, ENGLISH[:20], 64), 64)
    assert english["tokenizer_coverage"]["train"]["single_char_share"] < 0.2 and english["warnings"] == []
    assert "unk_share" not in english["tokenizer_coverage"]["train"]  # no unknown token: nothing recorded
    gujarati = data_diagnostics(tokenizer, _tokenized(tokenizer, GUJARATI, 64), 64)
    # Each 2-letter word is "Ġ" (a space, not a character) + 6 UTF-8 bytes, each decoding to one U+FFFD: 6 of 7.
    assert gujarati["tokenizer_coverage"]["train"]["tokens"] == 20 * 5 * 7
    assert gujarati["tokenizer_coverage"]["train"]["single_char_share"] == pytest.approx(6 / 7)
    [warning] = gujarati["warnings"]
    assert "85.7 % single-character tokens in train" in warning and "xlm-roberta-base" in warning


# ---------------------------------------------------------------------- duplicates


def test_duplicate_stats_of_known_texts():
    stats = duplicate_stats(
        {"train": ["a b", "a b ", "c", "d", "e"], "validation": ["f", "c"], "test": ["g", "a b", "h"]},
        {"train": [0, 0, 1, 1, 0], "validation": [0, 0], "test": [1, 0, 1]},
    )
    # "a b" three times (train twice, test once), "c" twice (train, validation with another label).
    assert stats == {
        "groups": 2,
        "duplicate_rows": 3,
        "texts_in_several_splits": 2,
        "shared_by_splits": {"train/validation": 1, "train/test": 1, "validation/test": 0},
        "conflicting_labels": 1,
    }
    warnings = data_warnings({"duplicates": stats})
    assert "also appear in evaluation splits (train/validation: 1, train/test: 1)" in warnings[0]
    assert "evaluated on texts it trained on" in warnings[0]
    assert "1 duplicated texts carry different labels" in warnings[1]


def _csv(path, texts, labels):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels, strict=True))
    return str(path)


def test_load_classification_data_counts_duplicates_and_leakage(tmp_path):
    texts, labels = make_sentences(40, seed=5)
    texts = list(dict.fromkeys(texts))  # unique texts, then exactly two duplicate groups
    labels = labels[: len(texts)]
    texts += [texts[0], texts[0], texts[1]]
    labels += [labels[0], labels[0], labels[1]]
    data = load_classification_data(
        train_file=_csv(tmp_path / "all.csv", texts, labels), validation_size=0.2, test_size=0.2
    )
    dup = data.split_info["duplicates"]
    assert (dup["groups"], dup["duplicate_rows"], dup["texts_in_several_splits"]) == (2, 3, 0)
    assert dup["handling"] == "validation and test carved out of train with identical texts kept in one split"
    # Official splits are used as given: one test text is also in train.
    data = load_classification_data(
        train_file=_csv(tmp_path / "train.csv", texts[:20], labels[:20]),
        validation_file=_csv(tmp_path / "validation.csv", texts[20:30], labels[20:30]),
        test_file=_csv(tmp_path / "test.csv", [texts[3]] + texts[30:35], [labels[3]] + labels[30:35]),
    )
    dup = data.split_info["duplicates"]
    assert dup["texts_in_several_splits"] == 1 and dup["shared_by_splits"]["train/test"] == 1
    assert dup["handling"].startswith("official splits")


# ---------------------------------------------------------------------- prediction collapse


def test_prediction_collapse():
    assert prediction_collapse([1, 1, 1], [0, 1, 1]) == 1
    assert prediction_collapse([1, 1], [1, 1]) is None  # one class in the labels: nothing to separate
    assert prediction_collapse([0, 1, 1], [0, 1, 1]) is None
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        prediction_collapse([0, 0, 0], [0, 1])


def test_outcome_records_the_collapsed_split_and_distinct_classes():
    names = ["neg", "neu", "pos"]
    outcome = outcome_diagnostics(
        {"validation": [0, 2, 2], "test": [2, 2, 2, 2]}, {"validation": [0, 1, 2], "test": [0, 2, 2, 1]}, names
    )
    assert outcome == {
        "distinct_predicted_classes": {"validation": 2, "test": 1},
        "prediction_collapse": {"split": "test", "class": "pos", "prediction_share": 1.0, "label_share": 0.5},
    }
    fine = outcome_diagnostics({"validation": [0, 1], "test": [1, 0]}, {"validation": [0, 1], "test": [1, 0]}, names)
    assert fine["prediction_collapse"] is None
    message = collapse_warning("test", "pos", 4, 3, {"accuracy": 0.5, "macro_f1": 2 / 9})
    assert "All 4 test predictions are class 'pos'" in message and "accuracy 0.5000, macro-F1 0.2222" in message


# ---------------------------------------------------------------------- on real text (tests/data samples)


def _sample(name: str) -> tuple[list[str], list[str]]:
    with open(DATA / name, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _akshara_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer whose vocabulary is the grapheme clusters (aksharas) of ``texts``: it splits every word
    into user-perceived characters, as a tokenizer that knows the script but none of its words would."""
    clusters = sorted({g for t in texts for w in t.split() for g in graphemes(w)})
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", *clusters, *("##" + g for g in clusters)])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=1000))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def test_single_characters_are_counted_by_grapheme_on_real_gujarati_text():
    texts, _ = _sample("gujarati_news_sample.csv")
    tokenizer = _akshara_tokenizer(texts)
    diag = data_diagnostics(tokenizer, _tokenized(tokenizer, texts, 4096), 4096)
    coverage = diag["tokenizer_coverage"]["train"]
    assert coverage["unk_share"] < 0.01
    # Every token is one akshara: counted by code points, fewer than half looked like single characters (most
    # aksharas carry a vowel sign or virama); counted by graphemes, nearly all letter tokens are.
    assert coverage["single_char_share"] > 0.85
    [warning] = diag["warnings"]
    assert "single-character tokens in train" in warning
    # A tokenizer trained on the same Gujarati text splits into longer pieces: no warning.
    trained = wordpiece_tokenizer(texts * 3)
    trained.backend_tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    known = data_diagnostics(trained, _tokenized(trained, texts, 4096), 4096)
    assert known["tokenizer_coverage"]["train"]["single_char_share"] < SINGLE_CHAR_WARN_SHARE


def test_near_collapse_on_real_labels():
    _, gujarati = _sample("gujarati_news_sample.csv")  # three classes, 4 each
    names = sorted(set(gujarati))
    labels = [names.index(y) for y in gujarati] * 10  # 120 rows, each class a third
    predictions = [0] * 115 + [1] * 3 + [2] * 2  # 95.8 % one class, which is a third of the labels
    assert prediction_collapse(predictions, labels) == 0
    outcome = outcome_diagnostics({"test": predictions}, {"test": labels}, names)
    assert outcome["prediction_collapse"] == {
        "split": "test",
        "class": names[0],
        "prediction_share": pytest.approx(115 / 120),
        "label_share": pytest.approx(1 / 3),
    }
    [message] = collapse_warnings({"test": predictions}, {"test": labels}, names)
    assert "95.8 % of the 120 test predictions are class 'business', which is only 33.3 % of the test labels" in message
    # ESSC: 87 % ham. Predicting ham for 96 % of the messages can be a working spam filter: no collapse.
    _, essc = _sample("essc_sample.csv")
    ham = [int(y == "spam") for y in essc]
    assert 0.8 < 1 - sum(ham) / len(ham) < 0.95
    mostly_ham = [0] * len(ham)
    mostly_ham[: int(0.04 * len(ham))] = [1] * int(0.04 * len(ham))
    assert prediction_collapse(mostly_ham, ham) is None
    assert prediction_collapse([0] * len(ham), ham) == 0  # every prediction one class still is a collapse


def test_texts_shared_by_validation_and_test_only_are_not_called_trained_on():
    texts, _ = _sample("essc_sample.csv")
    unique = list(dict.fromkeys(t.strip() for t in texts))  # the sample repeats some messages, as the SMS data do
    train, validation, test = unique[:300], unique[300:340], unique[340:]
    test = [validation[0], validation[1]] + test  # two validation messages also in test, none in train
    stats = duplicate_stats({"train": train, "validation": validation, "test": test})
    assert stats["shared_by_splits"]["validation/test"] >= 2 and stats["shared_by_splits"]["train/test"] == 0
    [warning] = [w for w in data_warnings({"duplicates": stats}) if "share" in w or "appear" in w]
    assert warning.startswith("Validation and test share texts (validation/test:")
    assert "did not train on them" in warning and "trained on, so" not in warning
