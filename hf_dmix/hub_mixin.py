"""``DMixHubMixin``: the model card, ``dmix_config.json`` and checkpoint pushes of a ``DMixTrainer``.

What lives here: the trainer methods that publish a run — the card's metadata defaults, the DMIX record, the card
written as ``README.md`` (``create_model_card``, which ``push_to_hub`` calls), ``dmix_config.json`` beside every saved
model and checkpoint, the card and record of checkpoint pushes (``hub_strategy``) and the model's tags. As TRL keeps
card creation in its base trainer, these live apart from the training loop. What does not: the card's content
(``cards.py``), the record's fields (``record.py``) and Hub uploads (``hub.py``).

The host class is a ``transformers.Trainer`` that also has ``mix_layers``, ``num_encoder_layers``,
``partner_index_stats``, ``_mixing`` and ``_indexer`` (a :class:`~hf_dmix.indexer.PartnerIndexer`): ``DMixTrainer``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from ._host import TrainerHost
from .families import model_modality

logger = logging.getLogger(__name__)


class DMixHubMixin(TrainerHost):
    """Model card, DMIX record and Hub-push hooks for ``DMixTrainer`` (see the module docstring)."""

    _CARD_METADATA_KEYS = ("language", "license", "tags", "finetuned_from", "dataset", "repo_id")
    _tag_names = ("dmix", "mixup", "hf-dmix", "text-classification")

    @property
    def run_id(self) -> str:
        """The id of this trainer's current run: new for every ``train()`` (one is made on first use before that).

        ``dmix_config.json`` and the CLI's ``results.json`` carry it; the card quotes a ``results.json`` only when its
        ``run_id`` is this one, so an earlier run's results left in ``output_dir`` never appear in this run's card.
        """
        if getattr(self, "_run_id", None) is None:
            self._run_id = uuid.uuid4().hex
        return self._run_id

    def train(self, *args: Any, **kwargs: Any):
        # Every train() is a run of its own (a second train(), a resume, a hyperparameter search): a new id.
        self._run_id = uuid.uuid4().hex
        return super().train(*args, **kwargs)

    def _tag_model(self) -> None:
        """Tag the model (``PreTrainedModel.add_model_tags``: the tags its pushes and saved cards carry) with
        ``_tag_names``, the task named after the model's modality."""
        add_model_tags = getattr(self.model, "add_model_tags", None)
        if add_model_tags is not None:
            task = f"{model_modality(self.model) or 'text'}-classification"
            add_model_tags([t if t != "text-classification" else task for t in self._tag_names])

    def set_model_card_metadata(self, **metadata: Any) -> None:
        """Defaults for :meth:`create_model_card`, used by every card this trainer writes (checkpoint pushes too).

        Keys: ``language`` (ISO 639-1 code(s)), ``license`` (Hub license id), ``tags``, ``finetuned_from`` (the base
        model as given — a Hub id is published as ``base_model``, a local path only by its name), ``dataset`` (Hub
        dataset id(s)), ``repo_id`` (the repository the card is for, if not ``args.hub_model_id``).
        """
        unknown = sorted(set(metadata) - set(self._CARD_METADATA_KEYS))
        if unknown:
            raise ValueError(f"Unknown model card metadata {unknown}; accepted: {list(self._CARD_METADATA_KEYS)}.")
        current = dict(getattr(self, "_card_metadata", {}))
        current.update({k: v for k, v in metadata.items() if v is not None})
        self._card_metadata = current

    def dmix_record(self, base_model: str | None = None) -> dict[str, Any]:
        """The DMIX record of this run: what ``dmix_config.json`` holds and the model card shows.

        See :func:`hf_dmix.record.dmix_record`. ``base_model`` defaults to the ``finetuned_from`` card metadata, else
        the model's (or the adapter's) ``name_or_path``.
        """
        from .record import dmix_record

        base_model = base_model or getattr(self, "_card_metadata", {}).get("finetuned_from")
        record = dmix_record(
            self.args,
            self.model,
            mix_layers=self.mix_layers if self._mixing else None,
            num_encoder_layers=self.num_encoder_layers,
            partner_index_stats=self.partner_index_stats,
            base_model=base_model,
            embedding_source=self._indexer.source(self.args),
        )
        return {**record, "run_id": self.run_id}

    def create_model_card(
        self,
        language: str | list[str] | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Write the DMIX model card as ``README.md`` in ``args.output_dir`` (main process only).

        Replaces ``Trainer``'s generic card (``push_to_hub`` calls it before uploading). The card is rendered from
        the packaged template (:func:`hf_dmix.cards.render_model_card`): base model, datasets, languages, tags, the
        ``model-index`` (test metrics of ``output_dir/results.json`` when that file is this run's — its ``run_id``
        is :attr:`run_id` —, else the last evaluation during training), the DMIX and training hyperparameters, the label names, usage snippets and the DMIX citation;
        ``output_dir/tau_sweep.png`` is embedded when present. Nothing is fetched from the Hub.

        Arguments not given fall back to :meth:`set_model_card_metadata`. ``tasks``, ``dataset_tags`` and
        ``dataset_args`` are accepted for compatibility with ``Trainer`` and ignored (the task — text, image or audio
        classification — follows from the model type), and so is ``model_name`` (the card is named after the repository: ``args.hub_model_id``).
        ``use_results=False`` ignores ``output_dir/results.json`` (checkpoint pushes: it may belong to an earlier run).
        """
        if not self.is_world_process_zero():
            return
        assert self.args.output_dir is not None  # TrainingArguments.__post_init__ sets its default
        self._write_model_card(
            self.args.output_dir,
            use_results=kwargs.pop("use_results", True),
            language=language,
            license=license,
            tags=tags,
            finetuned_from=finetuned_from,
            dataset=dataset,
        )

    def _write_model_card(self, output_dir: str, use_results: bool = True, **given: Any) -> str:
        import json
        import os

        from .cards import TAU_SWEEP_PLOT_NAME, render_model_card, results_of_run
        from .hub_names import hub_repo_id
        from .io import write_atomic
        from .record import README_NAME, RESULTS_NAME

        meta = {**getattr(self, "_card_metadata", {}), **{k: v for k, v in given.items() if v is not None}}
        tags = meta.get("tags") or []
        tags = [tags] if isinstance(tags, str) else list(tags)
        finetuned_from = meta.get("finetuned_from")
        record = self.dmix_record(finetuned_from)
        results = None
        results_path = os.path.join(output_dir, RESULTS_NAME)
        if use_results and os.path.isfile(results_path):
            with open(results_path, encoding="utf-8") as f:
                found = json.load(f)
            results = results_of_run(record, found)
            if results is None:
                other = found.get("run_id") if isinstance(found, dict) else None
                logger.warning(
                    f"{results_path} is not this run's (its run_id: {other!r}, this run: {self.run_id!r}): "
                    "the model card does not quote it."
                )
        repo_id = next(
            (r for r in (meta.get("repo_id"), self.hub_model_id, self.args.hub_model_id) if hub_repo_id(r)), None
        )
        card = render_model_card(
            record,
            results,
            repo_id=repo_id,
            base_model=hub_repo_id(finetuned_from),
            datasets=meta.get("dataset"),
            language=meta.get("language"),
            license=meta.get("license"),
            tags=tags,
            validation_metrics=self._last_eval_metrics(),
            tau_sweep_plot=TAU_SWEEP_PLOT_NAME
            if os.path.isfile(os.path.join(output_dir, TAU_SWEEP_PLOT_NAME))
            else None,
        )
        path = os.path.join(output_dir, README_NAME)
        write_atomic(path, str(card))
        return path

    def _last_eval_metrics(self) -> dict[str, float]:
        """The metrics of the last evaluation during training, without the ``eval_`` prefix."""
        for entry in reversed(self.state.log_history):
            metrics = {k[len("eval_") :]: v for k, v in entry.items() if k.startswith("eval_")}
            if any(k in metrics for k in ("macro_f1", "accuracy", "weighted_f1")):
                return metrics
        return {}

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """``Trainer._save``, plus ``dmix_config.json`` (the DMIX record) next to the model — checkpoints included.

        The ``training_args.bin`` that ``Trainer`` saves holds no token: pickling a ``DMixConfig`` drops ``hub_token``.
        """
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            from .record import write_dmix_config

            folder = output_dir if output_dir is not None else self.args.output_dir
            assert folder is not None  # TrainingArguments.__post_init__ sets its default
            write_dmix_config(folder, self.dmix_record())

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Checkpoint pushes (``hub_strategy``) carry the DMIX card and ``dmix_config.json`` too.

        ``Trainer`` uploads ``output_dir`` (and, for ``hub_strategy="checkpoint"``/``"all_checkpoints"``, the
        checkpoint folder); both get the card of the training so far (metrics: the last evaluation, never a
        ``results.json`` of an earlier run) and the record before the upload starts.
        """
        from transformers.trainer_utils import HubStrategy

        if self.is_world_process_zero() and self.args.hub_strategy != HubStrategy.END:
            import os
            import shutil

            from .record import README_NAME, write_dmix_config

            output_dir = self.args.output_dir
            assert output_dir is not None  # TrainingArguments.__post_init__ sets its default
            write_dmix_config(output_dir, self.dmix_record())
            card = self._write_model_card(output_dir, use_results=False)
            shutil.copyfile(card, os.path.join(checkpoint_folder, README_NAME))
        super()._push_from_checkpoint(checkpoint_folder)

    def wait_for_hub_pushes(self) -> None:
        """Block until the checkpoint pushes started during training (``hub_strategy``) have finished.

        Call it before publishing the final model yourself, so that a late checkpoint upload cannot overwrite it.
        """
        self._finish_current_push()
