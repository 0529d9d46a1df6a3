"""The DMIX model card: what a published DMIX model tells its readers.

What lives here: the Jinja template (package data, ``templates/dmix_model_card.md``; ``model_cards/`` at the top of the
repository keeps an identical copy and a rendered example), :func:`render_model_card`, which fills it through
``huggingface_hub.ModelCard.from_template`` from a DMIX *record* (the content of ``dmix_config.json``, built by
:func:`hf_dmix.record.dmix_record`) and a run's ``results.json``, and :func:`card_metadata`, which reads the metadata of an
existing card back so that it can be rendered again (for another repository, or for a merged LoRA model).

What does not: the record and writing it (``record.py``), talking to the Hub (``hub.py``), collecting the record from
a trainer (``hub_mixin.py``). Nothing here touches the network: a card is rendered from what is passed in only.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE_PATH: Path = Path(__file__).parent / "templates" / "dmix_model_card.md"
TAU_SWEEP_PLOT_NAME = "tau_sweep.png"
BASE_TAGS: tuple[str, ...] = ("dmix", "mixup", "hf-dmix")
CARD_TAGS: tuple[str, ...] = BASE_TAGS + ("text-classification",)  # the tags of a text classifier's card


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
TASK_TAGS: frozenset[str] = frozenset(t.pipeline_tag for t in CARD_TASKS.values())
# (key in results.json, Hub metric type, display name). Values are stored unrounded, so they equal results.json.
CARD_METRICS: tuple[tuple[str, str, str], ...] = (
    ("macro_f1", "f1", "Macro-F1"),
    ("weighted_f1", "f1", "Weighted-F1"),
    ("accuracy", "accuracy", "Accuracy"),
)
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
PLACEHOLDER_REPO_ID = "path/to/this-model"
# Dataset names run_dmix.py resolves locally (generated, bundled with scikit-learn, or a local file): never Hub ids.
LOCAL_DATASETS: tuple[str, ...] = ("demo", "digits", "fsdd")

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
_TRAINING_ORDER = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "world_size",
    "total_train_batch_size",
    "weight_decay",
    "warmup_steps",
    "lr_scheduler_type",
    "optim",
    "max_grad_norm",
    "label_smoothing_factor",
    "seed",
    "bf16",
    "fp16",
    "max_seq_length",
)


def hub_repo_id(name: Any) -> str | None:
    """``name`` if it names a Hub repository (``"bert-base-cased"``, ``"org/model"``), else ``None``.

    Local folders (existing paths, or anything starting with ``/``, ``.``, ``~``), ``package:NAME`` specs and other
    strings that are not valid repo ids are not Hub repositories: a card must not name them as ``base_model`` or
    ``datasets`` (the Hub would reject the metadata, and a local path says nothing to a reader).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(name, str) or not name or name.startswith(("package:", ".", "/", "~")) or "\\" in name:
        return None
    if name.count("/") > 1 or os.path.exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def display_name(name: Any) -> str:
    """A name for ``name`` that is fit to publish: a Hub id as is, a local path by its last component only."""
    if not isinstance(name, str) or not name:
        return "unknown"
    if hub_repo_id(name) or name.startswith("package:"):
        return name
    return os.path.basename(os.path.normpath(os.path.expanduser(name))) or name


