"""FGD's training objective on embeddings: `λ·L_cl + L_fkd` (eq. 13) with the Table 2 switches, as one pure function.

Inputs are the student's embeddings (queries [batch, hidden]; each example's documents [batch, docs, hidden],
positive in slot 0; their pieces [batch, docs, rows, hidden]) and the batch's index and teacher arrays (`Layout`
names them). Rows [0, passage_rows) of a document are passages, rows [passage_rows, rows) sentences. The positive
document's rows hold its pieces (eq. 8: every piece of d+ is a positive); the negative documents' rows hold the mined
negative pieces (eq. 14-15), which every positive piece of the same granularity shares (N^j_k = N^j).

Terms, each a per-example (sum, count) from `distill_ret.losses`:
- contrastive (eq. 3): InfoNCE over {d+} ∪ N at temperature τ, weighted by λ;
- passage_kl, sentence_kl (eq. 12, one per granularity): the mean over positive pieces of KL(p_ce || p_be) over
  {piece} ∪ N^j; switched by `passage_distillation`, `sentence_distillation`;
- document_kl (eq. 5): KL(p_ce || p_be) over the documents; switched by `document_distillation`.
The loss is the sum of the switched-on terms per example, over the number of examples. The batch's `distill`
[batch] says which examples the distillation terms apply to (all, unless `fgd.distill_visible_only`); the others
contribute only the contrastive term.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from distill_ret import losses


@dataclasses.dataclass(frozen=True)
class FgdSwitches:
    """The Table 2 switches of the objective (the representation switch lives in `fgd.spans`)."""

    contrastive_weight: float = 1.0  # λ in eq. 13
    temperature: float = 1.0  # τ of eq. 2 and eq. 10 (the paper: 1)
    passage_distillation: bool = True
    sentence_distillation: bool = True
    document_distillation: bool = False
    teacher_temperature: float | None = None  # the teacher's τ in eq. 5 and 12; None = τ (the paper)

    @property
    def distills_pieces(self) -> bool:
        return self.passage_distillation or self.sentence_distillation


@dataclasses.dataclass(frozen=True)
class Layout:
    """Sizes of an example: positive pieces per granularity, mined negative pieces, rows per document."""

    num_documents: int  # 1 + document negatives
    num_passages: int  # positive passages (rows [0, num_passages) of slot 0)
    num_sentences: int  # positive sentences (rows [passage_rows, passage_rows + num_sentences) of slot 0)
    passage_negatives: int
    sentence_negatives: int

    @property
    def passage_rows(self) -> int:
        return max(self.num_passages, self.passage_negatives)

    @property
    def sentence_rows(self) -> int:
        return max(self.num_sentences, self.sentence_negatives)

    @property
    def rows(self) -> int:
        return self.passage_rows + self.sentence_rows


def _gather_rows(scores: jax.Array, references: jax.Array) -> jax.Array:
    """scores [batch, docs, rows], references [batch, n, 2] of (doc slot, row) -> [batch, n]."""
    rows = scores.shape[2]
    flat = scores.reshape(scores.shape[0], -1)  # [batch, docs * rows]
    return jnp.take_along_axis(flat, references[..., 0] * rows + references[..., 1], axis=1)  # [batch, n]


def _piece_lists(positives: jax.Array, negatives: jax.Array) -> jax.Array:
    """positives [batch, pieces], negatives [batch, n] -> rows {piece} ∪ N: [batch, pieces, 1 + n]."""
    shared = jnp.broadcast_to(negatives[:, None, :], positives.shape + negatives.shape[-1:])  # [b, pieces, n]
    return jnp.concatenate([positives[..., None], shared], axis=-1)  # [batch, pieces, 1 + n]


def granularity_kl(piece_scores, batch, prefix: str, start: int, count: int, switches: FgdSwitches):
    """eq. 12 for one granularity: (sum, count) over examples. piece_scores [batch, docs, rows]."""
    positives = piece_scores[:, 0, start:start + count]  # [batch, pieces]
    negatives = _gather_rows(piece_scores, batch[f"{prefix}_negatives"])  # [batch, n]
    student = _piece_lists(positives, negatives)  # [batch, pieces, 1 + n]
    teacher = _piece_lists(batch[f"teacher_{prefix}s"], batch[f"teacher_{prefix}_negatives"])  # [b, pieces, 1 + n]
    positive_mask = batch[f"{prefix}_valid"] & batch["distill"][:, None]  # [batch, pieces]
    negative_mask = batch[f"{prefix}_negative_valid"][:, None, :]  # [batch, 1, n]
    return losses.fine_grained_kl(student, teacher, positive_mask, negative_mask,
                                  temperature=switches.temperature, teacher_temperature=switches.teacher_temperature)


def fgd_loss(query_embeddings: jax.Array, document_embeddings: jax.Array, piece_embeddings: jax.Array, batch,
             layout: Layout, switches: FgdSwitches):
    """(loss (sum, count), metrics) of eq. 13 with the switches; see the module docstring for the inputs."""
    document_scores = jnp.einsum("bh,bdh->bd", query_embeddings, document_embeddings)  # [batch, docs]
    document_valid = batch["document_valid"]  # [batch, docs]
    contrastive = losses.info_nce(document_scores, document_valid, temperature=switches.temperature)
    metrics = {"contrastive": contrastive, "accuracy": losses.group_accuracy(document_scores, document_valid)}
    total = switches.contrastive_weight * contrastive[0]
    if switches.distills_pieces:
        piece_scores = jnp.einsum("bh,bdrh->bdr", query_embeddings, piece_embeddings)  # [batch, docs, rows]
        if switches.passage_distillation:
            metrics["passage_kl"] = granularity_kl(piece_scores, batch, "passage", 0, layout.num_passages,
                                                   switches)
            total = total + metrics["passage_kl"][0]
        if switches.sentence_distillation:
            metrics["sentence_kl"] = granularity_kl(piece_scores, batch, "sentence", layout.passage_rows,
                                                    layout.num_sentences, switches)
            total = total + metrics["sentence_kl"][0]
    if switches.document_distillation:
        distilled = document_valid & batch["distill"][:, None]  # [batch, docs]
        metrics["document_kl"] = losses.kl_distillation(document_scores, batch["teacher_documents"], distilled,
                                                        temperature=switches.temperature,
                                                        teacher_temperature=switches.teacher_temperature)
        total = total + metrics["document_kl"][0]
    return (total, contrastive[1]), metrics


def multi_vector_scores(document_scores: jax.Array, passage_scores: jax.Array, passage_valid: jax.Array,
                        sentence_scores: jax.Array, sentence_valid: jax.Array, gamma: float) -> jax.Array:
    """FGD's multi-vector retrieval score s_doc + γ·(max_i s_pass,i + max_j s_sent,j).

    document_scores [...], passage_scores / passage_valid [..., passages], sentence_scores / sentence_valid
    [..., sentences]; a document without a valid piece of a granularity adds nothing for it."""
    best_passage = jnp.max(jnp.where(passage_valid, passage_scores, losses.MASKED_LOGIT), axis=-1)  # [...]
    best_sentence = jnp.max(jnp.where(sentence_valid, sentence_scores, losses.MASKED_LOGIT), axis=-1)  # [...]
    best_passage = jnp.where(jnp.any(passage_valid, axis=-1), best_passage, 0.0)
    best_sentence = jnp.where(jnp.any(sentence_valid, axis=-1), best_sentence, 0.0)
    return document_scores + gamma * (best_passage + best_sentence)
