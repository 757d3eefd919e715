"""Task `cross_encoder` for mode `train`: a BERT cross-encoder trained on a data set's train qrels.

Each training example is a group: one judged-relevant passage (gain >= data.min_positive_gain; every such pair of
the train split is an example, so multi-positive queries give several) and `data.num_negatives` hard negatives
sampled from BM25's top `data.negative_depth` minus every judged document of the query (topped up with random
unjudged passages when BM25 finds too few). Example i draws its negatives from the seed (data.seed, i); the source
holds `data.negative_rounds` copies of every (query, positive) pair with different negatives. With
`data.title_queries`, every titled document also gives a group whose query is its title and whose positive is its
text without the title, negatives from BM25's top `data.negative_depth` for the title minus the document itself
(corpus text only, no relevance judgement). Inputs are
`[CLS] query [SEP] title text [SEP]` with token types, padded to data.max_length. The loss is softmax cross-entropy
over the group with the positive as the label.

Guide (optional, `config.guide.kind`): a frozen teacher (dense bi-encoder, run file or another cross-encoder, see
`distill_ret.teachers.loader`) scores every group once before training; the loss becomes
`(1 - guide.weight) * cross-entropy + guide.weight * KL(softmax(guide scores / guide.temperature) || softmax(scores))`,
so the model learns the guide's ordering of the negatives too, not only which passage is the positive.

Initialisation (`training.state.init_from_source`): `model.init_from` names a local Hugging Face directory (a
BertModel such as MiniLM, or a BertForSequenceClassification; its encoder and pooler are loaded and the classifier
starts from N(0, 0.02) unless the directory has one) or an earlier cross_encoder run's workdir (its
`model.init_step` checkpoint, every parameter; the architecture and tokenizer come from its model record). With
`model.init_from = ""` the model is a random BERT of the `model` fields (tiny tests).

Dev evaluation (early stopping): evaluator kind "rerank" (`config.evals.<name>`, `build_rerank_evaluator`): the
current parameters rerank BM25's top `depth` of a split's queries and `distill_ret.evaluation` scores that run;
with `checkpoint.best_metric = "dev/nDCG@10"` and `checkpoint.best_mode = "max"` the checkpoint manager keeps the
best steps by dev nDCG@10.
"""
from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill_ret import bm25, evaluation, losses
from distill_ret.data import formats, sources
from distill_ret.errors import ConfigError, section_integer, section_number
from distill_ret.hf.identity import load_tokenizer
from distill_ret.models.bert import BertConfig
from distill_ret.models.heads import CrossEncoder
from distill_ret.teachers import pairs
from distill_ret.teachers.base import Teacher, TeacherQuery, rerank_run
from distill_ret.teachers.cross_encoder import CrossEncoderTeacher, PairScorer
from distill_ret.teachers.loader import check_location, load_teacher
from distill_ret.training import evaluators, state
from distill_ret.training.tasks import ModelRecord, Task

FEATURES = ("input_ids", "attention_mask", "token_type_ids")


def sample_negatives(
    ranked: Sequence[str], excluded: set[str], num: int, rng: np.random.Generator, fill_pool: Sequence[str]
) -> list[str]:
    """`num` distinct documents: a uniform sample of `ranked` minus `excluded`, topped up from `fill_pool`."""
    pool = [doc_id for doc_id in ranked if doc_id not in excluded]
    if len(pool) >= num:
        return [pool[i] for i in rng.choice(len(pool), size=num, replace=False)]
    chosen = list(pool)
    taken = set(chosen) | excluded
    for i in rng.permutation(len(fill_pool)):
        if len(chosen) == num:
            break
        if fill_pool[i] not in taken:
            chosen.append(fill_pool[i])
            taken.add(fill_pool[i])
    if len(chosen) < num:
        raise ValueError(f"only {len(chosen)} unjudged documents exist; {num} negatives were asked for")
    return chosen


