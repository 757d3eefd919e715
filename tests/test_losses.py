"""Every objective of distill_ret.losses against hand-computed values, padding that changes neither value nor
gradient, the RankNet guard, and invariants (hypothesis): padded-slot and negative permutations, softmax
shift/scale invariance, KL >= 0 with equality when the distributions match."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from distill_ret import losses

LN3 = math.log(3.0)
PAD = 17.0  # a padded slot's score: large, so that a leak into any sum would show


def value(pair):
    return float(losses.mean(pair))


def value_and_grad(fn, scores):
    """(mean of fn(scores), d mean / d scores) as numpy."""
    result, grad = jax.value_and_grad(lambda x: losses.mean(fn(x)))(jnp.asarray(scores, jnp.float32))
    return float(result), np.asarray(grad)


def assert_padding_is_invisible(fn_of_mask, scores, padded_scores, padded_mask, kept):
    """fn on padded inputs equals fn on the unpadded ones, in value and in the gradient of the kept slots; padded
    slots get exactly zero gradient. `kept` indexes the real slots in the padded arrays' last axis."""
    plain_value, plain_grad = value_and_grad(lambda x: fn_of_mask(x, None), scores)
    padded_value, padded_grad = value_and_grad(lambda x: fn_of_mask(x, jnp.asarray(padded_mask)), padded_scores)
    np.testing.assert_allclose(padded_value, plain_value, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(padded_grad[..., kept], plain_grad, rtol=1e-5, atol=1e-7)
    padded = np.ones(padded_grad.shape[-1], bool)
    padded[kept] = False
    assert np.all(padded_grad[..., padded] == 0.0)
    assert np.all(np.isfinite(padded_grad))


# --- token cross-entropy ---------------------------------------------------------------------------------------


def test_token_cross_entropy_sums_valid_tokens_only():
    # token 0: logits (0, ln 2, 0), target 1 -> p = 2/4; token 1: (ln 3, 0, 0), target 0 -> p = 3/5; token 2 is
    # padding with target -100 (never read) and huge logits.
    logits = jnp.array([[[0.0, math.log(2.0), 0.0], [LN3, 0.0, 0.0], [50.0, -50.0, 0.0]]])
    targets = jnp.array([[1, 0, -100]])
    mask = jnp.array([[True, True, False]])
    total, count = losses.token_cross_entropy(logits, targets, mask)
    np.testing.assert_allclose(float(total), math.log(2.0) + math.log(5 / 3), rtol=1e-6)
    assert float(count) == 2.0
    grad = jax.grad(lambda x: losses.token_cross_entropy(x, targets, mask)[0])(logits)
    assert np.all(np.asarray(grad)[0, 2] == 0.0)
    # d(-log softmax[t]) / d logits = softmax - onehot(t): token 0 -> (1/4, 1/2 - 1, 1/4)
    np.testing.assert_allclose(np.asarray(grad)[0, 0], [0.25, -0.5, 0.25], rtol=1e-6)


def test_token_and_sequence_accuracy_count_valid_tokens_and_nonempty_sequences():
    logits = jnp.array([
        [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]],  # argmax 1, 0, 0
        [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],  # argmax 0, 1, 1
        [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]],  # all padding
    ])
    targets = jnp.array([[1, 0, 1], [1, 1, 0], [0, 0, 0]])
    mask = jnp.array([[True, True, False], [True, True, True], [False, False, False]])
    correct, tokens = losses.token_accuracy(logits, targets, mask)
    assert (float(correct), float(tokens)) == (3.0, 5.0)  # row 0: 2 of 2 (third is padding); row 1: 1 of 3
    exact, sequences = losses.sequence_accuracy(logits, targets, mask)
    assert (float(exact), float(sequences)) == (1.0, 2.0)  # the empty row is not a sequence


# --- groups ------------------------------------------------------------------------------------------------------


