"""Shared fixtures: a tokenizer trained in the test, tiny sequence classifiers of every supported family, tiny data."""

from __future__ import annotations

import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from datasets import Dataset
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedTokenizerFast

WORDS_POS = "good great fine happy love nice superb lovely".split()
WORDS_NEG = "bad awful poor sad hate nasty terrible ugly".split()
WORDS_NEU = "the a movie film plot actor scene story was is very".split()


def make_sentences(n: int, seed: int = 0, num_labels: int = 2) -> tuple[list[str], list[int]]:
    """Sentences of varying length whose label is carried by sentiment words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % num_labels
        pool = WORDS_POS if label == 0 else WORDS_NEG if label == 1 else WORDS_NEU
        words = [rng.choice(WORDS_NEU) for _ in range(rng.randint(2, 9))]
        words += [rng.choice(pool) for _ in range(rng.randint(1, 3))]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level BERT-style tokenizer trained on ``texts`` (no download)."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


_COMMON = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    pad_token_id=0,
)

ARCHITECTURES: dict[str, dict] = {
    "bert": {},
    "roberta": {},
    "xlm-roberta": {},
    "electra": {"embedding_size": 16},
    "distilbert": {
        "dim": 32,
        "n_layers": 3,
        "n_heads": 4,
        "hidden_dim": 37,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "seq_classif_dropout": 0.0,
    },
    "deberta-v2": {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "position_buckets": 8},
    "modernbert": {
        "global_attn_every_n_layers": 2,
        "local_attention": 8,
        "embedding_dropout": 0.0,
        "mlp_dropout": 0.0,
        "attention_dropout": 0.0,
        "classifier_dropout": 0.0,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "cls_token_id": 2,
        "sep_token_id": 3,
    },
}


def tiny_model(model_type: str = "bert", num_labels: int = 2, vocab_size: int = 64, seed: int = 0, **overrides):
    """A tiny randomly initialised sequence classifier of ``model_type`` with dropout off."""
    kwargs = dict(_COMMON, vocab_size=vocab_size, num_labels=num_labels)
    if model_type == "distilbert":
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            kwargs.pop(key)
    kwargs.update(ARCHITECTURES[model_type])
    kwargs.update(overrides)
    attn = "eager" if model_type == "deberta-v2" else kwargs.pop("attn_implementation", "sdpa")
    kwargs.pop("attn_implementation", None)
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation=attn)


@pytest.fixture(scope="session")
def sentences():
    return make_sentences(40, seed=0)


@pytest.fixture(scope="session")
def tokenizer(sentences):
    return train_tokenizer(sentences[0] + make_sentences(40, seed=1, num_labels=3)[0])


@pytest.fixture
def train_dataset(sentences, tokenizer):
    texts, labels = sentences
    ds = Dataset.from_dict({"text": texts, "label": labels})
    return ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=32), batched=True)


def run_script(cmd: list[str], timeout: int = 900) -> None:
    """Run a test worker script (one process or torchrun) from the repository root; fail with its output's tail."""
    import os
    import subprocess
    from pathlib import Path

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"


RANK_RUNS = ("rank0_of2", "rank1_of2", "rank0_of1")


def run_two_ranks_and_one(script, out, master_port: int) -> None:
    """Run a worker script as 2 processes (torchrun, gloo on CPU), then as 1, both writing into ``out``.

    The worker saves ``[<case>_]rank{r}_of{n}.pt`` / ``.json``: the tests compare what each rank of the 2-process run
    holds with the single process over the same global batch. ``master_port`` differs per test module, so two modules
    run at once (pytest-xdist) do not meet on one rendezvous port.
    """
    import sys

    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    run_script([*launcher, str(master_port), str(script), str(out)])
    run_script([sys.executable, str(script), str(out)])


def load_rank_runs(out, cases=None) -> dict:
    """What :func:`run_two_ranks_and_one`'s workers saved, by ``[<case>_]rank{r}_of{n}``."""
    import torch

    prefixes = [f"{case}_" for case in cases] if cases else [""]
    return {f"{p}{name}": torch.load(out / f"{p}{name}.pt") for p in prefixes for name in RANK_RUNS}


def metrics_from_predictions(path) -> dict[str, float]:
    """Macro-F1 and accuracy recomputed from a ``predictions.csv`` written by run_dmix.py (label, prediction columns).

    Tests compare the reported metrics with these: a check against the written predictions, not a range.
    """
    import csv

    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    truth, pred = [r["label"] for r in rows], [r["prediction"] for r in rows]
    f1s = []
    for c in sorted(set(truth)):
        tp = sum(t == c and p == c for t, p in zip(truth, pred, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, pred, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, pred, strict=True))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {
        "macro_f1": sum(f1s) / len(f1s),
        "accuracy": sum(t == p for t, p in zip(truth, pred, strict=True)) / len(rows),
        "rows": len(rows),
    }
