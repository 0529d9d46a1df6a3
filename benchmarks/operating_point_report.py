"""The report of the operating-point grid (``docs/results/operating-point.md``) and README's block, rebuilt from the
records alone by the rules of ``docs/results/operating-point-plan.md``.

Every number and every win / tie / loss word below is computed here from ``benchmarks/results/operating-point/``;
``tests/test_docs.py`` fails when README's block differs from what this module generates from the committed records.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import NO_INTERVAL, ROOT, load_records, mean_sd_text, mean_std, paired_ci, verdict, write_section
from operating_point import (
    LEARNING_RATES,
    SEARCH_SEEDS,
    SETFIT_SEEDS,
    SIZE,
    STAGE3_DATASETS,
    STAGE3_SIZE,
    grid_seeds,
)
from operating_point_spread import spread_section
from suite import DATASETS

from hf_dmix.compare import LABELS, SEARCHED, SETTINGS, cells, choose_recipes, paired_rows, recipe_for
from hf_dmix.convergence import undertraining_warning

REPORT = ROOT / "docs" / "results" / "operating-point.md"
DEFAULT = "dmix-centered"
CANDIDATES = ("dmix-centered-nearest", "dmix-paper")
COMPARATORS = ("probe", "setfit")
NONINFERIORITY_MARGIN = 1.0  # points of test macro-F1 (plan, rule R3)
SEARCH_SEEDS_TEXT = f"seeds {SEARCH_SEEDS[0]}–{SEARCH_SEEDS[-1]}"
COMPARATOR_NAMES = {"probe": "the linear probe on frozen embeddings", "setfit": "SetFit"}
NUM_LABELS = {"essc": 2, "trec6": 6, "sst2": 2, "mr": 2, "subj": 2}


def _by_dataset(records: list[dict], size: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        m = r.get("benchmark_meta", {})
        if m.get("size") == size:
            out.setdefault(m["dataset"], []).append(r)
    return out


def non_inferior(row: dict) -> bool:
    """Rule R3: a tie whose interval's lower end lies above -NONINFERIORITY_MARGIN points (a win needs no such word)."""
    return row["verdict"] == "tie" and row["low"] > -NONINFERIORITY_MARGIN


def _fmt(ci: dict) -> str:
    if ci["n"] < 2 or ci["low"] != ci["low"]:
        return f"{ci['mean']:+.2f} (n = {ci['n']})"
    return f"{ci['mean']:+.2f} [{ci['low']:+.2f}, {ci['high']:+.2f}] (n = {ci['n']})"


def search_table(per: dict[str, list[dict]]) -> tuple[list[str], dict[str, dict]]:
    """Stage 1: mean validation macro-F1 per learning rate (seeds 0-2) and the choice by rule R1."""
    lines = [
        "| dataset | setting | " + " | ".join(f"lr {lr:g}" for lr in LEARNING_RATES) + " | chosen (R1) |",
        "|---|---|" + "---|" * (len(LEARNING_RATES) + 1),
    ]
    chosen_all = {}
    for d in [d for d in DATASETS if d in per]:
        chosen = choose_recipes(per[d], LEARNING_RATES, SEARCH_SEEDS)
        if chosen is not None:
            chosen_all[d] = chosen
        for setting in SEARCHED:
            cols = []
            for lr in LEARNING_RATES:
                vals = [
                    100 * r["metrics"]["validation"]["macro_f1"]
                    for r in per[d]
                    if r["benchmark_meta"].get("setting") == setting
                    and r["benchmark_meta"].get("learning_rate") == lr
                    and r["benchmark_meta"]["seed"] in SEARCH_SEEDS
                ]
                cols.append(f"{sum(vals) / len(vals):.2f} ({len(vals)})" if vals else "—")
            pick = f"{chosen[setting]['learning_rate']:g}" if chosen else "pending"
            lines.append(f"| {d} | {LABELS[setting]} | " + " | ".join(cols) + f" | {pick} |")
    return lines, chosen_all


