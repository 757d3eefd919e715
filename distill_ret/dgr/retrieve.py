"""Mode `retrieve`: queries -> constrained beam search of the T5 student -> passage scores -> a TREC run.

`distill-ret retrieve --config=configs/retrieve.py:cranfield --workdir=DIR --config.model.path=MODEL`, where MODEL is
a Hugging Face T5 directory or a training run's workdir (its `model.step` checkpoint and model record). The
identifiers (`config.identifiers`, see `dgr.identifiers`) are built once into `identifiers.dir` and reused.

Scoring. Each query's beam search returns up to `num_beams` identifier sequences with their scores (log-likelihood
divided by length**length_penalty). A sequence counts for every (view, passage) pair of the identifiers it spells.
A passage's score mixes its views with their weights, log sum_v weight_v * exp(agg_v), where agg_v reduces the
scores of the passage's decoded identifiers in view v by `aggregation`: "sum" (as MINDER/SEAL), "max" or
"logsumexp" (log of the summed probabilities); views of which no identifier was decoded add nothing (so a passage
found in two views never ranks below the same evidence in one), and passages with no decoded identifier are not in
the run. Stage 2's differentiable s(q, p) mixes its views the same way.

Batches of `batch_size` queries (rounded up to a multiple of the mesh's data x fsdp devices; the last one padded)
are padded to one length, so the search compiles once. Config values are checked first, then the data and the
model are read, then the identifiers are built or loaded, and the run (and its metrics when the split has qrels)
are written last, each atomically.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from distill_ret import evaluation, hf, index
from distill_ret.data import formats, sources
from distill_ret.dgr import decoding, identifiers
from distill_ret.dgr import trie as trie_lib
from distill_ret.errors import ConfigError, section_integer, section_number
from distill_ret.hf import core
from distill_ret.hf.identity import load_tokenizer
from distill_ret.models import t5
from distill_ret.training import checkpointing, partitioning

AGGREGATIONS = ("sum", "max", "logsumexp")


# ------------------------------------------------------------------------------------------------ scoring


def aggregate(passages: np.ndarray, views: np.ndarray, scores: np.ndarray, weights: np.ndarray, how: str
              ) -> dict[int, float]:
    """Passage scores from decoded (passage, view, score) triples [n] each: per passage, the weighted mixture over
    its views log sum_v weights[v] * exp(r_v), r_v = sum | max | logsumexp of view v's scores. Returns passage ->
    score."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
    weights = np.asarray(weights, np.float64)
    counted = weights[views] > 0  # [n] a view of weight 0 adds nothing
    passages, views, scores = passages[counted], views[counted], np.asarray(scores, np.float64)[counted]
    if len(passages) == 0:
        return {}
    pairs, group = np.unique(np.stack([passages, views], axis=1), axis=0, return_inverse=True)  # [g, 2], [n]
    group = group.reshape(-1)
    if how == "sum":
        reduced = np.bincount(group, weights=scores, minlength=len(pairs))  # [g]
    else:
        maxima = np.full(len(pairs), -np.inf)
        np.maximum.at(maxima, group, scores)  # [g]
        reduced = maxima
        if how == "logsumexp":
            reduced = maxima + np.log(np.bincount(group, weights=np.exp(scores - maxima[group]), minlength=len(pairs)))
    weighted = reduced + np.log(weights[pairs[:, 1]])  # [g] log(weight_v) + agg_v
    passage_ids, owner = np.unique(pairs[:, 0], return_inverse=True)
    owner = owner.reshape(-1)
    top = np.full(len(passage_ids), -np.inf)
    np.maximum.at(top, owner, weighted)  # [passages]
    totals = top + np.log(np.bincount(owner, weights=np.exp(weighted - top[owner]), minlength=len(passage_ids)))
    return dict(zip(passage_ids.tolist(), totals.tolist()))


