"""Task `dgr`, stage 2 (`config.stage = 2`): the student distils a teacher's ranking of its own candidates
(DESIGN §3). `dgr.task.build_task` reads the candidates (`dgr.candidates.read_candidates`) and builds the task from
the parts here.

Examples (`ListExamples`, one per query of the candidates with a positive and a negative, judged or pseudo (the
query texts are the candidates'); sorted ids):
`config.distill.list_kind`
- "pinned" (as released): slots for every judged positive of the query (best first: gain, then teacher score, then
  id) followed by its `list_size - 1` best negatives in teacher order. Each step draws one random positive per query
  (`losses.sample_index`) and scores [top positive, random positive, negatives]; the two lists "top positive pinned
  at rank 0, then the negatives in teacher order" and "random positive pinned, then the same negatives"
  (`losses.pinned_positive_list`) are stacked, so the rank loss's (sum, count) is their average;
- "teacher_order": the query's top `list_size` passages in teacher order, positives wherever the teacher put them.

Passage score s(q, p): every identifier of p (each view with weight > 0; at most `max_identifiers_per_view` per view,
the first ones in the identifiers file's order) is teacher-forced; its log-likelihood (divided by its token count
when `length_normalize`) is aggregated per view by `view_aggregation` (max or logsumexp) and the views are mixed
with their weights, s = log sum_v w_v exp(r_v) (a view in which p has no identifier adds nothing), as mode retrieve
scores decoded identifiers.
One forward pass per batch: each query is encoded once and its encoder states are repeated for the identifier rows
of all its passages; the decoder runs over [queries x passages x identifiers, identifier tokens].

Loss L = L_rank + gen_weight * L_gen (each the mean of its (sum, count) pair). L_rank by `config.distill.loss`:
"ranknet" (`losses.distilled_ranknet`: base_margin, gap_margin, first_weight, violated_only) over the ranked lists;
"ltrgr" (`losses.ltrgr_margin_loss`, margin: the top and a random positive against the hardest and a random
negative); "listnet" / "listwise_kl" against the candidate file's teacher scores (student scores / temperature,
teacher scores / teacher_temperature). Margins are in log-likelihood units. L_gen is stage 1's generation loss
(`losses.token_cross_entropy`) on the identifiers of the positives scored in the step (the pinned positives; the
positives in a teacher-order list), read from the same logits. Metrics, as (sum, count): rank_loss, gen_loss,
violated_pairs (pairs i < j of the ranked lists with s_j - s_i + base_margin + (j - i - 1) gap_margin > 0) and
pair_accuracy (pairs with s_i > s_j).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill_ret import losses
from distill_ret.dgr import candidates as candidates_lib
from distill_ret.dgr import identifiers
from distill_ret.errors import ConfigError, section_integer, section_number
from distill_ret.models.t5 import T5, T5Config, shift_right

LIST_KINDS = ("pinned", "teacher_order")
RANK_LOSSES = ("ranknet", "ltrgr", "listnet", "listwise_kl")
VIEW_AGGREGATIONS = ("max", "logsumexp")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The `config.distill` fields (validated by `settings_from_config`)."""

    candidates_dir: str
    list_size: int
    list_kind: str
    max_identifiers_per_view: int
    length_normalize: bool
    view_aggregation: str
    gen_weight: float
    loss: str
    base_margin: float
    gap_margin: float
    first_weight: float
    violated_only: bool
    margin: float
    temperature: float
    teacher_temperature: float


def _choice(section: Any, name: str, choices: tuple[str, ...]) -> str:
    value = section.get(name)
    if value not in choices:
        raise ConfigError(f"config.distill.{name}={value!r}: must be one of {choices}")
    return value


def _flag(section: Any, name: str) -> bool:
    value = section.get(name)
    if not isinstance(value, bool):
        raise ConfigError(f"config.distill.{name}={value!r}: must be True or False")
    return value


def check_sections(config: Any) -> None:
    """A stage-2 config has the sections stage 2 reads (ConfigError naming the missing ones)."""
    missing = [name for name in ("distill", "candidates", "teacher") if name not in config]
    if missing:
        raise ConfigError(f"config.stage=2: the config has no {', '.join(missing)} section; start from a stage-2 "
                          "preset (configs/dgr.py:cranfield_stage2, pydocs_stage2, tiny_stage2)")