def small_data_rule(chosen_all: dict[str, dict]) -> tuple[list[str], float | None]:
    """Rule R6: the learning rate R1 chose for Mixup on the most datasets (ties: the smaller), once stage 1 is
    recorded on every dataset; returns the lines and the rate (``None`` while pending)."""
    picks = {d: chosen_all[d]["mixup"]["learning_rate"] for d in DATASETS if d in chosen_all}
    head = "**The CLI's small-data recipe (rule R6):** the learning rate R1 chose for Mixup on the most datasets"
    if len(picks) < len(DATASETS):
        return [f"{head}: pending (stage 1 is recorded on {len(picks)} of {len(DATASETS)} datasets)."], None
    counts = {lr: sum(v == lr for v in picks.values()) for lr in sorted(set(picks.values()))}
    lr = max(counts, key=lambda v: (counts[v], -v))
    per = ", ".join(f"{d} {v:g}" for d, v in picks.items())
    return [
        f"{head}: {lr:g}, chosen on {counts[lr]} of {len(picks)} ({per}). `run_dmix.py --recipe small-data` trains "
        f"at lr {lr:g}, at most 15 epochs, keeping the best epoch by validation macro-F1 with early stopping after 3."
    ], lr


def _comparator_values(records: list[dict], name: str) -> dict[int, float]:
    return {
        r["benchmark_meta"]["seed"]: 100 * r["metrics"]["test"]["macro_f1"]
        for r in records
        if r.get("benchmark_meta", {}).get("setting") == name
    }


def grid_tables(per: dict[str, list[dict]], chosen_all: dict[str, dict]) -> tuple[list[str], dict]:
    """Stage 2: test macro-F1 per cell, and each setting against plain fine-tuning and Mixup (rule R2)."""
    lines = [
        "| setting | " + " | ".join(d for d in DATASETS if d in chosen_all) + " |",
        "|---|" + "---|" * len(chosen_all),
    ]
    verdicts: dict = {}
    tests = {d: cells(per[d], chosen_all[d]) for d in DATASETS if d in chosen_all}
    for setting in [*SETTINGS, *COMPARATORS]:
        row = []
        for d in tests:
            values = tests[d].get(setting) or _comparator_values(per[d], setting)
            if not values:
                row.append("—")
                continue
            row.append(f"{mean_sd_text(list(values.values()))} ({len(values)})")
        if any(c != "—" for c in row):
            lines.append(f"| {LABELS[setting]} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Paired differences in test macro-F1 (points), by seed: mean [95 % CI] (n); verdict by the interval (rule R2); "
        f"a tie whose lower end is above -{NONINFERIORITY_MARGIN:.1f} point is non-inferior (rule R3).",
        "",
        "| setting | dataset | vs plain fine-tuning | vs Mixup |",
        "|---|---|---|---|",
    ]
    for setting in [s for s in SETTINGS if s != "baseline"]:
        for d, test in tests.items():
            if setting not in test:
                continue
            cols = []
            for against in ("baseline", "mixup"):
                row = paired_rows(test, against).get(setting)
                r3 = ", non-inferior (R3)" if row and non_inferior(row) else ""
                cols.append(f"{_fmt(row)} {row['verdict']}{r3}" if row else "—")
                if row:
                    verdicts.setdefault(setting, {}).setdefault(against, {})[d] = row
            lines.append(f"| {LABELS[setting]} | {d} | {cols[0]} | {cols[1]} |")
    return [*lines, *_chance_line(verdicts)], verdicts


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def _chance_line(verdicts: dict) -> list[str]:
    """How many of the table's intervals exclude 0, against how many would by chance if no setting differed."""
    said = [row["verdict"] for by in verdicts.values() for rows in by.values() for row in rows.values()]
    said = [v for v in said if v in ("win", "tie", "loss")]
    if not said:
        return []
    wins, losses = said.count("win"), said.count("loss")
    return [
        "",
        f"Of the {_n(len(said), 'interval')} above, {wins + losses} exclude{'s' if wins + losses == 1 else ''} 0 ({_n(wins, 'win')}, "
        f"{_n(losses, 'loss', 'losses')}). Were every setting equal to its reference, about {0.05 * len(said):.1f} of "
        f"{len(said)} 95 % intervals would exclude 0 "
        "by chance alone (fewer or more: these share runs, so they are not independent). Rule R2 judges each cell on "
        "its own, uncorrected for the number of cells: read a lone win or loss with that in mind.",
    ]


