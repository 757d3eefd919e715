"""Mode `report` on a fixture workdir: 2 systems x 3 seeds, a seedless system, a training log and a margins file.

The table and results.json hold exactly the mean and the sample standard deviation of the metrics files (and every
seed's values); the plots are valid PNGs; a report replaces its own outputs and refuses anyone else's; reading
errors and an empty workdir are one UserError with nothing written; the mode runs through the command line.
"""
import json
import os
import pathlib
import statistics
import subprocess
import sys

import pytest

from distill_ret import evaluation, report, significance
from distill_ret.data import formats
from distill_ret.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEEDED = {  # system -> measure -> the values of seeds 0, 1, 2
    "fgd/retrieve-test": {"nDCG@10": (0.31, 0.35, 0.42), "MRR@10": (0.5, 0.55, 0.6)},
    "dgr/retrieve-test": {"nDCG@10": (0.2, 0.25, 0.21), "MRR@10": (0.3, 0.3, 0.3)},
}
SEEDLESS = {"nDCG@10": 0.28, "MRR@10": 0.4}
TRAIN_LOG = [
    {"step": 10, "split": "train", "loss": 2.0, "learning_rate": 0.1},
    {"step": 20, "split": "train", "loss": 1.5, "learning_rate": 0.1},
    {"step": 20, "split": "eval", "dev/nDCG@10": 0.3, "dev/loss": 1.7},
    {"step": 30, "split": "train", "loss": 1.25, "learning_rate": 0.1},
    {"step": 40, "split": "train", "loss": 1.0, "learning_rate": 0.1},
    {"step": 40, "split": "eval", "dev/nDCG@10": 0.35, "dev/loss": 1.6},
]
MARGINS = [0.5 * i - 3.0 for i in range(40)]


def write_metrics(path: pathlib.Path, measures: dict, split: str = "test") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run": "/runs/x.trec", "qrels": f"data [{split}]", "measures": measures,
                                "num_queries": 10}))


@pytest.fixture
def work(tmp_path) -> pathlib.Path:
    root = tmp_path / "work"
    for system, measures in SEEDED.items():
        for seed in range(3):
            values = {name: seeds[seed] for name, seeds in measures.items()}
            write_metrics(root / f"seed{seed}" / f"{system}.metrics.json", values)
    write_metrics(root / "bm25" / "bm25-test.metrics.json", SEEDLESS)
    (root / "seed0" / "fgd" / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in TRAIN_LOG))
    evaluation.write_margins(root / "seed0" / "fgd" / "margins-test.margins.json", "fgd", MARGINS)
    return root


def snapshot(root: pathlib.Path) -> dict[str, bytes | None]:
    return {str(path.relative_to(root)): None if path.is_dir() else path.read_bytes() for path in root.rglob("*")}


def test_the_table_is_the_mean_and_spread_of_the_files(work):
    result = report.build_report(work)
    assert [system.path for system in result.systems] == ["bm25/bm25-test", "dgr/retrieve-test", "fgd/retrieve-test"]
    assert result.measures == ("nDCG@10", "MRR@10")
    by_path = {system.path: system for system in result.systems}
    for path, measures in SEEDED.items():
        system = by_path[path]
        assert list(system.seeds) == ["seed0", "seed1", "seed2"] and system.split == "test"
        for name, values in measures.items():
            assert system.mean[name] == statistics.fmean(values)
            assert system.spread[name] == statistics.stdev(values)
            assert [system.seeds[f"seed{i}"][name] for i in range(3)] == list(values)
    fgd = by_path["fgd/retrieve-test"]
    assert fgd.mean["nDCG@10"] == pytest.approx(0.36) and fgd.spread["nDCG@10"] == pytest.approx(0.0031 ** 0.5)
    assert by_path["dgr/retrieve-test"].spread["MRR@10"] == 0.0
    assert by_path["bm25/bm25-test"].seeds == {"": SEEDLESS} and by_path["bm25/bm25-test"].spread == {}

    table_lines = result.table.splitlines()
    assert table_lines[0].split() == ["system", "seeds", "nDCG@10", "MRR@10"]
    assert table_lines[2].split() == ["bm25/bm25-test", "1", "0.2800", "0.4000"]
    assert table_lines[4].split() == ["fgd/retrieve-test", "3", "0.3600", "±", "0.0557", "0.5500", "±", "0.0500"]
    markdown = (work / "report" / "report.md").read_text()
    assert "| fgd/retrieve-test | 3 | 0.3600 ± 0.0557 | 0.5500 ± 0.0500 |" in markdown
    assert "| bm25/bm25-test | 1 | 0.2800 | 0.4000 |" in markdown

    saved = json.loads((work / "report" / "results.json").read_text())
    rows = {row["path"]: row for row in saved["systems"]}
    for path, measures in SEEDED.items():
        for name, values in measures.items():
            assert [rows[path]["seeds"][f"seed{i}"][name] for i in range(3)] == list(values)
            assert rows[path]["mean"][name] == statistics.fmean(values)
            assert rows[path]["spread"][name] == statistics.stdev(values)
    assert rows["bm25/bm25-test"]["seeds"] == {"": SEEDLESS} and rows["bm25/bm25-test"]["num_seeds"] == 1