def settings_from_config(section: Any) -> Settings:
    """`config.distill` checked field by field (ConfigError naming the field)."""
    if not section.get("candidates_dir"):
        raise ConfigError("config.distill.candidates_dir is required in stage 2 (mode candidates' output)")
    path = "config.distill"
    return Settings(
        candidates_dir=str(section.candidates_dir), list_size=section_integer(section, path, "list_size", 2),
        list_kind=_choice(section, "list_kind", LIST_KINDS),
        max_identifiers_per_view=section_integer(section, path, "max_identifiers_per_view", 1),
        length_normalize=_flag(section, "length_normalize"),
        view_aggregation=_choice(section, "view_aggregation", VIEW_AGGREGATIONS),
        gen_weight=section_number(section, path, "gen_weight", 0), loss=_choice(section, "loss", RANK_LOSSES),
        base_margin=section_number(section, path, "base_margin", 0),
        gap_margin=section_number(section, path, "gap_margin", 0),
        first_weight=section_number(section, path, "first_weight", 0, exclusive=True),
        violated_only=_flag(section, "violated_only"), margin=section_number(section, path, "margin", 0),
        temperature=section_number(section, path, "temperature", 0, exclusive=True),
        teacher_temperature=section_number(section, path, "teacher_temperature", 0, exclusive=True))


# ------------------------------------------------------------------------------------------------ examples


