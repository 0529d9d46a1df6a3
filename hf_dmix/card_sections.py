"""The text of a DMIX model card's sections: summary, method, DMIX settings, partner index, data checks, training.

Each section is a small function of the DMIX *record* (``dmix_config.json``) and the run's ``results.json``, in the order
the card reads; :func:`template_sections` hands them all to the template. ``cards.py`` renders the card around them
(template, metadata, metrics, ``model-index``); nothing here touches files or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .hub_names import display_name


@dataclass(frozen=True)
class CardTask:
    """What a card says about one modality: the Hub task, how to call the pipeline, what the examples are."""

    pipeline_tag: str
    task_name: str
    auto_class: str
    example_call: str  # the argument of ``classifier(...)`` in the usage snippet
    unit: str  # what one example is, in "<unit> embeddings"


# One row per modality (the modality comes from the model type: hf_dmix.mixing.modality_of).
CARD_TASKS: dict[str, CardTask] = {
    "text": CardTask(
        "text-classification",
        "Text Classification",
        "AutoModelForSequenceClassification",
        '"Replace me by any text you\'d like to classify."',
        "sentence",
    ),
    "image": CardTask(
        "image-classification",
        "Image Classification",
        "AutoModelForImageClassification",
        '"path/or/url/of/an/image.png"',
        "image",
    ),
    "audio": CardTask(
        "audio-classification",
        "Audio Classification",
        "AutoModelForAudioClassification",
        '"path/of/a/clip.wav"',
        "clip",
    ),
}

DMIX_CITATION = """@inproceedings{sawhney2021dmix,
  title     = {{DMIX}: Distance Constrained Interpolative Mixup},
  author    = {Sawhney, Ramit and Thakkar, Megh and Pandit, Shrey and Mukherjee, Debdoot and Flek, Lucie},
  booktitle = {Proceedings of the 1st Workshop on Multilingual Representation Learning (MRL)},
  year      = {2021}
}"""

DMIX_CITATION_TEXT = (
    "Ramit Sawhney, Megh Thakkar, Shrey Pandit, Debdoot Mukherjee and Lucie Flek. *DMIX: Distance Constrained "
    "Interpolative Mixup*. Proceedings of the 1st Workshop on Multilingual Representation Learning (MRL), 2021."
)

_MEANINGS = {
    "mix_strategy": "where anchor and partner are interpolated",
    "mix_layers": "encoder layers the mixing layer k is sampled from, once per step",
    "mix_alpha": "mixing ratio r ~ Beta(α, α)",
    "partner_distance": "distance between sentence embeddings that ranks partners",
    "tau": "fraction of the other training examples a partner is drawn from (1 = Mixup)",
    "partner_order": "farthest: top-τ by decreasing distance (the paper); nearest: increasing",
    "partner_rule": "how candidates are ranked: paper (the distance itself), centered or mutual (hub-robust)",
    "anchor_dominant": "train only the anchor-dominant mixed row, r' = max(r, 1 − r) (beyond the paper)",
    "partner_refresh_epochs": "index rebuilt from the model being trained every E epochs (0: once, before training, as the paper)",
    "curvature": "c: the Poincaré ball has curvature −c",
    "ball_median_radius": "the median embedding lands at this fraction of the ball's radius",
    "ball_clip_quantile": "embedding norms are capped at this quantile (1 = off)",
    "ball_center": "mean embedding subtracted before the ball map",
    "embedding_model": "encoder of the partner-search embeddings (None: the model being fine-tuned)",
    "embedding_pooling": "pooling of the last hidden state",
}

_WHERE = {
    "hidden": "inside the encoder (the output of a layer k sampled once per step)",
    "input": "at the embedding output",
    "sentence": "at the sentence vector entering the classifier",
}


def md_cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_value(value: Any) -> str:
    """A setting's value as the card prints it: floats in ``%g``, lists comma-separated (``—`` when empty)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(md_value(v) for v in value) if value else "—"
    return md_cell(value)


