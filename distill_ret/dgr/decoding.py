"""Model-agnostic jitted beam search in t5x's style, with an optional per-beam constraint (the identifier trie),
and the adapter that runs it on our T5.

The search (`beam_search`) keeps a `BeamState` in a `lax.while_loop`: per query `num_beams` live beams (tokens,
summed log-probabilities, constraint node, the model's cache) and `num_beams` finished ones. Each step feeds every
live beam's last token to `tokens_to_logits(tokens [batch*beams, 1], cache) -> (logits [batch*beams, vocab],
cache)`, takes log-softmax, masks with the constraint's `logit_mask_fn(state)` (masked = NEG_INF, a finite -1e7 as
in t5x; no mask = the unconstrained search, same code), selects the top 2 x beams candidates over beams x vocab,
keeps the best `num_beams` candidates that did not end in EOS alive (the cache follows its beams through
`cache_map_fn`) and merges the candidates that ended in EOS into the finished set.

Scores follow transformers' `generate(num_beams=...)`: a finished sequence of L generated tokens (EOS included)
scores sum(log p) / L**length_penalty; as there, only candidates among the step's best `num_beams` may finish.
The loop stops at `max_length` tokens or as soon as no live beam can still beat the worst finished one (an exact
bound, as transformers' early_stopping="never"). Only EOS is allowed at the last position: a sequence that would
reach `max_length` without EOS is never produced (it is no identifier; transformers would return it cut off), so a
query may get fewer than `num_beams` results (`found` marks the real ones).
A candidate is *valid* when its log-probability is above NEG_INF / 2: masked tokens and the placeholder beams
of the first step never finish.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from distill_ret.dgr import trie as trie_lib
from distill_ret.models import t5
from distill_ret.training import partitioning

NEG_INF = -1.0e7

TokensToLogits = Callable[[jax.Array, Any], tuple[jax.Array, Any]]
CacheMapFn = Callable[[Callable[[jax.Array], jax.Array], Any], Any]


@struct.dataclass
class BeamState:
    """The loop state; sequences hold generated tokens only (the start token is implicit), padded after EOS."""

    cur_index: jax.Array        # [] int32: tokens generated so far by every live beam
    live_seqs: jax.Array        # [batch, beams, max_length] int32
    live_logprobs: jax.Array    # [batch, beams] float32: sum of log-probabilities, best first
    live_nodes: jax.Array       # [batch, beams] int32: constraint node after live_seqs (0 without a constraint)
    finished_seqs: jax.Array    # [batch, beams, max_length] int32
    finished_logprobs: jax.Array  # [batch, beams] float32
    finished_scores: jax.Array  # [batch, beams] float32: length-normalised, best first; NEG_INF for empty slots
    finished_flags: jax.Array   # [batch, beams] bool: the slot holds a finished sequence
    finished_nodes: jax.Array   # [batch, beams] int32: constraint node after EOS (the trie leaf)
    cache: Any                  # the model's cache, [batch * beams, ...] leaves


@struct.dataclass
class BeamSearchOutput:
    """Per query the best `num_beams` finished sequences, best first."""

    sequences: jax.Array  # [batch, beams, max_length] int32: generated tokens up to EOS, then pad_id
    scores: jax.Array     # [batch, beams] float32: logprobs / length**length_penalty; NEG_INF where not found
    logprobs: jax.Array   # [batch, beams] float32: sum of the tokens' log-probabilities
    found: jax.Array      # [batch, beams] bool
    nodes: jax.Array      # [batch, beams] int32: the trie leaf of each sequence (0 without a constraint)


class Constraint(NamedTuple):
    """What restricts the search: allowed tokens per live beam, and how a beam's node follows a token."""

    logit_mask_fn: Callable[[BeamState], jax.Array]          # state -> [batch * beams, vocab] bool (allowed)
    advance_fn: Callable[[jax.Array, jax.Array], jax.Array]  # nodes [n], tokens [n] -> nodes [n]
    max_length: int                                          # the longest sequence the constraint allows


