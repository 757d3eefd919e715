"""Every training objective, as pure functions of score arrays and bool validity masks.

Conventions shared by every function here:
- Scores are `[batch, list]` (fine-grained KL: `[batch, pieces, list]`) with a bool mask of the same shape, True for
  a real entry. A padded entry changes neither the value nor any gradient: masked logits become MASKED_LOGIT, a
  finite large negative (never -inf, whose arithmetic can give NaN gradients), and masked terms are selected away
  with `jnp.where`, which sends them a zero cotangent.
- The math runs in float32 whatever the input dtype.
- Each objective returns a `(sum, count)` pair (the trainer's metrics contract): the sum of a per-row loss over the
  rows that hold the objective, and the number of those rows. `mean(pair)` is the value a single batch would report;
  the trainer adds sums and counts across micro-batches before it divides.
- Tasks compose these functions; no task keeps loss math of its own.

Equation numbers refer to the FGD paper (Zhou et al., AAAI 2024, `papers/fgd_paper.md`); the distilled RankNet is
DGR's as the authors released it (DESIGN.md §3); the two-pair margin loss is LTRGR's (Li et al., AAAI 2024).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

SumCount = tuple[jax.Array, jax.Array]

MASKED_LOGIT = -1e30  # finite: exp(MASKED_LOGIT - m) == 0 for any real logit m, and no inf - inf anywhere


def mean(loss: SumCount) -> jax.Array:
    """sum / count of a `(sum, count)` pair; 0 when the count is 0."""
    total, count = loss
    return total / jnp.maximum(count, 1.0)  # []


def _sum_count(values: jax.Array, valid: jax.Array) -> SumCount:
    """(sum of `values` where `valid`, number of valid entries), float32; both arrays have the same shape."""
    total = jnp.sum(jnp.where(valid, values, 0.0))  # []
    return total, jnp.sum(valid.astype(jnp.float32))  # [], []


def _full_mask(scores: jax.Array, mask: jax.Array | None) -> jax.Array:
    """`mask` as bool, or all True in the shape of `scores` when it is None."""
    return jnp.ones(scores.shape, bool) if mask is None else mask.astype(bool)  # the shape of scores


def masked_log_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """log softmax over the last axis among the valid entries; masked entries hold about MASKED_LOGIT.

    Both arrays are [..., list]. A row without valid entries gives finite values (a uniform distribution over
    MASKED_LOGIT slots), which every caller then masks out.
    """
    logits = jnp.where(mask, logits.astype(jnp.float32), MASKED_LOGIT)  # [..., list]
    return jax.nn.log_softmax(logits, axis=-1)  # [..., list]


def _row_kl(student_logits: jax.Array, teacher_logits: jax.Array, mask: jax.Array) -> jax.Array:
    """KL(softmax(teacher) || softmax(student)) over the valid entries of the last axis; arrays [..., list]."""
    log_teacher = masked_log_softmax(teacher_logits, mask)  # [..., list]
    log_student = masked_log_softmax(student_logits, mask)  # [..., list]
    terms = jnp.exp(log_teacher) * (log_teacher - log_student)  # [..., list]
    return jnp.sum(jnp.where(mask, terms, 0.0), axis=-1)  # [...]


def _row_cross_entropy(student_logits: jax.Array, teacher_logits: jax.Array, mask: jax.Array) -> jax.Array:
    """-sum softmax(teacher) * log softmax(student) over the valid entries of the last axis; arrays [..., list]."""
    teacher = jnp.exp(masked_log_softmax(teacher_logits, mask))  # [..., list]
    log_student = masked_log_softmax(student_logits, mask)  # [..., list]
    return -jnp.sum(jnp.where(mask, teacher * log_student, 0.0), axis=-1)  # [...]


def _tempered_logits(student_scores: jax.Array, teacher_scores: jax.Array, temperature: float,
                     teacher_temperature: float | None) -> tuple[jax.Array, jax.Array]:
    """(student / τ, teacher / τ_t) in float32, same shapes; τ_t = None means τ."""
    teacher_temperature = temperature if teacher_temperature is None else teacher_temperature
    return (student_scores.astype(jnp.float32) / temperature, teacher_scores.astype(jnp.float32) / teacher_temperature)


def _hinge(values: jax.Array) -> jax.Array:
    """max(0, x) with gradient 0 at x = 0 (so a pair exactly at its margin sends no gradient)."""
    return jnp.where(values > 0.0, values, 0.0)  # the shape of values


def _gather(values: jax.Array, index: jax.Array) -> jax.Array:
    """values[b, index[b]] for values [batch, list] and index [batch] int -> [batch]."""
    return jnp.take_along_axis(values, index[:, None], axis=-1)[:, 0]  # [batch]


# --- token level -------------------------------------------------------------------------------------------------


def token_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> SumCount:
    """(sum of -log softmax(logits)[target] over valid tokens, number of valid tokens).

    logits [batch, length, vocab], targets [batch, length] int, mask [batch, length] bool. Targets under the mask
    may be anything (pad ids, -100): they are never read.
    """
    logits = logits.astype(jnp.float32)  # [batch, length, vocab]
    safe_targets = jnp.where(mask, targets, 0)  # [batch, length]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, safe_targets)  # [batch, length]
    return _sum_count(nll, mask)


def token_accuracy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> SumCount:
    """(valid tokens whose argmax is the target, valid tokens); shapes as in `token_cross_entropy`."""
    correct = jnp.argmax(logits, axis=-1) == targets  # [batch, length]
    return _sum_count(correct.astype(jnp.float32), mask)


def sequence_accuracy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> SumCount:
    """(sequences whose every valid token is predicted exactly, sequences with at least one valid token)."""
    wrong = (jnp.argmax(logits, axis=-1) != targets) & mask  # [batch, length]
    exact = ~jnp.any(wrong, axis=-1)  # [batch]
    return _sum_count(exact.astype(jnp.float32), jnp.any(mask, axis=-1))


# --- groups: one positive and its negatives ----------------------------------------------------------------------


def group_softmax_cross_entropy(scores: jax.Array, mask: jax.Array | None = None) -> SumCount:
    """Softmax cross-entropy with the positive in column 0: per group `-log softmax(scores)[0]` over valid entries.

    This is FGD eq. 3 with τ = 1 and no in-batch negatives (`info_nce` adds both). scores [batch, group], mask
    [batch, group] (None: all valid). Groups whose positive is padded do not count.
    """
    mask = _full_mask(scores, mask)  # [batch, group]
    row_losses = -masked_log_softmax(scores, mask)[:, 0]  # [batch]
    return _sum_count(row_losses, mask[:, 0])


def group_accuracy(scores: jax.Array, mask: jax.Array | None = None) -> SumCount:
    """(groups whose positive, column 0, has the highest valid score (ties count as first), groups with a positive)."""
    mask = _full_mask(scores, mask)  # [batch, group]
    masked = jnp.where(mask, scores.astype(jnp.float32), MASKED_LOGIT)  # [batch, group]
    first = (jnp.argmax(masked, axis=-1) == 0).astype(jnp.float32)  # [batch]
    return _sum_count(first, mask[:, 0])


def in_batch_negatives(
    cross_scores: jax.Array, mask: jax.Array, excluded: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Every other example's documents as extra negatives of each query, for `info_nce(in_batch_scores=...)`.

    cross_scores [batch, batch, group]: s(q_i, d_jk), query i against document k of example j (e.g.
    `einsum("id,jkd->ijk", queries, documents)`); mask [batch, group]: which documents of example j are real.
    excluded [batch, batch, group] bool (optional): True where d_jk must not be a negative of q_i (it is one of
    q_i's positives, or the same document as q_i's positive). Query i's own group (j == i) is always left out,
    since `info_nce` already holds it. Returns (scores [batch, batch * group], mask [batch, batch * group]).
    """
    batch, _, group = cross_scores.shape
    other = ~jnp.eye(batch, dtype=bool)[:, :, None]  # [batch, batch, 1]
    valid = other & mask.astype(bool)[None, :, :]  # [batch, batch, group]
    if excluded is not None:
        valid = valid & ~excluded.astype(bool)  # [batch, batch, group]
    return cross_scores.reshape(batch, batch * group), valid.reshape(batch, batch * group)  # [b, b * group] each