def test_group_softmax_cross_entropy_with_padding_and_a_missing_positive():
    scores = jnp.array([[2.0, 1.0, 0.0, PAD], [0.0, 0.0, 3.0, 0.0], [PAD, 1.0, 2.0, 3.0]])
    mask = jnp.array([[True, True, True, False], [True, True, True, True], [False, True, True, True]])
    total, count = losses.group_softmax_cross_entropy(scores, mask)
    first = math.log(1 + math.exp(-1) + math.exp(-2))  # -log softmax(2, 1, 0)[0]
    second = math.log(3 + math.exp(3))  # -log softmax(0, 0, 3, 0)[0]
    np.testing.assert_allclose(float(total), first + second, rtol=1e-6)
    assert float(count) == 2.0  # the group without a positive does not count
    correct, groups = losses.group_accuracy(scores, mask)
    assert (float(correct), float(groups)) == (1.0, 2.0)
    tie = losses.group_accuracy(jnp.array([[1.0, 1.0]]))
    assert value(tie) == 1.0  # a tie with the positive counts as ranking it first


def test_group_softmax_cross_entropy_padding_is_invisible():
    assert_padding_is_invisible(
        losses.group_softmax_cross_entropy, [[2.0, 1.0, 0.0]], [[2.0, PAD, 1.0, -PAD, 0.0]],
        [[True, False, True, False, True]], kept=[0, 2, 4])


def test_math_is_float32_whatever_the_input_dtype():
    scores = jnp.array([[2.0, 1.0, 0.0]], jnp.bfloat16)
    total, count = losses.group_softmax_cross_entropy(scores)
    assert total.dtype == jnp.float32 and count.dtype == jnp.float32
    assert losses.listwise_kl(scores, scores)[0].dtype == jnp.float32


def test_info_nce_temperature_and_in_batch_negatives():
    # tau = 0.5: logits (2, 0) -> -log(e^2 / (e^2 + 1)) = log(1 + e^-2)
    np.testing.assert_allclose(value(losses.info_nce(jnp.array([[1.0, 0.0]]), temperature=0.5)),
                               math.log(1 + math.exp(-2)), rtol=1e-6)
    # two queries, groups of (positive, negative); cross[i, j, k] = s(q_i, d_jk)
    cross = jnp.array([[[1.0, 0.0], [2.0, 0.5]],
                       [[0.0, 1.0], [3.0, 1.0]]])
    own = jnp.array([[1.0, 0.0], [3.0, 1.0]])  # the diagonal blocks
    in_batch, in_batch_mask = losses.in_batch_negatives(cross, jnp.array([[True, True], [True, False]]))
    np.testing.assert_array_equal(in_batch, [[1.0, 0.0, 2.0, 0.5], [0.0, 1.0, 3.0, 1.0]])
    # query 0 gains d_10 (2.0) and not d_11 (padded); query 1 gains d_00 and d_01 (0.0, 1.0)
    np.testing.assert_array_equal(in_batch_mask, [[False, False, True, False], [True, True, False, False]])
    total, count = losses.info_nce(own, in_batch_scores=in_batch, in_batch_mask=in_batch_mask)
    query_0 = -math.log(math.e / (math.e + 1 + math.exp(2.0)))
    query_1 = -math.log(math.exp(3) / (math.exp(3) + math.e + 1 + math.e))
    np.testing.assert_allclose(float(total), query_0 + query_1, rtol=1e-6)
    assert float(count) == 2.0
    # excluding d_10 from query 0 (say it is the same document as its positive) leaves only its own negative
    excluded = jnp.zeros((2, 2, 2), bool).at[0, 1, 0].set(True)
    _, without = losses.in_batch_negatives(cross, jnp.ones((2, 2), bool), excluded)
    np.testing.assert_array_equal(without[0], [False, False, False, True])


# --- distribution matching ---------------------------------------------------------------------------------------


def test_listwise_kl_hand_computed_with_temperatures():
    # student (ln 3, 0) -> (3/4, 1/4), teacher (0, 0) -> (1/2, 1/2): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    student, teacher = jnp.array([[LN3, 0.0]]), jnp.array([[0.0, 0.0]])
    np.testing.assert_allclose(value(losses.listwise_kl(student, teacher)), 0.5 * math.log(4 / 3), rtol=1e-6)
    # tau = 2 on both: student (2 ln 3, 0) / 2 is the same distribution again
    np.testing.assert_allclose(value(losses.listwise_kl(2 * student, 2 * teacher, temperature=2.0)),
                               0.5 * math.log(4 / 3), rtol=1e-6)
    # teacher tempered alone: teacher (ln 3 / 2, 0) / 0.5 -> (3/4, 1/4) equals the student: KL 0
    assert abs(value(losses.listwise_kl(student, jnp.array([[LN3 / 2, 0.0]]), teacher_temperature=0.5))) < 1e-6
    # the guide loss of the cross-encoder: only the guide is tempered
    guided = losses.group_distillation_loss(student, jnp.array([[LN3 / 2, 0.0]]), 0.5)
    assert abs(value(guided)) < 1e-6
    two = losses.group_distillation_loss(jnp.array([[0.0, 0.0], [LN3, 0.0]]), jnp.array([[LN3, 0.0], [0.0, 0.0]]), 1.0)
    kl_first = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # guide (3/4, 1/4), model (1/2, 1/2)
    np.testing.assert_allclose(value(two), (kl_first + 0.5 * math.log(4 / 3)) / 2, rtol=1e-6)