def partner_table(per: dict[str, list[dict]], chosen_all: dict[str, dict]) -> list[str]:
    """Why a DMIX setting may help or hurt: how often its candidates share the anchor's label, against random partners
    (Mixup's). Read from the first recorded seed at the setting's chosen rate: the index is built from the encoder
    before training, so every seed of a cell has the same one."""
    datasets = [d for d in DATASETS if d in chosen_all]
    rows, random_share = [], {}
    for setting in [s for s in SETTINGS if s.startswith("dmix")]:
        row = []
        for d in datasets:
            lr = recipe_for(setting, chosen_all[d])
            runs = [
                r
                for r in per[d]
                if r["benchmark_meta"].get("setting") == setting
                and r["benchmark_meta"].get("learning_rate") == lr
                and r.get("partner_index")
            ]
            if not runs:
                row.append("—")
                continue
            st = min(runs, key=lambda r: r["benchmark_meta"]["seed"])["partner_index"]
            random_share[d] = 100 * st["random_same_label_share"]
            share = 100 * st["same_label_share"]
            row.append(f"{share:.0f} % ({share - random_share[d]:+.0f})")
        if any(c != "—" for c in row):
            rows.append(f"| {LABELS[setting]} | " + " | ".join(row) + " |")
    if not rows:
        return []
    return [
        "### Which partners each DMIX setting mixes",
        "",
        "Share of each anchor's candidates with the anchor's label (%), from the partner index of the setting's first "
        "recorded seed (built before training: the same for every seed); in parentheses the difference in points from "
        "random partners, Mixup's, whose share is the last row. Below random means more mixing across classes.",
        "",
        "| setting | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
        *rows,
        "| random partners (Mixup) | "
        + " | ".join(f"{random_share[d]:.0f} %" if d in random_share else "—" for d in datasets)
        + " |",
    ]


def _seed_average(per: dict[str, list[dict]], chosen_all: dict, setting: str, seeds: range) -> dict[int, float] | None:
    out = {}
    for seed in seeds:
        vals = [cells(per[d], chosen_all[d], "validation").get(setting, {}).get(seed) for d in DATASETS]
        if any(v is None for v in vals):
            return None
        out[seed] = sum(vals) / len(vals)
    return out


def default_rule(per: dict[str, list[dict]], chosen_all: dict) -> tuple[list[str], str | None]:
    """Rule R4 on validation; returns the lines and a candidate that qualifies for seeds 5-9 (or None)."""
    lines = [
        "**The default (rule R4, validation only):** per seed, validation macro-F1 averaged over the five "
        "datasets; each candidate against the default `dmix-centered`, paired by seed.",
        "",
    ]
    if len(chosen_all) < len(DATASETS):
        return lines + [f"Pending: stage 1 is recorded for {len(chosen_all)} of {len(DATASETS)} datasets."], None
    base5 = _seed_average(per, chosen_all, DEFAULT, range(5))
    extend, switch = None, None
    for cand in CANDIDATES:
        mine5 = _seed_average(per, chosen_all, cand, range(5))
        if mine5 is None or base5 is None:
            lines.append(f"- `{cand}`: pending (seeds 0–4 not recorded on every dataset).")
            continue
        ci5 = paired_ci(mine5, base5)
        text = f"- `{cand}`: seeds 0–4 {_fmt(ci5)}, a {verdict(ci5)}"
        if verdict(ci5) == "win":
            extend = extend or cand
            mine10, base10 = (
                _seed_average(per, chosen_all, cand, range(10)),
                _seed_average(per, chosen_all, DEFAULT, range(10)),
            )
            if mine10 and base10:
                ci10 = paired_ci(mine10, base10)
                text += f"; seeds 0–9 {_fmt(ci10)}, a {verdict(ci10)}"
                if verdict(ci10) == "win" and (switch is None or ci10["mean"] > switch[1]):
                    switch = (cand, ci10["mean"])
            else:
                text += "; extended to seeds 5–9 by the plan (pending)"
        lines.append(text + ".")
    if switch:
        lines += ["", f"Outcome: `{switch[0]}` becomes the default."]
    elif all("pending" not in line for line in lines[2:]):
        lines += ["", "Outcome: the default stays `dmix-centered`; the data do not support a change."]
    return lines, extend


