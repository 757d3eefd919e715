"""Paired comparisons of retrieval systems: differences per seed and a randomization test over queries.

A system trained with several seeds is compared with a baseline seed by seed: seeds of the same name pair up (the
same data order and initialisation for both), and a seedless system (BM25, a zero-shot model) pairs with every seed
of the other side. For each pair the difference of the aggregate measure is kept; their mean, their sample standard
deviation and the pairs won summarise the seed axis.

The query axis is the two-sided paired randomization (sign-flip) test that IR evaluation uses (Smucker, Allan and
Carterette, CIKM 2007): per query, the difference of the measure averaged over the pairs; under the null hypothesis
each difference is as likely to have the other sign, so the p-value is the share of the 2^n sign assignments whose
|sum| reaches the observed |sum|. It is enumerated exactly for up to `EXACT_UP_TO` non-zero differences and sampled
otherwise (`PERMUTATIONS` draws with a fixed seed, p = (hits + 1) / (draws + 1), never zero).
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence

import numpy as np

EXACT_UP_TO = 16  # non-zero differences enumerated exactly (2^16 sign assignments)
PERMUTATIONS = 100_000  # sign assignments drawn above that
SAMPLING_SEED = 0
_CHUNK = 10_000  # sign assignments drawn per matrix product


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """One measure of a system against a baseline over their paired seeds (and, given per-query values, queries)."""

    measure: str
    pairs: tuple[tuple[str, str], ...]  # (system seed, baseline seed); "" is a seedless run
    differences: tuple[float, ...]  # system - baseline, one per pair
    mean: float
    spread: float | None  # sample standard deviation of the differences (None with one pair)
    wins: int  # pairs where the system is higher
    losses: int  # pairs where the baseline is higher
    queries: int = 0  # queries of the randomization test (0: not tested)
    p_value: float | None = None  # two-sided randomization test over queries


def pair_seeds(system: Sequence[str], baseline: Sequence[str]) -> list[tuple[str, str]]:
    """(system seed, baseline seed) pairs: equal names, or a seedless side ([""]) against every seed of the other."""
    if list(baseline) == [""]:
        return [(seed, "") for seed in system]
    if list(system) == [""]:
        return [("", seed) for seed in baseline]
    return [(seed, seed) for seed in system if seed in set(baseline)]


def summarise(measure: str, pairs: Sequence[tuple[str, str]], system: Mapping[str, float],
              baseline: Mapping[str, float]) -> PairedDifference:
    """The per-seed differences of `measure` over `pairs` (seed -> value mappings of each side)."""
    if not pairs:
        raise ValueError("no paired seeds")
    differences = tuple(system[left] - baseline[right] for left, right in pairs)
    return PairedDifference(
        measure=measure,
        pairs=tuple(pairs),
        differences=differences,
        mean=math.fsum(differences) / len(differences),
        spread=statistics.stdev(differences) if len(differences) > 1 else None,
        wins=sum(difference > 0 for difference in differences),
        losses=sum(difference < 0 for difference in differences),
    )


def per_query_differences(system_runs: Sequence[Mapping[str, float]],
                          baseline_runs: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Per query, the mean over the pairs of system - baseline. Each run maps every query to its value; the i-th
    system run pairs with the i-th baseline run, and all of them must hold the same queries."""
    if not system_runs or len(system_runs) != len(baseline_runs):
        raise ValueError(f"{len(system_runs)} system runs against {len(baseline_runs)} baseline runs")
    queries = sorted(system_runs[0])
    for run in [*system_runs, *baseline_runs]:
        if sorted(run) != queries:
            raise ValueError("the runs' per-query values cover different queries")
    differences = np.array([[left[query] - right[query] for query in queries]
                            for left, right in zip(system_runs, baseline_runs)], dtype=np.float64)  # [pairs, queries]
    return differences.mean(axis=0)  # [queries]


def randomization_test(differences: Sequence[float] | np.ndarray, *, permutations: int = PERMUTATIONS,
                       exact_up_to: int = EXACT_UP_TO, seed: int = SAMPLING_SEED) -> float:
    """Two-sided p-value of the paired randomization test that the differences are centred on zero (module
    docstring). A difference of zero is the same under either sign and is left out."""
    values = np.asarray(differences, dtype=np.float64)
    values = values[values != 0.0]  # [n]
    if values.size == 0:
        return 1.0
    observed = abs(math.fsum(values))
    reach = observed - 1e-12 * max(1.0, float(np.abs(values).sum()))  # |sum| >= observed, up to rounding
    if values.size <= exact_up_to:
        bits = (np.arange(2 ** values.size)[:, None] >> np.arange(values.size)) & 1  # [2^n, n]
        sums = np.abs((1.0 - 2.0 * bits) @ values)  # [2^n]
        return float(np.mean(sums >= reach))
    generator = np.random.default_rng(seed)
    hits = 0
    for start in range(0, permutations, _CHUNK):
        signs = generator.choice(np.array([-1.0, 1.0]), size=(min(_CHUNK, permutations - start), values.size))
        hits += int(np.count_nonzero(np.abs(signs @ values) >= reach))  # signs: [draws, n]
    return (hits + 1) / (permutations + 1)
