"""Task `dgr`: stage 1 (`config.stage` = 1 or absent) teaches a T5 student to generate passage identifiers (plain
generation loss, DESIGN §3); stage 2 (`config.stage = 2`, `dgr.stage2`) distils a teacher's ranking of the stage-1
student's candidates (mode candidates, `dgr.candidates`) into it.

  distill-ret train --config=configs/dgr.py:cranfield_stage1 --workdir=workdirs/dgr/stage1
  distill-ret candidates --config=configs/dgr.py:cranfield_stage2 --workdir=workdirs/dgr/stage2
  distill-ret train --config=configs/dgr.py:cranfield_stage2 --workdir=workdirs/dgr/stage2

Stage 1. Examples (`StageOneExamples`, in a fixed order; the trainer shuffles them with train.seed):
- indexing pairs: for every passage, its input (`data.indexing_input`: "passage" = title and text, "text" = the text
  without the title (the input then never holds the title it is asked for, as a query does not), "spans" =
  `data.indexing_spans` spans of `data.indexing_span_words` words drawn with `data.seed`) -> each of its
  identifiers, in every view with weight > 0 (`config.identifiers`, see `dgr.identifiers`);
- retrieval pairs: every judged pair of `data.train_split` with gain >= `data.min_positive_gain`: the query -> each
  identifier of the passage; the retrieval pairs are repeated `data.retrieval_copies` times (the mix).
Inputs are the tokenizer's ids (its special tokens included) cut to `data.max_input_length`; targets are the
identifier's tokens (EOS last), padded to `identifiers.max_tokens`.

Model: `model.init_from` (an HF T5 directory, whose tokenizer is then the identifiers', or an earlier dgr run's
workdir) through `training.state.init_from_source`, else a random T5 from the `config.model` fields with the
identifiers' tokenizer (`identifiers.tokenizer_dir`, or a Unigram tokenizer trained on the corpus and saved in
`identifiers.dir`). The model record is head "t5" with that tokenizer's directory (the identifiers directory for
a trained Unigram tokenizer), so a later stage naming this run and the same `identifiers.dir` reads them back.

Loss: `losses.token_cross_entropy` over the target tokens, returned as its (sum, count) pair.

Stage 2: the examples are the candidate lists of `distill.candidates_dir` (refused when they were written for
another student than `model.init_from`/`init_step`, another teacher than `config.teacher`, other data or other
identifiers), the loss L_rank + distill.gen_weight * L_gen (see `dgr.stage2`); `model.init_from` is required.

Dev evaluation (both stages): evaluator kind "generative" (`build_generative_evaluator`): the constrained beam search of
`dgr.retrieve.Retriever` over a split's queries, passage scores aggregated as in mode retrieve, scored with
`distill_ret.evaluation`; so `checkpoint.best_metric="dev/nDCG@10"` selects the best checkpoint.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from distill_ret import evaluation, hf, losses
from distill_ret.data import formats, pipeline, sources
from distill_ret.dgr import candidates, identifiers, retrieve, stage2, student
from distill_ret.errors import ConfigError, section_integer, section_number
from distill_ret.models.t5 import T5, T5Config, shift_right
from distill_ret.training import evaluators, partitioning, state
from distill_ret.training.tasks import ModelRecord, Task

INIT_FIELDS = ("init_from", "init_step")  # config.model fields that say where the weights start
INDEXING_INPUTS = ("passage", "text", "spans")
INDEXING, RETRIEVAL = "indexing", "retrieval"


@dataclasses.dataclass(frozen=True)
class Pair:
    """One generation example: input text -> identifier (an index into the identifier set)."""

    kind: str  # INDEXING | RETRIEVAL
    text: str
    identifier: int


def check_data(data: Any) -> None:
    """Every `config.data` field of the task (ConfigError naming the field)."""
    if data.get("indexing_input") not in INDEXING_INPUTS:
        raise ConfigError(f"config.data.indexing_input={data.get('indexing_input')!r}: expected one of "
                          f"{INDEXING_INPUTS}")
    for name, minimum in (("indexing_spans", 1), ("indexing_span_words", 1), ("retrieval_copies", 0),
                          ("max_input_length", 2), ("seed", 0), ("min_positive_gain", 1)):
        section_integer(data, "config.data", name, minimum)


def indexing_texts(corpus: Mapping[str, formats.Document], data: Any) -> dict[str, list[str]]:
    """passage id -> its indexing inputs: title and text, the text alone, or `indexing_spans` spans seeded by (seed,
    position)."""
    if data.indexing_input == "passage":
        return {doc_id: [identifiers.passage_text(document)] for doc_id, document in corpus.items()}
    if data.indexing_input == "text":
        return {doc_id: [document.text] for doc_id, document in corpus.items() if document.text.strip()}
    return {doc_id: identifiers.sampled_spans(identifiers.passage_text(document), data.indexing_spans,
                                              data.indexing_span_words, np.random.default_rng((data.seed, position)))
            for position, (doc_id, document) in enumerate(corpus.items())}


def generation_pairs(dataset: formats.BeirDataset, identifier_set: identifiers.IdentifierSet, data: Any
                     ) -> list[Pair]:
    """The indexing pairs of every passage (corpus order), then `retrieval_copies` copies of the retrieval pairs."""
    by_passage = identifier_set.identifiers_of()
    pairs = [Pair(INDEXING, text, identifier)
             for doc_id, texts in indexing_texts(dataset.corpus, data).items()
             for text in texts for identifier in by_passage.get(doc_id, [])]
    judged = dataset.qrels[data.train_split]
    retrieval = [Pair(RETRIEVAL, dataset.queries[qid], identifier)
                 for qid in sorted(judged) for doc_id, gain in sorted(judged[qid].items())
                 if gain >= data.min_positive_gain and doc_id in by_passage
                 for identifier in by_passage[doc_id]]
    return pairs + retrieval * data.retrieval_copies


class StageOneExamples:
    """Random-access source: example i -> {"inputs": [n] int32 input ids, "targets": [m] int32 identifier tokens}."""

    def __init__(self, pairs: Sequence[Pair], identifier_set: identifiers.IdentifierSet, tokenizer,
                 max_input_length: int):
        self.pairs = list(pairs)
        texts = sorted({pair.text for pair in self.pairs})
        encoded = tokenizer(texts, truncation=True, max_length=max_input_length)["input_ids"] if texts else []
        self._inputs = {text: np.asarray(ids, np.int32) for text, ids in zip(texts, encoded)}
        self._targets = [np.asarray(identifier.tokens, np.int32) for identifier in identifier_set.identifiers]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        pair = self.pairs[index]
        return {"inputs": self._inputs[pair.text], "targets": self._targets[pair.identifier]}


def model_config(config: Any, source: state.InitSource | None) -> T5Config:
    """The init source's T5 config (its architecture, with the compute fields of `config.model`: dtype, remat),
    else one from the `config.model` fields."""
    if source is not None:
        found = hf.config_from_dict(source.config, f"config.model.init_from={source.path!r}",
                                    dtype=config.model.dtype, remat=config.model.remat)
        if not isinstance(found, T5Config):
            raise ConfigError(f"config.model.init_from={source.path!r}: a {type(found).__name__} model; dgr needs a T5")
        return found
    try:
        return T5Config(**{name: value for name, value in config.model.items() if name not in INIT_FIELDS})
    except TypeError as error:
        raise ConfigError(f"config.model: {error}") from None


@dataclasses.dataclass(frozen=True)
class GenerativeInputs:
    """What evaluator kind "generative" needs from the task: the data, the identifiers and the model config."""

    dataset: formats.BeirDataset
    identifier_set: identifiers.IdentifierSet
    weights: np.ndarray  # [len(identifiers.VIEWS)] view weights
    tokenizer: Any
    model_config: T5Config


class GenerativeEvaluation:
    """Constrained retrieval of a split's queries with the given params, scored with ir-measures; the Retriever
    (trie on device, compiled search) is built once per mesh."""

    def __init__(self, inputs: GenerativeInputs, split: str, measures: tuple[str, ...], relevance_level: int,
                 retriever_options: dict):
        self.inputs, self.split, self.measures = inputs, split, measures
        self.relevance_level, self.retriever_options = relevance_level, retriever_options
        self._retrievers: dict[Mesh, retrieve.Retriever] = {}

    def retriever(self, mesh: Mesh) -> retrieve.Retriever:
        if mesh not in self._retrievers:
            inputs = self.inputs
            self._retrievers[mesh] = retrieve.Retriever(
                None, inputs.model_config, inputs.tokenizer, inputs.identifier_set, list(inputs.dataset.corpus),
                inputs.weights, mesh=mesh, **self.retriever_options)
        return self._retrievers[mesh]

    def __call__(self, params: Any, mesh: Mesh) -> dict[str, float]:
        retriever = self.retriever(mesh)
        retriever.params = jax.device_put(jax.tree.map(np.asarray, params), partitioning.replicated(mesh))
        dataset = self.inputs.dataset
        qrels = dataset.qrels[self.split]
        run = retriever.retrieve({qid: dataset.queries[qid] for qid in qrels})
        found = {qid: docs for qid, docs in run.items() if docs}
        if not found:
            return {measure: 0.0 for measure in self.measures}
        return evaluation.evaluate(found, qrels, self.measures, relevance_level=self.relevance_level).aggregate


def build_generative_evaluator(name: str, section: Any, inputs: GenerativeInputs, mesh: Mesh
                               ) -> evaluators.Evaluator:
    """Kind "generative": fields split, num_beams, length_penalty, aggregation, batch_size, max_query_length,
    measures, relevance_level (see mode retrieve for the scoring)."""
    prefix = f"config.evals.{name}"
    split = section.get("split")
    if split not in inputs.dataset.qrels:
        raise ConfigError(f"{prefix}.split={split!r} has no qrels; splits: {sorted(inputs.dataset.qrels)}")
    aggregation = section.get("aggregation")
    if aggregation not in retrieve.AGGREGATIONS:
        raise ConfigError(f"{prefix}.aggregation={aggregation!r}: must be one of {retrieve.AGGREGATIONS}")
    penalty = section_number(section, prefix, "length_penalty")
    measures = evaluation.measures_from_config(section, prefix)
    options = {field: evaluators.positive_field(name, section, field)
               for field in ("num_beams", "batch_size", "max_query_length")}
    options.update(length_penalty=penalty, aggregation=aggregation)
    evaluation_ = GenerativeEvaluation(inputs, split, measures, section.relevance_level, options)
    evaluation_.retriever(mesh)  # built now: a bad option fails before training starts
    return evaluators.Evaluator(name=name, every=evaluators.check_every(name, section), measures=measures,
                                evaluate=evaluation_)


def make_loss_fn(model: T5, t5_config: T5Config):
    """The pure (params, batch, rng) -> ((sum, count), metrics) of stage 1."""

    def loss_fn(params, batch, rng):
        decoder_inputs = shift_right(batch["targets"], t5_config.decoder_start_token_id)  # [batch, target]
        logits = model.apply({"params": params}, batch["inputs"], decoder_inputs, deterministic=False,
                             rngs={"dropout": rng})  # [batch, target, vocab]
        mask = batch["targets"] != t5_config.pad_token_id  # [batch, target]
        loss = losses.token_cross_entropy(logits, batch["targets"], mask)  # (sum, count) over identifier tokens
        return loss, {"token_accuracy": losses.token_accuracy(logits, batch["targets"], mask)}

    return loss_fn


def check_stage(config: Any) -> int:
    """`config.stage` (1 when absent): 1 = generation, 2 = distillation from mode candidates' lists."""
    stage = config.get("stage", 1)
    if stage not in (1, 2) or isinstance(stage, bool):
        raise ConfigError(f"config.stage={stage!r}: must be 1 (generation) or 2 (distillation)")
    return stage