@dataclasses.dataclass(frozen=True)
class PassageMap:
    """Distinct trie sequence -> its (passage, view) pairs, as CSR arrays (each pair once per sequence)."""

    offsets: np.ndarray   # [num_sequences + 1]
    passages: np.ndarray  # [pairs] passage index
    views: np.ndarray     # [pairs] index into identifiers.VIEWS

    @classmethod
    def build(cls, identifier_set: identifiers.IdentifierSet, trie: trie_lib.Trie, passage_index: Mapping[str, int]
              ) -> "PassageMap":
        triples = {(int(sequence), passage_index[passage], identifiers.VIEWS.index(identifier.view))
                   for identifier, sequence in zip(identifier_set.identifiers, trie.identifier_sequence)
                   for passage in identifier.passages}
        rows = np.asarray(sorted(triples), np.int64).reshape(-1, 3)  # [pairs, 3]
        counts = np.bincount(rows[:, 0], minlength=trie.num_sequences)
        return cls(np.concatenate([[0], np.cumsum(counts)]), rows[:, 1], rows[:, 2])

    def expand(self, sequences: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoded sequences [b] with scores [b] -> (passages, views, scores) of every pair they spell."""
        starts, stops = self.offsets[sequences], self.offsets[sequences + 1]
        rows = np.concatenate([np.arange(start, stop) for start, stop in zip(starts, stops)] or [np.zeros(0, int)])
        repeats = stops - starts
        return self.passages[rows], self.views[rows], np.repeat(scores, repeats)


# ------------------------------------------------------------------------------------------------ search


class Retriever:
    """Constrained beam search of a T5 over a trie, mapped to passage scores; one compiled program per shape."""

    def __init__(self, params: Any, config: t5.T5Config, tokenizer, identifier_set: identifiers.IdentifierSet,
                 passage_ids: Sequence[str], weights: np.ndarray, *, num_beams: int, length_penalty: float,
                 aggregation: str, batch_size: int, max_query_length: int, mesh: Mesh | None = None,
                 show_progress: bool = False):
        self.mesh = mesh or index.default_mesh()
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        self.batch_size = -(-batch_size // shards) * shards
        self.tokenizer, self.config = tokenizer, config
        self.max_query_length, self.aggregation = max_query_length, aggregation
        self.weights, self.passage_ids = np.asarray(weights, np.float64), list(passage_ids)
        self.show_progress = show_progress
        self.trie = identifier_set.trie(config.vocab_size)
        self.passage_map = PassageMap.build(identifier_set, self.trie, {p: i for i, p in enumerate(passage_ids)})
        self.device_trie = jax.device_put(trie_lib.to_device(self.trie, place=False),
                                          partitioning.replicated(self.mesh))
        self.params = jax.device_put(params, partitioning.replicated(self.mesh))
        self.search = decoding.make_t5_search(config, num_beams=num_beams, max_length=self.trie.max_depth,
                                              length_penalty=length_penalty, mesh=self.mesh)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """[n, length] int32 token ids (the tokenizer's special tokens, e.g. T5's EOS), padded to the longest."""
        rows = self.tokenizer(list(texts), truncation=True, max_length=self.max_query_length)["input_ids"]
        ids = np.full((len(rows), max(len(row) for row in rows)), self.config.pad_token_id, np.int32)
        for row, tokens in enumerate(rows):
            ids[row, :len(tokens)] = tokens
        return ids

    def _search_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[batch_size, length] -> (distinct trie sequence [b, beams], -1 where none; scores [b, beams])."""
        rows = partitioning.process_batch_rows(self.mesh, self.batch_size)
        output = self.search(self.params, partitioning.host_to_global(batch[rows], self.mesh, self.batch_size),
                             self.device_trie)
        if jax.process_count() > 1:
            output = multihost_utils.process_allgather(output, tiled=True)
        found, nodes = np.asarray(output.found), np.asarray(output.nodes)
        position = np.searchsorted(self.trie.leaf_nodes, nodes)  # [b, beams]
        position = np.minimum(position, self.trie.num_sequences - 1)
        found = found & (self.trie.leaf_nodes[position] == nodes)
        return np.where(found, position, -1), np.asarray(output.scores, np.float64)

    def score(self, sequences: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        """One query's decoded sequences [beams] (-1 = none) and scores -> passage id -> score."""
        keep = sequences >= 0
        passages, views, pair_scores = self.passage_map.expand(sequences[keep], scores[keep])
        totals = aggregate(passages, views, pair_scores, self.weights, self.aggregation)
        return {self.passage_ids[passage]: score for passage, score in totals.items()}

    def retrieve(self, queries: Mapping[str, str]) -> dict[str, dict[str, float]]:
        """query id -> passage id -> score, for every query (queries with no decoded identifier get none)."""
        query_ids = list(queries)
        ids = self.encode_queries([queries[q] for q in query_ids])  # [n, length]
        run: dict[str, dict[str, float]] = {}
        batches = range(0, len(query_ids), self.batch_size)
        for start in tqdm.tqdm(batches, desc="retrieving", unit="batch", leave=False,
                               disable=not self.show_progress or jax.process_index() != 0):
            batch = np.full((self.batch_size, ids.shape[1]), self.config.pad_token_id, np.int32)
            chunk = ids[start:start + self.batch_size]
            batch[:len(chunk)] = chunk
            sequences, scores = self._search_batch(batch)
            for row, query_id in enumerate(query_ids[start:start + self.batch_size]):
                run[query_id] = self.score(sequences[row], scores[row])
        return run


# ------------------------------------------------------------------------------------------------ model


@dataclasses.dataclass(frozen=True)
class Student:
    params: Any
    config: t5.T5Config
    tokenizer_dir: str  # "" when the model came without one
    origin: str


def load_student(path: str, step: str | int = "best", field: str = "config.model.path") -> Student:
    """A T5 from a training run's workdir (its checkpoint and model record) or a Hugging Face T5 directory."""
    if checkpointing.is_run_workdir(path):
        run = checkpointing.read_run_checkpoint(path, step)
        if run.model is None or run.model.get("head") != "t5":
            raise ConfigError(f"{field}={path}: step {run.step} has no T5 model record (head "
                              f"{None if run.model is None else run.model.get('head')!r}); retrieve needs a T5 run")
        try:
            config = hf.config_from_dict(run.model["config"], f"the model record of {path}")
        except core.HfCheckpointError as error:
            raise ConfigError(f"{field}: {error}") from None
        params = jax.tree.map(lambda leaf: np.asarray(leaf, np.float32), run.params)
        return Student(params, config, run.model.get("tokenizer_dir") or "", f"step {run.step} of {path}")
    if not os.path.isdir(path):
        raise ConfigError(f"{field}={path!r}: neither a training run's workdir nor a Hugging Face directory")
    try:
        config, params = hf.import_from_hf(path)
    except core.HfCheckpointError as error:
        raise ConfigError(f"{field}: {error}") from None
    if not isinstance(config, t5.T5Config):
        raise ConfigError(f"{field}={path}: a {type(config).__name__} checkpoint; retrieve needs a T5")
    return Student(params, config, path if core.tokenizer_files(path) else "", path)


# ------------------------------------------------------------------------------------------------ mode


def check_config(config: ml_collections.ConfigDict) -> tuple[identifiers.Options, tuple[str, ...]]:
    """Every config value, before any file is read; returns the identifier options and the measure names."""
    section = config.retrieve
    for name in ("num_beams", "depth", "batch_size", "max_query_length"):
        section_integer(section, "config.retrieve", name, 1)
    if section.aggregation not in AGGREGATIONS:
        raise ConfigError(f"config.retrieve.aggregation={section.aggregation!r}: must be one of {AGGREGATIONS}")
    section_number(section, "config.retrieve", "length_penalty")
    evaluation.output_name(section.name, "retrieve", field="config.retrieve.name")
    step = str(config.model.step)
    if step not in ("best", "latest") and not step.isdigit():
        raise ConfigError(f"config.model.step={config.model.step!r}: must be 'best', 'latest' or a step number")
    if not config.model.path:
        raise ConfigError("config.model.path is required (a Hugging Face T5 directory or a training run's workdir)")
    if not os.path.exists(config.model.path):
        raise ConfigError(f"config.model.path={config.model.path!r} does not exist")
    options = identifiers.options_from_config(config.identifiers)
    if options.weights["semantic"] and not os.path.isdir(config.identifiers.semantic.encoder_dir or ""):
        raise ConfigError(f"config.identifiers.semantic.encoder_dir={config.identifiers.semantic.encoder_dir!r}: the "
                          "semantic view needs a dense encoder (a BERT Hugging Face directory, e.g. MiniLM)")
    for name in ("data", "fsdp", "model"):
        value = config.mesh[name]
        if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
            raise ConfigError(f"config.mesh.{name}={value!r}: must be a positive integer or -1")
    return options, evaluation.measures_from_config(config.eval)


def semantic_encoder(config: ml_collections.ConfigDict, workdir: str, mesh: Mesh) -> tuple[str, identifiers.EmbedFn]:
    """(identity of the semantic view's encoder, texts -> embeddings through it, cached in the workdir)."""
    from distill_ret.teachers.dense import DenseTeacher

    encoder_dir = config.identifiers.semantic.encoder_dir
    weights_path = pathlib.Path(encoder_dir) / core.SAFETENSORS_FILE
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest() if weights_path.is_file() else encoder_dir
    source = f"{digest}:max_length={config.identifiers.semantic.max_length}"

    def embed(texts: Sequence[str]) -> np.ndarray:
        teacher = DenseTeacher.from_hf(encoder_dir, max_length=config.identifiers.semantic.max_length, mesh=mesh)
        documents = [formats.Document(doc_id=str(i), title="", text=text) for i, text in enumerate(texts)]
        return teacher.encode_corpus(documents, cache_dir=os.path.join(workdir, "semantic_embeddings"))

    return source, embed


def run_from_config(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Mode `retrieve` (see the module docstring); returns {"run": path, "metrics": {...} or None}."""
    options, measures = check_config(config)
    dataset, source = sources.load_beir(config, workdir)
    split = config.data.split
    if split and split not in dataset.qrels:
        raise ConfigError(f"config.data.split={split!r} has no qrels in {source}; splits: {sorted(dataset.qrels)}")
    queries = {qid: dataset.queries[qid] for qid in dataset.qrels[split]} if split else dict(dataset.queries)
    if not queries:
        raise formats.FormatError(os.path.join(source, "qrels", f"{split}.tsv") if split else source, None,
                                  "no queries to retrieve for")
    step = str(config.model.step)
    student = load_student(config.model.path, int(step) if step.isdigit() else step)
    mesh = partitioning.create_mesh({name: config.mesh[name] for name in ("data", "fsdp", "model")})
    encoder_source, embed = semantic_encoder(config, workdir, mesh) if options.weights["semantic"] else ("", None)
    tokenizer_dir = config.identifiers.tokenizer_dir or student.tokenizer_dir
    check_tokenizer_fits(student, tokenizer_dir, options)
    identifier_dir = config.identifiers.dir or os.path.join(workdir, "identifiers")
    if tokenizer_dir and pathlib.Path(tokenizer_dir).absolute() == pathlib.Path(identifier_dir).absolute():
        tokenizer_dir = ""  # the training run's own identifiers (its tokenizer was trained into them): read back
    identifier_set, tokenizer, identifier_dir = identifiers.build_or_load(
        identifier_dir, dataset.corpus, options, tokenizer_dir=tokenizer_dir, encoder_source=encoder_source,
        embed=embed)
    retriever = Retriever(
        student.params, student.config, tokenizer, identifier_set, list(dataset.corpus),
        np.asarray([options.weights[view] for view in identifiers.VIEWS]), num_beams=config.retrieve.num_beams,
        length_penalty=float(config.retrieve.length_penalty), aggregation=config.retrieve.aggregation,
        batch_size=config.retrieve.batch_size, max_query_length=config.retrieve.max_query_length, mesh=mesh,
        show_progress=config.retrieve.show_progress)
    run = retriever.retrieve(queries)
    name = config.retrieve.name or f"retrieve-{split or 'all'}"
    run_path = os.path.join(workdir, f"{name}.trec")
    if jax.process_index() == 0:
        formats.write_run(run, run_path, tag="dgr", depth=config.retrieve.depth)
    found = sum(1 for scores in run.values() if scores)
    print(f"retrieve: {found} of {len(queries)} queries got passages from {student.origin}; wrote {run_path}")
    if not split:
        return {"run": run_path, "metrics": None}
    result = evaluation.evaluate({qid: docs for qid, docs in run.items() if docs}, dataset.qrels[split], measures,
                                 relevance_level=config.eval.relevance_level)
    if jax.process_index() == 0:
        evaluation.save_evaluation(result, workdir, name, per_query=config.eval.per_query, extra={
            "run": os.path.abspath(run_path), "model": student.origin, "identifiers": str(identifier_dir),
            "qrels": f"{source} [{split}]", "data": evaluation.data_label(config.data)})
    print(evaluation.format_table({name: result.aggregate}, measures))
    return {"run": run_path, "metrics": result.aggregate}


def check_tokenizer_fits(student: Student, tokenizer_dir: str, options: identifiers.Options) -> None:
    """The identifiers' tokenizer must fit the model: no token beyond its vocabulary, the same EOS (checked before
    any identifier is built)."""
    if tokenizer_dir:
        try:
            tokenizer = load_tokenizer(tokenizer_dir)
        except core.HfCheckpointError as error:
            raise ConfigError(f"config.identifiers.tokenizer_dir: {error}") from None
        size, eos, what = len(tokenizer), identifiers.eos_id(tokenizer), f"the tokenizer in {tokenizer_dir}"
        field = "config.identifiers.tokenizer_dir"
    else:
        size, eos = options.unigram_vocab_size, identifiers.UNIGRAM_SPECIALS.index("</s>")
        what, field = "the Unigram tokenizer to be trained", "config.identifiers.unigram_vocab_size"
    config = student.config
    if size > config.vocab_size or eos != config.eos_token_id:
        raise ConfigError(
            f"{field}: {what} has {size} tokens with EOS {eos}, but {student.origin} has vocab_size "
            f"{config.vocab_size} and eos_token_id {config.eos_token_id}; use the model's own tokenizer")
