"""The jitted beam search: with a trie and beams >= identifiers it returns exactly the brute-force ranking of every
identifier by teacher-forced log-likelihood (our T5's full forward pass); with fewer beams every result is still an
identifier carrying its exact score; unconstrained, it equals exhaustive search under a toy model with a
prefix-dependent cache; 8 fake devices give what 1 device gives; one compiled program per shape."""
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_ret.dgr import decoding
from distill_ret.dgr import trie as trie_lib
from distill_ret.models import t5
from distill_ret.training import partitioning

CONFIG = t5.T5Config(vocab_size=12, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
                     relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                     feed_forward_proj="gated-gelu", tie_word_embeddings=False)
EOS, PAD = CONFIG.eos_token_id, CONFIG.pad_token_id
BODY_TOKENS = list(range(2, CONFIG.vocab_size))
MAX_LENGTH = 5
QUERIES = np.asarray([[4, 5, 6, 0], [7, 8, 2, 3]], np.int32)  # [queries, src_len], the first one padded


@functools.cache
def params():
    ids = jnp.ones((1, 4), jnp.int32)
    # Larger embeddings than the default init make the model's preferences sharp enough to matter.
    return nn.unbox(t5.T5(CONFIG).init(jax.random.PRNGKey(3), ids, ids)["params"])


@functools.cache
def searcher(num_beams: int, length_penalty: float, constrained: bool = True):
    return decoding.make_t5_search(CONFIG, num_beams=num_beams, max_length=MAX_LENGTH, length_penalty=length_penalty,
                                   constrained=constrained)


def teacher_forced_logprobs(encoder_ids: np.ndarray, sequences: list[tuple[int, ...]]) -> np.ndarray:
    """[queries, sequences]: sum of log p(token | query, prefix) from one full forward pass over every pair."""
    width = max(len(sequence) for sequence in sequences)
    labels = np.zeros((len(sequences), width), np.int32)
    for row, sequence in enumerate(sequences):
        labels[row, :len(sequence)] = sequence
    mask = np.arange(width)[None, :] < np.asarray([len(s) for s in sequences])[:, None]  # [m, width]
    queries, m = len(encoder_ids), len(sequences)
    logits = t5.T5(CONFIG).apply({"params": params()}, np.repeat(encoder_ids, m, axis=0),
                                 t5.shift_right(np.tile(labels, (queries, 1)), CONFIG.decoder_start_token_id))
    logprobs = jnp.take_along_axis(jax.nn.log_softmax(logits), np.tile(labels, (queries, 1))[..., None], axis=-1)
    return np.asarray((logprobs[..., 0] * np.tile(mask, (queries, 1))).sum(axis=1)).reshape(queries, m)


def decoded(output, query: int) -> list[tuple[int, ...]]:
    """The found sequences of one query, best first, cut after EOS."""
    results = []
    for row, found in zip(np.asarray(output.sequences[query]).tolist(), np.asarray(output.found[query])):
        if found:
            assert EOS in row, row
            assert all(token == PAD for token in row[row.index(EOS) + 1:])
            results.append(tuple(row[:row.index(EOS) + 1]))
    return results


identifier_sets = st.lists(st.lists(st.sampled_from(BODY_TOKENS), min_size=0, max_size=MAX_LENGTH - 1),
                           min_size=1, max_size=8, unique_by=tuple).map(lambda bodies: [b + [EOS] for b in bodies])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identifiers=identifier_sets, length_penalty=st.sampled_from([0.0, 1.0]))