class TrainingGroups:
    """Random-access source: example i -> {feature: [group, max_length] int32}, positive in row 0."""

    def __init__(
        self,
        dataset: formats.BeirDataset,
        split: str,
        candidates: Mapping[str, Sequence[str]],
        tokenizer,
        *,
        num_negatives: int,
        min_positive_gain: int,
        max_length: int,
        rounds: int,
        seed: int,
        title_candidates: Mapping[str, Sequence[str]] | None = None,
    ):
        judged = dataset.qrels[split]
        self.examples = [(qid, doc_id) for qid in sorted(judged) for doc_id, gain in sorted(judged[qid].items())
                         if gain >= min_positive_gain]
        self.title_documents = sorted(title_candidates or {})  # documents whose title is a pseudo-query
        self._title_candidates = title_candidates or {}
        if not self.examples:
            raise ConfigError(f"the {split!r} qrels have no pair with gain >= {min_positive_gain}")
        self._dataset, self._judged, self._candidates = dataset, judged, candidates
        self._doc_ids = list(dataset.corpus)
        self._tokenizer, self._num_negatives, self._max_length = tokenizer, num_negatives, max_length
        self._rounds, self._seed = rounds, seed

    def __len__(self) -> int:
        return (len(self.examples) + len(self.title_documents)) * self._rounds

    def is_title_example(self, index: int) -> bool:
        """Whether example `index` is a title pseudo-query (the qrels examples come first in every round)."""
        return index % (len(self.examples) + len(self.title_documents)) >= len(self.examples)

    def group(self, index: int) -> tuple[str, list[str]]:
        """(query id, [positive, negatives...]) of example `index`; a title pseudo-query's id is its document's."""
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} is out of range 0..{len(self) - 1}")
        rng = np.random.default_rng((self._seed, index))
        position = index % (len(self.examples) + len(self.title_documents))
        if position >= len(self.examples):
            doc_id = self.title_documents[position - len(self.examples)]
            negatives = sample_negatives(self._title_candidates[doc_id], {doc_id}, self._num_negatives, rng,
                                         self._doc_ids)
            return doc_id, [doc_id, *negatives]
        query_id, positive = self.examples[position]
        negatives = sample_negatives(self._candidates.get(query_id, ()), set(self._judged[query_id]),
                                     self._num_negatives, rng, self._doc_ids)
        return query_id, [positive, *negatives]

    def teacher_query(self, index: int) -> TeacherQuery:
        """Example `index` as the model sees it: the query text and the group's passages, positive first."""
        query_id, doc_ids = self.group(index)
        candidates = [self._dataset.corpus[doc_id] for doc_id in doc_ids]
        if self.is_title_example(index):  # the title asks for its own text, which no longer contains it
            query = candidates[0].title
            candidates[0] = dataclasses.replace(candidates[0], title="")
        else:
            query = self._dataset.queries[query_id]
        return TeacherQuery(query_id, query, tuple(candidates))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        request = self.teacher_query(index)
        passages = [pairs.passage_text(document) for document in request.candidates]
        encoded = pairs.encode_pairs(self._tokenizer, [request.text] * len(passages), passages, self._max_length)
        return pairs.pad_pairs(encoded, self._max_length, len(passages), self._tokenizer.pad_token_id or 0)


class GuidedGroups:
    """Training groups with a guide teacher's scores: example i gains "guide_scores" [group] float32.

    The guide scores every example once, up front (examples are deterministic), in the order the model sees the
    group: positive first.
    """

    def __init__(self, groups: TrainingGroups, guide: Teacher):
        requests = [groups.teacher_query(index) for index in range(len(groups))]
        self.groups = groups
        self.scores = np.stack(guide.score_batch(requests)).astype(np.float32)  # [examples, group]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {**self.groups[index], "guide_scores": self.scores[index]}