def build_task(config: Any) -> Task:
    """The dgr Task of `config.stage` (1 or 2) from a configs/dgr.py config."""
    stage = check_stage(config)
    settings = None
    if stage == 2:
        stage2.check_sections(config)
        settings = stage2.settings_from_config(config.distill)
    data = config.data
    check_data(data)
    options = student.check_identifier_fields(config)
    init_source = state.read_init_source(config.model.init_from, config.model.init_step)
    if stage == 2 and init_source is None:
        raise ConfigError("config.model.init_from is required in stage 2 (the stage-1 run whose candidates it learns)")
    t5_config = model_config(config, init_source)
    dataset, source = sources.load_beir(config, "")
    if data.train_split not in dataset.qrels:
        raise ConfigError(f"config.data.train_split={data.train_split!r} has no qrels in {source}; splits: "
                          f"{sorted(dataset.qrels)}")
    ids = student.load_identifiers(config, options, dataset.corpus,
                                   init_source.tokenizer_dir if init_source is not None else "", t5_config)
    record = ModelRecord(config=t5_config.to_hf().to_dict(), head="t5", tokenizer_dir=ids.tokenizer_dir)
    model = T5(t5_config)

    def random_init(rng: jax.Array) -> Any:
        inputs = jnp.ones((1, data.max_input_length), jnp.int32)  # [1, input]
        targets = jnp.ones((1, options.max_tokens), jnp.int32)  # [1, target]
        return model.init(rng, inputs, targets)["params"]

    generative = GenerativeInputs(dataset, ids.identifier_set, ids.weights(options), ids.tokenizer, t5_config)
    if stage == 1:
        examples = StageOneExamples(generation_pairs(dataset, ids.identifier_set, data), ids.identifier_set,
                                    ids.tokenizer, data.max_input_length)
        lengths = {"inputs": data.max_input_length, "targets": options.max_tokens}
        loss_fn = make_loss_fn(model, t5_config)
    else:
        found = candidates.read_candidates(settings.candidates_dir,
                                           candidates.stage_two_parts(config, dataset, ids.directory))
        rows = stage2.identifier_rows(ids.identifier_set, settings.max_identifiers_per_view, options.max_tokens,
                                      t5_config.pad_token_id)
        examples = stage2.ListExamples(found, rows, ids.tokenizer, data.max_input_length, settings,
                                       t5_config.pad_token_id)
        if not len(examples):
            raise formats.FormatError(settings.candidates_dir, None, "no query has both a judged positive and a "
                                                                     "negative to rank")
        lengths = {"query": data.max_input_length}
        loss_fn = stage2.make_loss_fn(model, t5_config, settings, ids.weights(options), examples.num_positive_slots)
    collate = functools.partial(pipeline.pad_and_stack, lengths=lengths, pad_value=t5_config.pad_token_id)
    return Task(init_params=state.init_from_source(random_init, init_source, record), loss_fn=loss_fn,
                train_source=examples, collate=collate, model=record, eval_inputs={"generative": generative})