def md_metric(value: Any) -> str:
    """A metric to four decimals for the card's tables, ``—`` where it is missing (``model-index`` keeps it unrounded)."""
    return f"{float(value):.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f} %"


def card_task(record: Mapping[str, Any]) -> CardTask:
    """The :class:`CardTask` of a record: its ``modality``, else the modality of its ``model_type`` (text if unknown)."""
    from .mixing import modality_of

    modality = record.get("modality") or modality_of(record.get("model_type"))
    return CARD_TASKS.get(modality, CARD_TASKS["text"])


def _summary(settings: Mapping[str, Any], record: Mapping[str, Any], base_md: str, data_md: str | None) -> str:
    on = f" on {data_md}" if data_md else ""
    task = card_task(record)
    what = task.task_name.lower()
    strategy = settings["mix_strategy"]
    if strategy == "none":
        return (
            f"This model is {base_md} fine-tuned for {what}{on} with hf-dmix **without mixup**: the "
            "plain fine-tuning baseline of the DMIX paper's experiments (Sawhney et al., 2021)."
        )
    where = _WHERE.get(strategy, strategy)
    if settings["partner_distance"] == "random" or float(settings["tau"]) >= 1.0:
        partner = "a partner drawn uniformly from all other training examples (vanilla Mixup, a baseline of the paper)"
    else:
        rule = settings.get("partner_rule", "paper")
        ranked = (
            ""
            if rule == "paper"
            else f", ranked by the hub-robust **{rule}** rule (each distance re-referenced by per-example distance statistics)"
        )
        partner = (
            f"a partner drawn uniformly from its top-τ = {md_value(settings['tau'])} **{settings['partner_order']}** "
            f"training examples by **{settings['partner_distance']}** distance between {task.unit} embeddings{ranked}"
        )
    return (
        f"This model is {base_md} fine-tuned for {what}{on} with **DMIX** (distance-constrained "
        f"interpolative mixup; Sawhney et al., 2021): every training example is interpolated {where} with {partner}."
    )


def _method(settings: Mapping[str, Any]) -> str:
    if settings["mix_strategy"] == "none":
        return "Plain fine-tuning with cross-entropy (no mixup). Evaluation runs the plain forward pass."
    return (
        "Each training step draws one mixing site and one ratio r ~ Beta(α, α), interpolates the hidden states of every "
        "anchor i and its partner j as r·h_i + (1 − r)·h_j, and trains on the mixed label r·y_i + (1 − r)·y_j "
        "(cross-entropy; paper eq. 1–4), in one forward pass over anchors and partners. Evaluation and inference run "
        "the plain forward pass: the published model is an ordinary classifier."
    )


def _embeddings(settings: Mapping[str, Any], record: Mapping[str, Any]) -> str:
    if settings["mix_strategy"] == "none":
        return "none (no mixup)"
    if settings["partner_distance"] == "random" or float(settings["tau"]) >= 1.0:
        return "none needed (partners are drawn uniformly)"
    pooling = settings.get("embedding_pooling", "mean")
    source = record.get("embedding_source", "model")
    if source == "precomputed":
        return "precomputed embeddings passed to `DMixTrainer(sentence_embeddings=...)`"
    if source == "embedding_model" or settings.get("embedding_model"):
        return (
            f"{pooling}-pooled last hidden state of `{display_name(settings.get('embedding_model'))}` over the raw text"
        )
    return (
        f"{pooling}-pooled last hidden state of the model being fine-tuned, at its pretrained weights (computed once, "
        "before training)"
    )


def _ball_mapping(settings: Mapping[str, Any]) -> str:
    distance = settings["partner_distance"]
    if settings["mix_strategy"] == "none" or distance == "random" or float(settings["tau"]) >= 1.0:
        return "none (no partner search)"
    if distance != "hyperbolic":
        return f"none: {distance} distances are computed on the raw embeddings"
    steps = []
    if settings.get("ball_center", True):
        steps.append("centred (mean subtracted)")
    q = settings.get("ball_clip_quantile", 0.99)
    steps.append(f"norms capped at the {md_value(q)} quantile" if float(q) < 1.0 else "norms not capped")
    steps.append(
        f"rescaled so that the median norm lands at {md_value(settings.get('ball_median_radius', 0.5))} of the radius"
    )
    return (
        "embeddings "
        + ", ".join(steps)
        + f", then mapped into the Poincaré ball of curvature −{md_value(settings.get('curvature', 1.0))} "
        "with the exponential map at the origin"
    )