def trie_constraint(trie: trie_lib.DeviceTrie) -> Constraint:
    """Only the children of each beam's trie node are allowed (every live beam is at depth cur_index)."""
    mask = lambda state: trie_lib.allowed_mask(trie, state.live_nodes.reshape(-1), depth=state.cur_index)
    return Constraint(mask, functools.partial(trie_lib.advance, trie), trie.max_depth)


def map_batch_leaves(fn: Callable[[jax.Array], jax.Array], cache: Any) -> Any:
    """Default `cache_map_fn`: applies `fn` to every cache leaf with a leading axis (0-d leaves stay as they are)."""
    return jax.tree.map(lambda leaf: fn(leaf) if jnp.ndim(leaf) else leaf, cache)


def gather_beams(values: jax.Array, beam_indices: jax.Array) -> jax.Array:
    """values [batch, beams, ...], beam_indices [batch, n] -> [batch, n, ...] (a gather batched over queries)."""
    return jax.vmap(lambda rows, indices: rows[indices])(values, beam_indices)


def _gather_flat(values: jax.Array, beam_indices: jax.Array) -> jax.Array:
    """Like gather_beams on a [batch * beams, ...] leaf: -> [batch * n, ...]."""
    batch, n = beam_indices.shape
    grouped = values.reshape((batch, values.shape[0] // batch) + values.shape[1:])  # [batch, beams, ...]
    return gather_beams(grouped, beam_indices).reshape((batch * n,) + values.shape[1:])


def length_normalise(logprobs: jax.Array, length: jax.Array | int, length_penalty: float) -> jax.Array:
    """transformers' beam score: logprobs / length**length_penalty (length = generated tokens, EOS included)."""
    if length_penalty == 0.0:
        return logprobs
    return logprobs / jnp.asarray(length, jnp.float32) ** length_penalty


def _initial_state(batch_size: int, num_beams: int, max_length: int, pad_id: int, cache: Any) -> BeamState:
    """Beam 0 of each query is the empty sequence; the others are invalid placeholders (log-probability NEG_INF)."""
    seqs = jnp.full((batch_size, num_beams, max_length), pad_id, jnp.int32)
    logprobs = jnp.tile(jnp.asarray([0.0] + [NEG_INF] * (num_beams - 1), jnp.float32), (batch_size, 1))
    zeros = jnp.zeros((batch_size, num_beams), jnp.int32)
    return BeamState(
        cur_index=jnp.asarray(0, jnp.int32), live_seqs=seqs, live_logprobs=logprobs, live_nodes=zeros,
        finished_seqs=seqs, finished_logprobs=jnp.full((batch_size, num_beams), NEG_INF, jnp.float32),
        finished_scores=jnp.full((batch_size, num_beams), NEG_INF, jnp.float32),
        finished_flags=jnp.zeros((batch_size, num_beams), bool), finished_nodes=zeros, cache=cache)


def _improvement_possible(state: BeamState, max_length: int, length_penalty: float) -> jax.Array:
    """[batch] bool: a live beam could still finish above the worst finished sequence."""
    best_live = state.live_logprobs[:, 0]  # [batch], <= 0 when valid
    # The best score a live beam can reach: sum(log p) only falls, so the bound is at the longest length when
    # longer is rewarded (length_penalty >= 0) and at the next length otherwise.
    best_length = max_length if length_penalty >= 0 else state.cur_index + 1
    bound = length_normalise(best_live, best_length, length_penalty)  # [batch]
    worst_finished = jnp.where(state.finished_flags.all(axis=1), state.finished_scores.min(axis=1), -jnp.inf)
    return (best_live > NEG_INF / 2) & (bound > worst_finished)


def beam_search(
    tokens_to_logits: TokensToLogits, cache: Any, *, batch_size: int, num_beams: int, max_length: int,
    eos_id: int, start_id: int, pad_id: int = 0, length_penalty: float = 1.0, constraint: Constraint | None = None,
    cache_map_fn: CacheMapFn = map_batch_leaves,
) -> BeamSearchOutput:
    """Beam search for `batch_size` queries (jittable; see the module docstring).

    `cache` holds `batch_size * num_beams` rows (query-major: each query's encoder output repeated per beam) and is
    reordered with `cache_map_fn(fn, cache)`, which must apply `fn` to every leaf whose leading axis is that batch.
    """
    if num_beams < 1 or max_length < 1:
        raise ValueError(f"num_beams={num_beams} and max_length={max_length} must both be at least 1")
    if constraint is not None and max_length < constraint.max_length:
        raise ValueError(f"max_length={max_length} is shorter than the longest identifier ({constraint.max_length} "
                         "tokens with EOS): those identifiers could never be found")
    candidates = 2 * num_beams
    first_k = jnp.arange(candidates) < num_beams  # [2k]: candidates that may finish this step

    def condition(state: BeamState) -> jax.Array:
        return (state.cur_index < max_length) & _improvement_possible(state, max_length, length_penalty).any()

    def body(state: BeamState) -> BeamState:
        step = state.cur_index
        previous = jax.lax.dynamic_index_in_dim(state.live_seqs, jnp.maximum(step - 1, 0), axis=2, keepdims=False)
        tokens = jnp.where(step == 0, start_id, previous).reshape(-1, 1)  # [batch * beams, 1]
        logits, cache = tokens_to_logits(tokens, state.cache)  # [batch * beams, vocab]
        logprobs = jax.nn.log_softmax(logits.astype(jnp.float32))  # [batch * beams, vocab]
        vocab = logprobs.shape[-1]
        # At the last position only EOS can complete a sequence; anything else would be cut off.
        allowed = (step < max_length - 1) | (jnp.arange(vocab) == eos_id)  # [vocab]
        if constraint is not None:
            allowed = allowed & constraint.logit_mask_fn(state)  # [batch * beams, vocab]
        logprobs = jnp.where(allowed, logprobs, NEG_INF)
        totals = logprobs.reshape(batch_size, num_beams, vocab) + state.live_logprobs[:, :, None]  # [b, k, vocab]
        top_logprobs, top_indices = jax.lax.top_k(totals.reshape(batch_size, num_beams * vocab), candidates)  # [b, 2k]
        top_beams, top_tokens = top_indices // vocab, (top_indices % vocab).astype(jnp.int32)  # [b, 2k]
        top_seqs = gather_beams(state.live_seqs, top_beams)  # [b, 2k, max_length]
        top_seqs = jnp.where(jnp.arange(max_length) == step, top_tokens[:, :, None], top_seqs)
        top_nodes = gather_beams(state.live_nodes, top_beams)  # [b, 2k]
        if constraint is not None:
            top_nodes = constraint.advance_fn(top_nodes.reshape(-1), top_tokens.reshape(-1)).reshape(top_nodes.shape)
        valid = top_logprobs > NEG_INF / 2  # [b, 2k]
        ends = top_tokens == eos_id

        # Live: the best k candidates that did not end in EOS.
        live_logprobs, live_picks = jax.lax.top_k(jnp.where(ends, top_logprobs + NEG_INF, top_logprobs), num_beams)
        parent_beams = gather_beams(top_beams, live_picks)  # [b, k]
        cache = cache_map_fn(lambda leaf: _gather_flat(leaf, parent_beams), cache)

        # Finished: merge the candidates that end here (among the step's best k) into the finished set.
        newly_finished = ends & valid & first_k[None, :]  # [b, 2k]
        new_scores = jnp.where(newly_finished, length_normalise(top_logprobs, step + 1, length_penalty), NEG_INF)
        merged_scores = jnp.concatenate([state.finished_scores, new_scores], axis=1)  # [b, 3k]
        finished_scores, picks = jax.lax.top_k(merged_scores, num_beams)  # [b, k]
        merge = lambda old, new: gather_beams(jnp.concatenate([old, new], axis=1), picks)
        return BeamState(
            cur_index=step + 1, live_seqs=gather_beams(top_seqs, live_picks), live_logprobs=live_logprobs,
            live_nodes=gather_beams(top_nodes, live_picks), finished_seqs=merge(state.finished_seqs, top_seqs),
            finished_logprobs=merge(state.finished_logprobs, jnp.where(newly_finished, top_logprobs, NEG_INF)),
            finished_scores=finished_scores, finished_flags=merge(state.finished_flags, newly_finished),
            finished_nodes=merge(state.finished_nodes, top_nodes), cache=cache)

    state = jax.lax.while_loop(condition, body, _initial_state(batch_size, num_beams, max_length, pad_id, cache))
    found = state.finished_flags
    return BeamSearchOutput(
        sequences=jnp.where(found[:, :, None], state.finished_seqs, pad_id), scores=state.finished_scores,
        logprobs=state.finished_logprobs, found=found, nodes=jnp.where(found, state.finished_nodes, 0))


# --------------------------------------------------------------------------------------------------- T5


def t5_decoding_fns(config: t5.T5Config, params: Any, encoder_input_ids: jax.Array, *, num_beams: int,
                    max_length: int) -> tuple[TokensToLogits, Any]:
    """(tokens_to_logits, initial cache) of our T5 for `encoder_input_ids` [batch, src_len] (pad = config's).

    The encoder runs once per query; its output is repeated per beam for the decoder's cross-attention.
    """
    model = t5.T5(config)
    encoded = model.apply({"params": params}, encoder_input_ids, method=t5.T5.encode)  # [batch, src, d_model]
    encoded = jnp.repeat(encoded, num_beams, axis=0)  # [batch * beams, src, d_model]
    encoder_ids = jnp.repeat(encoder_input_ids, num_beams, axis=0)  # [batch * beams, src]

    def tokens_to_logits(tokens: jax.Array, cache: Any) -> tuple[jax.Array, Any]:
        logits, mutated = model.apply({"params": params, "cache": cache}, encoded, encoder_ids, tokens, decode=True,
                                      method=t5.T5.decode, mutable=["cache"])  # [batch * beams, 1, vocab]
        return logits[:, 0], mutated["cache"]

    return tokens_to_logits, t5.init_cache(config, encoded.shape[0], max_length)


def t5_beam_search(params: Any, encoder_input_ids: jax.Array, trie: trie_lib.DeviceTrie | None, *,
                   config: t5.T5Config, num_beams: int, max_length: int, length_penalty: float = 1.0
                   ) -> BeamSearchOutput:
    """Beam search of our T5 over `encoder_input_ids` [batch, src_len], constrained to `trie` unless it is None."""
    if trie is not None and (trie.vocab_size, trie.eos_id) != (config.vocab_size, config.eos_token_id):
        raise ValueError(f"the trie was built for a vocabulary of {trie.vocab_size} tokens with EOS {trie.eos_id}, the "
                         f"model has {config.vocab_size} with EOS {config.eos_token_id}: tokenise the identifiers "
                         "with the model's tokenizer")
    tokens_to_logits, cache = t5_decoding_fns(config, params, encoder_input_ids, num_beams=num_beams,
                                              max_length=max_length)
    return beam_search(
        tokens_to_logits, cache, batch_size=encoder_input_ids.shape[0], num_beams=num_beams, max_length=max_length,
        eos_id=config.eos_token_id, start_id=config.decoder_start_token_id, pad_id=config.pad_token_id,
        length_penalty=length_penalty, constraint=None if trie is None else trie_constraint(trie),
        cache_map_fn=t5.map_cache)


def make_t5_search(config: t5.T5Config, *, num_beams: int, max_length: int, length_penalty: float = 1.0,
                   mesh: Mesh | None = None, params_sharding: Any = None, constrained: bool = True) -> Callable:
    """One compiled program `(params, encoder_input_ids [batch, src_len], trie) -> BeamSearchOutput` (`trie` is
    omitted when `constrained=False`).

    With a mesh the query batch is split over its data x fsdp axes (the batch must divide evenly), the trie is
    replicated and the params follow `params_sharding` (default: replicated).
    """
    options = dict(config=config, num_beams=num_beams, max_length=max_length, length_penalty=length_penalty)

    def search(params, encoder_input_ids, trie=None):
        return t5_beam_search(params, encoder_input_ids, trie, **options)

    if mesh is None:
        return jax.jit(search)
    replicated, batch = partitioning.replicated(mesh), partitioning.batch_sharding(mesh)
    in_shardings = (params_sharding or replicated, batch) + ((replicated,) if constrained else ())
    return jax.jit(search, in_shardings=in_shardings, out_shardings=batch)
