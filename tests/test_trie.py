"""The identifier trie: exact CSR arrays on a hand-built example, equality with a reference dict trie on random
identifiers (children of every prefix, dead transitions, leaves, the many-to-one identifier map), the jitted device
functions, validation errors, and the save/load round trip."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_ret.data import formats
from distill_ret.dgr import trie as trie_lib

EOS = 1
VOCAB = 7
# Hypothesis compiles the device functions anew for every new trie shape: keep the examples few.
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def identifier_lists(max_identifiers: int = 12, max_length: int = 5):
    """Lists of token sequences ending in EOS (EOS nowhere else), duplicates likely."""
    body = st.lists(st.sampled_from([0, 2, 3, 4, 5, 6]), min_size=0, max_size=max_length - 1)
    return st.lists(body.map(lambda tokens: tokens + [EOS]), min_size=1, max_size=max_identifiers)


def reference_children(sequences) -> dict[tuple, set]:
    """The dict trie: every prefix (root = ()) -> the set of tokens that follow it in some sequence."""
    children = {}
    for sequence in sequences:
        for depth in range(len(sequence) + 1):
            children.setdefault(tuple(sequence[:depth]), set())
            if depth < len(sequence):
                children[tuple(sequence[:depth])].add(sequence[depth])
    return children


def walk(device_trie, prefix) -> int:
    node = jnp.asarray([trie_lib.ROOT])
    for token in prefix:
        node = trie_lib.advance(device_trie, node, jnp.asarray([token]))
    return int(node[0])


def test_hand_built_trie_has_the_documented_arrays():
    # Prefixes by level: depth 1: (2), (3); depth 2: (2 1), (3 4), (3 5); depth 3: (3 4 1), (3 5 1).
    trie = trie_lib.from_sequences([[3, 4, 1], [3, 5, 1], [2, 1], [3, 4, 1]], vocab_size=6, eos_id=EOS)
    np.testing.assert_array_equal(trie.child_tokens, [2, 3, 1, 4, 5, 1, 1])  # edge e -> node e + 1
    np.testing.assert_array_equal(trie.row_offsets, [0, 2, 3, 5, 5, 6, 7, 7, 7, 7])  # 8 nodes + the dead node 8
    np.testing.assert_array_equal(trie.level_offsets, [0, 1, 3, 6, 8])
    np.testing.assert_array_equal(trie.leaf_nodes, [3, 6, 7])  # (2 1), (3 4 1), (3 5 1)
    np.testing.assert_array_equal(trie.identifier_sequence, [1, 2, 0, 1])  # the duplicate maps to sequence 1
    assert trie.level_widths() == (2, 2, 1, 0)
    offsets, ids = trie.identifiers_by_sequence()
    np.testing.assert_array_equal(offsets, [0, 1, 3, 4])
    np.testing.assert_array_equal(ids, [2, 0, 3, 1])
    device = trie_lib.to_device(trie)
    nodes = trie_lib.advance(device, jnp.asarray([0, 0, 0, 2, 2, 4, 8, 3]), jnp.asarray([3, 2, 4, 4, 5, 1, 1, 1]))
    np.testing.assert_array_equal(nodes, [2, 1, 8, 4, 5, 6, 8, 8])
    np.testing.assert_array_equal(trie_lib.sequence_index(device, jnp.arange(9)), [-1, -1, -1, 0, -1, -1, 1, 2, -1])
    mask = trie_lib.allowed_mask(device, jnp.asarray([0, 2, 4, 6, 8]))
    expected = np.zeros((5, 6), bool)
    expected[0, [2, 3]] = expected[1, [4, 5]] = expected[2, 1] = True
    np.testing.assert_array_equal(mask, expected)


@settings(PROPERTY, max_examples=12)  # every example is a new trie shape, so every jitted lookup compiles anew
@given(sequences=identifier_lists())
def test_trie_equals_a_reference_dict_trie(sequences):
    trie = trie_lib.from_sequences(sequences, vocab_size=VOCAB, eos_id=EOS)
    children = reference_children(sequences)
    assert trie.num_nodes == len(children)
    device = trie_lib.to_device(trie)
    distinct = sorted({tuple(sequence) for sequence in sequences})
    tokens, lengths = trie.sequences()
    rebuilt = [tuple(row[:length]) for row, length in zip(tokens.tolist(), lengths)]
    assert sorted(rebuilt) == distinct and len(rebuilt) == len(distinct)
    for identifier, sequence in enumerate(sequences):
        assert rebuilt[trie.identifier_sequence[identifier]] == tuple(sequence)

    prefixes = sorted(children, key=lambda prefix: (len(prefix), prefix))
    nodes = [walk(device, prefix) for prefix in prefixes]
    assert nodes == list(range(trie.num_nodes))  # level order, lexicographic within a level
    expected = np.zeros((len(prefixes), VOCAB), bool)
    for row, prefix in enumerate(prefixes):
        expected[row, sorted(children[prefix])] = True
    node_array = jnp.asarray(nodes)
    np.testing.assert_array_equal(trie_lib.allowed_mask(device, node_array), expected)
    by_depth = jax.jit(trie_lib.allowed_mask)  # depth traced: the lax.switch over burst widths
    for row, prefix in enumerate(prefixes):
        got = by_depth(device, node_array[row:row + 1], jnp.asarray(len(prefix)))
        np.testing.assert_array_equal(got[0], expected[row], err_msg=str(prefix))
    leaves = trie_lib.sequence_index(device, node_array)
    for prefix, leaf in zip(prefixes, np.asarray(leaves)):
        assert leaf == (rebuilt.index(prefix) if prefix in rebuilt else -1)

    # Every transition that leaves the trie goes to the dead node, which allows nothing (node `row` is prefix `row`,
    # as asserted above, so all of them are one batched step; never none: a whole identifier has no child).
    leaving = [(row, token) for row, prefix in enumerate(prefixes)
               for token in sorted(set(range(VOCAB)) - children[prefix])]
    rows, tokens = (np.asarray(column) for column in zip(*leaving))
    np.testing.assert_array_equal(trie_lib.advance(device, node_array[rows], jnp.asarray(tokens)), trie.dead_node)
    dead = jnp.asarray([trie.dead_node])
    assert not trie_lib.allowed_mask(device, dead).any()
    assert not trie_lib.allowed_mask(device, dead, depth=trie.max_depth + 3).any()


def test_invalid_identifiers_are_refused_naming_the_identifier():
    cases = {
        "no identifiers": [],
        "identifier 1 does not end in the end-of-sequence token 1": [[2, 1], [3, 4]],
        "identifier 0 has the end-of-sequence token 1 before its end": [[2, 1, 3, 1]],
        "identifier 1 has a token outside the vocabulary of 7": [[2, 1], [9, 1]],
        "identifier 0 has length 0": [[]],
    }
    for message, sequences in cases.items():
        with pytest.raises(trie_lib.IdentifierError, match=message):
            trie_lib.from_sequences(sequences, vocab_size=VOCAB, eos_id=EOS)


def test_padded_input_builds_the_same_trie_as_lists():
    sequences = [[5, 2, 1], [5, 1], [6, 6, 6, 1], [5, 2, 1]]
    tokens = np.full((4, 6), 99)  # garbage beyond each length is ignored
    for row, sequence in enumerate(sequences):
        tokens[row, :len(sequence)] = sequence
    padded = trie_lib.from_padded(tokens, [len(s) for s in sequences], vocab_size=VOCAB, eos_id=EOS)
    listed = trie_lib.from_sequences(sequences, vocab_size=VOCAB, eos_id=EOS)
    for name in trie_lib._ARRAY_NAMES:
        np.testing.assert_array_equal(getattr(padded, name), getattr(listed, name))


def test_save_load_round_trip_and_corruption(tmp_path):
    trie = trie_lib.from_sequences([[3, 4, 1], [3, 5, 1], [2, 1], [3, 4, 1], [6, 6, 6, 6, 1]], vocab_size=VOCAB,
                                   eos_id=EOS)
    old_umask = os.umask(0o027)
    try:
        trie_lib.save(trie, tmp_path / "trie")
    finally:
        os.umask(old_umask)
    assert sorted(path.name for path in (tmp_path / "trie").iterdir()) == ["trie.json", "trie.npz"]  # no temp left
    assert (tmp_path / "trie" / "trie.npz").stat().st_mode & 0o777 == 0o640
    loaded = trie_lib.load(tmp_path / "trie")
    assert (loaded.vocab_size, loaded.eos_id) == (VOCAB, EOS)
    for name in trie_lib._ARRAY_NAMES:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(trie, name))
    assert loaded.level_widths() == trie.level_widths()

    arrays = tmp_path / "trie" / "trie.npz"
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrays.write_bytes(bytes(data))
    with pytest.raises(formats.FormatError, match="trie.npz: does not match the sha256"):
        trie_lib.load(tmp_path / "trie")
    with pytest.raises(formats.FormatError, match="trie.json: missing"):
        trie_lib.load(tmp_path / "elsewhere")


def test_device_bytes_use_two_byte_tokens_for_small_vocabularies():
    trie = trie_lib.from_sequences([[3, 4, 1], [3, 5, 1], [2, 1]], vocab_size=32128, eos_id=EOS)
    device = trie_lib.to_device(trie)
    assert device.child_tokens.dtype == jnp.uint16
    # row_offsets (8 nodes + 2) * 4 + child_tokens 7 * 2 + root table 32128 * 1 + leaves 3 * 4
    assert trie.device_nbytes() == 10 * 4 + 7 * 2 + 32128 + 3 * 4
    wide = trie_lib.to_device(trie_lib.from_sequences([[70000, 1]], vocab_size=70001, eos_id=EOS))
    assert wide.child_tokens.dtype == jnp.int32
    assert bool(wide.root_allowed[70000]) and int(wide.root_allowed.sum()) == 1