def _gaps_text(gaps: dict[str, float]) -> str:
    above = sum(g > 0 for g in gaps.values())
    return (
        ", ".join(f"{d} {g:+.2f}" for d, g in gaps.items())
        + f" (above it on {above} of {len(gaps)} dataset{'s' if len(gaps) > 1 else ''})"
    )


def comparator_sentence(per: dict[str, list[dict]], chosen_all: dict) -> str:
    """Rule R5's comparators: how far the mean test macro-F1 of plain fine-tuning and of the default lies above each
    comparator's, dataset by dataset where all three are recorded. Descriptive (differences of means, no verdict): the
    probe is one deterministic run per dataset, and SetFit's seeds are not the fine-tuning runs' seeds in any paired
    sense."""
    parts = []
    for comp in COMPARATORS:
        gaps: dict[str, dict[str, float]] = {"baseline": {}, DEFAULT: {}}
        for d in (d for d in DATASETS if d in chosen_all):
            theirs = _comparator_values(per[d], comp)
            ours = cells(per[d], chosen_all[d])
            if not theirs or not ours.get("baseline") or not ours.get(DEFAULT):
                continue
            for setting in gaps:
                gaps[setting][d] = mean_std(list(ours[setting].values()))[0] - mean_std(list(theirs.values()))[0]
        if not gaps["baseline"]:
            parts.append(f"{LABELS[comp]}: no run recorded yet beside both plain fine-tuning and default DMIX.")
            continue
        parts.append(
            f"Against {COMPARATOR_NAMES[comp]} (difference of mean test macro-F1, points): plain fine-tuning "
            f"{_gaps_text(gaps['baseline'])}; default DMIX {_gaps_text(gaps[DEFAULT])}."
        )
    return " ".join(parts)


def headline(verdicts: dict, per: dict[str, list[dict]], chosen_all: dict) -> list[str]:
    """Rule R5: the first results paragraph, from the default's verdicts and the comparators."""
    if not verdicts.get(DEFAULT):
        return ["No stage-2 cell of the default is recorded yet: this page states no result."]
    out = []
    for against, name in (("baseline", "plain fine-tuning"), ("mixup", "Mixup")):
        v = verdicts[DEFAULT].get(against, {})
        groups = {w: [d for d, row in v.items() if row["verdict"] == w] for w in ("win", "tie", "loss", NO_INTERVAL)}
        decided = len(v) - len(groups[NO_INTERVAL])
        out.append(
            f"Against {name}, default DMIX wins on {len(groups['win'])}, ties on {len(groups['tie'])} and "
            f"loses on {len(groups['loss'])} of the {decided} datasets with two or more paired seeds"
            + (f" (wins: {', '.join(groups['win'])})" if groups["win"] else "")
            + (f" (losses: {', '.join(groups['loss'])})" if groups["loss"] else "")
            + (f"; no verdict yet on {', '.join(groups[NO_INTERVAL])} (one paired seed)" if groups[NO_INTERVAL] else "")
            + _r3_clause(v, len(groups["tie"]))
            + "."
        )
    any_win = any(
        row["verdict"] == "win"
        for s, v in verdicts.items()
        if s.startswith("dmix")
        for d, row in v.get("baseline", {}).items()
    )
    if not any_win:
        out.append("No DMIX setting beats plain fine-tuning on any dataset with paired runs.")
    out.append(comparator_sentence(per, chosen_all))
    return [" ".join(out)]


def _r3_clause(rows: dict[str, dict], ties: int) -> str:
    """Rule R3 on the ties of one comparison: where the interval rules out a loss of more than the margin."""
    if not ties:
        return ""
    where = [d for d, row in rows.items() if non_inferior(row)]
    return (
        f"; of the {_n(ties, 'tie')}, non-inferior by rule R3 (interval's lower end above "
        f"-{NONINFERIORITY_MARGIN:.1f} point) on {', '.join(where) or 'none'}"
    )


