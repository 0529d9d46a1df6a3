#!/usr/bin/env python
"""Keep ``model_cards/`` in sync with the package: ``python model_cards/render_example.py``.

Copies the packaged template (``hf_dmix/templates/dmix_model_card.md``, the one ``hf_dmix`` renders, also from an
installed wheel) to ``model_cards/dmix_model_card.md`` and renders ``model_cards/example_README.md`` from the
illustrative record below. ``tests/test_cards.py`` fails when either file is out of date.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

TEMPLATE_COPY = HERE / "dmix_model_card.md"
EXAMPLE = HERE / "example_README.md"
# The τ sweep of docs/results, referenced relative to this folder (a published card embeds its own tau_sweep.png).
TAU_SWEEP = "../docs/results/essc_tau_sweep.png"

# An illustrative run: MiniLM on ESSC with DMIX (τ = 0.3). The numbers are of the kind docs/results/essc.md reports,
# not a published model.
EXAMPLE_RECORD = {
    "hf_dmix_version": "0.1.0",
    "dmix": {
        "mix_strategy": "hidden",
        "mix_layers": None,
        "mix_alpha": 0.2,
        "partner_distance": "hyperbolic",
        "tau": 0.3,
        "anchor_dominant": False,
        "partner_order": "farthest",
        "partner_rule": "centered",
        "curvature": 1.0,
        "ball_median_radius": 0.5,
        "ball_clip_quantile": 0.99,
        "ball_center": True,
        "embedding_model": None,
        "embedding_text_column": "text",
        "embedding_pooling": "mean",
    },
    "mix_layers_resolved": [1, 2, 3, 4, 5, 6],
    "num_encoder_layers": 6,
    "embedding_source": "model",
    "training": {
        "learning_rate": 2e-05,
        "num_train_epochs": 2.0,
        "max_steps": -1,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "world_size": 1,
        "total_train_batch_size": 8,
        "weight_decay": 0.01,
        "warmup_steps": 0,
        "lr_scheduler_type": "linear",
        "seed": 0,
    },
    "base_model": "sentence-transformers/all-MiniLM-L6-v2",
    "base_model_name": "sentence-transformers/all-MiniLM-L6-v2",
    "model_type": "bert",
    "label_names": ["ham", "spam"],
    "peft": None,
    # The centred rule's candidate sets on ESSC's full training split (benchmarks/hubness.py, docs/results/suite.md).
    "partner_index": {
        "num_examples": 4458.0,
        "candidates_per_example": 1337.0,
        "k_occurrence_skewness": 0.53,
        "distinct_candidate_share": 1.0,
        "top1pct_slot_share": 0.015,
        "same_label_share": 0.72,
        "random_k_occurrence_skewness": 0.01,
        "random_distinct_candidate_share": 1.0,
        "random_top1pct_slot_share": 0.010,
        "random_same_label_share": 0.77,
        "hub_concentration": 0.21,
        "degenerate": False,
    },
}
EXAMPLE_RESULTS = {
    "metrics": {
        "test": {"macro_f1": 0.9822, "weighted_f1": 0.9946, "accuracy": 0.9946},
        "validation": {"macro_f1": 0.9869, "weighted_f1": 0.9964, "accuracy": 0.9964},
    },
    "data": {
        "source": {"train": "essc.csv"},
        "split_method": "stratified by label, duplicate texts kept together",
        "split_seed": 42,
        "used_sizes": {"train": 4458, "validation": 558, "test": 558},
        "max_seq_length": 64,
        "label_names": ["ham", "spam"],
    },
    # Computed, not illustrative: hf_dmix.diagnostics.data_diagnostics on ../shared/data/essc.csv with the MiniLM
    # tokenizer at max_seq_length 64 and the split above (shares rounded).
    "data_diagnostics": {
        "max_seq_length": 64,
        "model_max_length": 512,
        "truncation": {
            "train": {"texts": 4458, "truncated": 81, "truncated_share": 0.0182, "p95_tokens": 55, "max_tokens": 238},
            "validation": {
                "texts": 558,
                "truncated": 10,
                "truncated_share": 0.0179,
                "p95_tokens": 54,
                "max_tokens": 221,
            },
            "test": {"texts": 558, "truncated": 7, "truncated_share": 0.0125, "p95_tokens": 54, "max_tokens": 108},
        },
        "tokenizer_coverage": {
            "train": {"tokens": 101813, "unk_share": 0.00003, "single_char_share": 0.1151},
            "validation": {"tokens": 12659, "unk_share": 0.0, "single_char_share": 0.1222},
            "test": {"tokens": 13045, "unk_share": 0.0, "single_char_share": 0.1151},
        },
        "duplicates": {
            "groups": 289,
            "duplicate_rows": 414,
            "texts_in_several_splits": 0,
            "shared_by_splits": {"train/validation": 0, "train/test": 0, "validation/test": 0},
            "conflicting_labels": 0,
            "handling": "validation and test carved out of train with identical texts kept in one split",
        },
        "warnings": [],
    },
    "outcome": {"distinct_predicted_classes": {"validation": 2, "test": 2}, "prediction_collapse": None},
    "versions": {"hf_dmix": "0.1.0", "transformers": "5.24.0", "torch": "2.13.0", "huggingface_hub": "2.4.0"},
}


def example_card() -> str:
    """The README.md that hf_dmix renders for the example run."""
    from hf_dmix.cards import render_model_card

    card = render_model_card(
        EXAMPLE_RECORD,
        EXAMPLE_RESULTS,
        repo_id="your-name/all-MiniLM-L6-v2-essc-dmix",
        language="en",
        license="apache-2.0",
        tau_sweep_plot=TAU_SWEEP if (HERE / TAU_SWEEP).is_file() else None,
    )
    return str(card)


def main() -> None:
    from hf_dmix.cards import TEMPLATE_PATH

    shutil.copyfile(TEMPLATE_PATH, TEMPLATE_COPY)
    EXAMPLE.write_text(example_card(), encoding="utf-8")
    print(f"wrote {TEMPLATE_COPY.relative_to(ROOT)} and {EXAMPLE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