def info_nce(
    scores: jax.Array,
    mask: jax.Array | None = None,
    *,
    temperature: float = 1.0,
    in_batch_scores: jax.Array | None = None,
    in_batch_mask: jax.Array | None = None,
) -> SumCount:
    """InfoNCE (FGD eq. 3 with the distribution of eq. 2): per query `-log p(d+)`, where

    p(d) = exp(s(q, d) / τ) / Σ_{d' ∈ {d+} ∪ N} exp(s(q, d') / τ),

    N = the query's own negatives (columns 1.. of `scores`, [batch, 1 + negatives], positive in column 0, `mask`
    the same shape) plus, optionally, `in_batch_scores` [batch, extra] with `in_batch_mask` (see
    `in_batch_negatives`). The paper sets τ = 1 and sums over queries; the sum here goes with the count of
    queries whose positive is valid.
    """
    mask = _full_mask(scores, mask)  # [batch, 1 + negatives]
    if in_batch_scores is not None:
        extra_mask = _full_mask(in_batch_scores, in_batch_mask)  # [batch, extra]
        extra_scores = in_batch_scores.astype(jnp.float32)  # [batch, extra]
        scores = jnp.concatenate([scores.astype(jnp.float32), extra_scores], axis=-1)  # [batch, 1 + n + extra]
        mask = jnp.concatenate([mask, extra_mask], axis=-1)  # [batch, 1 + n + extra]
    logits = scores.astype(jnp.float32) / temperature  # [batch, 1 + negatives (+ extra)]
    return group_softmax_cross_entropy(logits, mask)