def _counts(records: list[dict]) -> dict[str, int]:
    """Records by stage (``search``, ``grid``) and by comparator (``probe``, ``setfit``)."""
    metas = [r["benchmark_meta"] for r in records]
    return {
        "search": sum(m.get("stage") == "search" for m in metas),
        "grid": sum(m.get("stage") == "grid" for m in metas),
        **{c: sum(m.get("setting") == c for m in metas) for c in COMPARATORS},
    }


def _planned(datasets: int, size: int) -> tuple[int, int]:
    """Planned stage-1 runs and further stage-2 runs (seeds 0-2 of plain fine-tuning and Mixup at the chosen rate are
    the stage-1 runs: not run again), before any R4 extension."""
    stage1 = datasets * len(SEARCHED) * len(LEARNING_RATES) * len(SEARCH_SEEDS)
    per_dataset = sum(len(s) for s in grid_seeds(size).values()) - len(SEARCHED) * len(SEARCH_SEEDS)
    return stage1, datasets * per_dataset


def stage3(records: list[dict]) -> tuple[list[str], str]:
    """Stage 3 (1,000 examples): its section and the sentence saying what of it is recorded. The rules are stage 1's
    and 2's (R1, R2); R4, R5 and R6 are decided at 300 examples and read nothing from here."""
    name = f"Stage 3 ({STAGE3_SIZE:,} training examples on {', '.join(STAGE3_DATASETS)})"
    mine = [r for r in records if r["benchmark_meta"].get("size") == str(STAGE3_SIZE)]
    if not mine:
        detail = "no run recorded yet; the plan runs it once every 300-example run is recorded, or on a lent GPU."
        return [f"### {name}", "", detail[0].upper() + detail[1:]], f"{name}: {detail}"
    per = _by_dataset(mine, str(STAGE3_SIZE))
    search, chosen = search_table(per)
    if chosen:
        grid = [
            "Test macro-F1 (%), mean ± sd (seeds), and the paired differences (rule R2):",
            "",
            *grid_tables(per, chosen)[0],
        ]
    else:  # an empty table would say nothing; say why there is none
        grid = [f"No stage-2 run yet: a dataset's stage 2 starts once its stage 1 ({SEARCH_SEEDS_TEXT}) is recorded."]
    counts, (planned1, planned2) = _counts(mine), _planned(len(STAGE3_DATASETS), STAGE3_SIZE)
    detail = (
        f"{_n(len(mine), 'record')}, {counts['search']} of the {planned1} stage-1 runs, {counts['grid']} of the "
        f"{planned2} further stage-2 runs; comparators: {counts['probe']} of {len(STAGE3_DATASETS)} probe runs, "
        f"{counts['setfit']} of {len(STAGE3_DATASETS) * len(SETFIT_SEEDS)} SetFit runs."
    )
    return [
        f"### {name}",
        "",
        detail,
        "",
        "Learning rate chosen on validation (rule R1; mean validation macro-F1 %, runs in parentheses):",
        "",
        *search,
        "",
        *grid,
    ], f"{name}: {detail}"


def _span(rows: Iterable[dict]) -> str:
    """The paired-seed counts of some cells: ``"10"``, or ``"5–10"`` when they differ."""
    ns = sorted({row["n"] for row in rows})
    return f"{ns[0]}" if ns[0] == ns[-1] else f"{ns[0]}–{ns[-1]}"


