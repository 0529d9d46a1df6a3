"""The DMIX checkpoint state: complete-checkpoint choice, fingerprints, the state file and the counter-based draws."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from hf_dmix import DMixDataCollator
from hf_dmix.checkpoint import (
    DMIX_STATE_NAME,
    dataset_fingerprint,
    fingerprint_differences,
    index_digest,
    last_complete_checkpoint,
    read_state,
    write_state,
)
from hf_dmix.partners import PartnerIndex


def _checkpoint(root, step, trainer_state=True, dmix_state=True):
    folder = root / f"checkpoint-{step}"
    folder.mkdir()
    if trainer_state:
        (folder / "trainer_state.json").write_text("{}")
    if dmix_state:
        write_state(str(folder), {"batches_consumed": step})
    return folder


def test_last_complete_checkpoint_skips_partial_folders(tmp_path):
    _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 12)
    _checkpoint(tmp_path, 16, trainer_state=False)  # killed while writing the model
    _checkpoint(tmp_path, 20, dmix_state=False)  # written by plain Trainer (or an older hf-dmix)
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    path, skipped = last_complete_checkpoint(str(tmp_path), need_dmix_state=True)
    assert path == str(tmp_path / "checkpoint-12")
    assert skipped == [str(tmp_path / "checkpoint-20"), str(tmp_path / "checkpoint-16")]
    # A baseline run (no mixing) needs no DMIX state.
    path, skipped = last_complete_checkpoint(str(tmp_path), need_dmix_state=False)
    assert path == str(tmp_path / "checkpoint-20") and skipped == []
    assert last_complete_checkpoint(str(tmp_path / "missing"), True) == (None, [])


def test_state_file_round_trip_and_damage(tmp_path):
    write_state(str(tmp_path), {"batches_consumed": 7, "mix_rng": {"state": {"state": 2**100}}})
    state = read_state(str(tmp_path))
    assert state["batches_consumed"] == 7 and state["mix_rng"]["state"]["state"] == 2**100 and state["format"] == 1
    assert not list(tmp_path.glob("*.tmp-*"))  # written through a temporary file that was renamed
    assert read_state(str(tmp_path / "nothing")) is None
    (tmp_path / DMIX_STATE_NAME).write_text('{"batches_consumed": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        read_state(str(tmp_path))
    (tmp_path / DMIX_STATE_NAME).write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="format 99"):
        read_state(str(tmp_path))


def test_fingerprint_differences_name_each_entry():
    saved = {"tau": 0.3, "mix_layers": [1, 2], "seed": 0, "index_digest": "abc"}
    assert fingerprint_differences(saved, {"tau": 0.3, "mix_layers": (1, 2), "seed": 0, "index_digest": None}) == []
    diff = fingerprint_differences(saved, {"tau": 0.5, "mix_layers": [1, 2], "seed": 1, "index_digest": "abd"})
    assert diff == [
        "index_digest: checkpoint='abc', this run='abd'",
        "seed: checkpoint=0, this run=1",
        "tau: checkpoint=0.3, this run=0.5",
    ]


def test_dataset_fingerprint_follows_content_not_object_identity():
    rows = {"input_ids": [[1, 2, 3], [4, 5], [6]], "label": [0, 1, 0]}
    a, b = Dataset.from_dict(rows), Dataset.from_dict(rows)
    assert dataset_fingerprint(a, [0, 1, 0]) == dataset_fingerprint(b, [0, 1, 0])
    # The same rows reached through a transform datasets cannot hash (a random datasets fingerprint) hash the same.
    mapped = Dataset.from_dict({**rows, "input_ids": [[0], [0], [0]]}).map(
        lambda r, ids=iter(rows["input_ids"]): {"input_ids": next(ids)}  # noqa: B008 - one iterator for all calls
    )
    assert dataset_fingerprint(mapped, [0, 1, 0]) == dataset_fingerprint(a, [0, 1, 0])
    changed = Dataset.from_dict({**rows, "input_ids": [[1, 2, 3], [4, 5], [7]]})
    assert dataset_fingerprint(changed, [0, 1, 0]) != dataset_fingerprint(a, [0, 1, 0])
    assert dataset_fingerprint(a, [0, 1, 1]) != dataset_fingerprint(a, [0, 1, 0])
    # Same rows, other order: other partner ids, another fingerprint.
    assert dataset_fingerprint(a.select([1, 0, 2]), [1, 0, 0]) != dataset_fingerprint(a, [0, 1, 0])


def test_index_digest_of_lists_only():
    lists = PartnerIndex(num_examples=3, candidates=torch.tensor([[1], [2], [0]], dtype=torch.int32))
    other = PartnerIndex(num_examples=3, candidates=torch.tensor([[2], [2], [0]], dtype=torch.int32))
    assert index_digest(lists) == index_digest(PartnerIndex(3, candidates=lists.candidates.clone()))
    assert index_digest(lists) != index_digest(other)
    assert index_digest(PartnerIndex(num_examples=3)) is None


def test_collator_draws_are_a_function_of_the_batch_counter(tokenizer):
    index = PartnerIndex(num_examples=50)  # every other example is a candidate
    features = [{"input_ids": [5, 6], "label": 0, "dmix_index": i} for i in range(8)]
    data = [{"input_ids": [5, 6], "label": i % 2} for i in range(50)]

    def collator():
        return DMixDataCollator(tokenizer, train_dataset=data, partner_index=index, seed=3)

    first = collator()
    draws = [first(features)["dmix_partner_ids"] for _ in range(4)]
    assert first.batches_drawn == 4
    assert len({tuple(d.tolist()) for d in draws}) == 4  # each batch draws anew
    resumed = collator()
    resumed.batches_drawn = 2  # what DMixTrainer sets from a checkpoint
    assert torch.equal(resumed(features)["dmix_partner_ids"], draws[2])
    assert torch.equal(resumed(features)["dmix_partner_ids"], draws[3])
    other_seed = DMixDataCollator(tokenizer, train_dataset=data, partner_index=index, seed=4)
    assert not torch.equal(other_seed(features)["dmix_partner_ids"], draws[0])


def test_resume_true_without_a_complete_checkpoint_is_a_clear_error(tmp_path, train_dataset, tokenizer):
    from conftest import tiny_model

    from hf_dmix import DMixConfig, DMixTrainer

    args = DMixConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=2, disable_tqdm=True)
    trainer = DMixTrainer(
        model=tiny_model(vocab_size=tokenizer.vocab_size),
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    (tmp_path / "checkpoint-3").mkdir()  # killed before anything was written
    with pytest.raises(ValueError, match=r"holds no complete checkpoint \(skipped incomplete: .*checkpoint-3"):
        trainer.train(resume_from_checkpoint=True)


# ---------------------------------------------------------------------- issue 14: resume gaps (in-process runs)


def test_dataset_fingerprint_hashes_image_and_audio_inputs():
    """Not only token ids: pixel values, audio samples and raw columns of any dataset are part of the hash."""
    pixels = {"pixel_values": [[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]]], "label": [0, 1]}
    other = {"pixel_values": [[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.9]]], "label": [0, 1]}
    assert dataset_fingerprint(Dataset.from_dict(pixels), [0, 1]) == dataset_fingerprint(
        Dataset.from_dict(pixels), [0, 1]
    )
    assert dataset_fingerprint(Dataset.from_dict(pixels), [0, 1]) != dataset_fingerprint(
        Dataset.from_dict(other), [0, 1]
    )
    clips = [
        {"input_values": torch.tensor([0.0, 0.5, 1.0]), "label": 0},
        {"input_values": torch.tensor([1.0, 0.5]), "label": 1},
    ]
    changed = [dict(clips[0]), {"input_values": torch.tensor([1.0, 0.25]), "label": 1}]
    assert dataset_fingerprint(clips, [0, 1]) == dataset_fingerprint([dict(c) for c in clips], [0, 1])
    assert dataset_fingerprint(clips, [0, 1]) != dataset_fingerprint(changed, [0, 1])
    images = {"image": [{"bytes": b"\x89PNG-a", "path": None}, {"bytes": b"\x89PNG-b", "path": None}], "label": [0, 1]}
    swapped = {"image": [{"bytes": b"\x89PNG-a", "path": None}, {"bytes": b"\x89PNG-c", "path": None}], "label": [0, 1]}
    assert dataset_fingerprint(Dataset.from_dict(images), [0, 1]) != dataset_fingerprint(
        Dataset.from_dict(swapped), [0, 1]
    )


def test_threshold_indices_have_a_digest():
    points = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    from hf_dmix.partners import build_partner_index

    a = build_partner_index(points, 30, "euclidean", tau=0.3, representation="thresholds", show_progress=False)
    b = build_partner_index(points, 30, "euclidean", tau=0.5, representation="thresholds", show_progress=False)
    assert index_digest(a) is not None and index_digest(a) != index_digest(b)
    assert index_digest(a) == index_digest(
        build_partner_index(points.clone(), 30, "euclidean", tau=0.3, representation="thresholds", show_progress=False)
    )


@pytest.fixture
def small_data(tokenizer):
    from conftest import make_sentences

    texts, labels = make_sentences(24, seed=7)
    return Dataset.from_dict({"text": texts, "label": labels}).map(lambda b: tokenizer(b["text"]), batched=True)


def _trainer(out, tokenizer, data, callbacks=None, **kw):
    from conftest import tiny_model

    from hf_dmix import DMixConfig, DMixTrainer

    settings = dict(
        output_dir=str(out),
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        per_device_train_batch_size=4,
        max_steps=8,
        save_strategy="steps",
        save_steps=4,
        logging_steps=1,
        learning_rate=1e-3,
        tau=0.3,
        dataloader_num_workers=0,
    )
    settings.update(kw)
    return DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=1),
        args=DMixConfig(**settings),
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


class _StopAt:
    """A callback that ends training after step ``step`` (after that step's checkpoint): an interrupted run."""

    def __new__(cls, step):
        from transformers import TrainerCallback

        class Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == step:
                    control.should_training_stop = True
                return control

        return Stop()


def test_train_loss_of_a_resumed_run_is_the_whole_runs(tmp_path, tokenizer, small_data):
    full = _trainer(tmp_path / "full", tokenizer, small_data).train()
    _trainer(tmp_path / "cut", tokenizer, small_data, callbacks=[_StopAt(4)]).train()
    resumed_trainer = _trainer(tmp_path / "cut", tokenizer, small_data)
    resumed = resumed_trainer.train(resume_from_checkpoint=True)
    # The same eight step losses, so the same mean (Trainer alone reports the mean of steps 5-8).
    losses = lambda t: [e["loss"] for e in t.state.log_history if "loss" in e]  # noqa: E731
    assert resumed.global_step == full.global_step == 8
    assert resumed.training_loss == pytest.approx(full.training_loss, abs=1e-6)
    assert resumed.metrics["train_loss"] == pytest.approx(full.metrics["train_loss"], abs=1e-6)
    assert resumed_trainer.state.log_history[-1]["train_loss"] == pytest.approx(full.training_loss, abs=1e-6)
    assert len(losses(resumed_trainer)) == 8


def test_checkpoint_without_dmix_state_is_refused_not_skipped(tmp_path, tokenizer, small_data):
    _trainer(tmp_path, tokenizer, small_data, max_steps=4).train()
    (tmp_path / "checkpoint-4" / DMIX_STATE_NAME).unlink()  # as plain Trainer or an older hf-dmix wrote it
    with pytest.raises(ValueError, match=r"Cannot resume from .*checkpoint-4: it has no dmix_state\.json"):
        _trainer(tmp_path, tokenizer, small_data).train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))


