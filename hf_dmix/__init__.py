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
from .compat import SUPPORTED_TRANSFORMERS, check_transformers
from .cards import render_model_card
from .checkpoint import ResumeMismatchError, last_complete_checkpoint
from .collator import DMixDataCollator
from .config import DMixConfig
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
from .hub import DMixInfo, HubError, PushResult, dmix_record, load_dmix_info, push_to_hub
from .mixing import SUPPORTED_MODEL_TYPES, HiddenStateMixer, fill_keyless_rows, union_mask
from .indexer import PartnerIndexer
from .partners import (
    PartnerIndex,
    PartnerSearch,
    build_partner_index,
    search_partners,
    candidate_overlap,
    describe_partner_index,
    num_candidates,
    partner_statistics,
    top_tau_candidates,
    top_tau_thresholds,
)
from .plotting import k_occurrence, plot_k_occurrence, plot_partners
from .trainer import DMixTrainer

__version__ = "0.1.0"

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "SUPPORTED_TRANSFORMERS",
    "check_transformers",
    "DMixConfig",
    "DMixDataCollator",
    "DMixInfo",
    "DMixTrainer",
    "HiddenStateMixer",
    "HubError",
    "PartnerIndex",
    "PushResult",
    "PartnerIndexer",
    "PartnerSearch",
    "ResumeMismatchError",
    "build_partner_index",
    "candidate_overlap",
    "data_diagnostics",
    "describe_partner_index",
    "dmix_record",
    "duplicate_stats",
    "embed_texts",
    "expmap0",
    "fill_keyless_rows",
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
    "ranking_factors",
    "push_to_hub",
    "render_model_card",
    "search_partners",
    "to_poincare_ball",
    "tokenizer_coverage",
    "top_tau_candidates",
    "top_tau_thresholds",
    "truncation_stats",
    "union_mask",
    "__version__",
]
