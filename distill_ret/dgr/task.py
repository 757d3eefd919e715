"""Task `dgr`, stage 1: a T5 student learns to generate passage identifiers (plain generation loss, DESIGN §3).

  distill-ret train --config=configs/dgr.py:cranfield_stage1 --workdir=workdirs/dgr/stage1

Examples (`StageOneExamples`, in a fixed order; the trainer shuffles them with train.seed):
- indexing pairs: for every passage, its input (`data.indexing_input`: "passage" = title and text, "spans" =
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

Dev evaluation: evaluator kind "generative" (`build_generative_evaluator`): the constrained beam search of
`dgr.retrieve.Retriever` over a split's queries, passage scores aggregated as in mode retrieve, scored with
`distill_ret.evaluation`; so `checkpoint.best_metric="dev/nDCG@10"` selects the best checkpoint.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from distill_ret import evaluation, hf, losses
from distill_ret.data import formats, pipeline
from distill_ret.dgr import identifiers, retrieve
from distill_ret.errors import ConfigError
from distill_ret.hf import core
from distill_ret.hf.identity import load_tokenizer
from distill_ret.models.t5 import T5, T5Config, shift_right
from distill_ret.training import evaluators, partitioning, state
from distill_ret.training.tasks import ModelRecord, Task

INIT_FIELDS = ("init_from", "init_step")  # config.model fields that say where the weights start
INDEXING_INPUTS = ("passage", "spans")
INDEXING, RETRIEVAL = "indexing", "retrieval"


@dataclasses.dataclass(frozen=True)
class Pair:
    """One generation example: input text -> identifier (an index into the identifier set)."""

    kind: str  # INDEXING | RETRIEVAL
    text: str
    identifier: int


def _integer(section: Any, name: str, prefix: str, minimum: int) -> int:
    value = section.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{prefix}.{name}={value!r}: must be an integer >= {minimum}")
    return value


def check_data(data: Any) -> None:
    """Every `config.data` field of the task (ConfigError naming the field)."""
    if not data.get("beir_dir"):
        raise ConfigError("config.data.beir_dir is required (a BEIR-layout directory)")
    if data.get("indexing_input") not in INDEXING_INPUTS:
        raise ConfigError(f"config.data.indexing_input={data.get('indexing_input')!r}: expected one of "
                          f"{INDEXING_INPUTS}")
    for name, minimum in (("indexing_spans", 1), ("indexing_span_words", 1), ("retrieval_copies", 0),
                          ("max_input_length", 2), ("seed", 0), ("min_positive_gain", 1)):
        _integer(data, name, "config.data", minimum)


def indexing_texts(corpus: Mapping[str, formats.Document], data: Any) -> dict[str, list[str]]:
    """passage id -> its indexing inputs: the passage text, or `indexing_spans` spans seeded by (seed, position)."""
    if data.indexing_input == "passage":
        return {doc_id: [identifiers.passage_text(document)] for doc_id, document in corpus.items()}
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
    """The init source's T5 config, else one from the `config.model` fields."""
    if source is not None:
        found = hf.config_from_dict(source.config, f"config.model.init_from={source.path!r}")
        if not isinstance(found, T5Config):
            raise ConfigError(f"config.model.init_from={source.path!r}: a {type(found).__name__} model; dgr needs a T5")
        return found
    try:
        return T5Config(**{name: value for name, value in config.model.items() if name not in INIT_FIELDS})
    except TypeError as error:
        raise ConfigError(f"config.model: {error}") from None


def check_tokenizer_fits(tokenizer, t5_config: T5Config) -> None:
    """The identifiers' tokenizer must fit the model's vocabulary and share its EOS."""
    if len(tokenizer) > t5_config.vocab_size or identifiers.eos_id(tokenizer) != t5_config.eos_token_id:
        raise ConfigError(
            f"config.model.vocab_size={t5_config.vocab_size}: the identifiers' tokenizer has {len(tokenizer)} tokens "
            f"and EOS {identifiers.eos_id(tokenizer)}, the model eos_token_id {t5_config.eos_token_id}; give the "
            "model a vocabulary that holds the tokenizer (or the tokenizer's EOS)")


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
    penalty = section.get("length_penalty")
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not np.isfinite(penalty):
        raise ConfigError(f"{prefix}.length_penalty={penalty!r}: must be a finite number")
    measures = evaluation.measures_from_config(section, prefix)
    options = {field: evaluators.positive_field(name, section, field)
               for field in ("num_beams", "batch_size", "max_query_length")}
    options.update(length_penalty=float(penalty), aggregation=aggregation)
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