def test_enough_beams_give_the_brute_force_ranking_of_all_identifiers(identifiers, length_penalty):
    trie = trie_lib.from_sequences(identifiers, vocab_size=CONFIG.vocab_size, eos_id=EOS)
    output = searcher(8, length_penalty)(params(), QUERIES, trie_lib.to_device(trie))
    sequences = [tuple(identifier) for identifier in identifiers]
    logprobs = teacher_forced_logprobs(QUERIES, sequences)  # [queries, m]
    lengths = np.asarray([len(sequence) for sequence in sequences], np.float64)
    for query in range(len(QUERIES)):
        scores = logprobs[query] / lengths ** length_penalty
        order = np.argsort(-scores, kind="stable")
        assert decoded(output, query) == [sequences[i] for i in order]
        np.testing.assert_allclose(output.scores[query, :len(sequences)], scores[order], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(output.logprobs[query, :len(sequences)], logprobs[query][order], rtol=1e-5,
                                   atol=1e-5)
        assert not output.found[query, len(sequences):].any()
        assert (np.asarray(output.scores[query, len(sequences):]) == decoding.NEG_INF).all()
        leaves = trie_lib.sequence_index(trie_lib.to_device(trie), output.nodes[query, :len(sequences)])
        distinct, lengths_of = trie.sequences()
        assert [tuple(distinct[i, :lengths_of[i]].tolist()) for i in np.asarray(leaves)] == decoded(output, query)


def test_fewer_beams_than_identifiers_return_only_identifiers_with_their_exact_scores():
    rng = np.random.RandomState(0)
    identifiers = {tuple(rng.choice(BODY_TOKENS, size=rng.randint(0, MAX_LENGTH))) + (EOS,) for _ in range(60)}
    identifiers = sorted(identifiers)
    trie = trie_lib.from_sequences(identifiers, vocab_size=CONFIG.vocab_size, eos_id=EOS)
    output = searcher(3, 1.0)(params(), QUERIES, trie_lib.to_device(trie))
    logprobs = teacher_forced_logprobs(QUERIES, identifiers)
    lengths = np.asarray([len(identifier) for identifier in identifiers])
    for query in range(len(QUERIES)):
        results = decoded(output, query)
        assert len(results) == 3 and len(set(results)) == 3
        expected = [logprobs[query, identifiers.index(result)] / lengths[identifiers.index(result)]
                    for result in results]
        np.testing.assert_allclose(output.scores[query], expected, rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(np.asarray(output.scores[query])) <= 0)


def test_unconstrained_search_equals_exhaustive_search_under_a_toy_model():
    """Logits depend on the whole prefix through a per-beam cache state, so a wrong cache reorder would show."""
    vocab, max_length, num_beams, modulus = 4, 4, 40, 97
    table = np.random.RandomState(1).normal(scale=2.0, size=(modulus, vocab)).astype(np.float32)
    batch = 2
    offsets = np.asarray([0, 11])  # each query starts from its own state

    def advance_state(state, token):
        return (state * 5 + token + 1) % modulus

    def tokens_to_logits(tokens, cache):
        state = advance_state(cache["state"], tokens[:, 0])
        return jnp.asarray(table)[state], {"state": state}

    cache = {"state": jnp.repeat(jnp.asarray(offsets, jnp.int32), num_beams)}
    search = jax.jit(lambda cache: decoding.beam_search(
        tokens_to_logits, cache, batch_size=batch, num_beams=num_beams, max_length=max_length, eos_id=1, start_id=0,
        length_penalty=0.5))
    output = search(cache)

    logprob_table = np.asarray(jax.nn.log_softmax(table))
    bodies = [body for length in range(max_length) for body in itertools.product([0, 2, 3], repeat=length)]
    assert len(bodies) == num_beams
    for query in range(batch):
        scored = []
        for body in bodies:
            state, token, total = offsets[query], 0, 0.0
            for token_next in body + (1,):
                state = advance_state(state, token)
                total += logprob_table[state, token_next]
                token = token_next
            scored.append((total / (len(body) + 1) ** 0.5, body + (1,)))
        scored.sort(key=lambda item: -item[0])
        assert [tuple(row[:row.index(1) + 1]) for row in np.asarray(output.sequences[query]).tolist()] == \
            [sequence for _, sequence in scored]
        np.testing.assert_allclose(output.scores[query], [score for score, _ in scored], rtol=1e-5)
        assert output.found[query].all()


def test_eight_devices_give_the_same_results_as_one():
    rng = np.random.RandomState(2)
    identifiers = sorted({tuple(rng.choice(BODY_TOKENS, size=rng.randint(0, MAX_LENGTH))) + (EOS,) for _ in range(30)})
    trie = trie_lib.to_device(trie_lib.from_sequences(identifiers, vocab_size=CONFIG.vocab_size, eos_id=EOS))
    queries = rng.randint(2, CONFIG.vocab_size, size=(8, 5)).astype(np.int32)
    queries[::3, 3:] = PAD
    results = {}
    for devices in (1, 8):
        mesh = partitioning.create_mesh({"data": devices, "fsdp": 1, "model": 1}, devices=jax.devices()[:devices])
        for constrained in (True, False):
            search = decoding.make_t5_search(CONFIG, num_beams=4, max_length=MAX_LENGTH, length_penalty=1.0,
                                             mesh=mesh, constrained=constrained)
            output = search(params(), queries, *((trie,) if constrained else ()))
            assert output.scores.sharding.spec == jax.sharding.PartitionSpec(partitioning.BATCH_AXES)
            results[devices, constrained] = jax.device_get(output)
    for constrained in (True, False):
        one, eight = results[1, constrained], results[8, constrained]
        np.testing.assert_array_equal(eight.sequences, one.sequences)
        np.testing.assert_array_equal(eight.found, one.found)
        np.testing.assert_array_equal(eight.nodes, one.nodes)
        np.testing.assert_allclose(eight.scores, one.scores, rtol=1e-5, atol=1e-5)
    assert results[1, True].found.all()
    constrained_results = {tuple(row[:row.index(EOS) + 1]) for row in results[1, True].sequences.reshape(-1, MAX_LENGTH)
                           .tolist()}
    assert constrained_results <= set(identifiers)


def test_one_compiled_program_per_shape():
    trie = trie_lib.to_device(trie_lib.from_sequences([[2, 3, 1], [4, 1]], vocab_size=CONFIG.vocab_size, eos_id=EOS))
    search = decoding.make_t5_search(CONFIG, num_beams=2, max_length=MAX_LENGTH)
    search(params(), QUERIES, trie)
    search(params(), QUERIES[::-1].copy(), trie)
    assert search._cache_size() == 1


def test_max_length_shorter_than_an_identifier_is_refused():
    trie = trie_lib.to_device(trie_lib.from_sequences([[2, 3, 4, 1]], vocab_size=CONFIG.vocab_size, eos_id=EOS))
    search = decoding.make_t5_search(CONFIG, num_beams=2, max_length=3)
    with pytest.raises(ValueError, match="max_length=3 is shorter than the longest identifier \\(4 tokens"):
        search(params(), QUERIES, trie)


def test_a_trie_of_another_vocabulary_is_refused():
    trie = trie_lib.to_device(trie_lib.from_sequences([[2, 1]], vocab_size=CONFIG.vocab_size + 1, eos_id=EOS))
    with pytest.raises(ValueError, match="vocabulary of 13 tokens with EOS 1, the model has 12 with EOS 1"):
        searcher(2, 1.0)(params(), QUERIES, trie)


@pytest.mark.parametrize("length_penalty, expected", [(0.0, -6.0), (1.0, -2.0), (2.0, -6.0 / 9), (-1.0, -18.0)])
def test_length_normalise_divides_by_length_to_the_penalty(length_penalty, expected):
    assert float(decoding.length_normalise(jnp.asarray(-6.0), 3, length_penalty)) == pytest.approx(expected)