def identifier_rows(identifier_set: identifiers.IdentifierSet, max_per_view: int, max_tokens: int, pad_id: int
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """passage id -> (tokens [rows, max_tokens] int32, view index [rows] int32, -1 = empty row). Every passage has
    the same rows: per view with weight > 0 (VIEWS order), min(max_per_view, most identifiers a passage has in that
    view) slots, filled with the passage's first identifiers of that view in the identifier set's order."""
    per_view: dict[str, dict[int, list[int]]] = {}
    for index, identifier in enumerate(identifier_set.identifiers):
        view = identifiers.VIEWS.index(identifier.view)
        for passage in identifier.passages:
            per_view.setdefault(passage, {}).setdefault(view, []).append(index)
    views = sorted({view for by_view in per_view.values() for view in by_view})
    caps = {view: min(max_per_view, max(len(by_view.get(view, [])) for by_view in per_view.values()))
            for view in views}
    rows = {}
    for passage, by_view in per_view.items():
        tokens = np.full((sum(caps.values()), max_tokens), pad_id, np.int32)  # [rows, max_tokens]
        row_views = np.full(len(tokens), -1, np.int32)  # [rows]
        start = 0
        for view in views:
            for offset, index in enumerate(by_view.get(view, [])[:caps[view]]):
                ids = identifier_set.identifiers[index].tokens
                tokens[start + offset, :len(ids)] = ids
                row_views[start + offset] = view
            start += caps[view]
        rows[passage] = (tokens, row_views)
    return rows


class ListExamples:
    """Random-access source: one example per query -> {"query": [n] int32 ids, "tokens": [slots, rows, max_tokens],
    "views": [slots, rows], "teacher": [slots] float32 teacher scores, "valid": [slots] bool, "positive": [slots]
    bool}. Pinned: slots = the most positives of any query, then list_size - 1 negatives; teacher order: list_size."""

    def __init__(self, found: candidates_lib.Candidates, rows: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 tokenizer, max_input_length: int, settings: Settings, pad_id: int):
        self.settings = settings
        teacher, positives = found.teacher, found.positives
        self.query_ids = [qid for qid in sorted(positives)
                          if any(doc not in positives[qid] for doc in teacher.get(qid, {}))]
        self.lists = {qid: self._slots(teacher[qid], positives[qid]) for qid in self.query_ids}
        self.num_positive_slots = (max(len(positives[qid]) for qid in self.query_ids)
                                   if settings.list_kind == "pinned" and self.query_ids else 0)
        texts = [found.queries[qid] for qid in self.query_ids]
        encoded = tokenizer(texts, truncation=True, max_length=max_input_length)["input_ids"] if texts else []
        self._queries = [np.asarray(ids, np.int32) for ids in encoded]
        self._teacher, self._positives, self._rows = teacher, positives, rows
        tokens, views = next(iter(rows.values()))
        self._empty = (np.full_like(tokens, pad_id), np.full_like(views, -1))  # a padding slot's rows

    def _slots(self, scores: Mapping[str, float], positives: Mapping[str, int]) -> tuple[list[str], list[str]]:
        """(positive slots, list slots) of one query; passage ids, best first."""
        size = self.settings.list_size
        if self.settings.list_kind == "teacher_order":
            return [], list(scores)[:size]
        top = sorted(positives, key=lambda doc: (-positives[doc], -scores[doc], doc))
        return top, [doc for doc in scores if doc not in positives][:size - 1]

    def __len__(self) -> int:
        return len(self.query_ids)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        qid = self.query_ids[index]
        positive_slots, list_slots = self.lists[qid]
        width = self.settings.list_size - (1 if self.settings.list_kind == "pinned" else 0)
        slots = ([*positive_slots, *[None] * (self.num_positive_slots - len(positive_slots))]
                 + [*list_slots, *[None] * (width - len(list_slots))])
        slots = [doc if doc in self._rows else None for doc in slots]  # a passage without identifiers: padding
        scores = self._teacher[qid]
        return {"query": self._queries[index],
                "tokens": np.stack([self._rows.get(doc, self._empty)[0] for doc in slots]),  # [slots, rows, tokens]
                "views": np.stack([self._rows.get(doc, self._empty)[1] for doc in slots]),  # [slots, rows]
                "teacher": np.asarray([scores[doc] if doc else 0.0 for doc in slots], np.float32),  # [slots]
                "valid": np.asarray([doc is not None for doc in slots]),  # [slots]
                "positive": np.asarray([doc in self._positives[qid] for doc in slots])}  # [slots]


# ------------------------------------------------------------------------------------------------ scores


def select_slots(batch: Mapping[str, jax.Array], rng: jax.Array, settings: Settings, num_positive_slots: int
                 ) -> dict[str, jax.Array]:
    """The slots a step scores, plus "gen" [batch, slots] (whose identifiers L_gen learns). Pinned: [top positive,
    a random positive, the negatives] (the random one counts for L_gen only when it is another passage than the
    top one); teacher order: every slot, L_gen on its positives."""
    if settings.list_kind == "teacher_order":
        return {**batch, "gen": batch["positive"] & batch["valid"]}
    count = num_positive_slots
    random = losses.sample_index(rng, batch["valid"][:, :count])  # [batch]
    negatives = count + jnp.arange(settings.list_size - 1)  # [list_size - 1]
    index = jnp.concatenate([jnp.zeros_like(random)[:, None], random[:, None],
                             jnp.broadcast_to(negatives, (random.shape[0], len(negatives)))], axis=1)  # [b, 1 + M]

    def take(values: jax.Array) -> jax.Array:
        shaped = index.reshape(index.shape + (1,) * (values.ndim - 2))  # [batch, 1 + M, 1, ...]
        return jnp.take_along_axis(values, shaped, axis=1)  # [batch, 1 + M, ...]

    picked = {name: take(values) for name, values in batch.items() if name != "query"}
    gen = jnp.zeros(index.shape, bool).at[:, 0].set(True).at[:, 1].set(random != 0)  # [batch, 1 + M]
    return {**picked, "query": batch["query"], "gen": gen & picked["valid"]}


def identifier_log_likelihoods(model: T5, params: Any, queries: jax.Array, tokens: jax.Array, config: T5Config, *,
                               length_normalize: bool, deterministic: bool = True, rng: jax.Array | None = None
                               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """log p(identifier | query) of every identifier row, in one encoder pass and one decoder pass.

    queries [batch, query_len], tokens [batch, slots, rows, max_tokens] (pad = empty). Returns (log-likelihoods
    [batch, slots, rows] (0 for an empty row), logits [batch * slots * rows, max_tokens, vocab], targets and the
    target mask [batch * slots * rows, max_tokens])."""
    batch, slots, rows, length = tokens.shape
    rngs = {} if deterministic else {"dropout": rng}
    encoded = model.apply({"params": params}, queries, deterministic=deterministic, rngs=rngs,
                          method=T5.encode)  # [batch, query_len, d_model]
    per_query = slots * rows
    encoded_rows = jnp.repeat(encoded, per_query, axis=0)  # [batch * slots * rows, query_len, d_model]
    query_rows = jnp.repeat(queries, per_query, axis=0)  # [batch * slots * rows, query_len]
    targets = tokens.reshape(batch * per_query, length)  # [batch * slots * rows, max_tokens]
    logits = model.apply({"params": params}, encoded_rows, query_rows,
                         shift_right(targets, config.decoder_start_token_id), deterministic=deterministic,
                         rngs=rngs, method=T5.decode)  # [batch * slots * rows, max_tokens, vocab]
    mask = targets != config.pad_token_id  # [batch * slots * rows, max_tokens]
    token_ll = -optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), jnp.where(mask, targets, 0))  # [batch * slots * rows, max_tokens]
    totals = jnp.sum(jnp.where(mask, token_ll, 0.0), axis=-1)  # [batch * slots * rows]
    if length_normalize:
        totals = totals / jnp.maximum(jnp.sum(mask, axis=-1), 1)  # [batch * slots * rows]
    return totals.reshape(batch, slots, rows), logits, targets, mask