def lead(verdicts: dict) -> str:
    """README's opening answer to "does it help?", from the same paired verdicts as the headline (rule R2)."""
    plain = {s: v.get("baseline", {}) for s, v in verdicts.items() if s.startswith("dmix")}
    if not plain.get(DEFAULT):
        return "**Does it help?** Not measured yet where the models train: the grid below has no paired DMIX run."
    seeds = f"{_span(plain[DEFAULT].values())} paired seeds per dataset for default DMIX"
    others = [row for s, rows in plain.items() if s != DEFAULT for row in rows.values()]
    if others:
        seeds += f" and {_span(others)} for the other DMIX rules"
    planned = grid_seeds(SIZE)
    short = len(plain[DEFAULT]) < len(DATASETS) or any(
        row["n"] < len(planned.get(s, ())) for s, rows in plain.items() for row in rows.values()
    )
    wins = [f"{LABELS[s]} on {d}" for s, rows in plain.items() for d, row in rows.items() if row["verdict"] == "win"]
    mixup = verdicts[DEFAULT].get("mixup", {})
    over_mixup = [d for d, row in mixup.items() if row["verdict"] == "win"]
    decided = sum(row["verdict"] != NO_INTERVAL for row in mixup.values())
    where = (
        f"recipes chosen on validation, all-MiniLM-L6-v2, {SIZE} training examples, {len(plain[DEFAULT])} datasets, "
        f"{seeds}{' so far' if short else ''}"
    )
    answer = (
        f"Sometimes. Where the models train ({where}), DMIX beats plain fine-tuning in {len(wins)} "
        f"cell{'s' if len(wins) != 1 else ''} ({'; '.join(wins)})"
        if wins
        else f"{'Not so far' if short else 'No'}. Where the models train ({where}), no DMIX setting beats plain "
        "fine-tuning on any dataset"
    )
    return (
        f"**Does it help?** {answer}, and default DMIX beats Mixup on {len(over_mixup)} of the {decided} datasets with "
        "two or more paired seeds. The results section below and "
        "[docs/results/operating-point.md](docs/results/operating-point.md) give every figure and the cheaper "
        "alternatives."
    )


def report(records: list[dict]) -> tuple[str, dict[str, str]]:
    """The generated section of the report, and README's blocks by marker (the opening answer and the summary)."""
    at_size = [r for r in records if r.get("benchmark_meta", {}).get("size") == str(SIZE)]
    per = _by_dataset(at_size, str(SIZE))
    search, chosen_all = search_table(per)
    grid, verdicts = grid_tables(per, chosen_all)
    rule4, _ = default_rule(per, chosen_all)
    rule6, _ = small_data_rule(chosen_all)
    partners = partner_table(per, chosen_all)
    spread = spread_section(per, list(DATASETS))
    later, later_line = stage3(records)
    # Recomputed from each recorded curve with the library's current rule (R7), so every record is judged alike.
    warned = sum(
        1
        for r in records
        if r.get("loss_curve")
        and undertraining_warning(
            [{"step": s, "loss": v} for s, v in r["loss_curve"]], NUM_LABELS[r["benchmark_meta"]["dataset"]]
        )
    )
    head = headline(verdicts, per, chosen_all)
    counts, (planned1, planned2) = _counts(at_size), _planned(len(DATASETS), SIZE)
    status = (
        f"{len(at_size)} records at {SIZE} examples: {counts['search']} of the {planned1} stage-1 (search) runs; "
        f"stage 1 complete on {len(chosen_all)} of {len(DATASETS)} datasets; {counts['grid']} of the {planned2} further "
        f"stage-2 runs (plan, before any R4 extension); comparators: {counts['probe']} of {len(DATASETS)} probe runs, "
        f"{counts['setfit']} of {len(DATASETS) * len(SETFIT_SEEDS)} SetFit runs. {later_line} {warned} of the "
        "fine-tuning runs ended with the under-training warning."
    )
    summary = "\n".join([status, "", *head])
    body = "\n".join(
        [
            summary,
            "",
            "### Stage 1: learning rate chosen on validation (mean validation macro-F1 % "
            f"over {SEARCH_SEEDS_TEXT}, runs in parentheses)",
            "",
            *search,
            "",
            *rule6,
            "",
            "### Stage 2: test macro-F1 (%), mean ± sd (seeds)",
            "",
            *grid,
            "",
            *rule4,
            *(["", *partners] if partners else []),
            *(["", *spread] if spread else []),
            "",
            *later,
        ]
    )
    return body, {"operating-point-lead": lead(verdicts), "operating-point-summary": summary}


def publish(records_dir: Path, readme: Path | None = ROOT / "README.md") -> None:
    records = load_records(records_dir)
    body, blocks = report(records)
    write_section(REPORT, "operating-point", body)
    if readme is not None:
        for marker, text in blocks.items():
            write_section(readme, marker, text)
    print(body)


if __name__ == "__main__":
    publish(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "results" / "operating-point")
