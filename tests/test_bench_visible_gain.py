"""bench/visible_gain.py: runs pair by seed directory, and each query group's means, difference and p by hand."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import visible_gain  # noqa: E402

from distill_ret import significance  # noqa: E402


def test_runs_are_keyed_by_their_seed_directory(tmp_path):
    for seed in (0, 1):
        path = tmp_path / f"seed{seed}" / "fgd" / "retrieve-test.trec"
        path.parent.mkdir(parents=True)
        path.write_text("")
    (tmp_path / "bm25.trec").write_text("")
    assert visible_gain.seeded_runs(str(tmp_path / "seed*" / "fgd" / "retrieve-test.trec")) == {
        "seed0": str(tmp_path / "seed0" / "fgd" / "retrieve-test.trec"),
        "seed1": str(tmp_path / "seed1" / "fgd" / "retrieve-test.trec")}
    assert visible_gain.seeded_runs(str(tmp_path / "bm25.trec")) == {"": str(tmp_path / "bm25.trec")}


def test_group_rows_by_hand():
    system = [{"q1": 1.0, "q2": 0.5, "q3": 0.0}, {"q1": 1.0, "q2": 1.0, "q3": 0.5}]
    baseline = [{"q1": 0.5, "q2": 0.5, "q3": 0.5}, {"q1": 0.5, "q2": 0.5, "q3": 0.5}]
    rows = visible_gain.group_rows(system, baseline, {"visible": {"q1", "q2"}, "hidden": {"q3"}})
    # visible: per query (0.5 + 0.5) / 2 = 0.5 and (0 + 0.5) / 2 = 0.25; hidden: (-0.5 + 0) / 2 = -0.25
    (name, count, base, value, difference, p), hidden = rows
    assert (name, count) == ("visible", 2)
    assert (base, value, difference) == pytest.approx((0.5, 0.875, 0.375))
    assert p == significance.randomization_test([0.5, 0.25]) == pytest.approx(0.5)
    assert hidden[:2] == ("hidden", 1) and hidden[4] == pytest.approx(-0.25) and hidden[5] == pytest.approx(1.0)
