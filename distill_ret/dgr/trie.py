"""Prefix trie over tokenised identifiers: a vectorised numpy build into flat CSR arrays, its device copy with
jittable `allowed_mask` / `advance`, and save/load.

Identifiers are token sequences that end in EOS (EOS nowhere else). Duplicates are allowed: the trie holds each
distinct sequence once and `Trie.identifier_sequence` maps every identifier to its distinct sequence (many to one).

Layout. Nodes are numbered level by level (root = 0, then every node at depth 1, depth 2, ...), each level in the
lexicographic order of its prefixes, so the edges sorted by (parent, token) are exactly the nodes 1, 2, ... in
order: edge e leads to node e + 1 and no child-id array is stored. The arrays:
- `row_offsets` [num_nodes + 2]: node n's children are the nodes row_offsets[n] + 1 ... row_offsets[n + 1]; the
  extra node `num_nodes` is the *dead* node (no children) that every invalid transition leads to.
- `child_tokens` [num_edges]: the token of each edge; sorted within each node's row.
- `leaf_nodes` [num_sequences]: the leaf (the node after EOS) of each distinct sequence, increasing; a distinct
  sequence's index is its position here.
- `level_offsets` [max_depth + 2]: first node id at each depth (host only).
On the device (`DeviceTrie`) the root's children are also a dense [vocab] table, and rows are read in fixed-width
bursts: the width is the largest fan-out among the nodes of the depth being read (rounded up to a power of two,
one compiled branch per distinct width), so every shape is static. Build: one sort of the padded sequences and a
loop over levels (never over nodes). Saved as `trie.npz` + `trie.json` (metadata and the npz's sha256).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from distill_ret.data import formats
from distill_ret.errors import UserError

ROOT = 0
ARRAYS_FILE = "trie.npz"
METADATA_FILE = "trie.json"
FORMAT = "distill_ret.trie/1"
_ARRAY_NAMES = ("row_offsets", "child_tokens", "level_offsets", "leaf_nodes", "identifier_sequence")


class IdentifierError(UserError, ValueError):
    """Tokenised identifiers cannot form a trie (empty set, a token outside the vocabulary, EOS missing or early)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Trie:
    """The host trie (numpy arrays, see the module docstring for the layout)."""

    vocab_size: int
    eos_id: int
    row_offsets: np.ndarray          # [num_nodes + 2] int64
    child_tokens: np.ndarray         # [num_edges] int32
    level_offsets: np.ndarray        # [max_depth + 2] int64
    leaf_nodes: np.ndarray           # [num_sequences] int64, increasing
    identifier_sequence: np.ndarray  # [num_identifiers] int64: distinct sequence of each identifier

    @property
    def num_nodes(self) -> int:
        return len(self.child_tokens) + 1

    @property
    def dead_node(self) -> int:
        return self.num_nodes

    @property
    def max_depth(self) -> int:
        """Length of the longest identifier (EOS included)."""
        return len(self.level_offsets) - 2

    @property
    def num_sequences(self) -> int:
        return len(self.leaf_nodes)

    def level_widths(self) -> tuple[int, ...]:
        """Largest number of children of a node at each depth 0 ... max_depth."""
        counts = np.diff(self.row_offsets[: self.num_nodes + 1])  # [num_nodes]
        return tuple(int(counts[start:stop].max(initial=0))
                     for start, stop in zip(self.level_offsets[:-1], self.level_offsets[1:]))

    def sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct sequences in index order: tokens [num_sequences, max_depth] (padded with -1), lengths."""
        depths = np.searchsorted(self.level_offsets, self.leaf_nodes, side="right") - 1  # [num_sequences]
        tokens = np.full((self.num_sequences, self.max_depth), -1, np.int64)
        nodes = self.leaf_nodes.copy()
        for position in range(self.max_depth - 1, -1, -1):
            inside = depths > position  # rows whose node at depth position + 1 is `nodes`
            tokens[inside, position] = self.child_tokens[nodes[inside] - 1]
            nodes[inside] = np.searchsorted(self.row_offsets, nodes[inside] - 1, side="right") - 1  # parents
        return tokens, depths

    def identifiers_by_sequence(self) -> tuple[np.ndarray, np.ndarray]:
        """The inverse many-to-one map as CSR: identifiers of sequence s are ids[offsets[s]:offsets[s + 1]]."""
        ids = np.argsort(self.identifier_sequence, kind="stable")  # [num_identifiers]
        counts = np.bincount(self.identifier_sequence, minlength=self.num_sequences)
        return np.concatenate([[0], np.cumsum(counts)]), ids

    def device_nbytes(self) -> int:
        """Bytes of the arrays `to_device` puts on the device."""
        return sum(int(leaf.nbytes) for leaf in jax.tree.leaves(to_device(self, place=False)))


def from_sequences(sequences: Sequence[Sequence[int]], *, vocab_size: int, eos_id: int) -> Trie:
    """Builds the trie of token-id lists (each ending in `eos_id`)."""
    if len(sequences) == 0:
        raise IdentifierError("no identifiers: a trie needs at least one tokenised identifier")
    lengths = np.fromiter((len(sequence) for sequence in sequences), np.int64, len(sequences))
    tokens = np.full((len(sequences), max(int(lengths.max()), 1)), -1, np.int64)
    tokens[np.arange(tokens.shape[1])[None, :] < lengths[:, None]] = np.fromiter(
        (token for sequence in sequences for token in sequence), np.int64, int(lengths.sum()))
    return from_padded(tokens, lengths, vocab_size=vocab_size, eos_id=eos_id)


def _validate(tokens: np.ndarray, lengths: np.ndarray, vocab_size: int, eos_id: int) -> np.ndarray:
    """Checks the identifiers; returns the mask of real positions [num_identifiers, width]."""
    if tokens.ndim != 2 or lengths.shape != tokens.shape[:1]:
        raise ValueError(f"tokens must be [num_identifiers, width] and lengths [num_identifiers], got "
                         f"{tokens.shape} and {lengths.shape}")
    if not 0 <= eos_id < vocab_size:
        raise IdentifierError(f"eos id {eos_id} is outside the vocabulary of {vocab_size} tokens")
    if len(lengths) == 0:
        raise IdentifierError("no identifiers: a trie needs at least one tokenised identifier")
    bad = np.flatnonzero((lengths < 1) | (lengths > tokens.shape[1]))
    if len(bad):
        raise IdentifierError(f"identifier {bad[0]} has length {lengths[bad[0]]}; expected 1 ... {tokens.shape[1]} "
                              "tokens (EOS included)")
    inside = np.arange(tokens.shape[1])[None, :] < lengths[:, None]  # [n, width]
    problems = (
        (inside & ((tokens < 0) | (tokens >= vocab_size)), f"has a token outside the vocabulary of {vocab_size}"),
        (inside & (tokens == eos_id) & (np.arange(tokens.shape[1])[None, :] < lengths[:, None] - 1),
         f"has the end-of-sequence token {eos_id} before its end"),
    )
    for where, message in problems:
        rows = np.flatnonzero(where.any(axis=1))
        if len(rows):
            raise IdentifierError(f"identifier {rows[0]} {message}: {tokens[rows[0], :lengths[rows[0]]].tolist()}")
    last = tokens[np.arange(len(lengths)), lengths - 1]
    rows = np.flatnonzero(last != eos_id)
    if len(rows):
        raise IdentifierError(f"identifier {rows[0]} does not end in the end-of-sequence token {eos_id}: "
                              f"{tokens[rows[0], :lengths[rows[0]]].tolist()}")
    return inside


def from_padded(tokens: np.ndarray, lengths: np.ndarray, *, vocab_size: int, eos_id: int) -> Trie:
    """Builds the trie of `tokens` [num_identifiers, width] whose first `lengths` [num_identifiers] entries are real."""
    tokens, lengths = np.asarray(tokens, np.int64), np.asarray(lengths, np.int64)
    inside = _validate(tokens, lengths, vocab_size, eos_id)
    padded = np.where(inside, tokens, -1).astype(np.int32)  # [n, width]: -1 sorts before every token
    order = np.lexsort(padded.T[::-1])  # rows in lexicographic order
    sorted_rows = padded[order]
    distinct = np.ones(len(order), bool)
    distinct[1:] = (sorted_rows[1:] != sorted_rows[:-1]).any(axis=1)
    lex_index = np.cumsum(distinct) - 1  # [n] sorted position -> distinct row (lexicographic rank)
    rows, row_lengths = sorted_rows[distinct], lengths[order][distinct]  # [m, width], [m]
    first_difference = np.zeros(len(rows), np.int64)  # first position where a row differs from the previous one
    first_difference[1:] = (rows[1:] != rows[:-1]).argmax(axis=1)

    parents, child_tokens, level_offsets = [], [], [0, 1]
    row_node = np.zeros(len(rows), np.int64)  # node of each row at the current depth (root before the loop)
    leaf_of_row = np.zeros(len(rows), np.int64)
    for depth in range(rows.shape[1]):
        has = row_lengths > depth
        if not has.any():
            break
        new = has & (first_difference <= depth)  # rows that open a new prefix of length depth + 1
        parents.append(row_node[new])
        child_tokens.append(rows[new, depth])
        row_node = np.where(has, level_offsets[-1] + np.cumsum(new) - 1, row_node)
        ends = row_lengths == depth + 1
        leaf_of_row[ends] = row_node[ends]
        level_offsets.append(level_offsets[-1] + int(new.sum()))

    parents = np.concatenate(parents)
    num_nodes = len(parents) + 1
    row_offsets = np.concatenate([[0], np.cumsum(np.bincount(parents, minlength=num_nodes + 1))])  # [num_nodes + 2]
    sequence_order = np.argsort(leaf_of_row)  # distinct sequences ordered by leaf node
    rank = np.empty(len(rows), np.int64)
    rank[sequence_order] = np.arange(len(rows))
    identifier_sequence = np.empty(len(order), np.int64)
    identifier_sequence[order] = rank[lex_index]
    return Trie(vocab_size=int(vocab_size), eos_id=int(eos_id), row_offsets=row_offsets,
                child_tokens=np.concatenate(child_tokens).astype(np.int32),
                level_offsets=np.asarray(level_offsets, np.int64), leaf_nodes=leaf_of_row[sequence_order],
                identifier_sequence=identifier_sequence)


# ------------------------------------------------------------------------------------------------ device


@struct.dataclass
class DeviceTrie:
    """The trie's device arrays (a pytree); shapes and the static fields decide the compiled programs."""

    row_offsets: jax.Array   # [num_nodes + 2] int32
    child_tokens: jax.Array  # [num_edges] uint16 (int32 when the vocabulary has more than 65,536 tokens)
    root_allowed: jax.Array  # [vocab] bool: the root's children as a dense table
    leaf_nodes: jax.Array    # [num_sequences] int32, increasing
    vocab_size: int = struct.field(pytree_node=False)
    eos_id: int = struct.field(pytree_node=False)
    level_widths: tuple[int, ...] = struct.field(pytree_node=False)

    @property
    def dead_node(self) -> int:
        return self.row_offsets.shape[0] - 2

    @property
    def max_depth(self) -> int:
        return len(self.level_widths) - 1


