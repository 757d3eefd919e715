"""Paired comparisons (distill_ret/significance.py): seed pairing, per-seed differences by hand, and the randomization
test against hand-enumerated values and scipy's exact paired permutation test."""
import numpy as np
import pytest
from scipy import stats

from distill_ret import significance


def test_seeds_pair_by_name_and_a_seedless_side_pairs_with_every_seed():
    assert significance.pair_seeds(["seed0", "seed1", "seed2"], ["seed1", "seed0", "seed3"]) == [
        ("seed0", "seed0"), ("seed1", "seed1")]
    assert significance.pair_seeds(["seed0", "seed1"], [""]) == [("seed0", ""), ("seed1", "")]
    assert significance.pair_seeds([""], ["seed0", "seed1"]) == [("", "seed0"), ("", "seed1")]
    assert significance.pair_seeds([""], [""]) == [("", "")]
    assert significance.pair_seeds(["seed0"], ["seed1"]) == []


def test_per_seed_differences_by_hand():
    pairs = [("seed0", "seed0"), ("seed1", "seed1"), ("seed2", "seed2")]
    summary = significance.summarise("MRR@10", pairs, {"seed0": 0.50, "seed1": 0.40, "seed2": 0.45},
                                     {"seed0": 0.45, "seed1": 0.42, "seed2": 0.45})
    assert summary.differences == pytest.approx((0.05, -0.02, 0.0))
    assert summary.mean == pytest.approx(0.01)
    assert summary.spread == pytest.approx(((0.04 ** 2 + 0.03 ** 2 + 0.01 ** 2) / 2) ** 0.5)
    assert (summary.wins, summary.losses) == (1, 1)
    assert summary.p_value is None and summary.queries == 0
    single = significance.summarise("MRR@10", [("seed0", "")], {"seed0": 0.5}, {"": 0.25})
    assert single.differences == (0.25,) and single.spread is None and single.wins == 1
    with pytest.raises(ValueError, match="no paired seeds"):
        significance.summarise("MRR@10", [], {}, {})


def test_per_query_differences_average_the_pairs():
    system = [{"q1": 1.0, "q2": 0.5}, {"q1": 0.5, "q2": 0.5}]
    baseline = [{"q1": 0.5, "q2": 1.0}, {"q1": 0.5, "q2": 0.25}]
    np.testing.assert_allclose(significance.per_query_differences(system, baseline), [0.25, -0.125])
    with pytest.raises(ValueError, match="different queries"):
        significance.per_query_differences([{"q1": 1.0}], [{"q2": 1.0}])
    with pytest.raises(ValueError, match="2 system runs against 1"):
        significance.per_query_differences(system, baseline[:1])


@pytest.mark.parametrize("differences, expected", [
    ([1.0, 2.0, 3.0], 2 / 8),  # sums +-1 +-2 +-3: |sum| >= 6 for (+,+,+) and (-,-,-)
    ([0.0, 1.0, 2.0, 3.0], 2 / 8),  # a zero difference is the same under either sign
    ([2.0, 2.0, 2.0, 2.0], 2 / 16),
    ([1.0, 1.0, 2.0], 2 / 8),  # sums 4, 0, 2, -2, 2, -2, 0, -4: |sum| >= 4 twice
    ([1.0, 1.0, -2.0, 0.5], 1.0),  # observed 0.5; sums of +-1 +-1 +-2 are even, so every |sum +- 0.5| >= 0.5
    ([1.0, -1.0], 1.0),  # observed sum 0: every assignment reaches it
    ([], 1.0),
    ([0.0, 0.0], 1.0),
])
def test_exact_randomization_test_by_hand(differences, expected):
    assert significance.randomization_test(differences) == pytest.approx(expected)


def test_exact_randomization_test_equals_scipys_exact_paired_permutation_test():
    generator = np.random.default_rng(7)
    for size in (5, 9, 12):
        system, baseline = generator.random(size), generator.random(size)
        ours = significance.randomization_test(system - baseline)
        reference = stats.permutation_test((system, baseline), lambda x, y: np.mean(x - y), vectorized=False,
                                           permutation_type="samples", alternative="two-sided",
                                           n_resamples=np.inf).pvalue
        assert ours == pytest.approx(reference, abs=1e-12)


def test_sampled_randomization_test_approaches_the_exact_one_and_is_deterministic():
    generator = np.random.default_rng(3)
    differences = generator.normal(0.1, 1.0, size=18)
    exact = significance.randomization_test(differences, exact_up_to=18)
    sampled = significance.randomization_test(differences, exact_up_to=10)
    assert 0.01 < exact < 0.99
    assert sampled == pytest.approx(exact, abs=0.01)  # 100,000 draws: standard error <= 0.0016
    assert significance.randomization_test(differences, exact_up_to=10) == sampled
    one_sided = np.full(30, 0.5)  # only the all-positive assignment (probability 2^-30) reaches the observed sum
    assert significance.randomization_test(one_sided, permutations=999) == 1 / 1000