# --- distribution matching ---------------------------------------------------------------------------------------


def listwise_kl(
    student_scores: jax.Array,
    teacher_scores: jax.Array,
    mask: jax.Array | None = None,
    *,
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
) -> SumCount:
    """Listwise KL: per row KL(softmax(teacher / τ_t) || softmax(student / τ)) over the valid entries.

    KL(p || q) = Σ_i p_i (log p_i - log q_i). Scores [batch, list], mask [batch, list]; τ_t defaults to τ. Rows
    with at least one valid entry count. No τ² factor is applied (the caller scales if it wants Hinton's).
    """
    mask = _full_mask(student_scores, mask)  # [batch, list]
    student_logits, teacher_logits = _tempered_logits(student_scores, teacher_scores, temperature,
                                                      teacher_temperature)  # [batch, list] each
    return _sum_count(_row_kl(student_logits, teacher_logits, mask), jnp.any(mask, axis=-1))


def group_distillation_loss(
    scores: jax.Array, guide_scores: jax.Array, temperature: float, mask: jax.Array | None = None
) -> SumCount:
    """The cross-encoder's guide loss: per group KL(softmax(guide_scores / temperature) || softmax(scores)).

    Only the guide is tempered; scores, guide_scores and mask are [batch, group].
    """
    return listwise_kl(scores, guide_scores, mask, temperature=1.0, teacher_temperature=temperature)


def kl_distillation(
    student_scores: jax.Array,
    teacher_scores: jax.Array,
    mask: jax.Array | None = None,
    *,
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
) -> SumCount:
    """Document-level distillation (FGD eq. 5): per query KL(p_ce || p_be) over {d+} ∪ N.

    p_be = softmax(s_be / τ) and p_ce = softmax(s_ce / τ_t) as in eq. 2, where τ_t = `teacher_temperature` and
    defaults to τ (the paper: one τ for both; a teacher on another scale, e.g. cosines, needs its own). The paper
    writes KL-Div(p_be || p_ce) in the argument order of PyTorch's `kl_div(student log-probs, teacher probs)`, which
    computes Σ p_ce (log p_ce - log p_be): that direction is the one implemented. Scores [batch, 1 + negatives],
    positive in column 0; queries whose positive is valid count.
    """
    mask = _full_mask(student_scores, mask)  # [batch, 1 + negatives]
    student_logits, teacher_logits = _tempered_logits(student_scores, teacher_scores, temperature,
                                                      teacher_temperature)  # [batch, 1 + negatives] each
    return _sum_count(_row_kl(student_logits, teacher_logits, mask), mask[:, 0])