def test_listwise_kl_padding_is_invisible():
    teacher = jnp.array([[0.3, -1.0, 2.0]])
    padded_teacher = jnp.array([[0.3, -PAD, -1.0, 2.0, PAD]])
    kept = [0, 2, 3]

    def padded_fn(x, mask):
        return losses.listwise_kl(x, teacher if mask is None else padded_teacher, mask, temperature=0.7)

    assert_padding_is_invisible(padded_fn, [[1.0, 0.5, -0.5]], [[1.0, PAD, 0.5, -0.5, -PAD]],
                                [[True, False, True, True, False]], kept)
    empty = losses.listwise_kl(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 0.0]]), jnp.zeros((1, 2), bool))
    assert (float(empty[0]), float(empty[1])) == (0.0, 0.0)  # a fully padded row does not count


def test_kl_distillation_eq5_counts_queries_with_a_positive():
    # tau = 2: student (2 ln 3, 0, PAD) / 2 -> (3/4, 1/4); teacher (0, 0) -> (1/2, 1/2)
    student = jnp.array([[2 * LN3, 0.0, PAD], [1.0, 2.0, 3.0]])
    teacher = jnp.array([[0.0, 0.0, -PAD], [0.0, 0.0, 0.0]])
    mask = jnp.array([[True, True, False], [False, True, True]])
    total, count = losses.kl_distillation(student, teacher, mask, temperature=2.0)
    np.testing.assert_allclose(float(total), 0.5 * math.log(4 / 3), rtol=1e-6)
    assert float(count) == 1.0


