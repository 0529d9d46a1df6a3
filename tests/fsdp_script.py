"""Worker for tests/test_fsdp.py: DMIX's pieces on an FSDP2-sharded model (``fully_shard``): text, image, audio.

    torchrun --nproc_per_node 2 tests/fsdp_script.py OUT_DIR    # each encoder layer, then the model, sharded
    python tests/fsdp_script.py OUT_DIR                          # the same model unsharded, one process

For a tiny BERT, ViT and wav2vec2, writes per rank: the sentence embeddings and partner index built through the trainer
(the embedding pass runs through the sharded model, a collective forward on every process), the mixed logits and loss
of one training step at a middle layer, the unmixed logits of the same batch, and the gathered gradients.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import make_sentences, tiny_model, train_tokenizer
from datasets import Dataset
from test_modalities import _clip_dataset, _extractor, _image_dataset, build

from hf_dmix import DMixConfig, DMixTrainer
from hf_dmix.families import _get_module, resolve_family

# 33 rows over 2 processes: shards of 17 and 16 rows, 5 and 4 embedding batches of 4 — unequal counts, padded.
NUM_EXAMPLES, EMBEDDING_BATCH, ANCHORS = 33, 4, 4


def data(case: str):
    if case == "vit":
        return build("vit", seed=3), _image_dataset(NUM_EXAMPLES, seed=7), None
    if case == "wav2vec2":  # clips of 120..400 samples: each shard pads to its own longest clip
        return build("wav2vec2", seed=3), _clip_dataset(NUM_EXAMPLES, seed=7), _extractor()
    texts, labels = make_sentences(NUM_EXAMPLES, seed=5)
    tokenizer = train_tokenizer(texts)
    ds = Dataset.from_dict({"text": texts, "label": labels})
    ds = ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=16), batched=True, remove_columns=["text"])
    return tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=3), ds, tokenizer


def shard(model: torch.nn.Module) -> None:
    from torch.distributed.fsdp import fully_shard

    for layer in _get_module(model, resolve_family(model).layers):
        fully_shard(layer)
    fully_shard(model)


def run(case: str, out: Path, world: int) -> None:
    model, dataset, tokenizer = data(case)
    args = DMixConfig(
        output_dir=str(out / f"trainer-{case}"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        per_device_train_batch_size=ANCHORS,
        partner_distance="cosine",
        partner_order="nearest",
        tau=1 / (NUM_EXAMPLES - 1),
        partner_rule="paper",
        embedding_batch_size=EMBEDDING_BATCH,
        mix_layers=[2],
    )
    if world > 1:
        shard(model)  # after DMixConfig: it set up the gloo process group
    trainer = DMixTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer._check_model(model)
    trainer._schedule = trainer._new_schedule()
    embeddings = trainer.compute_sentence_embeddings()
    index = trainer.build_partner_index()
    trainer.mixer.attach()
    rows = [trainer.train_dataset[i] for i in range(ANCHORS)]
    batch = trainer.data_collator(rows)
    model.train()
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad
        if g is None:  # a parameter the forward never uses (the same ones in both runs; the test compares the sets)
            continue
        grads[name] = (g.full_tensor() if hasattr(g, "full_tensor") else g).detach().clone()
    # Read before the next forward: an FSDP2 root keeps its parameters unsharded from a forward until its backward.
    sharded = [type(p).__name__ for p in model.parameters()]
    plain_params = [n for n, p in model.named_parameters() if type(p).__name__ != "DTensor"]
    trainer.mixer.deactivate()
    with torch.no_grad():
        plain = model(**{k: v for k, v in batch.items() if k not in ("labels", "dmix_partner_ids")}).logits
    rank = args.process_index
    torch.save(
        {
            "embeddings": embeddings,
            "candidates": index.candidates,
            "partner_ids": batch["dmix_partner_ids"],
            "loss": loss.detach(),
            "logits": outputs.logits.detach(),
            "plain_logits": plain,
            "grads": grads,
        },
        out / f"{case}_rank{rank}_of{world}.pt",
    )
    (out / f"{case}_rank{rank}_of{world}.json").write_text(
        json.dumps(
            {
                "world_size": args.world_size,
                "dtensor_params": sharded.count("DTensor"),
                "params": len(sharded),
                "plain_params": plain_params,
                "fsdp_layers": sum(type(m).__name__.startswith("FSDP") for m in model.modules()),
            }
        )
    )


def main(out: Path) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(1)
    for case in ("bert", "vit", "wav2vec2"):
        run(case, out, world)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