def _dmix_rows(settings: Mapping[str, Any], record: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for name, meaning in _MEANINGS.items():
        if name not in settings:
            continue
        value = settings[name]
        if name == "mix_layers":
            resolved = record.get("mix_layers_resolved")
            value = md_value(resolved) if resolved else ("all" if value is None else md_value(value))
        elif name == "embedding_model":
            value = "None" if value is None else display_name(value)
        else:
            value = md_value(value)
        rows.append((name, value, meaning))
    return rows


def _partner_rows(stats: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if "candidates_per_example" in stats:
        of = f" of {int(stats['num_examples']) - 1}" if "num_examples" in stats else ""
        rows.append(("candidates per example", f"{int(stats['candidates_per_example'])}{of}"))

    def random(key: str, fmt: Any = None) -> str:
        value = stats.get("random_" + key)
        return "" if value is None else f" (random partners: {(fmt or _pct)(value)})"

    if "k_occurrence_skewness" in stats:
        rows.append(
            (
                "k-occurrence skewness (hubness)",
                f"{stats['k_occurrence_skewness']:.2f}" + random("k_occurrence_skewness", lambda v: f"{v:.2f}"),
            )
        )
    if "distinct_candidate_share" in stats:
        rows.append(
            (
                "share of the training set that is ever a candidate",
                _pct(stats["distinct_candidate_share"]) + random("distinct_candidate_share"),
            )
        )
    if "top1pct_slot_share" in stats:
        rows.append(
            (
                "candidate slots held by the most frequent 1 % of examples",
                _pct(stats["top1pct_slot_share"]) + random("top1pct_slot_share"),
            )
        )
    if "same_label_share" in stats:
        rows.append(
            ("candidates with the anchor's label", _pct(stats["same_label_share"]) + random("same_label_share"))
        )
    if stats.get("degenerate"):
        rows.append(
            ("warning", "candidate sets concentrated or narrow beyond random partners of the same k (figures above)")
        )
    if "cosine_overlap" in stats:
        chance = f" (chance: {_pct(stats['cosine_overlap_chance'])})" if "cosine_overlap_chance" in stats else ""
        rows.append(("overlap with the cosine top-τ sets", _pct(stats["cosine_overlap"]) + chance))
    return rows


def _training_rows(training: Mapping[str, Any]) -> list[tuple[str, str]]:
    # In the record's order: ``record._TRAINING_KEYS`` decides it (this module cannot import record: record imports
    # cards, which imports this).
    return [(k, md_value(v)) for k, v in training.items()]


def _data_rows(results: Mapping[str, Any] | None, data_md: str | None) -> list[tuple[str, str]]:
    data = (results or {}).get("data") or {}
    rows = []
    if data_md:
        rows.append(("dataset", md_cell(data_md)))
    sizes = data.get("used_sizes") or data.get("sizes")
    if isinstance(sizes, Mapping):
        rows.append(
            (
                "examples (train / validation / test)",
                " / ".join(str(sizes.get(s, "—")) for s in ("train", "validation", "test")),
            )
        )
    if data.get("split_method"):
        rows.append(("split", f"{md_cell(data['split_method'])}, seed {data.get('split_seed')}"))
    elif data.get("official_splits"):
        rows.append(("split", "official splits: " + ", ".join(map(str, data["official_splits"]))))
    if data.get("max_seq_length"):
        rows.append(("max sequence length", str(data["max_seq_length"])))
    return rows + _diagnostic_rows((results or {}).get("data_diagnostics") or {})


def _per_split(values: Mapping[str, Any], key: str) -> str:
    return ", ".join(f"{split} {_pct(v[key])}" for split, v in values.items() if isinstance(v, Mapping) and key in v)


def _diagnostic_rows(diag: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The figures of ``results.json``'s ``data_diagnostics``: truncation, tokenizer coverage, duplicates."""
    rows = []
    truncation = diag.get("truncation") or {}
    if truncation:
        rows.append(
            (
                f"texts longer than {diag.get('max_seq_length', 'the max')} tokens (truncated)",
                _per_split(truncation, "truncated_share"),
            )
        )
        if isinstance(truncation.get("train"), Mapping) and "p95_tokens" in truncation["train"]:
            rows.append(("95th-percentile text length (train)", f"{truncation['train']['p95_tokens']} tokens"))
    coverage = diag.get("tokenizer_coverage") or {}
    if any("unk_share" in c for c in coverage.values()):
        rows.append(("unknown tokens", _per_split(coverage, "unk_share")))
    if coverage:
        rows.append(("single-character tokens", _per_split(coverage, "single_char_share")))
    dup = diag.get("duplicates") or {}
    if "groups" in dup:
        text = f"{dup['groups']} texts occur more than once; {dup.get('texts_in_several_splits', 0)} in more than one split"
        if dup.get("handling"):
            text += f" ({dup['handling']})"
        rows.append(("duplicate texts", md_cell(text)))
    return rows


def _collapse_note(results: Mapping[str, Any] | None) -> str | None:
    """A warning when ``results.json`` records that (nearly) every prediction of a split was one class."""
    collapse = ((results or {}).get("outcome") or {}).get("prediction_collapse")
    if not isinstance(collapse, Mapping):
        return None
    split = collapse.get("split", "test")
    share = collapse.get("prediction_share", 1.0)
    if share >= 1.0:
        note = (
            f"every {split} prediction is `{md_cell(collapse.get('class'))}` although the {split} set has several "
            "classes: this model predicts one class"
        )
    else:
        note = (
            f"{100 * share:.1f} % of the {split} predictions are `{md_cell(collapse.get('class'))}`, a class that is "
            f"{100 * collapse.get('label_share', 0.0):.1f} % of the {split} labels: this model nearly always "
            "predicts one class"
        )
    baseline = (results or {}).get("majority_baseline")
    if split == "test" and isinstance(baseline, Mapping) and "accuracy" in baseline:
        note += (
            f" and scores what the majority-class baseline scores (accuracy {md_metric(baseline['accuracy'])}, "
            f"macro-F1 {md_metric(baseline.get('macro_f1'))})"
        )
    return note + "."


def template_sections(
    record: Mapping[str, Any], results: Mapping[str, Any] | None, task: CardTask, base_md: str, data_md: str | None
) -> dict[str, Any]:
    """The template's text sections that follow from the record and ``results.json`` alone."""
    settings = record["dmix"]
    labels = list(record["label_names"])
    versions = (results or {}).get("versions") or {"hf_dmix": record.get("hf_dmix_version", "unknown")}
    return dict(
        summary=_summary(settings, record, base_md, data_md),
        method=_method(settings),
        collapse_note=_collapse_note(results),
        data_warnings=[md_cell(w) for w in ((results or {}).get("data_diagnostics") or {}).get("warnings") or []],
        labels=[(i, md_cell(n)) for i, n in enumerate(labels)],
        label_list=repr(labels),
        pipeline_task=task.pipeline_tag,
        auto_class=task.auto_class,
        example_call=task.example_call,
        dmix_rows=_dmix_rows(settings, record),
        embeddings=_embeddings(settings, record),
        ball_mapping=_ball_mapping(settings),
        partner_rows=_partner_rows(record.get("partner_index") or {}),
        training_rows=_training_rows(record.get("training") or {}),
        data_rows=_data_rows(results, data_md),
        versions_rows=sorted((str(k), str(v)) for k, v in versions.items()),
        has_results=results is not None,
        citation=DMIX_CITATION,
        citation_text=DMIX_CITATION_TEXT,
    )
