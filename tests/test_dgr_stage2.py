"""DGR stage 2's pure parts: passage scores aggregated per view and weighted, the rank lists and losses on fixed scores
equal hand-computed values, the batched passage scores equal one forward pass per identifier, the identifier rows and
list examples hold what the candidates say, and bad `config.distill` fields are refused by name."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dgr as dgr_config
from distill_ret import losses
from distill_ret.dgr import candidates, identifiers, stage2
from distill_ret.dgr import task as dgr_task
from distill_ret.errors import ConfigError
from distill_ret.models.t5 import T5, shift_right

WEIGHTS = jnp.asarray([1.0, 0.5, 0.0, 2.0])  # title, atomic, semantic, spans


def settings(**changes) -> stage2.Settings:
    section = dgr_config.get_config("tiny_stage2").distill
    section.candidates_dir = "/x"
    for field, value in changes.items():
        section[field] = value
    return stage2.settings_from_config(section)


def mixture(*terms) -> float:
    """log sum of weight * exp(score) over (weight, score) pairs."""
    return float(np.log(sum(weight * np.exp(score) for weight, score in terms)))


def test_passage_scores_aggregate_each_view_then_mix_the_views():
    log_likelihoods = jnp.asarray([[[-1.0, -2.0, -3.0, -9.0], [-4.0, -5.0, -6.0, -7.0]]])  # [1, 2 slots, 4 rows]
    views = jnp.asarray([[[0, 1, 3, 3], [1, 3, -1, -1]]])  # slot 1: no title, two empty rows
    maximum = stage2.passage_scores(log_likelihoods, views, WEIGHTS, "max")
    np.testing.assert_allclose(maximum, [[mixture((1.0, -1.0), (0.5, -2.0), (2.0, -3.0)),
                                          mixture((0.5, -4.0), (2.0, -5.0))]], rtol=1e-6)
    summed = stage2.passage_scores(log_likelihoods, views, WEIGHTS, "logsumexp")
    spans = np.log(np.exp(-3.0) + np.exp(-9.0))
    np.testing.assert_allclose(summed, [[mixture((1.0, -1.0), (0.5, -2.0), (2.0, spans)),
                                         mixture((0.5, -4.0), (2.0, -5.0))]], rtol=1e-6)
    gradient = jax.grad(lambda ll: stage2.passage_scores(ll, views, WEIGHTS, "max").sum())(log_likelihoods)
    # d s / d r_v = w_v exp(r_v) / sum_u w_u exp(r_u): each view's share of the mixture; empty rows get none
    first = np.asarray([1.0 * np.exp(-1.0), 0.5 * np.exp(-2.0), 2.0 * np.exp(-3.0)])
    second = np.asarray([0.5 * np.exp(-4.0), 2.0 * np.exp(-5.0)])
    np.testing.assert_allclose(gradient, [[[*(first / first.sum()), 0.0], [*(second / second.sum()), 0.0, 0.0]]],
                               rtol=1e-5, atol=1e-7)


# slots of one query: [top positive, random positive, negative n1, negative n2]
SCORES = jnp.asarray([[-1.0, -3.0, -2.0, -4.0]])
TEACHER = jnp.asarray([[0.5, 0.1, 0.2, 0.9]])
SLOTS = {"teacher": TEACHER, "valid": jnp.ones((1, 4), bool), "positive": jnp.asarray([[True, True, False, False]])}


def test_pinned_ranknet_averages_two_lists_with_a_positive_before_teacher_ordered_negatives():
    chosen = settings(list_kind="pinned", loss="ranknet", base_margin=1.0, gap_margin=0.5, first_weight=3.0)
    (total, count), (ordered, mask, teacher) = stage2.rank_loss(SCORES, SLOTS, chosen, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(ordered, [[-1.0, -4.0, -2.0], [-3.0, -4.0, -2.0]])  # n2 (teacher 0.9) before n1
    np.testing.assert_allclose(teacher, [[0.5, 0.9, 0.2], [0.1, 0.9, 0.2]])
    # list 1: (0,2) 3 * (-2 + 1 + 1 + 0.5) = 1.5, (1,2) 1/2 * (-2 + 4 + 1) = 1.5 -> 3.0 / 2 violated pairs = 1.5
    # list 2: (0,1) -4 + 3 + 1 = 0 is not violated; (0,2) 3 * 2.5 = 7.5, (1,2) 1.5 -> 9.0 / 2 = 4.5
    assert (float(total), float(count)) == pytest.approx((1.5 + 4.5, 2.0))
    (violated, pairs), (correct, _) = stage2.pair_metrics(ordered, mask, chosen)
    assert (float(violated), float(correct), float(pairs)) == (4.0, 3.0, 6.0)


def test_teacher_order_ranknet_and_listwise_kl_use_the_full_teacher_order():
    chosen = settings(list_kind="teacher_order", loss="ranknet", base_margin=1.0, gap_margin=0.5, first_weight=3.0)
    (total, count), (ordered, _, _) = stage2.rank_loss(SCORES, SLOTS, chosen, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(ordered, [[-4.0, -1.0, -2.0, -3.0]])  # teacher 0.9, 0.5, 0.2, 0.1
    # violated: (0,1) 3 * 4 = 12, (0,2) 3 * 3.5 = 10.5, (0,3) 3 * 3 = 9; the rest are <= 0 -> 31.5 / 3
    assert (float(total), float(count)) == pytest.approx((10.5, 1.0))
    kl = settings(list_kind="teacher_order", loss="listwise_kl", temperature=2.0, teacher_temperature=0.5)
    (total, count), _ = stage2.rank_loss(SCORES, SLOTS, kl, jax.random.PRNGKey(0))
    p = np.exp(np.asarray(TEACHER[0]) / 0.5) / np.exp(np.asarray(TEACHER[0]) / 0.5).sum()
    q = np.exp(np.asarray(SCORES[0]) / 2.0) / np.exp(np.asarray(SCORES[0]) / 2.0).sum()
    assert (float(total), float(count)) == pytest.approx((float(np.sum(p * np.log(p / q))), 1.0), rel=1e-5)


def test_ltrgr_pairs_the_top_and_the_random_positive_with_negatives():
    chosen = settings(list_kind="pinned", loss="ltrgr", margin=1.0)
    slots = {**SLOTS, "valid": jnp.asarray([[True, True, True, False]])}  # one negative: n1 is the random one
    (total, count), _ = stage2.rank_loss(SCORES, slots, chosen, jax.random.PRNGKey(3))
    # top pair: max(0, s(n1) - s(p_top) + 1) = max(0, -2 + 1 + 1) = 0; random pair: max(0, -2 + 3 + 1) = 2
    assert (float(total), float(count)) == (2.0, 1.0)


@pytest.fixture(scope="module")
def tiny_model():
    t5_config = dgr_task.model_config(dgr_config.get_config("tiny"), None)
    model = T5(t5_config)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.ones((1, 6), jnp.int32), jnp.ones((1, 5), jnp.int32))
                      ["params"])
    return model, params, t5_config


def test_batched_identifier_scores_equal_one_forward_pass_per_identifier(tiny_model):
    model, params, t5_config = tiny_model
    rng = np.random.default_rng(0)
    queries = np.asarray([[5, 9, 7, 1, 0, 0], [8, 3, 4, 6, 2, 1]], np.int32)  # [2, 6], the first one padded
    tokens = np.zeros((2, 3, 2, 5), np.int32)  # [batch, slots, rows, tokens]
    for index in np.ndindex(2, 3, 2):
        if index != (1, 2, 1) and index != (0, 1, 1):  # two empty rows
            length = rng.integers(1, 5)
            tokens[index][:length] = rng.integers(3, 64, length)
            tokens[index][length] = t5_config.eos_token_id
    apply = jax.jit(lambda query, decoder_inputs: model.apply({"params": params}, query, decoder_inputs))
    sums, lengths = np.zeros((2, 3, 2)), np.ones((2, 3, 2))
    for b, s, r in np.ndindex(2, 3, 2):
        target = tokens[b, s, r][tokens[b, s, r] != 0][None]  # [1, its own length]: one forward per identifier
        if target.size:
            logits = apply(queries[b:b + 1], shift_right(jnp.asarray(target), t5_config.decoder_start_token_id))
            token_ll = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits))[0], target[0][:, None], 1)
            sums[b, s, r], lengths[b, s, r] = token_ll.sum(), target.size
    for normalize, expected in ((False, sums), (True, sums / lengths)):
        batched, _, _, _ = stage2.identifier_log_likelihoods(model, params, jnp.asarray(queries), jnp.asarray(tokens),
                                                             t5_config, length_normalize=normalize)
        np.testing.assert_allclose(np.asarray(batched), expected, atol=1e-5)

def test_identifier_rows_and_list_examples_follow_the_candidates():
    tokenizer_ids = {"a": (5, 1), "b": (6, 7, 1), "0": (3, 1), "1": (4, 1), "2": (8, 1), "s": (9, 1)}
    identifier_set = identifiers.IdentifierSet((
        identifiers.Identifier("title", "a", ("d0", "d1"), tokenizer_ids["a"]),
        identifiers.Identifier("title", "b", ("d2",), tokenizer_ids["b"]),
        identifiers.Identifier("atomic", "0", ("d0",), tokenizer_ids["0"]),
        identifiers.Identifier("atomic", "1", ("d1",), tokenizer_ids["1"]),
        identifiers.Identifier("atomic", "2", ("d2",), tokenizer_ids["2"]),
        identifiers.Identifier("spans", "s", ("d0",), tokenizer_ids["s"])), vocab_size=16, eos_id=1)
    rows = stage2.identifier_rows(identifier_set, 3, 4, 0)
    np.testing.assert_array_equal(rows["d0"][0], [[5, 1, 0, 0], [3, 1, 0, 0], [9, 1, 0, 0]])
    np.testing.assert_array_equal(rows["d1"][1], [0, 1, -1])  # no span: an empty row
    found = candidates.Candidates(teacher={"q": {"d2": 3.0, "d1": 2.0, "d0": 1.0}, "r": {"d0": 1.0}}, student={},
                                  positives={"q": {"d0": 1, "d1": 2}, "r": {"d0": 1}},
                                  queries={"q": "query", "r": "r"}, fingerprint={})

    def tokenizer(texts, truncation, max_length):
        return {"input_ids": [[len(text), 1] for text in texts]}

    pinned = stage2.ListExamples(found, rows, tokenizer, 8, settings(list_kind="pinned", list_size=3), 0)
    assert pinned.query_ids == ["q"] and pinned.num_positive_slots == 2  # r has no negative
    example = pinned[0]
    np.testing.assert_array_equal(example["query"], [5, 1])  # the candidates' text of q ("query")
    np.testing.assert_array_equal(example["teacher"], [2.0, 1.0, 3.0, 0.0])  # d1 (gain 2), d0, then d2, padding
    np.testing.assert_array_equal(example["valid"], [True, True, True, False])
    np.testing.assert_array_equal(example["tokens"][2], rows["d2"][0])
    ordered = stage2.ListExamples(found, rows, tokenizer, 8, settings(list_kind="teacher_order", list_size=2), 0)
    np.testing.assert_array_equal(ordered[0]["positive"], [False, True])  # d2, d1 in teacher order
    assert ordered.num_positive_slots == 0


@pytest.mark.parametrize("field, value, message", [
    ("loss", "hinge", "config.distill.loss='hinge'"),
    ("list_size", 1, "config.distill.list_size=1"),
    ("list_kind", "random", "config.distill.list_kind='random'"),
    ("view_aggregation", "sum", "config.distill.view_aggregation='sum'"),
    ("temperature", 0.0, "config.distill.temperature=0.0"),
    ("candidates_dir", "", "config.distill.candidates_dir is required"),
])
def test_a_bad_distill_field_is_named_before_anything_is_read(field, value, message):
    config = dgr_config.get_config("tiny_stage2")
    config.data.beir_dir = config.identifiers.dir = "/nonexistent"
    config.distill.candidates_dir = "/nonexistent"
    config.distill[field] = value
    with pytest.raises(ConfigError, match=message):
        dgr_task.build_task(config)


def test_stage_two_needs_a_student_and_a_known_stage():
    config = dgr_config.get_config("tiny_stage2")
    config.distill.candidates_dir = config.identifiers.dir = "/nonexistent"
    with pytest.raises(ConfigError, match="config.model.init_from is required in stage 2"):
        dgr_task.build_task(config)
    config.stage = 3
    with pytest.raises(ConfigError, match="config.stage=3"):
        dgr_task.build_task(config)
    stage_one = dgr_config.get_config("tiny")
    with pytest.raises(ConfigError, match="mode candidates needs a stage-2 preset"):
        candidates.run_from_config(stage_one, "/nonexistent")
    stage_one.stage = 2
    with pytest.raises(ConfigError, match="no distill, candidates, teacher section"):
        dgr_task.build_task(stage_one)


def test_the_loss_is_the_rank_loss_plus_gen_weight_times_the_positives_generation_loss(tiny_model):
    model, params, t5_config = tiny_model
    chosen = settings(list_kind="teacher_order", loss="ranknet", list_size=3, gen_weight=0.5)
    tokens = np.zeros((1, 3, 2, 5), np.int32)  # [batch, slots, rows, tokens]: a title and an atomic row each
    tokens[0, :, :, :3] = [[[5, 6, 1], [7, 8, 1]], [[9, 10, 1], [11, 12, 1]], [[13, 14, 1], [15, 1, 0]]]
    batch = {"query": jnp.asarray([[20, 21, 22, 1]]), "tokens": jnp.asarray(tokens),
             "views": jnp.asarray([[[0, 1], [0, 1], [0, 1]]]), "teacher": jnp.asarray([[0.1, 0.9, 0.5]]),
             "valid": jnp.ones((1, 3), bool), "positive": jnp.asarray([[False, True, False]])}
    total, metrics = stage2.make_loss_fn(model, t5_config, chosen, [1.0, 1.0, 0.0, 0.0], 0)(
        params, batch, jax.random.PRNGKey(0))
    log_likelihoods = np.asarray(stage2.identifier_log_likelihoods(
        model, params, batch["query"], batch["tokens"], t5_config, length_normalize=False)[0])  # [1, 3, 2]
    gen = (-log_likelihoods[0, 1].sum(), 6.0)  # the positive's two identifiers: 3 + 3 tokens
    scores = np.logaddexp(log_likelihoods[..., 0], log_likelihoods[..., 1])  # one identifier per view, weights 1
    ordered = jnp.asarray(scores[:, [1, 2, 0]])  # teacher 0.9, 0.5, 0.1
    rank = losses.distilled_ranknet(ordered, base_margin=1.0, gap_margin=0.5, first_weight=3.0)
    np.testing.assert_allclose(metrics["gen_loss"], gen, rtol=1e-5)
    np.testing.assert_allclose(metrics["rank_loss"], rank, rtol=1e-5)
    assert float(total) == pytest.approx(float(rank[0]) / float(rank[1]) + 0.5 * gen[0] / gen[1], rel=1e-5)