def test_save_only_model_checkpoints_carry_the_dmix_state_and_resume(tmp_path, tokenizer, small_data, caplog):
    _trainer(tmp_path, tokenizer, small_data, max_steps=4, save_steps=2, save_only_model=True).train()
    assert (tmp_path / "checkpoint-4" / DMIX_STATE_NAME).is_file()
    trainer = _trainer(tmp_path, tokenizer, small_data, max_steps=6, save_steps=2, save_only_model=True)
    with caplog.at_level("WARNING"):
        result = trainer.train(resume_from_checkpoint=True)
    assert result.global_step == 6 and trainer.resumed_checkpoint == str(tmp_path / "checkpoint-4")
    assert "killed" not in caplog.text and "save_only_model=True" in caplog.text


def test_a_refreshed_checkpoint_of_another_training_set_is_refused_clearly(tmp_path, tokenizer, small_data):
    # 24 examples in batches of 4: 6 steps per epoch; the index is refreshed at step 7, checkpoint-8 holds it.
    _trainer(tmp_path, tokenizer, small_data, partner_refresh_epochs=1, save_steps=8).train()
    assert json.loads((tmp_path / "checkpoint-8" / DMIX_STATE_NAME).read_text())["refreshed_epoch"] == 1
    smaller = small_data.select(range(20))
    with pytest.raises(
        ValueError, match=r"Cannot resume from .*checkpoint-8.*train_examples: checkpoint=24, this run=20"
    ):
        _trainer(tmp_path, tokenizer, smaller, partner_refresh_epochs=1, save_steps=8, max_steps=10).train(
            resume_from_checkpoint=True
        )


