"""Task `fgd`: a BERT bi-encoder for long documents trained with `λ·L_cl + L_fkd` (FGD eq. 13) and the Table 2
ablations; stage 1 (warm-up) is the same task with every distillation switched off.

Examples: every (train query, judged document with gain >= data.min_positive_gain); with data.visible_positives_only,
only those whose judged passage keeps a token within the truncated encoding (with fgd.distill_visible_only, all are
kept but only those are distilled: the others train on the contrastive term alone). Each example holds the query,
the positive document and `data.num_negatives` negative documents (from `data.negatives_file`, mined by mode `mine`
with the previous stage's student, or, when that is "", BM25's best unjudged documents: stage 1), with the spans of
the positive's first `data.num_passages` passages and `data.num_sentences` sentences and of the mined negative
pieces (`data.passage_negatives`, `data.sentence_negatives` of the file's, eq. 14-15) in their documents' rows.

Teacher (`config.teacher`, any `teachers.loader` kind; only when a distillation switch is on): scores (query, piece
text) pairs through `teachers/piece_scores.py` (cached at `teacher.cache_path` when set, fingerprinted; with
`teacher.score_distilled_only`, only the pieces of the pairs that are distilled, which matters with a cross-encoder
and fgd.distill_visible_only) and, for document-level KD (eq. 5), (query, document) pairs.

Switches (`config.fgd`): contrastive_weight (λ), temperature (τ), teacher_temperature (the teacher's τ; 0 = τ),
distill_visible_only, passage_distillation, sentence_distillation, document_distillation, representation ("global"
eq. 7 | "fg_pooling" | "all_pooling" | "separate"; `fgd.spans`).
Table 2 rows: FGD = passage + sentence; w/o pass-distill / w/o sent-distill = one off; w/ doc-distill = all three;
FG pooling / All pooling (with model.pooling="mean") / Separate Pieces = representation; only doc-distill =
document only; w/o ALL = none.

Dev evaluation: evaluator kind "fgd_dense" (`fgd.retrieval`): the student retrieves a split's queries over every long
document, single-vector or multi-vector (`gamma`), scored with ir-measures.

Initialisation (`training.state.init_from_source`): `model.init_from` = a Hugging Face BERT directory (MiniLM) or an
earlier fgd run's workdir (stage 1 -> stage 2). The model record is head "bi_encoder" with options pooling,
normalize, tied.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill_ret import bm25
from distill_ret.data import formats
from distill_ret.errors import ConfigError, integer_field, section_number
from distill_ret.fgd import inputs, mining, objective, retrieval, spans
from distill_ret.models import heads
from distill_ret.teachers import piece_scores
from distill_ret.teachers.base import TeacherQuery
from distill_ret.teachers.loader import load_teacher
from distill_ret.training import state
from distill_ret.training.tasks import Task

SIZE_FIELDS = ("num_negatives", "num_passages", "num_sentences")
COUNT_FIELDS = ("passage_negatives", "sentence_negatives")


def switches_from_config(section: Any) -> objective.FgdSwitches:
    """FgdSwitches from `config.fgd` (ConfigError naming the field on a bad value)."""
    contrastive_weight = section_number(section, "config.fgd", "contrastive_weight", 0)
    temperature = section_number(section, "config.fgd", "temperature", 0, exclusive=True)
    teacher_temperature = section_number(section, "config.fgd", "teacher_temperature", 0, hint="0 = τ")
    if section.representation not in spans.REPRESENTATIONS:
        raise ConfigError(f"config.fgd.representation={section.representation!r}: expected one of "
                          f"{spans.REPRESENTATIONS}")
    return objective.FgdSwitches(contrastive_weight, temperature, bool(section.passage_distillation),
                                 bool(section.sentence_distillation), bool(section.document_distillation),
                                 teacher_temperature or None)


def layout_from_config(data: Any) -> objective.Layout:
    for field in SIZE_FIELDS + COUNT_FIELDS:
        integer_field(data.get(field), f"config.data.{field}", 1 if field in SIZE_FIELDS else 0)
    return objective.Layout(1 + data.num_negatives, data.num_passages, data.num_sentences, data.passage_negatives,
                            data.sentence_negatives)


def bm25_negatives(documents: inputs.LongDocuments, query_ids: Sequence[str], qrels, num_negatives: int,
                   section: Any) -> dict[str, mining.QueryNegatives]:
    """Stage 1's negatives: BM25's best documents that are not judged relevant (documents only)."""
    corpus = {doc_id: formats.Document(doc_id, document.title, document.text)
              for doc_id, document in documents.dataset.documents.items()}
    index = bm25.Bm25Index.build(corpus, bm25.params_from_config(section))
    depth = num_negatives + max((len(mining.relevant(qrels.get(qid, {}))) for qid in query_ids), default=0)
    run = index.search({qid: documents.dataset.queries[qid] for qid in query_ids}, depth)
    return {qid: mining.QueryNegatives(tuple([doc_id for doc_id in run[qid]
                                              if doc_id not in mining.relevant(qrels.get(qid, {}))][:num_negatives]))
            for qid in query_ids}


def file_negatives(path: str, documents: inputs.LongDocuments, qrels) -> dict[str, mining.QueryNegatives]:
    """Mined negatives from a file whose data digest must be this run's data (StaleNegativesError otherwise)."""
    dataset = documents.dataset
    stored = mining.read_fingerprint(path)
    digest = mining.data_digest({d: doc.text for d, doc in dataset.documents.items()}, dataset.queries, qrels)
    if stored.get("data") != digest:
        raise mining.StaleNegativesError(f"{path}: these negatives were mined from other data than config.data gives "
                                         "now; mine them again (mode mine) for this data")
    negatives = mining.read_negatives(path)
    for qid, entry in negatives.items():
        unknown = [d for d in entry.documents + tuple(d for d, _ in entry.passages + entry.sentences)
                   if d not in dataset.documents]
        if unknown:
            raise formats.FormatError(path, None, f"query {qid!r} names unknown documents {unknown[:3]}")
        for kind, pieces in (("passage", entry.passages), ("sentence", entry.sentences)):
            for doc_id, piece in pieces:
                count = len(getattr(documents.segmented[doc_id], f"{kind}_spans"))
                if not 0 <= piece < count:
                    raise formats.FormatError(path, None, f"query {qid!r}: document {doc_id!r} has no {kind} {piece} "
                                                          f"(it has {count}); mine again with this segmentation")
    return negatives