def test_fine_grained_kl_eq12_averages_valid_pieces_per_query():
    # query 0: piece 0 with two negatives, piece 1 with one (its second negative padded), piece 2 padded;
    # query 1: no valid piece.
    student = jnp.array([
        [[LN3, 0.0, 0.0], [0.0, LN3, PAD], [PAD, PAD, PAD]],
        [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]],
    ])
    teacher = jnp.array([
        [[0.0, 0.0, 0.0], [LN3, 0.0, -PAD], [-PAD, PAD, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    ])
    positive_mask = jnp.array([[True, True, False], [False, False, False]])
    negative_mask = jnp.array([[[True, True], [True, False], [True, True]], [[True, True]] * 3])
    total, count = losses.fine_grained_kl(student, teacher, positive_mask, negative_mask)
    # piece 0: teacher (1/3, 1/3, 1/3), student (3/5, 1/5, 1/5): KL = 1/3 ln(5/9) + 2/3 ln(5/3)
    piece_0 = math.log(5 / 9) / 3 + 2 * math.log(5 / 3) / 3
    # piece 1: teacher (3/4, 1/4), student (1/4, 3/4): KL = 3/4 ln 3 + 1/4 ln(1/3) = 1/2 ln 3
    piece_1 = 0.5 * LN3
    np.testing.assert_allclose(float(total), (piece_0 + piece_1) / 2, rtol=1e-6)
    assert float(count) == 1.0
    grad = jax.grad(lambda x: losses.fine_grained_kl(x, teacher, positive_mask, negative_mask)[0])(student)
    grad = np.asarray(grad)
    assert np.all(grad[0, 1, 2] == 0.0) and np.all(grad[0, 2] == 0.0) and np.all(grad[1] == 0.0)
    # d KL / d student = (softmax(student) - softmax(teacher)) / K: piece 1 -> ((1/4 - 3/4) / 2, (3/4 - 1/4) / 2)
    np.testing.assert_allclose(grad[0, 1, :2], [-0.25, 0.25], rtol=1e-5)


def test_teacher_temperature_divides_only_the_teacher_scores():
    # teacher cosines (0.1, -0.1) at tau_t = 0.1 -> logits (1, -1): p = (e / (e + 1/e), ...); student tau = 1 -> (0, 0)
    student = jnp.array([[0.0, 0.0]])
    teacher = jnp.array([[0.1, -0.1]])
    p = np.array([math.e, 1 / math.e]) / (math.e + 1 / math.e)
    expected = float(np.sum(p * np.log(p / 0.5)))
    total, _ = losses.kl_distillation(student, teacher, temperature=1.0, teacher_temperature=0.1)
    np.testing.assert_allclose(float(total), expected, rtol=1e-6)
    pieces, _ = losses.fine_grained_kl(student[:, None], teacher[:, None], jnp.ones((1, 1), bool),
                                       jnp.ones((1, 1, 1), bool), temperature=1.0, teacher_temperature=0.1)
    np.testing.assert_allclose(float(pieces), expected, rtol=1e-6)
    same = losses.fine_grained_kl(student[:, None], teacher[:, None], jnp.ones((1, 1), bool),
                                  jnp.ones((1, 1, 1), bool), temperature=0.5, teacher_temperature=None)
    both = losses.fine_grained_kl(student[:, None], teacher[:, None], jnp.ones((1, 1), bool),
                                  jnp.ones((1, 1, 1), bool), temperature=0.5, teacher_temperature=0.5)
    np.testing.assert_allclose(value(same), value(both), rtol=1e-7)  # None = the student's τ (the paper)


def test_fine_grained_kl_takes_one_negative_mask_for_every_piece():
    student = jnp.array([[[1.0, 0.0, PAD], [0.0, 2.0, -PAD]]])
    teacher = jnp.array([[[0.0, 1.0, PAD], [1.0, 1.0, PAD]]])
    per_piece = losses.fine_grained_kl(student, teacher, jnp.ones((1, 2), bool),
                                       jnp.array([[[True, False], [True, False]]]))
    shared = losses.fine_grained_kl(student, teacher, jnp.ones((1, 2), bool), jnp.array([[[True, False]]]))
    np.testing.assert_allclose(value(shared), value(per_piece), rtol=1e-7)
    first = losses.listwise_kl(student[0, :, :2], teacher[0, :, :2])  # the two pieces as plain rows
    np.testing.assert_allclose(value(shared), value(first), rtol=1e-6)


def test_listnet_hand_computed_and_equal_to_kl_plus_teacher_entropy():
    # teacher (ln 3, 0) -> (3/4, 1/4); student (0, 0) -> (1/2, 1/2): -(3/4 ln 1/2 + 1/4 ln 1/2) = ln 2
    np.testing.assert_allclose(value(losses.listnet(jnp.array([[0.0, 0.0]]), jnp.array([[LN3, 0.0]]))),
                               math.log(2.0), rtol=1e-6)
    student, teacher = jnp.array([[0.2, -1.0, 1.5, PAD]]), jnp.array([[1.0, 0.0, -0.5, PAD]])
    mask = jnp.array([[True, True, True, False]])
    probabilities = np.exp([1.0, 0.0, -0.5]) / np.exp([1.0, 0.0, -0.5]).sum()
    entropy = -float(np.sum(probabilities * np.log(probabilities)))
    np.testing.assert_allclose(value(losses.listnet(student, teacher, mask)),
                               value(losses.listwise_kl(student, teacher, mask)) + entropy, rtol=1e-5)


# --- distilled RankNet -------------------------------------------------------------------------------------------

RANKNET = dict(base_margin=1.0, gap_margin=0.5)  # first_weight stays at its default, 3


def test_distilled_ranknet_hand_computed():
    # d_ij = s_j - s_i + 1 + (j - i - 1) * 0.5 on the list (1, 2, 0.5, 0):
    #   (0,1) 2 - 1 + 1 = 2        w 3   -> 6
    #   (0,2) 0.5 - 1 + 1 + 0.5 = 1 w 3  -> 3
    #   (0,3) 0 - 1 + 1 + 1 = 1     w 3  -> 3
    #   (1,2) 0.5 - 2 + 1 = -0.5    not violated
    #   (1,3) 0 - 2 + 1 + 0.5 = -0.5 not violated
    #   (2,3) 0 - 0.5 + 1 = 0.5     w 1/3 -> 1/6
    weighted = 6 + 3 + 3 + 1 / 6
    result, grad = value_and_grad(lambda x: losses.distilled_ranknet(x, **RANKNET), [[1.0, 2.0, 0.5, 0.0]])
    np.testing.assert_allclose(result, weighted / 4, rtol=1e-6)  # mean over the 4 violated pairs
    # each violated pair adds w / 4 to s_j and takes it from s_i
    np.testing.assert_allclose(grad[0], [-9 / 4, 3 / 4, 3 / 4 - 1 / 12, 3 / 4 + 1 / 12], rtol=1e-6)
    over_all = losses.distilled_ranknet(jnp.array([[1.0, 2.0, 0.5, 0.0]]), violated_only=False, **RANKNET)
    np.testing.assert_allclose(value(over_all), weighted / 6, rtol=1e-6)  # the option: mean over all 6 pairs
    heavier = losses.distilled_ranknet(jnp.array([[1.0, 2.0, 0.5, 0.0]]), first_weight=1.0, **RANKNET)
    np.testing.assert_allclose(value(heavier), (2 + 1 + 1 + 1 / 6) / 4, rtol=1e-6)


def test_distilled_ranknet_without_a_violated_pair_is_zero_with_zero_finite_gradients():
    # (3, 2, 1), m_base 0.5, m_gap 0.25: d_01 = -0.5, d_02 = 1 - 3 + 0.5 + 0.25 = -1.25, d_12 = -0.5
    result, grad = value_and_grad(lambda x: losses.distilled_ranknet(x, base_margin=0.5, gap_margin=0.25),
                                  [[3.0, 2.0, 1.0]])
    assert result == 0.0 and np.all(grad == 0.0)
    # a pair exactly at its margin (d = 0) is not violated either
    result, grad = value_and_grad(lambda x: losses.distilled_ranknet(x, base_margin=1.0, gap_margin=0.0),
                                  [[2.0, 1.0]])
    assert result == 0.0 and np.all(grad == 0.0)
    total, count = losses.distilled_ranknet(jnp.array([[3.0, 2.0, 1.0]]), base_margin=0.5, gap_margin=0.25)
    assert float(count) == 1.0  # a satisfied list still counts in the mean over lists


def test_distilled_ranknet_padding_anywhere_is_invisible():
    assert_padding_is_invisible(
        lambda x, mask: losses.distilled_ranknet(x, mask, **RANKNET), [[1.0, 2.0, 0.5, 0.0]],
        [[PAD, 1.0, 2.0, -PAD, 0.5, 0.0, PAD]], [[False, True, True, False, True, True, False]], kept=[1, 2, 4, 5])
    single = losses.distilled_ranknet(jnp.array([[1.0, PAD]]), jnp.array([[True, False]]), **RANKNET)
    assert (float(single[0]), float(single[1])) == (0.0, 0.0)  # one valid item: no pair, the list does not count


def test_teacher_order_and_the_full_teacher_order_list():
    teacher = jnp.array([[0.5, 2.0, PAD, 0.5, 1.0]])
    mask = jnp.array([[True, True, False, True, True]])
    order = losses.teacher_order(teacher, mask)
    np.testing.assert_array_equal(order, [[1, 4, 0, 3, 2]])  # best first, the tie keeps its order, padding last
    scores, ordered_mask = losses.in_order(order, jnp.array([[10.0, 20.0, 30.0, 40.0, 50.0]]), mask)
    np.testing.assert_array_equal(scores, [[20.0, 50.0, 10.0, 40.0, 30.0]])
    np.testing.assert_array_equal(ordered_mask, [[True, True, True, True, False]])
    # RankNet over the teacher's order sends gradients back to the original positions
    student = jnp.array([[1.0, 0.0, 9.0, 2.0, 0.5]])
    grad = jax.grad(lambda x: losses.distilled_ranknet(*losses.in_order(order, x, mask), **RANKNET)[0])(student)
    direct = jax.grad(lambda x: losses.distilled_ranknet(x, **RANKNET)[0])(jnp.array([[0.0, 0.5, 1.0, 2.0]]))
    np.testing.assert_allclose(np.asarray(grad)[0, [1, 4, 0, 3]], np.asarray(direct)[0], rtol=1e-6)
    assert float(np.asarray(grad)[0, 2]) == 0.0


def test_pinned_positive_list_puts_the_positive_first_then_negatives_in_teacher_order():
    scores, mask = losses.pinned_positive_list(
        jnp.array([5.0, 1.0]), jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        jnp.array([[0.0, 9.0, 4.0], [1.0, 2.0, 3.0]]), jnp.array([[True, True, False], [True, True, True]]),
        jnp.array([True, False]))
    np.testing.assert_array_equal(scores, [[5.0, 2.0, 1.0, 3.0], [1.0, 6.0, 5.0, 4.0]])
    np.testing.assert_array_equal(mask, [[True, True, True, False], [False, True, True, True]])
    # two lists per query stacked on the batch axis: the (sum, count) mean is the average of the two list losses
    first = jnp.array([[1.0, 2.0, 0.5, 0.0]])
    second = jnp.array([[3.0, 2.0, 1.0, 0.0]])
    both = losses.distilled_ranknet(jnp.concatenate([first, second]), **RANKNET)
    np.testing.assert_allclose(value(both), (value(losses.distilled_ranknet(first, **RANKNET))
                                             + value(losses.distilled_ranknet(second, **RANKNET))) / 2, rtol=1e-6)


# --- LTRGR -------------------------------------------------------------------------------------------------------


def test_ltrgr_margin_loss_hand_computed():
    scores = [[1.0, 1.5, 0.2, 0.8, PAD]]
    positives = jnp.array([[True, False, True, False, False]])
    negatives = jnp.array([[False, True, False, True, False]])

    def loss(x, random_positive=2, random_negative=3):
        return losses.ltrgr_margin_loss(x, positives, negatives, margin=0.5,
                                        random_positive=jnp.array([random_positive]),
                                        random_negative=jnp.array([random_negative]))

    # top positive 1.0 vs hardest negative 1.5: 1.5 - 1.0 + 0.5 = 1.0; random pair (0.2, 0.8): 0.8 - 0.2 + 0.5 = 1.1
    result, grad = value_and_grad(loss, scores)
    np.testing.assert_allclose(result, 2.1, rtol=1e-6)
    np.testing.assert_array_equal(grad[0], [-1.0, 1.0, -1.0, 1.0, 0.0])
    # a random pair that points at a non-positive contributes nothing
    np.testing.assert_allclose(value_and_grad(lambda x: loss(x, random_positive=1), scores)[0], 1.0, rtol=1e-6)
    # satisfied margins give zero
    assert value_and_grad(loss, [[3.0, 1.0, 3.0, 1.0, PAD]])[0] == 0.0


def test_sample_index_draws_only_valid_positions():
    mask = jnp.array([[False, True, False, True], [True, False, False, False]])
    draws = np.stack([np.asarray(losses.sample_index(jax.random.PRNGKey(seed), mask)) for seed in range(40)])
    assert set(draws[:, 0]) == {1, 3} and set(draws[:, 1]) == {0}


# --- invariants --------------------------------------------------------------------------------------------------

LIST = 5
finite = st.floats(-4.0, 4.0, allow_nan=False, width=32)
rows = st.lists(finite, min_size=LIST, max_size=LIST)
masks = st.lists(st.booleans(), min_size=LIST, max_size=LIST).map(lambda m: [True] + m[1:])  # column 0 always real
PROPERTY = settings(max_examples=25, deadline=None)

SET_LOSSES = {  # losses whose value does not depend on the order of the negatives (columns 1..)
    "group_softmax_cross_entropy": lambda s, t, m: losses.group_softmax_cross_entropy(s, m),
    "info_nce": lambda s, t, m: losses.info_nce(s, m, temperature=0.5),
    "kl_distillation": lambda s, t, m: losses.kl_distillation(s, t, m, temperature=2.0),
    "listwise_kl": lambda s, t, m: losses.listwise_kl(s, t, m, temperature=0.5, teacher_temperature=2.0),
    "listnet": lambda s, t, m: losses.listnet(s, t, m),
}


@pytest.mark.parametrize("name", sorted(SET_LOSSES))
@PROPERTY
@given(student=rows, teacher=rows, mask=masks, permutation=st.permutations(range(1, LIST)))
def test_permuting_negatives_and_padded_slots_changes_nothing(name, student, teacher, mask, permutation):
    fn = SET_LOSSES[name]
    order = [0, *permutation]
    student, teacher, mask = (np.asarray(x)[None] for x in (student, teacher, mask))
    before = fn(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(mask))
    after = fn(jnp.asarray(student[:, order]), jnp.asarray(teacher[:, order]), jnp.asarray(mask[:, order]))
    np.testing.assert_allclose(float(after[0]), float(before[0]), rtol=1e-5, atol=1e-6)
    assert float(after[1]) == float(before[1])


@pytest.mark.parametrize("name", sorted(SET_LOSSES))
@PROPERTY
@given(student=rows, teacher=rows, mask=masks, shift=finite, teacher_shift=finite)
def test_softmax_losses_ignore_a_shift_of_either_side(name, student, teacher, mask, shift, teacher_shift):
    fn = SET_LOSSES[name]
    student, teacher, mask = (jnp.asarray(x)[None] for x in (student, teacher, mask))
    before = value(fn(student, teacher, mask))
    after = value(fn(student + shift, teacher + teacher_shift, mask))
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


@PROPERTY
@given(student=rows, teacher=rows, mask=masks, scale=st.floats(0.25, 4.0))
def test_scaling_scores_and_temperature_together_changes_nothing(student, teacher, mask, scale):
    student, teacher, mask = (jnp.asarray(x)[None] for x in (student, teacher, mask))
    for fn in (lambda s, t, tau: losses.info_nce(s, mask, temperature=tau),
               lambda s, t, tau: losses.kl_distillation(s, t, mask, temperature=tau),
               lambda s, t, tau: losses.listwise_kl(s, t, mask, temperature=tau)):
        np.testing.assert_allclose(value(fn(student * scale, teacher * scale, 0.7 * scale)),
                                   value(fn(student, teacher, 0.7)), rtol=1e-4, atol=1e-5)


@PROPERTY
@given(student=rows, teacher=rows, mask=masks)
def test_kl_is_nonnegative_and_zero_when_the_distributions_match(student, teacher, mask):
    student, teacher, mask = (jnp.asarray(x)[None] for x in (student, teacher, mask))
    assert value(losses.listwise_kl(student, teacher, mask)) >= -1e-6
    assert value(losses.kl_distillation(student, teacher, mask)) >= -1e-6
    assert abs(value(losses.listwise_kl(student, student + 1.5, mask))) < 1e-5
    assert abs(value(losses.kl_distillation(student, student, mask, temperature=0.3))) < 1e-5
    pieces_student, pieces_teacher = student.reshape(1, 1, LIST), teacher.reshape(1, 1, LIST)
    negatives = mask.reshape(1, 1, LIST)[..., 1:]
    assert value(losses.fine_grained_kl(pieces_student, pieces_teacher, jnp.ones((1, 1), bool), negatives)) >= -1e-6
    assert abs(value(losses.fine_grained_kl(pieces_student, pieces_student, jnp.ones((1, 1), bool), negatives))) < 1e-5


eighths = st.integers(-32, 32).map(lambda v: v / 8)  # exact in float32, so margins land exactly on 0 or not


@PROPERTY
@given(scores=st.lists(eighths, min_size=LIST, max_size=LIST), mask=masks, shift=eighths,
       slots=st.lists(st.integers(0, LIST), min_size=1, max_size=3))
def test_ranknet_ignores_where_padding_sits_and_a_shift_of_all_scores(scores, mask, shift, slots):
    scores, mask = np.asarray(scores, np.float32), np.asarray(mask)
    reference = value(losses.distilled_ranknet(jnp.asarray(scores)[None], jnp.asarray(mask)[None], **RANKNET))
    padded_scores, padded_mask = list(scores), list(mask)
    for slot in slots:  # insert padded slots at arbitrary positions; the valid entries keep their order
        padded_scores.insert(slot, PAD)
        padded_mask.insert(slot, False)
    padded = value(losses.distilled_ranknet(jnp.asarray([padded_scores]), jnp.asarray([padded_mask]), **RANKNET))
    np.testing.assert_allclose(padded, reference, rtol=1e-5, atol=1e-5)
    shifted = value(losses.distilled_ranknet(jnp.asarray(scores + shift)[None], jnp.asarray(mask)[None], **RANKNET))
    assert shifted == reference