def to_device(trie: Trie, *, place: bool = True) -> DeviceTrie:
    """The device copy of `trie` (numpy arrays with `place=False`, e.g. to count bytes or to shard them yourself)."""
    if trie.num_nodes + 2 > np.iinfo(np.int32).max:
        raise IdentifierError(f"the trie has {trie.num_nodes} nodes; at most {np.iinfo(np.int32).max - 2} fit")
    token_dtype = np.uint16 if trie.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    root_allowed = np.zeros(trie.vocab_size, bool)
    root_allowed[trie.child_tokens[trie.row_offsets[ROOT]:trie.row_offsets[ROOT + 1]]] = True
    arrays = dict(row_offsets=trie.row_offsets.astype(np.int32), child_tokens=trie.child_tokens.astype(token_dtype),
                  root_allowed=root_allowed, leaf_nodes=trie.leaf_nodes.astype(np.int32))
    if place:
        arrays = {name: jnp.asarray(array) for name, array in arrays.items()}
    return DeviceTrie(**arrays, vocab_size=trie.vocab_size, eos_id=trie.eos_id, level_widths=trie.level_widths())


def _burst_width(width: int, vocab_size: int) -> int:
    """A row-read width: `width` rounded up to a power of two (fewer compiled branches), at most the vocabulary."""
    return 0 if width == 0 else min(1 << (width - 1).bit_length(), vocab_size)