def build_task(config: Any) -> Task:
    """The dgr stage-1 Task from a configs/dgr.py config."""
    data = config.data
    check_data(data)
    options = identifiers.options_from_config(config.identifiers)
    encoder_dir = config.identifiers.semantic.encoder_dir
    if options.weights["semantic"] and not os.path.isdir(encoder_dir or ""):
        raise ConfigError(f"config.identifiers.semantic.encoder_dir={encoder_dir!r}: the semantic view needs a dense "
                          "encoder (a BERT Hugging Face directory, e.g. MiniLM)")
    if not config.identifiers.dir:
        raise ConfigError("config.identifiers.dir is required (where the identifiers and their tokenizer are built "
                          "and reused)")
    init_source = state.read_init_source(config.model.init_from, config.model.init_step)
    t5_config = model_config(config, init_source)
    dataset = formats.read_beir(data.beir_dir)
    if data.train_split not in dataset.qrels:
        raise ConfigError(f"config.data.train_split={data.train_split!r} has no qrels in {data.beir_dir}; splits: "
                          f"{sorted(dataset.qrels)}")
    tokenizer_dir = (init_source.tokenizer_dir if init_source is not None and init_source.tokenizer_dir
                     else config.identifiers.tokenizer_dir)
    if tokenizer_dir and pathlib.Path(tokenizer_dir).absolute() == pathlib.Path(config.identifiers.dir).absolute():
        tokenizer_dir = ""  # an earlier stage's identifiers, read back as they were built
    if tokenizer_dir:
        try:
            check_tokenizer_fits(load_tokenizer(tokenizer_dir), t5_config)
        except core.HfCheckpointError as error:
            raise ConfigError(f"config.identifiers.tokenizer_dir: {error}") from None
    elif options.unigram_vocab_size > t5_config.vocab_size:
        raise ConfigError(f"config.identifiers.unigram_vocab_size={options.unigram_vocab_size} exceeds "
                          f"config.model.vocab_size={t5_config.vocab_size}")
    encoder_source, embed = "", None
    if options.weights["semantic"]:  # the dense encoder's embeddings are cached beside the identifiers
        mesh = partitioning.create_mesh({name: config.mesh[name] for name in ("data", "fsdp", "model")})
        cache_root = str(pathlib.Path(config.identifiers.dir).parent)
        encoder_source, embed = retrieve.semantic_encoder(config, cache_root, mesh)
    identifier_set, tokenizer, identifier_dir = identifiers.build_or_load(
        config.identifiers.dir, dataset.corpus, options, tokenizer_dir=tokenizer_dir, encoder_source=encoder_source,
        embed=embed)
    check_tokenizer_fits(tokenizer, t5_config)
    pairs = generation_pairs(dataset, identifier_set, data)
    examples = StageOneExamples(pairs, identifier_set, tokenizer, data.max_input_length)
    record_tokenizer = str(pathlib.Path(tokenizer_dir).absolute()) if tokenizer_dir else str(identifier_dir)
    record = ModelRecord(config=t5_config.to_hf().to_dict(), head="t5", tokenizer_dir=record_tokenizer)
    model = T5(t5_config)

    def random_init(rng: jax.Array) -> Any:
        inputs = jnp.ones((1, data.max_input_length), jnp.int32)  # [1, input]
        targets = jnp.ones((1, options.max_tokens), jnp.int32)  # [1, target]
        return model.init(rng, inputs, targets)["params"]

    collate = functools.partial(
        pipeline.pad_and_stack, lengths={"inputs": data.max_input_length, "targets": options.max_tokens},
        pad_value=t5_config.pad_token_id)
    generative = GenerativeInputs(dataset, identifier_set,
                                  np.asarray([options.weights[view] for view in identifiers.VIEWS]), tokenizer,
                                  t5_config)
    return Task(init_params=state.init_from_source(random_init, init_source, record),
                loss_fn=make_loss_fn(model, t5_config), train_source=examples, collate=collate, model=record,
                eval_inputs={"generative": generative})
