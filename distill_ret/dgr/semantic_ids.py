"""Semantic docids (NCI style): hierarchical k-means over passage embeddings, pure numpy and seeded.

A passage's semantic docid is the path of cluster indices from the root to its leaf, then its position in the leaf.
Each level splits a group into at most `k` clusters (k-means++ initialisation from a seeded generator, then Lloyd
iterations); a group of at most `c` passages is a leaf. The labelling is complete and distinct (a passage's path
identifies its leaf, its position its place in the leaf) and deterministic given the seed: each group draws its
own generator from (seed, path), so the ids do not depend on the order in which groups are visited.

As strings, every level is written with the same number of decimal digits (`level_width`), so distinct paths are
distinct strings and no string is a prefix of another at a level boundary.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ centres [k, dim] of `points` [n, dim] (k <= n): each next centre drawn with probability
    proportional to its squared distance from the nearest chosen one (uniform when all distances are zero)."""
    centres = [points[rng.integers(len(points))]]
    nearest = ((points - centres[0]) ** 2).sum(axis=1)  # [n]
    for _ in range(1, k):
        total = nearest.sum()
        probabilities = nearest / total if total > 0 else np.full(len(points), 1.0 / len(points))
        centre = points[rng.choice(len(points), p=probabilities)]
        centres.append(centre)
        nearest = np.minimum(nearest, ((points - centre) ** 2).sum(axis=1))
    return np.stack(centres)


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 50) -> np.ndarray:
    """Cluster labels [n] in 0 ... k-1 (Lloyd's algorithm from k-means++ centres; a centre that loses every point
    keeps its place). Ties go to the lower centre index."""
    points = np.asarray(points, np.float64)
    centres = kmeans_plus_plus(points, k, rng)  # [k, dim]
    labels = np.full(len(points), -1)
    for _ in range(iterations):
        distances = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)  # [n, k]
        new_labels = distances.argmin(axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for cluster in range(k):
            members = labels == cluster
            if members.any():
                centres[cluster] = points[members].mean(axis=0)
    return labels


def _split(points: np.ndarray, k: int, seed: int, path: tuple[int, ...], iterations: int) -> list[np.ndarray]:
    """The non-empty clusters of a group, as index arrays in cluster order; a degenerate clustering (everything in
    one cluster, e.g. identical embeddings) falls back to k contiguous chunks of the group's order."""
    rng = np.random.default_rng([seed, len(path), *path])
    labels = kmeans(points, k, rng, iterations)
    groups = [np.flatnonzero(labels == cluster) for cluster in range(k)]
    groups = [group for group in groups if len(group)]
    if len(groups) < 2:
        groups = [chunk for chunk in np.array_split(np.arange(len(points)), k) if len(chunk)]
    return groups


def semantic_paths(embeddings: np.ndarray, *, k: int, c: int, seed: int, iterations: int = 50
                   ) -> list[tuple[int, ...]]:
    """Each passage's docid as a tuple: cluster index per level, then its position in its leaf ([n, dim] -> n)."""
    if k < 2 or c < 1:
        raise ValueError(f"k={k} must be at least 2 and c={c} at least 1")
    embeddings = np.asarray(embeddings, np.float64)
    paths: list[tuple[int, ...] | None] = [None] * len(embeddings)
    pending = [(np.arange(len(embeddings)), ())]  # (passage indices, path so far)
    while pending:
        members, path = pending.pop()
        if len(members) <= c:
            for position, passage in enumerate(members):
                paths[passage] = path + (position,)
            continue
        for cluster, group in enumerate(_split(embeddings[members], k, seed, path, iterations)):
            pending.append((members[group], path + (cluster,)))
    return paths


def level_width(k: int, c: int) -> int:
    """Decimal digits per level: enough for the largest cluster index (k - 1) and leaf position (c - 1)."""
    return len(str(max(k, c) - 1))


def docid_strings(paths: Sequence[tuple[int, ...]], width: int) -> list[str]:
    """Paths -> digit strings, every level zero-padded to `width` digits: (3, 0, 12) with width 2 -> "030012"."""
    return ["".join(f"{part:0{width}d}" for part in path) for path in paths]