def _children_mask(trie: DeviceTrie, nodes: jax.Array, width: int) -> jax.Array:
    """[n] nodes -> [n, vocab] bool, reading `width` entries of each node's row (enough for every node passed)."""
    if width == 0:
        return jnp.zeros((nodes.shape[0], trie.vocab_size), bool)
    starts = trie.row_offsets[nodes]  # [n]
    counts = trie.row_offsets[nodes + 1] - starts  # [n]
    slots = jnp.arange(width, dtype=jnp.int32)  # [width]
    tokens = jnp.take(trie.child_tokens, starts[:, None] + slots[None, :], mode="clip").astype(jnp.int32)  # [n, w]
    tokens = jnp.where(slots[None, :] < counts[:, None], tokens, trie.vocab_size)  # past the row: out of range
    rows = jnp.arange(nodes.shape[0])[:, None]  # [n, 1]
    return jnp.zeros((nodes.shape[0], trie.vocab_size), bool).at[rows, tokens].set(True, mode="drop")


def allowed_mask(trie: DeviceTrie, nodes: jax.Array, depth: int | jax.Array | None = None) -> jax.Array:
    """Tokens allowed after each node: [n] int32 node ids -> [n, vocab] bool (all False for the dead node).

    With `depth` (an int or a traced scalar: the depth of every node passed, dead nodes aside) each row is read with
    that depth's burst width; without it, any mix of nodes works and rows are read with the widest burst.
    """
    nodes = jnp.asarray(nodes, jnp.int32)
    root_row = jnp.broadcast_to(trie.root_allowed[None, :], (nodes.shape[0], trie.vocab_size))  # [n, vocab]
    widths = [_burst_width(width, trie.vocab_size) for width in trie.level_widths[1:]]
    if depth is None:
        below = _children_mask(trie, nodes, max(widths, default=0))
        return jnp.where((nodes == ROOT)[:, None], root_row, below)
    branch_widths = sorted(set(widths) | {0})
    branches = [lambda nodes: root_row] + [
        (lambda nodes, width=width: _children_mask(trie, nodes, width)) for width in branch_widths]
    # Branch of each depth 0 ... max_depth, then one more entry (width 0) for every deeper node (all dead).
    branch_of_depth = [0] + [1 + branch_widths.index(width) for width in widths] + [1]
    if isinstance(depth, int):
        return branches[branch_of_depth[min(depth, len(branch_of_depth) - 1)]](nodes)
    index = jnp.asarray(branch_of_depth, jnp.int32)[jnp.clip(depth, 0, len(branch_of_depth) - 1)]
    return jax.lax.switch(index, branches, nodes)