def passage_scores(log_likelihoods: jax.Array, views: jax.Array, weights: jax.Array, how: str) -> jax.Array:
    """s(q, p) [batch, slots] from identifier log-likelihoods and views [batch, slots, rows] (view -1 = empty row):
    the weighted mixture over views log sum_v weights[v] * exp(r_v), r_v = max | logsumexp over p's identifiers in
    view v; a view without one adds nothing. More evidence never lowers a score (a weighted sum of log-likelihoods
    would rank a passage found in one view above the same passage found in two)."""
    in_view = views[..., None] == jnp.arange(len(weights))  # [batch, slots, rows, views]
    values = jnp.where(in_view, log_likelihoods[..., None], losses.MASKED_LOGIT)  # [batch, slots, rows, views]
    if how == "max":
        reduced = jnp.max(values, axis=2)  # [batch, slots, views]
    elif how == "logsumexp":
        reduced = jax.nn.logsumexp(values, axis=2)  # [batch, slots, views]
    else:
        raise ValueError(f"view aggregation must be one of {VIEW_AGGREGATIONS}, got {how!r}")
    present = jnp.any(in_view, axis=2)  # [batch, slots, views]
    log_weights = jnp.log(jnp.maximum(weights, 1e-30))  # [views]; views of weight 0 have no identifier rows
    return jax.nn.logsumexp(jnp.where(present, reduced + log_weights, losses.MASKED_LOGIT), axis=-1)  # [batch, slots]


# ------------------------------------------------------------------------------------------------ loss