def fine_grained_kl(
    student_scores: jax.Array,
    teacher_scores: jax.Array,
    positive_mask: jax.Array,
    negative_mask: jax.Array,
    *,
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
) -> SumCount:
    """Fine-grained distillation of one granularity (FGD eq. 12, the inner (1/K^j) Σ_k of one j):

    per query, (1 / K) Σ_k KL(p_ce_k || p_be_k) over its K valid positive pieces, where p_k = softmax(s / τ) over
    {positive piece k} ∪ its negative pieces N_k (eq. 10; the teacher's scores divided by `teacher_temperature`,
    default τ, as in `kl_distillation`), and KL's direction is as in `kl_distillation`.

    student_scores, teacher_scores [batch, pieces, 1 + negatives]: row k holds piece k of the positive document in
    column 0 and its negative pieces after it. positive_mask [batch, pieces]: which pieces exist; negative_mask
    [batch, pieces, negatives] (or broadcastable to it): which negatives exist. Queries with at least one valid
    piece count; the caller sums the granularities (passages, sentences).
    """
    positive_mask = positive_mask.astype(bool)  # [batch, pieces]
    negatives_shape = student_scores.shape[:-1] + (student_scores.shape[-1] - 1,)
    negative_mask = jnp.broadcast_to(negative_mask.astype(bool), negatives_shape)  # [batch, pieces, negatives]
    negative_mask = negative_mask & positive_mask[..., None]  # [batch, pieces, negatives]
    mask = jnp.concatenate([positive_mask[..., None], negative_mask], axis=-1)  # [batch, pieces, 1 + negatives]
    student_logits, teacher_logits = _tempered_logits(student_scores, teacher_scores, temperature,
                                                      teacher_temperature)  # [batch, pieces, 1 + negatives] each
    piece_kl = jnp.where(positive_mask, _row_kl(student_logits, teacher_logits, mask), 0.0)  # [batch, pieces]
    num_pieces = jnp.sum(positive_mask.astype(jnp.float32), axis=-1)  # [batch]
    per_query = jnp.sum(piece_kl, axis=-1) / jnp.maximum(num_pieces, 1.0)  # [batch]
    return _sum_count(per_query, num_pieces > 0)


def listnet(student_scores: jax.Array, teacher_scores: jax.Array, mask: jax.Array | None = None) -> SumCount:
    """ListNet (top-one probabilities): per row -Σ_i softmax(teacher)_i log softmax(student)_i over valid entries.

    Equals listwise KL plus the teacher's entropy (same gradient, different value). Scores [batch, list]; rows with
    at least one valid entry count.
    """
    mask = _full_mask(student_scores, mask)  # [batch, list]
    row_losses = _row_cross_entropy(student_scores.astype(jnp.float32), teacher_scores.astype(jnp.float32), mask)  # [b]
    return _sum_count(row_losses, jnp.any(mask, axis=-1))


# --- rank lists (DGR) --------------------------------------------------------------------------------------------


def distilled_ranknet(
    scores: jax.Array,
    mask: jax.Array | None = None,
    *,
    base_margin: float,
    gap_margin: float,
    first_weight: float = 3.0,
    violated_only: bool = True,
) -> SumCount:
    """DGR's distilled RankNet as the authors released it (DESIGN.md §3).

    For a rank list p_0 … p_{n-1} ordered best first (scores [batch, list] in that order, mask [batch, list];
    ranks count valid entries only, so padded slots may sit anywhere), every pair i < j contributes

        d_ij = max(0, s_j - s_i + m_base + (j - i - 1) · m_gap),
        weighted by w_0j = first_weight and w_ij = 1 / (i + 1) for i ≥ 1.

    List loss = Σ_{i<j} w_ij d_ij / |{(i, j): d_ij > 0}| (the mean over violated pairs, as released), or with
    `violated_only=False` the same sum over the number of valid pairs. A list with no violated pair gives 0 with
    zero (finite) gradients where the released code divides by zero. Lists with at least one valid pair count.
    """
    mask = _full_mask(scores, mask)  # [batch, list]
    scores = scores.astype(jnp.float32)  # [batch, list]
    rank = jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1  # [batch, list]: position among valid entries
    rank = jnp.maximum(rank, 0)  # [batch, list]: padding before the first valid entry (rank -1) would give 1 / 0
    rank_i, rank_j = rank[:, :, None], rank[:, None, :]  # [batch, list, 1], [batch, 1, list]
    pair_valid = mask[:, :, None] & mask[:, None, :] & (rank_i < rank_j)  # [batch, list, list]
    gap = (rank_j - rank_i - 1).astype(jnp.float32)  # [batch, list, list]
    margins = scores[:, None, :] - scores[:, :, None] + base_margin + gap * gap_margin  # [batch, list(i), list(j)]
    weights = jnp.where(rank_i == 0, first_weight, 1.0 / (rank_i + 1).astype(jnp.float32))  # [batch, list, 1]
    violated = pair_valid & (margins > 0.0)  # [batch, list, list]
    weighted = jnp.where(violated, weights * _hinge(margins), 0.0)  # [batch, list, list]
    counted = violated if violated_only else pair_valid  # [batch, list, list]
    num_pairs = jnp.sum(counted.astype(jnp.float32), axis=(1, 2))  # [batch]
    list_losses = jnp.sum(weighted, axis=(1, 2)) / jnp.maximum(num_pairs, 1.0)  # [batch]
    return _sum_count(list_losses, jnp.any(pair_valid, axis=(1, 2)))