def advance(trie: DeviceTrie, nodes: jax.Array, tokens: jax.Array) -> jax.Array:
    """The child of each node through each token: [n] nodes, [n] tokens -> [n] nodes (the dead node if none).

    A fixed number of binary-search steps over the node's sorted row (enough for the widest row).
    """
    nodes, tokens = jnp.asarray(nodes, jnp.int32), jnp.asarray(tokens, jnp.int32)
    low, high = trie.row_offsets[nodes], trie.row_offsets[nodes + 1]  # [n]: row bounds, then the search interval
    end = high
    for _ in range(max(trie.level_widths, default=0).bit_length()):
        active = low < high
        middle = (low + high) // 2
        less = jnp.take(trie.child_tokens, middle, mode="clip").astype(jnp.int32) < tokens  # [n]
        low = jnp.where(active & less, middle + 1, low)
        high = jnp.where(active & ~less, middle, high)
    found = (low < end) & (jnp.take(trie.child_tokens, low, mode="clip").astype(jnp.int32) == tokens)
    return jnp.where(found, low + 1, trie.dead_node)  # edge e leads to node e + 1


def sequence_index(trie: DeviceTrie, nodes: jax.Array) -> jax.Array:
    """The distinct sequence whose leaf each node is: [n] nodes -> [n] int32 index, -1 for a non-leaf."""
    nodes = jnp.asarray(nodes, jnp.int32)
    position = jnp.searchsorted(trie.leaf_nodes, nodes).astype(jnp.int32)  # [n]
    found = jnp.take(trie.leaf_nodes, position, mode="clip") == nodes
    return jnp.where(found, position, -1)