def collate(examples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Groups -> {feature: [batch, group, length]} (and "guide_scores" [batch, group] when the groups have them)."""
    return {name: np.stack([example[name] for example in examples]) for name in examples[0]}


def model_config(config: Any, tokenizer, source: state.InitSource | None = None) -> BertConfig:
    """The BertConfig: the init source's (a Hugging Face directory or an earlier run), or the random-init fields;
    the compute fields (dtype, remat) always from `config.model`."""
    model = config.model
    if source is not None:
        if source.config.get("model_type") != "bert":
            raise ConfigError(f"config.model.init_from={model.init_from!r} is not a BERT model "
                              f"(model_type {source.config.get('model_type')!r})")
        return BertConfig.from_hf(source.config, dtype=model.dtype, remat=model.remat)
    return BertConfig(
        vocab_size=len(tokenizer), hidden_size=model.hidden_size, num_hidden_layers=model.num_hidden_layers,
        num_attention_heads=model.num_attention_heads, intermediate_size=model.intermediate_size,
        max_position_embeddings=model.max_position_embeddings, pad_token_id=tokenizer.pad_token_id or 0,
        dtype=model.dtype, remat=model.remat,
    )


def tokenizer_dir(config: Any, source: state.InitSource | None = None) -> str:
    """The absolute tokenizer directory: `model.tokenizer_dir`, else the init source's tokenizer."""
    directory = config.model.tokenizer_dir or (source.tokenizer_dir if source is not None else "")
    if not directory:
        raise ConfigError("set config.model.tokenizer_dir (or config.model.init_from): a local tokenizer directory")
    return str(pathlib.Path(directory).absolute())


def model_record(bert_config: BertConfig, tokenizer_directory: str) -> ModelRecord:
    """The record saved with every checkpoint: a one-label `BertForSequenceClassification` and its tokenizer."""
    return ModelRecord(config=bert_config.to_hf().to_dict(), head="cross_encoder", tokenizer_dir=tokenizer_directory,
                       options={"num_labels": 1})


@dataclasses.dataclass(frozen=True)
class RerankInputs:
    """What evaluator kind "rerank" needs from the cross-encoder task: the data set, its BM25 index (first stage),
    and how pairs are tokenised and scored."""

    dataset: formats.BeirDataset
    index: bm25.Bm25Index
    tokenizer: Any
    model_config: BertConfig
    max_length: int


class DevReranking:
    """Reranks BM25's top `depth` of a split's queries with the given params and scores the run with ir-measures.

    The pair scorer is built (and compiles) once per mesh.
    """

    def __init__(self, inputs: RerankInputs, split: str, candidates: dict[str, dict[str, float]],
                 measures: tuple[str, ...], relevance_level: int, batch_size: int, bucket_step: int):
        self.inputs, self.split, self.candidates = inputs, split, candidates
        self.measures, self.relevance_level = measures, relevance_level
        self._batch_size, self._bucket_step = batch_size, bucket_step
        self._scorers: dict[jax.sharding.Mesh, PairScorer] = {}

    def scorer(self, mesh: jax.sharding.Mesh) -> PairScorer:
        if mesh not in self._scorers:
            self._scorers[mesh] = PairScorer(
                self.inputs.model_config, self.inputs.tokenizer, max_length=self.inputs.max_length,
                batch_size=self._batch_size, bucket_step=self._bucket_step, mesh=mesh, show_progress=False)
        return self._scorers[mesh]

    def __call__(self, params: Any, mesh: jax.sharding.Mesh) -> dict[str, float]:
        dataset = self.inputs.dataset
        teacher = CrossEncoderTeacher(self.scorer(mesh), params)
        run = rerank_run(teacher, self.candidates, dataset.queries, dataset.corpus)
        return evaluation.evaluate(run, dataset.qrels[self.split], self.measures,
                                   relevance_level=self.relevance_level).aggregate


def build_rerank_evaluator(name: str, section: Any, inputs: RerankInputs, mesh: jax.sharding.Mesh
                           ) -> evaluators.Evaluator:
    """Evaluator kind "rerank": fields split, depth, measures, relevance_level, batch_size (pairs per scoring batch),
    bucket_step (padded lengths are multiples of it)."""
    prefix = f"config.evals.{name}"
    dataset = inputs.dataset
    split = section.get("split")
    if split not in dataset.qrels:
        raise ConfigError(f"{prefix}.split={split!r} has no qrels; splits: {sorted(dataset.qrels)}")
    depth = evaluators.positive_field(name, section, "depth")
    measures = evaluation.measures_from_config(section, prefix)
    batch_size = evaluators.positive_field(name, section, "batch_size")
    bucket_step = evaluators.positive_field(name, section, "bucket_step")
    candidates = inputs.index.search({qid: dataset.queries[qid] for qid in dataset.qrels[split]}, depth)
    reranking = DevReranking(inputs, split, candidates, measures, section.relevance_level, batch_size, bucket_step)
    reranking.scorer(mesh)  # built now: a bad scorer option fails before training starts
    return evaluators.Evaluator(name=name, every=evaluators.check_every(name, section), measures=measures,
                                evaluate=reranking)


def title_query_candidates(dataset: formats.BeirDataset, index: bm25.Bm25Index, data: Any) -> dict[str, list[str]]:
    """Document id -> BM25's top `data.negative_depth` for its title as a query, for every titled document."""
    titles = {doc_id: document.title for doc_id, document in dataset.corpus.items()
              if document.title.strip() and document.text.strip()}
    return {doc_id: list(docs) for doc_id, docs in index.search(titles, data.negative_depth).items()}


def check_config(config: Any) -> None:
    """The `config.data` numbers and, when a guide is set, the `config.guide` fields the loss reads (its teacher
    fields: teachers.loader), before any file is read."""
    data = config.data
    section_integer(data, "config.data", "max_length", 5, hint="[CLS] query [SEP] text [SEP]")
    section_integer(data, "config.data", "num_negatives", 1)
    section_integer(data, "config.data", "negative_depth", 1)
    section_integer(data, "config.data", "negative_rounds", 1)
    section_integer(data, "config.data", "seed", 0)
    section_integer(data, "config.data", "min_positive_gain", 1, hint="a gain of 0 is judged not relevant")
    guide = config.guide
    if not guide.kind:
        return
    check_location(guide, "guide")
    weight = section_number(guide, "config.guide", "weight", 0.0, exclusive=True, hint="at most 1")
    if weight > 1.0:
        raise ConfigError(f"config.guide.weight={guide.weight!r}: must be in (0, 1] (the guide's share of the loss)")
    section_number(guide, "config.guide", "temperature", 0.0, exclusive=True)
    if guide.kind == "run_file" and data.title_queries:
        raise ConfigError("a run_file guide ranks only the run's queries, not title pseudo-queries: set "
                          "config.data.title_queries=False or use a dense or cross_encoder guide")


def build_task(config: Any) -> Task:
    """The cross-encoder Task from a configs/cross_encoder.py config."""
    data = config.data
    check_config(config)
    dataset, source_dir = sources.load_beir(config, "")
    if data.train_split not in dataset.qrels:
        raise ConfigError(f"config.data.train_split={data.train_split!r} has no qrels in {source_dir}; splits: "
                          f"{sorted(dataset.qrels)}")
    init_source = state.read_init_source(config.model.init_from, config.model.init_step)
    tokenizer_directory = tokenizer_dir(config, init_source)
    tokenizer = load_tokenizer(tokenizer_directory)
    bert_config = model_config(config, tokenizer, init_source)
    record = model_record(bert_config, tokenizer_directory)
    model = CrossEncoder(bert_config)

    index = bm25.Bm25Index.build(dataset.corpus, bm25.params_from_config(config.bm25))
    train_queries = {qid: dataset.queries[qid] for qid in dataset.qrels[data.train_split]}
    train_candidates = {qid: list(docs) for qid, docs in index.search(train_queries, data.negative_depth).items()}
    source = TrainingGroups(
        dataset, data.train_split, train_candidates, tokenizer, num_negatives=data.num_negatives,
        min_positive_gain=data.min_positive_gain, max_length=data.max_length, rounds=data.negative_rounds,
        seed=data.seed, title_candidates=title_query_candidates(dataset, index, data) if data.title_queries else None,
    )

    guide = config.guide
    if guide.kind:
        source = GuidedGroups(source, load_teacher(guide, name="guide"))

    def random_init(rng: jax.Array) -> Any:
        ids = jnp.zeros((1, data.max_length), jnp.int32)  # [1, length]
        return model.init(rng, ids, jnp.ones_like(ids), ids)["params"]

    def loss_fn(params, batch, rng):
        batch_size, group, length = batch["input_ids"].shape
        flat = [batch[name].reshape(batch_size * group, length) for name in FEATURES]  # [batch * group, length] each
        scores = model.apply({"params": params}, *flat, deterministic=False, rngs={"dropout": rng})  # [b * g, 1]
        scores = scores.reshape(batch_size, group)  # [batch, group]
        hard = losses.group_softmax_cross_entropy(scores)  # (sum, count) over the groups
        accuracy = losses.group_accuracy(scores)  # (sum, count) over the groups
        if not guide.kind:
            return hard, {"group_accuracy": accuracy}
        soft = losses.group_distillation_loss(scores, batch["guide_scores"], guide.temperature)  # the same count
        loss = ((1.0 - guide.weight) * hard[0] + guide.weight * soft[0], hard[1])  # (sum, count)
        return loss, {"group_accuracy": accuracy, "hard_loss": hard, "guide_kl": soft}

    rerank_inputs = RerankInputs(dataset, index, tokenizer, bert_config, data.max_length)
    return Task(init_params=state.init_from_source(random_init, init_source, record), loss_fn=loss_fn,
                train_source=source, collate=collate, model=record, eval_inputs={"rerank": rerank_inputs})
