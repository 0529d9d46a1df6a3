"""Worker for tests/test_distributed_modal.py: tiny ViT and wav2vec2 DMIX runs, by torchrun (2 ranks) or one process.

    torchrun --nproc_per_node 2 tests/ddp_modal_script.py OUT_DIR
    python tests/ddp_modal_script.py OUT_DIR          # single process over the same global batch

For each model, writes per rank the sentence embeddings and partner index it built, the rows of every training
batch it saw, and its parameters after training.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import SequentialSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_modalities import _clip_dataset, _extractor, _image_dataset, build

from hf_dmix import DMixConfig, DMixTrainer

GLOBAL_BATCH = 8


class SequentialDMixTrainer(DMixTrainer):
    """Fixed data order, so that the 2-rank run and the single-process run see the same global batches."""

    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        main = inputs.get("pixel_values", inputs.get("input_values"))
        self.rows_seen.append([main.shape[0], int(inputs["dmix_partner_ids"].shape[0])])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def run(case: str, out: Path, world: int) -> None:
    if case == "vit":
        dataset, processing = _image_dataset(32, seed=7), None
    else:
        dataset, processing = _clip_dataset(32, seed=7), _extractor()
    model = build(case, seed=3)
    model.train()
    # Deterministic partners (one nearest candidate each, by the paper rule) and a plain-SGD step, so the 2-rank run
    # must equal the single-process run over the same global batch.
    args = DMixConfig(
        output_dir=str(out / f"trainer-{case}"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        per_device_train_batch_size=GLOBAL_BATCH // world,
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
        embedding_batch_size=8,
    )
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = SequentialDMixTrainer(model=model, args=args, train_dataset=dataset, processing_class=processing)
    trainer.rows_seen = []
    embeddings = trainer.compute_sentence_embeddings()
    trainer.train()
    rank = trainer.args.process_index
    torch.save(
        {
            "embeddings": embeddings,
            "candidates": trainer.partner_index.candidates,
            "params": {k: v.detach().cpu().clone() for k, v in model.named_parameters()},
            "initial": initial,
        },
        out / f"{case}_rank{rank}_of{world}.pt",
    )
    (out / f"{case}_rank{rank}_of{world}.json").write_text(
        json.dumps(
            {
                "num_processes": trainer.accelerator.num_processes,
                "distributed_type": str(trainer.accelerator.distributed_type),
                "steps": trainer.state.global_step,
                "rows_seen": trainer.rows_seen,
            }
        )
    )


def main(out: Path) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(1)
    for case in ("vit", "wav2vec2"):
        run(case, out, world)
    # Two-process gloo runs can abort at interpreter exit after a successful run: end explicitly.
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
