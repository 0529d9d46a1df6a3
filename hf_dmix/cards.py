"""The DMIX model card: what a published DMIX model tells its readers.

What lives here: the Jinja template (package data, ``templates/dmix_model_card.md``; ``model_cards/`` at the top of the
repository keeps an identical copy and a rendered example), :func:`render_model_card`, which fills it through
``huggingface_hub.ModelCard.from_template`` from a DMIX *record* (the content of ``dmix_config.json``, built by
:func:`hf_dmix.record.dmix_record`) and a run's ``results.json``, and :func:`card_metadata`, which reads the metadata of an
existing card back so that it can be rendered again (for another repository, or for a merged LoRA model).

What does not: the text of the card's sections (``card_sections.py``), which names are Hub ids (``hub_names.py``), the
record and writing it (``record.py``), talking to the Hub (``hub.py``), collecting the record from a trainer
(``hub_mixin.py``). Nothing here touches the network: a card is rendered from what is passed in only.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .card_sections import CARD_TASKS, CardTask, card_task, md_metric, md_value, template_sections
from .hub_names import display_name, hub_repo_id

TEMPLATE_PATH: Path = Path(__file__).parent / "templates" / "dmix_model_card.md"
TAU_SWEEP_PLOT_NAME = "tau_sweep.png"
BASE_TAGS: tuple[str, ...] = ("dmix", "mixup", "hf-dmix")
CARD_TAGS: tuple[str, ...] = BASE_TAGS + ("text-classification",)  # the tags of a text classifier's card
TASK_TAGS: frozenset[str] = frozenset(t.pipeline_tag for t in CARD_TASKS.values())
# (key in results.json, Hub metric type, display name). Values are stored unrounded, so they equal results.json.
CARD_METRICS: tuple[tuple[str, str, str], ...] = (
    ("macro_f1", "f1", "Macro-F1"),
    ("weighted_f1", "f1", "Weighted-F1"),
    ("accuracy", "accuracy", "Accuracy"),
)
PLACEHOLDER_REPO_ID = "path/to/this-model"
# Dataset names run_dmix.py resolves locally (generated, bundled with scikit-learn, or a local file): never Hub ids.
LOCAL_DATASETS: tuple[str, ...] = ("demo", "digits", "fsdd")


def _as_list(value: str | Sequence[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    bad = [v for v in items if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"{what} must be non-empty strings, got {bad!r}.")
    return [v.strip() for v in items]


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


def _peft_context(peft: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not peft:
        return None
    targets = peft.get("target_modules")
    to_save = peft.get("modules_to_save")
    return {
        **peft,
        "target_modules_md": md_value(sorted(targets) if isinstance(targets, (list, tuple, set)) else targets),
        "modules_to_save_md": md_value(list(to_save) if to_save else ["classification head"]),
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
        **template_sections(record, results, task, base_md, data_md),
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
        {"split": split, "examples": sizes.get(split, "—"), **{k: md_metric(values.get(k)) for k, _, _ in CARD_METRICS}}
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
                **{k: md_metric(by_name.get(name)) for k, _, name in CARD_METRICS},
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