# ---------------------------------------------------------------------------------------------- save / load


def save(trie: Trie, directory: str | os.PathLike) -> None:
    """Writes `trie.npz`, then `trie.json` (metadata and the npz's sha256), each to a temporary file renamed."""
    directory = pathlib.Path(directory)
    buffer = io.BytesIO()
    np.savez(buffer, **{name: getattr(trie, name) for name in _ARRAY_NAMES})
    data = buffer.getvalue()
    with formats.atomic_write(directory / ARRAYS_FILE, "wb") as handle:
        handle.write(data)
    metadata = {"format": FORMAT, "vocab_size": trie.vocab_size, "eos_id": trie.eos_id,
                "num_nodes": trie.num_nodes, "num_sequences": trie.num_sequences,
                "num_identifiers": len(trie.identifier_sequence), "arrays_sha256": hashlib.sha256(data).hexdigest()}
    with formats.atomic_write(directory / METADATA_FILE) as handle:
        json.dump(metadata, handle, indent=1, sort_keys=True)


def load(directory: str | os.PathLike) -> Trie:
    """Reads a trie that `save` wrote; a missing, changed or inconsistent file is a FormatError naming it."""
    directory = pathlib.Path(directory)
    metadata_path, arrays_path = directory / METADATA_FILE, directory / ARRAYS_FILE
    for path in (metadata_path, arrays_path):
        if not path.is_file():
            raise formats.FormatError(path, None,
                                      "missing: not a saved trie directory (expected trie.json and trie.npz)")
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        if metadata.get("format") != FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, expected {FORMAT!r}")
        vocab_size, eos_id = int(metadata["vocab_size"]), int(metadata["eos_id"])
        expected_sha256 = str(metadata["arrays_sha256"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise formats.FormatError(metadata_path, None, f"not a trie metadata file ({error})") from None
    data = arrays_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise formats.FormatError(arrays_path, None, f"does not match the sha256 recorded in {metadata_path} "
                                                     "(changed or half-written); rebuild the trie")
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        trie = Trie(vocab_size=vocab_size, eos_id=eos_id, **{name: arrays[name] for name in _ARRAY_NAMES})
    if trie.num_nodes != metadata.get("num_nodes") or len(trie.row_offsets) != trie.num_nodes + 2:
        raise formats.FormatError(arrays_path, None, "inconsistent array sizes; rebuild the trie")
    return trie