class FgdExamples:
    """Random-access source: example i -> the arrays of one (query, positive document) group (see `collate`)."""

    def __init__(self, pairs: Sequence[tuple[str, str]], documents: inputs.LongDocuments,
                 negatives: Mapping[str, mining.QueryNegatives], layout: objective.Layout, *, query_max_length: int,
                 max_length: int, representation: str, distill: Sequence[bool] | None = None):
        self.pairs, self.documents, self.negatives, self.layout = list(pairs), documents, negatives, layout
        self.distill = [True] * len(self.pairs) if distill is None else list(distill)  # per pair: distillation on
        self.max_length, self.representation = max_length, representation
        self.piece_shape = None  # "separate": every valid piece an example can hold, at the corpus's longest pieces
        if representation == "separate":
            passage_length, sentence_length = spans.piece_lengths(list(documents.segmented.values()), max_length)
            self.piece_shape = spans.PieceShape(layout.num_passages + layout.passage_negatives, passage_length,
                                                layout.num_sentences + layout.sentence_negatives, sentence_length)
        queries = sorted({qid for qid, _ in self.pairs})
        encoded = documents.tokenizer([documents.dataset.queries[qid] for qid in queries], truncation=True,
                                      max_length=query_max_length)["input_ids"]
        self._query_ids = {qid: np.asarray(ids, np.int32) for qid, ids in zip(queries, encoded)}
        self.query_max_length = query_max_length
        self.teacher: dict[str, np.ndarray] | None = None  # filled by `attach_teacher`

    def __len__(self) -> int:
        return len(self.pairs)

    def group(self, index: int) -> tuple[str, list[str], list[mining.Piece], list[mining.Piece]]:
        """(query id, [positive, negative documents], negative passages, negative sentences) of example `index`:
        the file's passages of the example's negative documents and the file's sentences of those passages (eq. 15),
        in the file's order, at most data.passage_negatives / data.sentence_negatives."""
        qid, positive = self.pairs[index]
        entry = self.negatives[qid]
        documents = [positive, *[d for d in entry.documents if d != positive][: self.layout.num_documents - 1]]
        kept = set(documents[1:])
        passages = [p for p in entry.passages if p[0] in kept][: self.layout.passage_negatives]
        owner = lambda piece: (piece[0], int(self.documents.segmented[piece[0]].sentence_passage[piece[1]]))
        sentences = [s for s in entry.sentences if owner(s) in set(passages)][: self.layout.sentence_negatives]
        return qid, documents, passages, sentences

    def _rows(self, documents: list[str], passages, sentences):
        """Per document slot, the passage and sentence indices placed in its rows; and each negative's (slot, row)."""
        layout = self.layout
        slot_passages = [list(range(layout.num_passages))] + [[] for _ in documents[1:]]
        slot_sentences = [list(range(layout.num_sentences))] + [[] for _ in documents[1:]]
        passage_refs, sentence_refs = [], []
        for doc_id, piece in passages:
            slot = documents.index(doc_id)
            passage_refs.append((slot, len(slot_passages[slot])))
            slot_passages[slot].append(piece)
        for doc_id, piece in sentences:
            slot = documents.index(doc_id)
            sentence_refs.append((slot, layout.passage_rows + len(slot_sentences[slot])))
            slot_sentences[slot].append(piece)
        positive = self.documents.segmented[documents[0]]
        slot_passages[0] = [i for i in slot_passages[0] if i < len(positive.passage_spans)]
        slot_sentences[0] = [i for i in slot_sentences[0] if i < len(positive.sentence_spans)]
        return slot_passages, slot_sentences, passage_refs, sentence_refs

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        layout = self.layout
        qid, documents, passages, sentences = self.group(index)
        slot_passages, slot_sentences, passage_refs, sentence_refs = self._rows(documents, passages, sentences)
        padded_docs = documents + [documents[0]] * (layout.num_documents - len(documents))  # padding: masked out
        padded_passages = slot_passages + [[]] * (layout.num_documents - len(documents))
        padded_sentences = slot_sentences + [[]] * (layout.num_documents - len(documents))
        batch = spans.batch_documents([self.documents.segmented[d] for d in padded_docs], length=self.max_length,
                                      num_passages=layout.passage_rows, num_sentences=layout.sentence_rows,
                                      passages=padded_passages, sentences=padded_sentences,
                                      separate=self.piece_shape)
        query = np.zeros((self.query_max_length,), np.int32)  # [query_length]
        query[: len(self._query_ids[qid])] = self._query_ids[qid]
        example = {
            "query_input_ids": query,
            "query_attention_mask": (np.arange(self.query_max_length) < len(self._query_ids[qid])).astype(np.int32),
            "document_input_ids": batch.input_ids,  # [docs, length]
            "document_attention_mask": batch.attention_mask,  # [docs, length]
            "span_mask": batch.span_mask,  # [docs, rows, length]
            "document_valid": np.arange(layout.num_documents) < len(documents),  # [docs]
            "distill": np.bool_(self.distill[index]),  # []
            "passage_valid": batch.piece_valid[0, : layout.num_passages],  # [passages]
            "sentence_valid": batch.piece_valid[0, layout.passage_rows: layout.passage_rows + layout.num_sentences],
            **_references("passage", passage_refs, layout.passage_negatives),
            **_references("sentence", sentence_refs, layout.sentence_negatives),
        }
        if batch.separate is not None:  # [pieces, piece_length] per granularity; index [docs, rows]
            example.update({f"separate_{name}": value for name, value in batch.separate.arrays().items()})
        if self.teacher is not None:
            example.update({name: values[index] for name, values in self.teacher.items()})
        # Negative pieces are valid only where their rows kept tokens after truncation.
        for prefix, refs in (("passage", passage_refs), ("sentence", sentence_refs)):
            for position, (slot, row) in enumerate(refs):
                example[f"{prefix}_negative_valid"][position] &= batch.piece_valid[slot, row]
        return example

    def teacher_requests(self, distilled_only: bool = False) -> list[piece_scores.PieceRequest]:
        """The pieces the examples use, per (query, document, granularity): the positive's first data.num_passages /
        data.num_sentences and the negative pieces, each request cut to the longest prefix needed (piece i of a
        request is still piece i of the document, so cached scores line up with the segmentation). With
        `distilled_only`, only the examples whose `distill` flag is set (the others never read a teacher score)."""
        needed: dict[tuple[str, str, str], int] = {}
        for index in range(len(self)):
            if distilled_only and not self.distill[index]:
                continue
            qid, documents, passages, sentences = self.group(index)
            for granularity, count in (("passage", self.layout.num_passages), ("sentence", self.layout.num_sentences)):
                key = (qid, documents[0], granularity)
                needed[key] = max(needed.get(key, 0), count)
            for granularity, pieces in (("passage", passages), ("sentence", sentences)):
                for doc_id, piece in pieces:
                    needed[(qid, doc_id, granularity)] = max(needed.get((qid, doc_id, granularity), 0), piece + 1)
        dataset, requests = self.documents.dataset, []
        for (qid, doc_id, granularity), count in sorted(needed.items()):
            segmented = self.documents.segmented[doc_id]
            chars = segmented.passage_chars if granularity == "passage" else segmented.sentence_chars
            text = dataset.documents[doc_id].text
            requests.append(piece_scores.PieceRequest(qid, dataset.queries[qid], doc_id, granularity,
                                                      tuple(text[start:end] for start, end in chars[:count])))
        return requests

    def attach_teacher(self, scores: piece_scores.PieceScores | None, document_scores: np.ndarray | None,
                       distilled_only: bool = False) -> None:
        """Teacher arrays per example, in the layout `objective.fgd_loss` reads (zeros where a term is off; with
        `distilled_only`, piece scores are read for the examples whose `distill` flag is set, as
        `teacher_requests(distilled_only=True)` asked for them, and stay zero for the others, which the loss masks)."""
        layout = self.layout
        arrays = {"teacher_passages": np.zeros((len(self), layout.num_passages), np.float32),
                  "teacher_sentences": np.zeros((len(self), layout.num_sentences), np.float32),
                  "teacher_passage_negatives": np.zeros((len(self), layout.passage_negatives), np.float32),
                  "teacher_sentence_negatives": np.zeros((len(self), layout.sentence_negatives), np.float32),
                  "teacher_documents": np.zeros((len(self), layout.num_documents), np.float32)}
        for index in range(len(self)):
            qid, documents, passages, sentences = self.group(index)
            if scores is not None and (self.distill[index] or not distilled_only):
                for granularity, count in (("passage", layout.num_passages), ("sentence", layout.num_sentences)):
                    if (qid, documents[0], granularity) not in scores:
                        continue  # a document without pieces of this granularity: no valid positive piece
                    positive = scores.get(qid, documents[0], granularity)[:count]
                    arrays[f"teacher_{granularity}s"][index, : len(positive)] = positive
                for granularity, pieces in (("passage", passages), ("sentence", sentences)):
                    for position, (doc_id, piece) in enumerate(pieces):
                        arrays[f"teacher_{granularity}_negatives"][index, position] = scores.score(
                            qid, doc_id, granularity, piece)
            if document_scores is not None:
                arrays["teacher_documents"][index, : len(documents)] = document_scores[index][: len(documents)]
        self.teacher = arrays