def _as_list(value: str | Sequence[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    bad = [v for v in items if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"{what} must be non-empty strings, got {bad!r}.")
    return [v.strip() for v in items]


def _cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if value else "—"
    return _cell(value)


def _metric(value: Any) -> str:
    return f"{float(value):.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f} %"


def _check_metrics(metrics: Mapping[str, Any] | None, where: str) -> dict[str, float]:
    if not metrics:
        return {}
    if not isinstance(metrics, Mapping):
        raise ValueError(f"{where} must be a mapping of metric name to value, got {type(metrics).__name__}.")
    out = {}
    for key, _, _ in CARD_METRICS:
        if key in metrics:
            value = metrics[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{where}[{key!r}] must be a finite number, got {value!r}.")
            out[key] = float(value)
    return out


def _check_record(record: Mapping[str, Any]) -> None:
    if not isinstance(record, Mapping):
        raise ValueError(f"record must be a mapping (the content of dmix_config.json), got {type(record).__name__}.")
    settings = record.get("dmix")
    missing = [
        k
        for k in ("mix_strategy", "partner_distance", "tau", "partner_order", "mix_alpha")
        if k not in (settings or {})
    ]
    if not isinstance(settings, Mapping) or missing:
        raise ValueError(
            f"record['dmix'] must hold the DMIX settings; missing {missing or 'everything'}. Build records with "
            "hf_dmix.record.dmix_record(args, model)."
        )
    labels = record.get("label_names")
    if not isinstance(labels, (list, tuple)) or len(labels) < 2 or not all(isinstance(n, str) and n for n in labels):
        raise ValueError(f"record['label_names'] must list at least 2 non-empty class names, got {labels!r}.")


def _data_description(results: Mapping[str, Any] | None, datasets: list[str]) -> str | None:
    if datasets:
        return ", ".join(datasets)
    source = ((results or {}).get("data") or {}).get("source")
    if isinstance(source, Mapping):
        names = [os.path.basename(str(p)) for p in source.values() if p]
        return "local files: " + ", ".join(names) if names else None
    if isinstance(source, str) and source:
        return display_name(source)
    return None


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
            f"a partner drawn uniformly from its top-τ = {_fmt(settings['tau'])} **{settings['partner_order']}** "
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
    steps.append(f"norms capped at the {_fmt(q)} quantile" if float(q) < 1.0 else "norms not capped")
    steps.append(
        f"rescaled so that the median norm lands at {_fmt(settings.get('ball_median_radius', 0.5))} of the radius"
    )
    return (
        "embeddings "
        + ", ".join(steps)
        + f", then mapped into the Poincaré ball of curvature −{_fmt(settings.get('curvature', 1.0))} "
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
            value = _fmt(resolved) if resolved else ("all" if value is None else _fmt(value))
        elif name == "embedding_model":
            value = "None" if value is None else display_name(value)
        else:
            value = _fmt(value)
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
    keys = [k for k in _TRAINING_ORDER if k in training] + sorted(k for k in training if k not in _TRAINING_ORDER)
    return [(k, _fmt(training[k])) for k in keys]


def _data_rows(results: Mapping[str, Any] | None, data_md: str | None) -> list[tuple[str, str]]:
    data = (results or {}).get("data") or {}
    rows = []
    if data_md:
        rows.append(("dataset", _cell(data_md)))
    sizes = data.get("used_sizes") or data.get("sizes")
    if isinstance(sizes, Mapping):
        rows.append(
            (
                "examples (train / validation / test)",
                " / ".join(str(sizes.get(s, "—")) for s in ("train", "validation", "test")),
            )
        )
    if data.get("split_method"):
        rows.append(("split", f"{_cell(data['split_method'])}, seed {data.get('split_seed')}"))
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
        rows.append(("duplicate texts", _cell(text)))
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
            f"every {split} prediction is `{_cell(collapse.get('class'))}` although the {split} set has several "
            "classes: this model predicts one class"
        )
    else:
        note = (
            f"{100 * share:.1f} % of the {split} predictions are `{_cell(collapse.get('class'))}`, a class that is "
            f"{100 * collapse.get('label_share', 0.0):.1f} % of the {split} labels: this model nearly always "
            "predicts one class"
        )
    baseline = (results or {}).get("majority_baseline")
    if split == "test" and isinstance(baseline, Mapping) and "accuracy" in baseline:
        note += (
            f" and scores what the majority-class baseline scores (accuracy {_metric(baseline['accuracy'])}, "
            f"macro-F1 {_metric(baseline.get('macro_f1'))})"
        )
    return note + "."


def _peft_context(peft: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not peft:
        return None
    targets = peft.get("target_modules")
    to_save = peft.get("modules_to_save")
    return {
        **peft,
        "target_modules_md": _fmt(sorted(targets) if isinstance(targets, (list, tuple, set)) else targets),
        "modules_to_save_md": _fmt(list(to_save) if to_save else ["classification head"]),
        "merged": bool(peft.get("merged")),
    }


def render_model_card(
    record: Mapping[str, Any],
    results: Mapping[str, Any] | None = None,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    datasets: str | Sequence[str] | None = None,
    language: str | Sequence[str] | None = None,
    license: str | None = None,
    tags: Sequence[str] = (),
    validation_metrics: Mapping[str, float] | None = None,
    eval_results: Sequence[EvalResult] | None = None,
    tau_sweep_plot: str | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the DMIX model card of a model.

    Args:
        record: the DMIX record (``dmix_config.json``): ``dmix`` settings, ``label_names``, ``training``
            hyperparameters, ``peft`` (LoRA settings, ``merged``), ``partner_index`` statistics, ``base_model``.
        results: the run's ``results.json`` (``metrics.test`` / ``metrics.validation``, ``data``, ``versions``). Its
            test metrics (else validation) become the card's ``model-index``, unrounded.
        repo_id: the repository the card is published in (usage snippets, ``model-index`` name).
        base_model: Hub id of the base model; defaults to ``record["base_model"]``. Never a local path.
        datasets: Hub dataset id(s); defaults to the Hub dataset named in ``results`` (none for local files).
        language, license: card metadata (ISO 639-1 codes; a Hub license id such as ``"apache-2.0"``).
        tags: extra tags, added to ``dmix``, ``mixup``, ``hf-dmix``, the task (``text-classification``,
            ``image-classification`` or ``audio-classification``, from the record's modality) and ``peft``/``lora``.
        validation_metrics: metrics to publish when ``results`` has none (e.g. the last evaluation during training).
        eval_results: ``model-index`` entries to keep when neither ``results`` nor ``validation_metrics`` has
            metrics (re-rendering an existing card).
        tau_sweep_plot: file name, inside the repository, of a τ-sweep plot to embed (only pass an existing file).
        template_path: another Jinja template (default: the packaged ``templates/dmix_model_card.md``).

    Returns:
        A ``huggingface_hub.ModelCard``; ``str(card)`` is the ``README.md`` text.

    Raises:
        ValueError: a malformed record, metric or metadata value (the message names it).
    """
    _check_record(record)
    base_id, base_md = _base_model(record, repo_id, base_model)
    dataset_ids = _dataset_ids(datasets, results)
    languages = _as_list(language, "language")
    _check_license_and_plot(license, tau_sweep_plot)
    data_md = _data_description(results, dataset_ids)
    task = card_task(record)
    peft = _peft_context(record.get("peft"))
    metrics_rows, metrics_note, eval_results = _metrics_section(
        results,
        validation_metrics,
        eval_results,
        task,
        dataset_ids[0] if dataset_ids else "custom",
        data_md or "custom data",
    )
    title = repo_id.split("/")[-1] if repo_id else f"DMIX {task.pipeline_tag.split('-')[0]} classifier"
    card_data = _card_data(task, peft, base_id, dataset_ids, languages, license, tags, repo_id or title, eval_results)
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path or TEMPLATE_PATH),
        title=title,
        repo_id=repo_id or PLACEHOLDER_REPO_ID,
        base_model_md=base_md,
        metrics_rows=metrics_rows,
        metrics_note=metrics_note,
        peft=peft,
        tau_sweep_plot=tau_sweep_plot,
        **_template_sections(record, results, task, base_md, data_md),
    )
    # Optional sections leave runs of blank lines behind; one blank line is all Markdown needs.
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)))


def _card_data(
    task: CardTask,
    peft: Mapping[str, Any] | None,
    base_id: str | None,
    dataset_ids: list[str],
    languages: list[str],
    license: str | None,
    tags: Sequence[str],
    model_name: str,
    eval_results: list[EvalResult] | None,
) -> ModelCardData:
    """The card's metadata block; an unmerged LoRA adapter is a ``peft`` model, anything else a ``transformers`` one."""
    adapter = bool(peft and not peft["merged"])
    return ModelCardData(
        base_model=base_id,
        datasets=dataset_ids or None,
        language=languages or None,
        license=license.strip() if license else None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=task.pipeline_tag,
        tags=_card_tags(task, peft, adapter, tags),
        metrics=["f1", "accuracy"],
        model_name=model_name,
        eval_results=eval_results,
    )


def _check_license_and_plot(license: Any, tau_sweep_plot: Any) -> None:
    if license is not None and (not isinstance(license, str) or not license.strip() or " " in license.strip()):
        raise ValueError(f"license must be a Hub license id such as 'apache-2.0' or 'mit', got {license!r}.")
    if tau_sweep_plot is not None and (not isinstance(tau_sweep_plot, str) or os.path.isabs(tau_sweep_plot)):
        raise ValueError(f"tau_sweep_plot must be a file name inside the repository, got {tau_sweep_plot!r}.")


def _template_sections(
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
        data_warnings=[_cell(w) for w in ((results or {}).get("data_diagnostics") or {}).get("warnings") or []],
        labels=[(i, _cell(n)) for i, n in enumerate(labels)],
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


def _base_model(record: Mapping[str, Any], repo_id: str | None, base_model: str | None) -> tuple[str | None, str]:
    """The card's ``base_model`` Hub id (or ``None``) and how the text names the base model."""
    if repo_id is not None and not hub_repo_id(repo_id):
        raise ValueError(f"repo_id={repo_id!r} is not a Hub repository id ('name' or 'namespace/name').")
    if base_model is not None and not hub_repo_id(base_model):
        raise ValueError(f"base_model={base_model!r} is not a Hub model id; leave it None for a local base model.")
    base_id = base_model or hub_repo_id(record.get("base_model"))
    local_name = display_name(record.get("base_model_name") or record.get("base_model") or "a local model")
    if base_id:
        return base_id, f"[{base_id}](https://huggingface.co/{base_id})"
    if local_name.startswith("config:"):  # run_dmix.py --model_name_or_path config:NAME
        return None, f"a `{local_name[len('config:') :]}` model built from its config (random initial weights)"
    return None, f"`{local_name}` (a local model)"


def _dataset_ids(datasets: str | Sequence[str] | None, results: Mapping[str, Any] | None) -> list[str]:
    """The card's Hub dataset ids: as given, else the Hub dataset ``results.json`` names (none for local files)."""
    dataset_ids = _as_list(datasets, "datasets")
    if not dataset_ids:
        source = ((results or {}).get("data") or {}).get("source")
        dataset_ids = [source] if source and hub_repo_id(source) and source not in LOCAL_DATASETS else []
    for d in dataset_ids:
        if not hub_repo_id(d):
            raise ValueError(f"datasets: {d!r} is not a Hub dataset id.")
    return dataset_ids


def _metrics_section(
    results: Mapping[str, Any] | None,
    validation_metrics: Mapping[str, float] | None,
    eval_results: Sequence[EvalResult] | None,
    task: CardTask,
    dataset_type: str,
    dataset_name: str,
) -> tuple[list[dict[str, Any]], str, list[EvalResult] | None]:
    """The metrics table rows, the note under it and the ``model-index`` entries: the test metrics of
    ``results.json`` (else its validation metrics, else ``validation_metrics``), or ``eval_results`` kept as published."""
    metrics = ((results or {}).get("metrics") or {}) if isinstance(results, Mapping) else {}
    test = _check_metrics(metrics.get("test"), "results['metrics']['test']")
    validation = _check_metrics(metrics.get("validation"), "results['metrics']['validation']")
    note = "Metrics of the run's `results.json` (test: held-out data, evaluated once after training)."
    if not test and not validation and validation_metrics:
        validation = _check_metrics(validation_metrics, "validation_metrics")
        note = "Metrics of the last evaluation during training (validation data)."
    sizes = (((results or {}).get("data") or {}).get("used_sizes")) or {}
    rows = [
        {"split": split, "examples": sizes.get(split, "—"), **{k: _metric(values.get(k)) for k, _, _ in CARD_METRICS}}
        for split, values in (("test", test), ("validation", validation))
        if values
    ]
    index_split, index_metrics = ("test", test) if test else ("validation", validation)
    if index_metrics:
        entries = [
            EvalResult(
                task_type=task.pipeline_tag,
                task_name=task.task_name,
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_split=index_split,
                metric_type=metric_type,
                metric_name=name,
                metric_value=index_metrics[key],
            )
            for key, metric_type, name in CARD_METRICS
            if key in index_metrics
        ]
        return rows, note, entries
    if eval_results:
        entries = list(eval_results)
        by_name = {r.metric_name: r.metric_value for r in entries}
        rows = [
            {
                "split": entries[0].dataset_split or "—",
                "examples": "—",
                **{k: _metric(by_name.get(name)) for k, _, name in CARD_METRICS},
            }
        ]
        return rows, "Metrics as published with this model.", entries
    return rows, note, None


def _card_tags(task: CardTask, peft: Mapping[str, Any] | None, adapter: bool, tags: Sequence[str]) -> list[str]:
    """``dmix``, ``mixup``, ``hf-dmix``, the task, ``peft``/``lora`` (or ``lora``/``merged-lora``), then ``tags``."""
    all_tags = [*BASE_TAGS, task.pipeline_tag] + (
        ["peft", "lora"] if adapter else ["lora", "merged-lora"] if peft else []
    )
    for tag in _as_list(list(tags), "tags"):
        if tag not in all_tags:
            all_tags.append(tag)
    return all_tags


def results_of_run(record: Any, results: Any) -> Mapping[str, Any] | None:
    """``results`` if it is the ``results.json`` of the run that wrote ``record`` (``dmix_config.json``), else ``None``.

    A run stamps both files with one ``run_id`` (``DMixTrainer.run_id``); an output folder reused by another run may
    still hold an earlier run's ``results.json``, whose metrics, data and split sizes are not this model's. Files from
    before run ids (neither has one) are kept: there is nothing to tell them apart by.
    """
    if not isinstance(results, Mapping) or not isinstance(record, Mapping):
        return None
    return results if record.get("run_id") == results.get("run_id") else None


def card_metadata(card: ModelCard) -> dict[str, Any]:
    """The metadata of a rendered DMIX card, as keyword arguments of :func:`render_model_card`.

    Used to render a card again from the files of an output folder — for another repository id, or for a merged
    LoRA model — without losing what only the card knows (language, license, datasets, extra tags, metrics).
    """
    data: Any = card.data  # a ModelCardData: huggingface_hub types RepoCard.data as the CardData base class
    auto = set(BASE_TAGS) | TASK_TAGS | {"peft", "lora", "merged-lora"}
    return {
        "base_model": hub_repo_id(data.base_model if isinstance(data.base_model, str) else None),
        "datasets": ([data.datasets] if isinstance(data.datasets, str) else data.datasets) or None,
        "language": data.language or None,
        "license": data.license,
        "tags": [t for t in (data.tags or []) if t not in auto],
        "eval_results": data.eval_results or None,
    }
