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
        lambda r, ids=iter(rows["input_ids"]): {"input_ids": next(ids)}
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
        model=tiny_model(vocab_size=tokenizer.vocab_size), args=args, train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    (tmp_path / "checkpoint-3").mkdir()  # killed before anything was written
    with pytest.raises(ValueError, match=r"holds no complete checkpoint \(skipped incomplete: .*checkpoint-3"):
        trainer.train(resume_from_checkpoint=True)