def _references(prefix: str, refs: list[tuple[int, int]], count: int) -> dict[str, np.ndarray]:
    positions = np.zeros((count, 2), np.int32)  # [count, 2]: (doc slot, row)
    valid = np.zeros((count,), bool)  # [count]
    if refs:
        positions[: len(refs)] = refs
        valid[: len(refs)] = True
    return {f"{prefix}_negatives": positions, f"{prefix}_negative_valid": valid}


def collate(examples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Examples -> {name: [batch, ...]}."""
    return {name: np.stack([example[name] for example in examples]) for name in examples[0]}


def teacher_corpus(dataset) -> dict[str, formats.Document]:
    """The long documents whole, as the teacher reads them (a bm25 teacher's statistics without a path)."""
    return {doc_id: formats.Document(doc_id, document.title, document.text)
            for doc_id, document in dataset.documents.items()}


def document_teacher_scores(teacher, examples: FgdExamples, corpus: dict[str, formats.Document]) -> np.ndarray:
    """[examples, docs] teacher scores of (query, whole document) for document-level KD (eq. 5)."""
    dataset = examples.documents.dataset
    requests = []
    for index in range(len(examples)):
        qid, documents, _, _ = examples.group(index)
        requests.append(TeacherQuery(qid, dataset.queries[qid], tuple(corpus[d] for d in documents)))
    scored = teacher.score_batch(requests)
    result = np.zeros((len(examples), examples.layout.num_documents), np.float32)
    for index, row in enumerate(scored):
        result[index, : len(row)] = row
    return result


def make_loss_fn(model: heads.BiEncoder, layout: objective.Layout, switches: objective.FgdSwitches,
                 representation: str):
    """The pure (params, batch, rng) -> (loss, metrics) of the task."""

    def loss_fn(params, batch, rng):
        query_rng, document_rng = jax.random.split(rng)
        queries = model.apply({"params": params}, batch["query_input_ids"], batch["query_attention_mask"],
                              deterministic=False, rngs={"dropout": query_rng},
                              method=heads.BiEncoder.encode_queries)  # [batch, hidden]
        size, docs, length = batch["document_input_ids"].shape
        rows = batch["span_mask"].shape[2]
        separate = None
        if representation == "separate":
            separate = spans.merge_separate({name.removeprefix("separate_"): value for name, value in batch.items()
                                             if name.startswith("separate_")})
        documents, pieces = spans.granularity_embeddings(
            model, params, batch["document_input_ids"].reshape(size * docs, length),
            batch["document_attention_mask"].reshape(size * docs, length),
            batch["span_mask"].reshape(size * docs, rows, length), representation, deterministic=False,
            rngs={"dropout": document_rng}, separate=separate)  # [b * docs, hidden], [b * docs, rows, hidden]
        return objective.fgd_loss(queries, documents.reshape(size, docs, -1), pieces.reshape(size, docs, rows, -1),
                                  batch, layout, switches)

    return loss_fn


def pair_visibility(pairs: Sequence[tuple[str, str]], documents: inputs.LongDocuments, split: str,
                    min_gain: int) -> list[bool]:
    """Per (query, document) pair: whether the document keeps, within its truncated encoding, a token of a passage
    judged for that query with gain >= min_gain."""
    passage_qrels = documents.dataset.passage_qrels.get(split, {})
    shown = documents.visible_passages()
    visible = []
    for qid, doc_id in pairs:
        judged = {p for p, gain in passage_qrels.get(qid, {}).items() if gain >= min_gain}
        visible.append(any(passage.passage_id in judged and passage.passage_id in shown
                           for passage in documents.dataset.documents[doc_id].passages))
    return visible


def visible_pairs(pairs: Sequence[tuple[str, str]], documents: inputs.LongDocuments, split: str,
                  min_gain: int) -> list[tuple[str, str]]:
    """The pairs `pair_visibility` keeps (`data.visible_positives_only`); ConfigError when none is left."""
    kept = [pair for pair, visible in zip(pairs, pair_visibility(pairs, documents, split, min_gain)) if visible]
    if not kept:
        raise ConfigError(f"config.data.visible_positives_only: no judged passage of split {split!r} lies within the "
                          f"first data.max_length tokens of its document; no training pair is left")
    return kept


def build_task(config: Any) -> Task:
    """The fgd Task from a configs/fgd.py config."""
    data = config.data
    switches = switches_from_config(config.fgd)
    layout = layout_from_config(data)
    inputs.check_lengths(config)
    representation = config.fgd.representation
    try:
        spans.check_representation(representation, config.model.pooling)
    except ValueError as error:
        raise ConfigError(f"config.fgd.representation / config.model.pooling: {error}") from None
    if switches.distills_pieces and not data.negatives_file:
        raise ConfigError("config.data.negatives_file: passage or sentence distillation needs negative pieces mined "
                          "by the previous stage's student (mode mine); BM25 negatives are documents only")
    student = inputs.student(config)
    documents = inputs.long_documents(config, student.tokenizer)
    qrels = documents.dataset.qrels.get(data.train_split)
    if qrels is None:
        raise ConfigError(f"config.data.train_split={data.train_split!r}: no such split; splits: "
                          f"{sorted(documents.dataset.qrels)}")
    pairs = [(qid, doc_id) for qid in sorted(qrels) for doc_id, gain in sorted(qrels[qid].items())
             if gain >= data.min_positive_gain]
    if not pairs:
        raise ConfigError(f"config.data.min_positive_gain={data.min_positive_gain}: no judged pair of split "
                          f"{data.train_split!r} reaches it")
    if data.visible_positives_only:
        pairs = visible_pairs(pairs, documents, data.train_split, data.min_positive_gain)
    if data.negatives_file:
        negatives = file_negatives(data.negatives_file, documents, documents.dataset.qrels)
        pairs = [(qid, doc_id) for qid, doc_id in pairs if qid in negatives]
    else:
        negatives = bm25_negatives(documents, sorted({qid for qid, _ in pairs}), qrels, data.num_negatives,
                                   config.bm25)
    # With data.visible_positives_only every pair left is visible: nothing to flag.
    distill = (pair_visibility(pairs, documents, data.train_split, data.min_positive_gain)
               if config.fgd.distill_visible_only and not data.visible_positives_only else None)
    examples = FgdExamples(pairs, documents, negatives, layout, query_max_length=data.query_max_length,
                           max_length=data.max_length, representation=representation, distill=distill)
    if switches.distills_pieces or switches.document_distillation:
        corpus = teacher_corpus(documents.dataset)
        teacher = load_teacher(config.teacher, name="teacher", corpus=corpus)
        distilled_only = config.teacher.score_distilled_only
        requests = examples.teacher_requests(distilled_only) if switches.distills_pieces else []
        scores = None
        if requests:
            cache = config.teacher.get("cache_path", "")
            scores = (piece_scores.build_or_load(cache, teacher, requests) if cache
                      else piece_scores.compute(teacher, requests))
        document_scores = (document_teacher_scores(teacher, examples, corpus) if switches.document_distillation
                           else None)
        examples.attach_teacher(scores, document_scores, distilled_only)
    else:
        examples.attach_teacher(None, None)

    model = student.model

    def random_init(rng: jax.Array) -> Any:
        query = jnp.zeros((1, data.query_max_length), jnp.int32)
        document = jnp.zeros((1, data.max_length), jnp.int32)
        return model.init(rng, query, jnp.ones_like(query), document, jnp.ones_like(document))["params"]

    init = state.init_from_source(random_init, student.source, student.record,
                                  adapt_hf=lambda params: heads.bi_encoder_params(params, model.tied))
    dense_inputs = retrieval.DenseEvalInputs(documents, model, data.query_max_length, data.max_length, representation)
    return Task(init_params=init, loss_fn=make_loss_fn(model, layout, switches, representation),
                train_source=examples, collate=collate, model=student.record,
                eval_inputs={"fgd_dense": dense_inputs})