def test_linked_directories_are_read_once_and_a_link_cycle_ends(work, tmp_path):
    """A variant root linking another root's baselines and stage-1 runs (launch/experiments/cranfield_dgr.sh
    STAGE1_ROOT) reports them beside its own runs; a link back up the tree is not read twice."""
    variant = tmp_path / "variant"
    for seed in range(3):
        (variant / f"seed{seed}").mkdir(parents=True)
        (variant / f"seed{seed}" / "stage1").symlink_to(work / f"seed{seed}" / "dgr", target_is_directory=True)
        write_metrics(variant / f"seed{seed}" / "dgr_ce" / "test.metrics.json", {"nDCG@10": 0.1 * seed})
    (variant / "baselines").symlink_to(work / "bm25", target_is_directory=True)
    (variant / "seed0" / "loop").symlink_to(variant, target_is_directory=True)
    result = report.build_report(variant)
    by_path = {system.path: system for system in result.systems}
    assert sorted(by_path) == ["baselines/bm25-test", "dgr_ce/test", "stage1/retrieve-test"]
    assert by_path["stage1/retrieve-test"].mean["nDCG@10"] == statistics.fmean(SEEDED["dgr/retrieve-test"]["nDCG@10"])
    assert list(by_path["dgr_ce/test"].seeds) == ["seed0", "seed1", "seed2"]
    assert by_path["baselines/bm25-test"].seeds == {"": SEEDLESS}


def test_systems_are_renamed_and_ordered_and_seeds_follow_the_pattern(work, tmp_path):
    options = report.ReportOptions(systems="FGD=fgd/retrieve-test, BM25=bm25/bm25-test", measures="MRR@10")
    result = report.build_report(work, options)
    assert [system.label for system in result.systems] == ["FGD", "BM25", "dgr/retrieve-test"]
    assert result.measures == ("MRR@10",) and result.table.splitlines()[0].split() == ["system", "seeds", "MRR@10"]
    with pytest.raises(ConfigError, match="config.report.systems=.*no system 'nope'"):
        report.build_report(work, report.ReportOptions(output_dir=str(tmp_path / "o1"), systems="X=nope"))
    with pytest.raises(ConfigError, match="config.report.measures="):
        report.build_report(work, report.ReportOptions(output_dir=str(tmp_path / "o2"), measures="MAP"))
    with pytest.raises(ConfigError, match="config.report.systems=.*not label=path"):
        report.check_options(report.ReportOptions(systems="fgd/retrieve-test"))
    with pytest.raises(ConfigError, match="config.report.seed_pattern='\\(': not a regular expression"):
        report.check_options(report.ReportOptions(seed_pattern="("))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()

    by_run = report.build_report(work, report.ReportOptions(output_dir=str(tmp_path / "o3"), seed_pattern=r"run\d+"))
    assert [system.path for system in by_run.systems] == [
        "bm25/bm25-test", *(f"seed{i}/{system}" for i in range(3) for system in sorted(SEEDED))]


