"""Worker for tests/test_distributed.py: the same tiny DMIX run, launched by torchrun (2 ranks) or as one process.

    torchrun --nproc_per_node 2 tests/ddp_script.py OUT_DIR
    python tests/ddp_script.py OUT_DIR          # single process over the same global batch

Writes, per rank, the sentence embeddings and partner index it built and its parameters after training.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import SequentialSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import make_sentences, tiny_model, train_tokenizer
from datasets import Dataset

from hf_dmix import DMixConfig, DMixTrainer

GLOBAL_BATCH = 8


class SequentialDMixTrainer(DMixTrainer):
    """Fixed data order, so that the 2-rank run and the single-process run see the same global batches."""

    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


def main(out: Path) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    texts, labels = make_sentences(48, seed=5)
    tokenizer = train_tokenizer(texts)
    dataset = Dataset.from_dict({"text": texts, "label": labels}).map(lambda b: tokenizer(b["text"]), batched=True)
    common = dict(
        output_dir=str(out / "trainer"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        per_device_train_batch_size=GLOBAL_BATCH // world,
    )

    # (b) The partner index of a real hyperbolic search under the default (centered) rule: embeddings, distance
    # moments and candidates sharded over ranks, then gathered.
    probe = DMixTrainer(
        model=tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=3),
        args=DMixConfig(**common, partner_distance="hyperbolic", tau=0.3),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    embeddings = probe.compute_sentence_embeddings()
    index = probe.build_partner_index()
    rank = probe.args.process_index

    # (a, c) Training with deterministic partners (one nearest candidate each, by the paper rule) and a fixed plain-SGD step, so that
    # the 2-rank run must equal the single-process run over the same global batch.
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size, seed=3)
    args = DMixConfig(
        **common,
        max_steps=3,
        optim="sgd",
        learning_rate=0.5,
        max_grad_norm=0.0,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        partner_distance="cosine",
        partner_order="nearest",
        tau=1 / (len(dataset) - 1),
        partner_rule="paper",
    )
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = SequentialDMixTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    torch.save(
        {
            "embeddings": embeddings,
            "candidates": index.candidates,
            "params": {k: v.detach().cpu().clone() for k, v in model.named_parameters()},
            "initial": initial,
        },
        out / f"rank{rank}_of{world}.pt",
    )
    (out / f"rank{rank}_of{world}.json").write_text(
        json.dumps(
            {
                "num_processes": trainer.accelerator.num_processes,
                "distributed_type": str(trainer.accelerator.distributed_type),
                "ddp_find_unused_parameters": args.ddp_find_unused_parameters,
                "ddp_broadcast_buffers": args.ddp_broadcast_buffers,
                "steps": trainer.state.global_step,
            }
        )
    )
    # Two-process gloo runs can abort at interpreter exit after a successful run: end explicitly.
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