def teacher_order(teacher_scores: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Indices [batch, list] that sort each row by teacher score, best first; ties keep their order, padding last."""
    mask = _full_mask(teacher_scores, mask)  # [batch, list]
    keys = jnp.where(mask, -teacher_scores.astype(jnp.float32), jnp.inf)  # [batch, list]
    return jnp.argsort(keys, axis=-1, stable=True)  # [batch, list]


def in_order(order: jax.Array, scores: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(scores, mask) rearranged so that position r holds entry order[b, r]; all arrays [batch, list].

    The full-teacher-order list: `in_order(teacher_order(teacher_scores, mask), scores, mask)`, or an order the
    teacher gave as indices. Gradients flow back to the original positions.
    """
    mask = _full_mask(scores, mask)  # [batch, list]
    return jnp.take_along_axis(scores, order, axis=-1), jnp.take_along_axis(mask, order, axis=-1)  # [b, list] each


def pinned_positive_list(
    positive_scores: jax.Array,
    negative_scores: jax.Array,
    negative_teacher_scores: jax.Array,
    negative_mask: jax.Array | None = None,
    positive_mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """DGR's list with a pinned positive: the positive at rank 0, then the negatives in teacher order.

    positive_scores [batch], negative_scores and negative_teacher_scores [batch, negatives], masks the same shapes
    (None: all valid). Returns (scores [batch, 1 + negatives], mask [batch, 1 + negatives]) for
    `distilled_ranknet`. DGR averages two such lists per query (its top positive and a random positive): stack
    them along the batch axis and the (sum, count) of `distilled_ranknet` is that average.
    """
    negative_mask = _full_mask(negative_scores, negative_mask)  # [batch, negatives]
    positive_mask = _full_mask(positive_scores, positive_mask)  # [batch]
    order = teacher_order(negative_teacher_scores, negative_mask)  # [batch, negatives]
    negatives, negatives_mask = in_order(order, negative_scores, negative_mask)  # [batch, negatives] each
    scores = jnp.concatenate([positive_scores[:, None], negatives.astype(positive_scores.dtype)], axis=-1)  # [b, 1 + n]
    return scores, jnp.concatenate([positive_mask[:, None], negatives_mask], axis=-1)  # [batch, 1 + negatives] each


def sample_index(rng: jax.Array, mask: jax.Array) -> jax.Array:
    """One valid position per row, uniformly ([batch] int from mask [batch, list]); arbitrary for an empty row."""
    logits = jnp.where(mask, 0.0, MASKED_LOGIT)  # [batch, list]
    return jax.random.categorical(rng, logits, axis=-1)  # [batch]


def ltrgr_margin_loss(
    scores: jax.Array,
    positive_mask: jax.Array,
    negative_mask: jax.Array,
    *,
    margin: float,
    random_positive: jax.Array,
    random_negative: jax.Array,
) -> SumCount:
    """LTRGR's rank loss (Li et al., AAAI 2024, "Learning to Rank in Generative Retrieval"): two margin pairs.

    Per list, L = max(0, s(n*) - s(p*) + m) + max(0, s(ñ) - s(p̃) + m), where p* and n* are the positive and the
    negative the model currently scores highest (the top-ranked positive and the hardest negative of its rank
    list), and p̃, ñ a random positive and a random negative (indices `random_positive`, `random_negative`
    [batch], e.g. from `sample_index`; a pair whose index points at an invalid entry contributes 0).

    scores [batch, list]; positive_mask and negative_mask [batch, list] mark the valid positives and negatives.
    Lists with at least one positive and one negative count.
    """
    scores = scores.astype(jnp.float32)  # [batch, list]
    positive_mask, negative_mask = positive_mask.astype(bool), negative_mask.astype(bool)  # [batch, list] each
    top_positive = jnp.argmax(jnp.where(positive_mask, scores, MASKED_LOGIT), axis=-1)  # [batch]
    hardest_negative = jnp.argmax(jnp.where(negative_mask, scores, MASKED_LOGIT), axis=-1)  # [batch]
    top_pair = _hinge(_gather(scores, hardest_negative) - _gather(scores, top_positive) + margin)  # [batch]
    random_valid = _gather(positive_mask, random_positive) & _gather(negative_mask, random_negative)  # [batch]
    random_pair = _hinge(_gather(scores, random_negative) - _gather(scores, random_positive) + margin)  # [batch]
    list_losses = top_pair + jnp.where(random_valid, random_pair, 0.0)  # [batch]
    return _sum_count(list_losses, jnp.any(positive_mask, axis=-1) & jnp.any(negative_mask, axis=-1))