def ranked_lists(scores: jax.Array, slots: Mapping[str, jax.Array], settings: Settings
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(student scores, mask, teacher scores) of the ranked lists, best first, padding last. Pinned: the two lists
    of a query stacked along the batch ([2 * batch, list_size]); teacher order: [batch, list_size]."""
    teacher, valid = slots["teacher"], slots["valid"]
    if settings.list_kind == "teacher_order":
        order = losses.teacher_order(teacher, valid)  # [batch, list]
        ordered, mask = losses.in_order(order, scores, valid)  # [batch, list] each
        return ordered, mask, losses.in_order(order, teacher, valid)[0]
    negative_teacher, negative_valid = teacher[:, 2:], valid[:, 2:]  # [batch, list - 1] each
    ordered_teacher = losses.in_order(losses.teacher_order(negative_teacher, negative_valid), negative_teacher,
                                      negative_valid)[0]  # [batch, list - 1]
    lists = [losses.pinned_positive_list(scores[:, k], scores[:, 2:], negative_teacher, negative_valid, valid[:, k])
             for k in (0, 1)]  # two ([batch, list], [batch, list])
    teachers = [jnp.concatenate([teacher[:, k:k + 1], ordered_teacher], axis=1) for k in (0, 1)]  # [batch, list]
    return (jnp.concatenate([lists[0][0], lists[1][0]]), jnp.concatenate([lists[0][1], lists[1][1]]),
            jnp.concatenate(teachers))


def rank_loss(scores: jax.Array, slots: Mapping[str, jax.Array], settings: Settings, rng: jax.Array
              ) -> tuple[losses.SumCount, tuple[jax.Array, jax.Array, jax.Array]]:
    """(L_rank as (sum, count), the ranked lists) for passage scores [batch, slots] of the selected slots."""
    lists = ranked_lists(scores, slots, settings)
    ordered, mask, teacher = lists
    if settings.loss == "ranknet":
        return losses.distilled_ranknet(ordered, mask, base_margin=settings.base_margin,
                                        gap_margin=settings.gap_margin, first_weight=settings.first_weight,
                                        violated_only=settings.violated_only), lists
    if settings.loss == "listnet":
        return losses.listnet(ordered / settings.temperature, teacher / settings.teacher_temperature, mask), lists
    if settings.loss == "listwise_kl":
        return losses.listwise_kl(ordered, teacher, mask, temperature=settings.temperature,
                                  teacher_temperature=settings.teacher_temperature), lists
    valid = slots["valid"]
    if settings.list_kind == "pinned":
        columns = jnp.arange(valid.shape[1])  # [slots]
        positive, negative = valid & (columns < 2), valid & (columns >= 2)  # [batch, slots] each
        random_positive = jnp.ones(valid.shape[0], jnp.int32)  # [batch]: the random positive's column
    else:
        positive, negative = valid & slots["positive"], valid & ~slots["positive"]  # [batch, slots] each
        rng, positive_rng = jax.random.split(rng)
        random_positive = losses.sample_index(positive_rng, positive)  # [batch]
    return losses.ltrgr_margin_loss(scores, positive, negative, margin=settings.margin,
                                    random_positive=random_positive,
                                    random_negative=losses.sample_index(rng, negative)), lists


def pair_metrics(ordered: jax.Array, mask: jax.Array, settings: Settings
                 ) -> tuple[losses.SumCount, losses.SumCount]:
    """(violated pairs, correctly ordered pairs), each (sum, number of pairs), over pairs i < j of ranked lists
    [lists, list] (padding last): violated when s_j - s_i + base_margin + (j - i - 1) gap_margin > 0, correct when
    s_i > s_j."""
    position = jnp.arange(ordered.shape[1])  # [list]
    pairs = mask[:, :, None] & mask[:, None, :] & (position[:, None] < position[None, :])  # [lists, list, list]
    difference = ordered[:, None, :] - ordered[:, :, None]  # [lists, list(i), list(j)]: s_j - s_i
    gap = (position[None, :] - position[:, None] - 1).astype(jnp.float32)  # [list, list]
    violated = difference + settings.base_margin + gap * settings.gap_margin > 0  # [lists, list, list]
    count = jnp.sum(pairs.astype(jnp.float32))  # []
    return ((jnp.sum((violated & pairs).astype(jnp.float32)), count),
            (jnp.sum(((difference < 0) & pairs).astype(jnp.float32)), count))


def make_loss_fn(model: T5, config: T5Config, settings: Settings, weights: Sequence[float], num_positive_slots: int):
    """The pure (params, batch, rng) -> (L_rank + gen_weight * L_gen, metrics) of stage 2."""
    view_weights = jnp.asarray(weights, jnp.float32)  # [len(VIEWS)]

    def loss_fn(params, batch, rng):
        pick_rng, dropout_rng, loss_rng = jax.random.split(rng, 3)
        slots = select_slots(batch, pick_rng, settings, num_positive_slots)
        log_likelihoods, logits, targets, mask = identifier_log_likelihoods(
            model, params, slots["query"], slots["tokens"], config, length_normalize=settings.length_normalize,
            deterministic=False, rng=dropout_rng)  # [batch, slots, rows], ...
        scores = passage_scores(log_likelihoods, slots["views"], view_weights, settings.view_aggregation)  # [b, s]
        rank, (ordered, ordered_mask, _) = rank_loss(scores, slots, settings, loss_rng)
        rows = slots["tokens"].shape[2]
        gen_rows = jnp.repeat(slots["gen"].reshape(-1), rows)  # [batch * slots * rows]
        gen = losses.token_cross_entropy(logits, targets, mask & gen_rows[:, None])
        violated, correct = pair_metrics(ordered, ordered_mask, settings)
        total = losses.mean(rank) + settings.gen_weight * losses.mean(gen)
        return total, {"rank_loss": rank, "gen_loss": gen, "violated_pairs": violated, "pair_accuracy": correct}

    return loss_fn
