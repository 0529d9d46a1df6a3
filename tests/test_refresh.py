"""partner_refresh_epochs: the index is rebuilt from the trained model at the start of every E-th epoch, and only then."""

from __future__ import annotations

import pytest
import torch
from conftest import make_sentences, tiny_model
from datasets import Dataset

from hf_dmix import DMixConfig, DMixDataCollator, DMixTrainer
from hf_dmix.checkpoint import index_digest
from hf_dmix.collator import PARTNER_IDS_KEY


class RecordingTrainer(DMixTrainer):
    """Records, per training batch, the epoch, the index in use and whether each partner is one of its candidates."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        partners = inputs.get(PARTNER_IDS_KEY)
        if partners is not None and model.training:
            index = self.data_collator.partner_index
            self.steps.append((int(self.state.epoch or 0), index_digest(index), partners.tolist()))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class RecordingCollator(DMixDataCollator):
    """Records each training batch's anchors, their drawn partners and the index they were drawn from."""

    def __call__(self, features):
        batch = super().__call__(features)
        if PARTNER_IDS_KEY in batch:
            anchors = [int(f[self.index_column]) for f in features]
            self.draws.append((self.partner_index, anchors, batch[PARTNER_IDS_KEY].tolist()))
        return batch


@pytest.fixture
def data(tokenizer):
    texts, labels = make_sentences(24, seed=7)
    return Dataset.from_dict({"text": texts, "label": labels}).map(lambda b: tokenizer(b["text"]), batched=True)


def _trainer(tmp_path, tokenizer, data, **kw):
    args = DMixConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        per_device_train_batch_size=4,
        num_train_epochs=4,
        learning_rate=5e-2,
        tau=0.25,
        partner_distance="cosine",
        partner_rule="paper",
        **kw,
    )
    collator = RecordingCollator(tokenizer)
    collator.draws = []
    trainer = RecordingTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=1),
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        data_collator=collator,
    )
    trainer.steps = []
    return trainer


def test_partners_change_at_refresh_epochs_and_only_then(tmp_path, tokenizer, data):
    trainer = _trainer(tmp_path, tokenizer, data, partner_refresh_epochs=2)
    initial = trainer.build_partner_index().candidates.clone()
    trainer.train()
    assert len(trainer.steps) == 4 * 6  # 24 examples, batches of 4, 4 epochs
    digests = {}
    for epoch, digest, _ in trainer.steps:
        digests.setdefault(epoch, set()).add(digest)
    assert all(len(d) == 1 for d in digests.values())  # never within an epoch
    by_epoch = [digests[e].pop() for e in range(4)]
    assert by_epoch[0] == by_epoch[1] == index_digest(trainer.partner_index.__class__(24, candidates=initial))
    assert by_epoch[2] != by_epoch[1]  # rebuilt at the start of epoch 2, from the trained model...
    assert by_epoch[3] == by_epoch[2]  # ...and not again at epoch 3
    assert [r["epoch"] for r in trainer.partner_refreshes] == [2.0]
    record = trainer.partner_refreshes[0]
    assert record["seconds"] > 0 and 0.0 <= record["candidates_kept"] < 1.0
    # Every partner is in its own anchor's candidate row of the index it was drawn from: the initial one in epochs
    # 0-1, the refreshed one in epochs 2-3 (the collator draws ahead of the loop, but never across the refresh).
    draws = trainer.data_collator.draws
    assert len(draws) == 24
    refreshed = trainer.partner_index.candidates
    for i, (index, anchors, partners) in enumerate(draws):
        expected = initial if i < 12 else refreshed
        assert torch.equal(index.candidates, expected), i
        for anchor, partner in zip(anchors, partners, strict=True):
            assert partner in expected[anchor].tolist(), (i, anchor, partner)
    # The refresh really moved some anchor's row: a partner drawn after it need not be a candidate before it.
    assert any(
        p not in initial[a].tolist()
        for _, anchors, partners in draws[12:]
        for a, p in zip(anchors, partners, strict=True)
    )


def test_without_refresh_the_index_never_changes(tmp_path, tokenizer, data):
    trainer = _trainer(tmp_path, tokenizer, data)
    trainer.train()
    assert len({digest for _, digest, _ in trainer.steps}) == 1 and trainer.partner_refreshes == []


def test_a_new_train_call_starts_from_the_initial_index(tmp_path, tokenizer, data):
    trainer = _trainer(tmp_path, tokenizer, data, partner_refresh_epochs=1)
    trainer.args.num_train_epochs = 2
    trainer.train()
    first = [d for _, d, _ in trainer.steps]
    trainer.steps = []
    trainer.model.load_state_dict(tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=1).state_dict())
    trainer.train()
    second = [d for _, d, _ in trainer.steps]
    assert first[0] != first[-1]  # the first run ended on a refreshed index...
    assert set(second[:6]) == {first[0]}  # ...the second starts again from the initial weights' index


def test_refresh_needs_the_trained_models_embeddings(tmp_path, tokenizer, data):
    with pytest.raises(ValueError, match=r"partner_refresh_epochs=2 re-embeds.*embedding_model='some/encoder'"):
        DMixConfig(output_dir=str(tmp_path), partner_refresh_epochs=2, embedding_model="some/encoder")
    with pytest.raises(ValueError, match=r"partner_refresh_epochs must be an integer >= 0.*-1"):
        DMixConfig(output_dir=str(tmp_path), partner_refresh_epochs=-1)
    args = DMixConfig(output_dir=str(tmp_path), partner_refresh_epochs=1, use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="sentence_embeddings were given"):
        DMixTrainer(
            model=tiny_model("bert", vocab_size=tokenizer.vocab_size),
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            sentence_embeddings=torch.randn(len(data), 4),
        )


def test_refresh_with_persistent_workers_is_refused(tmp_path):
    """Persistent dataloader workers keep the collator they were started with: a refresh would never reach them."""
    with pytest.raises(ValueError, match=r"partner_refresh_epochs=2 rebuilds the partner index.*persistent_workers"):
        DMixConfig(
            output_dir=str(tmp_path),
            partner_refresh_epochs=2,
            dataloader_num_workers=2,
            dataloader_persistent_workers=True,
        )
    # Workers that restart each epoch see the new index; no refresh, or no workers, is fine with persistence.
    DMixConfig(output_dir=str(tmp_path), partner_refresh_epochs=2, dataloader_num_workers=2)
    DMixConfig(output_dir=str(tmp_path), dataloader_num_workers=2, dataloader_persistent_workers=True)
