"""hf-dmix: DMIX (distance-constrained interpolative mixup) for Hugging Face ``transformers`` classifiers.

Swap two names in an existing fine-tuning script (its own data collator is kept and wrapped)::

    from hf_dmix import DMixConfig, DMixTrainer

    args = DMixConfig(output_dir="out", tau=0.3, partner_distance="hyperbolic")
    trainer = DMixTrainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
    trainer.train()

Text (BERT, RoBERTa/XLM-R, ELECTRA, DistilBERT, DeBERTa-v2, ModernBERT), images (ViT, DeiT) and audio (wav2vec2,
HuBERT, AST) classifiers are supported; for images and audio pass the feature extractor (or nothing, for fixed-size
inputs) where text passes the tokenizer.
"""

# First: importing compat checks the installed transformers (a clear error, not a silently skipped override).
from ._version import __version__
from .cards import render_model_card
from .checkpoint import ResumeMismatchError, last_complete_checkpoint
from .collator import DMixDataCollator
from .compat import SUPPORTED_TRANSFORMERS, check_transformers
from .config import DMixConfig
from .convergence import final_training_loss, training_summary, undertraining_warning
from .diagnostics import (
    data_diagnostics,
    duplicate_stats,
    outcome_diagnostics,
    prediction_collapse,
    tokenizer_coverage,
    truncation_stats,
)
from .embeddings import embed_texts, pool
from .geometry import (
    expmap0,
    mobius_add,
    pairwise_distance,
    poincare_distance,
    project,
    ranking_factors,
    to_poincare_ball,
)
from .hub import PushResult, push_to_hub
from .hub_errors import HubError
from .indexer import PartnerIndexer
from .layout import CollatorLayoutError
from .mixing import SUPPORTED_MODEL_TYPES, HiddenStateMixer, fill_keyless_rows, union_mask
from .overlap import candidate_overlap
from .partners import (
    PartnerIndex,
    PartnerSearch,
    build_partner_index,
    describe_partner_index,
    num_candidates,
    partner_statistics,
    search_partners,
    top_tau_candidates,
    top_tau_thresholds,
)
from .plotting import k_occurrence, plot_k_occurrence, plot_partners
from .record import DMixInfo, dmix_record, load_dmix_info
from .trainer import DMixTrainer

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "SUPPORTED_TRANSFORMERS",
    "CollatorLayoutError",
    "DMixConfig",
    "DMixDataCollator",
    "DMixInfo",
    "DMixTrainer",
    "HiddenStateMixer",
    "HubError",
    "PartnerIndex",
    "PartnerIndexer",
    "PartnerSearch",
    "PushResult",
    "ResumeMismatchError",
    "__version__",
    "build_partner_index",
    "candidate_overlap",
    "check_transformers",
    "data_diagnostics",
    "describe_partner_index",
    "dmix_record",
    "duplicate_stats",
    "embed_texts",
    "expmap0",
    "fill_keyless_rows",
    "final_training_loss",
    "k_occurrence",
    "last_complete_checkpoint",
    "load_dmix_info",
    "mobius_add",
    "num_candidates",
    "outcome_diagnostics",
    "pairwise_distance",
    "partner_statistics",
    "plot_k_occurrence",
    "plot_partners",
    "poincare_distance",
    "pool",
    "prediction_collapse",
    "project",
    "push_to_hub",
    "ranking_factors",
    "render_model_card",
    "search_partners",
    "to_poincare_ball",
    "tokenizer_coverage",
    "top_tau_candidates",
    "top_tau_thresholds",
    "training_summary",
    "truncation_stats",
    "undertraining_warning",
    "union_mask",
]