def test_a_resume_that_would_switch_lists_and_thresholds_is_refused(tmp_path, tokenizer, small_data):
    _trainer(tmp_path, tokenizer, small_data, max_steps=4).train()
    with pytest.raises(ValueError, match=r"partner_index_max_mb: checkpoint=1024, this run=0"):
        _trainer(tmp_path, tokenizer, small_data, partner_index_max_mb=0).train(resume_from_checkpoint=True)


def test_refused_resume_is_a_resume_mismatch_error_and_the_pick_is_logged(tmp_path, tokenizer, small_data, caplog):
    from hf_dmix import ResumeMismatchError

    _trainer(tmp_path, tokenizer, small_data, max_steps=4).train()
    with caplog.at_level("WARNING"), pytest.raises(ResumeMismatchError, match=r"tau: checkpoint=0\.3, this run=0\.5"):
        _trainer(tmp_path, tokenizer, small_data, tau=0.5).train(resume_from_checkpoint=True)
    assert f"Resuming training from {tmp_path / 'checkpoint-4'}" in caplog.text
    assert issubclass(ResumeMismatchError, ValueError)
    trainer = _trainer(tmp_path, tokenizer, small_data)
    trainer.train(resume_from_checkpoint=True)
    assert trainer.resumed_checkpoint == str(tmp_path / "checkpoint-4")
    trainer.train()
    assert trainer.resumed_checkpoint is None