def test_plots_are_written_and_are_pngs(work):
    result = report.build_report(work)
    output = work / "report"
    plots = sorted(path.name for path in output.glob("*.png"))
    assert plots == ["curves-seed0-fgd.png", "margins-seed0-fgd-margins-test.png", "metrics.png"]
    for name in plots:
        data = (output / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1024, name
        assert str(output / name) in result.files
    markdown = (output / "report.md").read_text()
    assert all(f"({name})" in markdown for name in plots)


def test_curves_and_margins_are_read_as_written(work):
    log = work / "seed0" / "fgd" / "metrics.jsonl"
    with open(log, "a", encoding="utf-8") as handle:
        handle.write('{"step": 50, "split": "tra')  # a run still writing its last line
    result = report.build_report(work)
    (run,) = result.runs
    assert run.name == "seed0/fgd"
    assert run.curves == {"train/loss": [(10, 2.0), (20, 1.5), (30, 1.25), (40, 1.0)],
                          "dev/nDCG@10": [(20, 0.3), (40, 0.35)], "dev/loss": [(20, 1.7), (40, 1.6)]}
    (margins,) = result.margins
    assert (margins.name, margins.system, margins.values) == ("seed0/fgd/margins-test", "fgd", tuple(MARGINS))
    saved = json.loads((work / "report" / "results.json").read_text())
    assert saved["margins"]["seed0/fgd/margins-test"]["fraction_positive"] == 33 / 40  # 0.5 * i - 3 > 0 for i > 6
    assert saved["runs"]["seed0/fgd"]["train/loss"] == [[10, 2.0], [20, 1.5], [30, 1.25], [40, 1.0]]

    log.write_text(json.dumps(TRAIN_LOG[0]) + "\n{broken\n" + json.dumps(TRAIN_LOG[1]) + "\n")
    with pytest.raises(formats.FormatError, match=f"{log}:2: not a JSON object"):
        report.build_report(work)


def test_margins_from_scores_by_hand():
    scores = {"q1": {"d1": 3.0, "d2": 2.5, "d3": 1.0, "d4": 2.0}, "q2": {"d5": 1.0}, "q3": {"d6": 4.0}}
    qrels = {"q1": {"d1": 1, "d3": 0, "d4": 2}, "q2": {"d5": 0}, "q9": {"d9": 1}}
    assert evaluation.margins_from_scores(scores, qrels) == [0.5, -0.5]  # d1 and d4 against the hardest negative d2
    assert evaluation.margins_from_scores(scores, qrels, negatives="all") == [0.5, 2.0, -0.5, 1.0]
    assert evaluation.margins_from_scores(scores, qrels, relevance_level=2) == [-1.0]  # d4 against d1, now negative
    with pytest.raises(ValueError, match="negatives"):
        evaluation.margins_from_scores(scores, qrels, negatives="random")


def test_rerun_replaces_its_own_outputs_and_refuses_others(work, tmp_path):
    report.build_report(work)
    write_metrics(work / "bm25" / "bm25-test.metrics.json", {"nDCG@10": 0.5, "MRR@10": 0.25})
    report.build_report(work)
    assert "| bm25/bm25-test | 1 | 0.5000 | 0.2500 |" in (work / "report" / "report.md").read_text()

    other = tmp_path / "other"
    other.mkdir()
    (other / "report.md").write_text("my own notes\n")
    before = snapshot(other)
    refused = f"config.report.output_dir=.*{other / 'report.md'} was not written by a report"
    with pytest.raises(ConfigError, match=refused):
        report.build_report(work, report.ReportOptions(output_dir=str(other)))
    assert snapshot(other) == before

    (other / "report.md").unlink()
    (other / report.MANIFEST).write_text('{"files": ["notes.txt"]}')
    before = snapshot(other)
    with pytest.raises(ConfigError, match="was not written by a report"):
        report.build_report(work, report.ReportOptions(output_dir=str(other)))
    assert snapshot(other) == before


def test_bad_inputs_and_empty_workdirs_write_nothing(tmp_path, work):
    with pytest.raises(report.NothingToReport, match="nothing to report"):
        report.build_report(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no metrics here\n")
    with pytest.raises(report.NothingToReport, match="nothing to report"):
        report.build_report(tmp_path / "empty")
    assert snapshot(tmp_path / "empty") == {"notes.txt": b"no metrics here\n"}

    bad = work / "seed1" / "dgr" / "retrieve-test.metrics.json"
    bad.write_text(json.dumps({"measures": {"nDCG@10": "high"}}))
    before = snapshot(work)
    with pytest.raises(formats.FormatError, match=f"{bad}: measure 'nDCG@10' is not a number"):
        report.build_report(work)
    assert snapshot(work) == before


def test_outputs_follow_the_umask(work):
    previous = os.umask(0o027)
    try:
        result = report.build_report(work)
    finally:
        os.umask(previous)
    assert {oct(os.stat(path).st_mode & 0o777) for path in result.files} == {oct(0o640)}


def test_the_mode_prints_the_table(work, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "distill_ret.main", "report", f"--config={REPO_ROOT / 'configs' / 'report.py'}",
         f"--workdir={work}", "--config.report.systems=FGD=fgd/retrieve-test"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["system", "seeds", "nDCG@10", "MRR@10"]
    assert lines[2].split() == ["FGD", "3", "0.3600", "±", "0.0557", "0.5500", "±", "0.0500"]
    assert (work / "report" / "report.md").exists() and f"to {work / 'report'}" in lines[-1]


def test_sweeps_are_tables_and_plots_of_one_setting(tmp_path):
    root = tmp_path / "work"
    gaps = {"0": (0.10, 0.12), "0.5": (0.20, 0.24), "2": (0.15, 0.15), "1": (0.3, 0.1)}  # m_gap -> seed values
    for gap, values in gaps.items():
        for seed, value in enumerate(values):
            write_metrics(root / "sweeps" / f"seed{seed}" / f"m_gap={gap}" / "dev.metrics.json", {"nDCG@10": value},
                          "dev")
    for loss, value in (("ranknet", 0.2), ("listnet", 0.1)):
        write_metrics(root / "sweeps" / f"loss={loss}" / "dev.metrics.json", {"nDCG@10": value}, "dev")
    write_metrics(root / "sweeps" / "lonely=1" / "dev.metrics.json", {"nDCG@10": 0.5}, "dev")  # one point: no sweep
    result = report.build_report(root)
    assert [(sweep.key, sweep.values, sweep.numeric) for sweep in result.sweeps] == [
        ("sweeps/loss=*/dev", ("listnet", "ranknet"), False),
        ("sweeps/m_gap=*/dev", ("0", "0.5", "1", "2"), True)]
    gap_sweep = result.sweeps[1]
    expected = [statistics.fmean(gaps[gap]) for gap in gap_sweep.values]
    assert [system.mean["nDCG@10"] for system in gap_sweep.systems] == expected
    markdown = (root / "report" / "report.md").read_text()
    assert "## Sweep: sweeps/m_gap=*/dev" in markdown
    assert f"| 0.5 | 2 | {statistics.fmean(gaps['0.5']):.4f} ± {statistics.stdev(gaps['0.5']):.4f} |" in markdown
    for name in ("sweep-sweeps-m_gap-dev.png", "sweep-sweeps-loss-dev.png"):
        payload = (root / "report" / name).read_bytes()
        assert payload.startswith(PNG_SIGNATURE) and len(payload) > 5000
    saved = json.loads((root / "report" / "results.json").read_text())["sweeps"]
    assert saved["sweeps/m_gap=*/dev"]["values"] == ["0", "0.5", "1", "2"]


# ------------------------------------------------------------------------------------------ comparisons

JUDGED = {f"q{i}": {f"d{i}": 1} for i in range(1, 5)}  # one relevant document per query
RANKS = {  # run (relative to the workdir, without suffix) -> rank of each query's relevant document
    "seed0/nokd/retrieve-test": (1, 2, 1, 3),
    "seed1/nokd/retrieve-test": (2, 2, 1, 1),
    "seed0/fgd/retrieve-test": (1, 1, 1, 3),
    "seed1/fgd/retrieve-test": (1, 2, 1, 1),
    "seed2/fgd/retrieve-test": (1, 1, 1, 1),  # no seed2 of the baseline: unpaired
    "bm25/bm25-test": (3, 1, 2, 1),  # seedless: pairs with both baseline seeds
    "seed3/solo/retrieve-test": (1, 1, 1, 1),  # no seed in common with the baseline: not compared
}
COMPARED = ("MRR@10", "R@1")


def write_ranked_run(root: pathlib.Path, name: str, ranks: tuple[int, ...], qrels=JUDGED) -> None:
    """A run ranking three documents per query with the relevant one at the given rank, and its metrics file as the
    modes write it (the run's absolute path, the qrels description)."""
    run = {}
    for index, rank in enumerate(ranks, 1):
        others = iter(f"x{index}_{j}" for j in range(2))
        order = [f"d{index}" if position == rank else next(others) for position in (1, 2, 3)]
        run[f"q{index}"] = {doc: 3.0 - position for position, doc in enumerate(order)}
    path = root / f"{name}.trec"
    path.parent.mkdir(parents=True, exist_ok=True)
    formats.write_run(run, path, tag="test")
    result = evaluation.evaluate(run, qrels, COMPARED)
    evaluation.save_evaluation(result, path.parent, path.stem, per_query=False,
                               extra={"run": str(path.resolve()), "qrels": "data [test]"})


@pytest.fixture
def compared(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """(workdir of the RANKS runs, their BEIR qrels file)."""
    root = tmp_path / "compared"
    for name, ranks in RANKS.items():
        write_ranked_run(root, name, ranks)
    qrels = tmp_path / "qrels.tsv"
    formats.write_qrels(JUDGED, qrels)
    return root, qrels


def test_systems_are_compared_with_the_baseline_by_seed_and_by_query(compared):
    root, qrels = compared
    result = report.build_report(root, report.ReportOptions(baseline="nokd/retrieve-test", qrels_path=str(qrels)))
    assert result.baseline == "nokd/retrieve-test"
    by_label = {item.label: item for item in result.comparisons}
    assert list(by_label) == ["bm25/bm25-test", "fgd/retrieve-test"]  # not the baseline, not solo (no pair)

    fgd = by_label["fgd/retrieve-test"].differences["MRR@10"]
    assert fgd.pairs == (("seed0", "seed0"), ("seed1", "seed1"))
    # MRR@10 per seed: fgd (1 + 1 + 1 + 1/3) / 4 and (1 + 1/2 + 1 + 1) / 4; nokd (1 + 1/2 + 1 + 1/3) / 4, 3/4
    assert fgd.differences == pytest.approx((0.125, 0.125)) and fgd.mean == pytest.approx(0.125)
    assert fgd.spread == pytest.approx(0.0) and (fgd.wins, fgd.losses) == (2, 0)
    # per query, averaged over the pairs: (0 + 1/2) / 2, (1/2 + 0) / 2, 0, 0 -> sign flips of (1/4, 1/4): p = 2/4
    assert fgd.queries == 4 and fgd.p_value == pytest.approx(0.5)
    recall = by_label["fgd/retrieve-test"].differences["R@1"]
    assert recall.differences == pytest.approx((0.25, 0.25)) and recall.p_value == pytest.approx(0.5)

    bm25 = by_label["bm25/bm25-test"].differences["MRR@10"]
    assert bm25.pairs == (("", "seed0"), ("", "seed1"))
    # per query: ((1/3 - 1) + (1/3 - 1/2)) / 2, ((1 - 1/2) + (1 - 1/2)) / 2, ((1/2 - 1) + (1/2 - 1)) / 2, (2/3 + 0) / 2
    by_hand = [-5 / 12, 1 / 2, -1 / 2, 1 / 3]
    assert bm25.mean == pytest.approx(sum(by_hand) / 4)
    assert bm25.p_value == pytest.approx(significance.randomization_test(by_hand))

    lines = result.comparison_table.splitlines()
    assert lines[0].split() == ["system", "pairs", "MRR@10", "R@1"]
    assert lines[3].split() == ["fgd/retrieve-test", "2", "+0.1250", "±", "0.0000", "(2/2)", "p=0.5", "+0.2500", "±",
                                "0.0000", "(2/2)", "p=0.5"]
    markdown = (root / "report" / "report.md").read_text()
    assert "## Against nokd/retrieve-test" in markdown and "randomization test over queries" in markdown
    assert "| fgd/retrieve-test | 2 | +0.1250 ± 0.0000 (2/2) p=0.5 | +0.2500 ± 0.0000 (2/2) p=0.5 |" in markdown
    saved = json.loads((root / "report" / "results.json").read_text())["baseline"]
    assert saved["system"] == "nokd/retrieve-test" and saved["qrels"] == str(qrels)
    rows = {row["system"]: row["measures"]["MRR@10"] for row in saved["comparisons"]}
    assert rows["fgd/retrieve-test"]["pairs"] == [["seed0", "seed0"], ["seed1", "seed1"]]
    assert rows["fgd/retrieve-test"]["p_value"] == pytest.approx(0.5) and rows["bm25/bm25-test"]["wins"] == 0


def test_without_qrels_only_seeds_are_compared_and_a_label_names_the_baseline(compared):
    root, _ = compared
    options = report.ReportOptions(systems="no KD=nokd/retrieve-test", baseline="no KD")
    result = report.build_report(root, options)
    fgd = {item.label: item for item in result.comparisons}["fgd/retrieve-test"].differences["MRR@10"]
    assert result.baseline == "no KD" and fgd.p_value is None and fgd.queries == 0
    assert fgd.mean == pytest.approx(0.125)
    assert "| fgd/retrieve-test | 2 | +0.1250 ± 0.0000 (2/2) | +0.2500 ± 0.0000 (2/2) |" in (
        root / "report" / "report.md").read_text()


def test_comparison_errors_name_the_field_or_file_and_write_nothing(compared, tmp_path):
    root, qrels = compared
    before = snapshot(root)
    for options, error, message in [
        (report.ReportOptions(baseline="nope"), ConfigError, "config.report.baseline='nope': no such system"),
        (report.ReportOptions(qrels_path=str(qrels)), ConfigError, "qrels_path=.*baseline, which is empty"),
        (report.ReportOptions(baseline="nokd/retrieve-test", qrels_path=str(qrels), qrels_format="csv"), ConfigError,
         "config.report.qrels_format='csv'"),
        (report.ReportOptions(baseline="nokd/retrieve-test", qrels_path=str(tmp_path / "absent.tsv")),
         formats.FormatError, "absent.tsv"),
    ]:
        with pytest.raises(error, match=message):
            report.build_report(root, options)
    moved = tmp_path / "moved.tsv"  # q1's relevant document is another one: not the qrels the runs were scored with
    formats.write_qrels({**JUDGED, "q1": {"x1_0": 1}}, moved)
    with pytest.raises(ConfigError, match=r"config.report.qrels_path=.*scores MRR@10 .* not the qrels"):
        report.build_report(root, report.ReportOptions(baseline="nokd/retrieve-test", qrels_path=str(moved)))
    other = tmp_path / "other.tsv"
    formats.write_qrels({"q9": {"d9": 1}}, other)
    with pytest.raises(ConfigError, match="ranks none of its queries"):
        report.build_report(root, report.ReportOptions(baseline="nokd/retrieve-test", qrels_path=str(other)))
    assert snapshot(root) == before

    runless = root / "seed0" / "nokd" / "retrieve-test.metrics.json"
    payload = json.loads(runless.read_text())
    del payload["run"]
    runless.write_text(json.dumps(payload))
    with pytest.raises(formats.FormatError, match=f"{runless}: names no \"run\" file"):
        report.build_report(root, report.ReportOptions(baseline="nokd/retrieve-test", qrels_path=str(qrels)))
