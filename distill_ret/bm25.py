"""BM25 through bm25s: an index over a corpus (title + text) that returns run dicts, a scorer of any text with a
corpus's statistics (the lexical teacher), and the `bm25` mode.

`Bm25Index.build(corpus).search(queries, k)` is the first-stage retriever that later parts use for candidates
and hard negatives. Tokenisation: lower-cased `\\w\\w+` tokens, English stop words removed, no stemming unless a
PyStemmer language is named. Documents that share no term with a query are not returned (a run may hold fewer
than k documents for a query, and none for a query whose terms are all unknown or stop words).
"""
import collections
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence

import bm25s
import ml_collections
import numpy as np
import Stemmer
from bm25s.tokenization import Tokenizer

from distill_ret import evaluation
from distill_ret.data import formats, sources
from distill_ret.errors import ConfigError, integer_field, number_field

METHODS = ("robertson", "atire", "bm25l", "bm25+", "lucene")


@dataclasses.dataclass(frozen=True)
class Bm25Params:
    """Scoring and tokenisation settings."""

    k1: float = 1.5  # term-frequency saturation
    b: float = 0.75  # document-length normalisation
    delta: float = 0.5  # lower bound added to term scores (bm25l and bm25+ only)
    method: str = "lucene"  # one of METHODS
    stopwords: str = "english"  # bm25s stop-word list name; "" keeps every token
    stemmer: str = ""  # PyStemmer language (e.g. "english"); "" = no stemming

    def __post_init__(self):
        """Checks every setting (ConfigError naming the `config.bm25` field), so bm25s never sees a bad value."""
        for field in ("k1", "b", "delta"):
            number_field(getattr(self, field), f"config.bm25.{field}", 0)
        if self.b > 1:
            raise ConfigError(f"config.bm25.b={self.b!r}: must be in [0, 1]")
        if self.method not in METHODS:
            raise ConfigError(f"config.bm25.method={self.method!r}: must be one of {METHODS}")
        if self.stemmer and self.stemmer not in Stemmer.algorithms():
            languages = ", ".join(Stemmer.algorithms())
            raise ConfigError(f"config.bm25.stemmer={self.stemmer!r}: not a PyStemmer language ({languages})")
        try:
            _tokenizer(self)
        except ValueError:
            raise ConfigError(
                f"config.bm25.stopwords={self.stopwords!r}: not a bm25s stop-word list (e.g. english, german, french)"
            ) from None


def _tokenizer(params: "Bm25Params") -> Tokenizer:
    stemmer = Stemmer.Stemmer(params.stemmer) if params.stemmer else None
    return Tokenizer(stopwords=params.stopwords or None, stemmer=stemmer)


def document_text(document: formats.Document) -> str:
    """The indexed text of a document: its title, then its body."""
    return f"{document.title} {document.text}" if document.title else document.text


class Bm25Index:
    """A bm25s index over a fixed corpus; search returns `query id -> document id -> score`."""

    def __init__(self, doc_ids: list[str], tokenizer: Tokenizer, retriever: bm25s.BM25):
        self.doc_ids = doc_ids
        self._tokenizer = tokenizer
        self._retriever = retriever

    @classmethod
    def build(cls, corpus: Mapping[str, formats.Document], params: Bm25Params = Bm25Params()) -> "Bm25Index":
        if not corpus:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        doc_ids = list(corpus)
        tokenizer = _tokenizer(params)
        tokens = tokenizer.tokenize(
            [document_text(corpus[doc_id]) for doc_id in doc_ids], update_vocab=True, return_as="tuple",
            show_progress=False,
        )
        retriever = bm25s.BM25(k1=params.k1, b=params.b, delta=params.delta, method=params.method)
        retriever.index(tokens, show_progress=False)
        return cls(doc_ids, tokenizer, retriever)

    def search(self, queries: Mapping[str, str], k: int) -> dict[str, dict[str, float]]:
        """Top-k documents per query (score > 0), best first; equal scores are ordered by document id."""
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        query_ids = list(queries)
        tokens = self._tokenizer.tokenize(
            [queries[qid] for qid in query_ids], update_vocab=False, return_as="ids", show_progress=False,
            allow_empty=False,
        )
        run: dict[str, dict[str, float]] = {qid: {} for qid in query_ids}
        searchable = [i for i, ids in enumerate(tokens) if ids]
        if not searchable:
            return run
        # [queries, k] document indices and scores, best first.
        indices, scores = self._retriever.retrieve(
            [tokens[i] for i in searchable], k=min(k, len(self.doc_ids)), show_progress=False,
            backend_selection="numpy",
        )
        for row, i in enumerate(searchable):
            hits = [(self.doc_ids[int(j)], float(s)) for j, s in zip(indices[row], scores[row]) if s > 0]
            run[query_ids[i]] = dict(sorted(hits, key=lambda hit: (-hit[1], hit[0])))
        return run


def _idf(method: str, df: np.ndarray, n: int) -> np.ndarray:
    """[terms] inverse document frequency of each variant (Kamphuis et al., ECIR 2020, as bm25s computes it)."""
    if method == "robertson":
        return np.log(np.maximum((n - df + 0.5) / (df + 0.5), 1.0))
    if method == "lucene":
        return np.log1p((n - df + 0.5) / (df + 0.5))
    if method == "atire":
        return np.log(n / df)
    if method == "bm25l":
        return np.log((n + 1) / (df + 0.5))
    return np.log((n + 1) / df)  # bm25+


def _term_frequency_component(params: Bm25Params, tf: np.ndarray, length: np.ndarray, average: float) -> np.ndarray:
    """[...] the saturated term frequency of each variant; tf and length broadcast (a tf of 0 scores 0 except
    for bm25l and bm25+, whose delta lower-bounds every query term)."""
    k1, b, delta = params.k1, params.b, params.delta
    norm = 1.0 - b + b * length / average
    if params.method in ("robertson", "lucene"):
        return tf / (k1 * norm + tf)
    if params.method == "atire":
        return tf * (k1 + 1.0) / (tf + k1 * norm)
    if params.method == "bm25l":
        c = tf / norm
        return (k1 + 1.0) * (c + delta) / (k1 + c + delta)
    return (k1 + 1.0) * tf / (k1 * norm + tf) + delta  # bm25+


class Bm25Scorer:
    """BM25 of any text against a query with a fixed corpus's statistics (document frequencies, document count,
    average length): the score `Bm25Index` would give the text were it a document of that corpus. Query terms the
    corpus never uses score nothing; a repeated query term counts each time, as in bm25s."""

    def __init__(self, params: Bm25Params, document_frequency: dict[str, int], num_documents: int,
                 average_length: float):
        self.params = params
        self.document_frequency = document_frequency
        self.num_documents = num_documents
        self.average_length = average_length

    @classmethod
    def build(cls, corpus: Mapping[str, formats.Document], params: Bm25Params = Bm25Params()) -> "Bm25Scorer":
        if not corpus:
            raise ValueError("cannot take BM25 statistics of an empty corpus")
        documents = _split(params, [document_text(document) for document in corpus.values()])
        frequency = collections.Counter(term for terms in documents for term in set(terms))
        return cls(params, dict(frequency), len(documents), sum(map(len, documents)) / len(documents))

    def digest(self) -> str:
        """sha256 of the statistics and settings: what makes two scorers agree on every score."""
        record = [dataclasses.asdict(self.params), self.num_documents, repr(self.average_length),
                  sorted(self.document_frequency.items())]
        return hashlib.sha256(json.dumps(record, ensure_ascii=False).encode()).hexdigest()

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """[texts] float64 BM25 scores of each text for the query."""
        known = [term for term in _split(self.params, [query])[0] if term in self.document_frequency]
        scores = np.zeros(len(texts), np.float64)
        if not known or not texts:
            return scores
        terms = sorted(set(known))
        weight = np.array([known.count(term) for term in terms], np.float64)  # [terms] occurrences in the query
        idf = _idf(self.params.method, np.array([self.document_frequency[t] for t in terms], np.float64),
                   self.num_documents)  # [terms]
        split = _split(self.params, list(texts))
        counts = [collections.Counter(words) for words in split]
        tf = np.array([[count[term] for term in terms] for count in counts], np.float64)  # [texts, terms]
        length = np.array([len(words) for words in split], np.float64)[:, None]  # [texts, 1]
        tfc = _term_frequency_component(self.params, tf, length, self.average_length)  # [texts, terms]
        return tfc @ (weight * idf)


def _split(params: Bm25Params, texts: list[str]) -> list[list[str]]:
    """Each text as its BM25 terms (the index's tokenisation, every term kept)."""
    return _tokenizer(params).tokenize(texts, update_vocab=True, return_as="string", show_progress=False)


def params_from_config(section: ml_collections.ConfigDict, path: str = "config.bm25") -> Bm25Params:
    """Bm25Params from a config section of `common.bm25()` fields at dotted `path` (checked: ConfigError naming
    the field)."""
    try:
        return Bm25Params(
            k1=section.k1, b=section.b, delta=section.delta, method=section.method, stopwords=section.stopwords,
            stemmer=section.stemmer,
        )
    except ConfigError as error:
        if path == "config.bm25":
            raise
        raise ConfigError(str(error).replace("config.bm25.", f"{path}.", 1)) from None


@dataclasses.dataclass(frozen=True)
class Bm25Settings:
    """A BM25 job's checked config values."""

    params: Bm25Params
    top_k: int  # documents kept per query
    measures: tuple[str, ...]  # ir-measures names
    relevance_level: int
    per_query: bool


def settings_from_config(config: ml_collections.ConfigDict) -> Bm25Settings:
    """Checks `config.bm25` and `config.eval` before any input is read or any output written."""
    params = params_from_config(config.bm25)
    integer_field(config.bm25.top_k, "config.bm25.top_k", 1)
    measures = evaluation.measures_from_config(config.eval)
    return Bm25Settings(params, config.bm25.top_k, measures, config.eval.relevance_level, config.eval.per_query)


def _queries_of_split(dataset: formats.BeirDataset, split: str, beir_dir: str) -> dict[str, str]:
    if not split:
        return dataset.queries
    if split not in dataset.qrels:
        raise ConfigError(f"config.data.split={split!r} has no qrels in {beir_dir}; splits: {sorted(dataset.qrels)}")
    if not dataset.qrels[split]:
        raise formats.FormatError(os.path.join(beir_dir, "qrels", f"{split}.tsv"), None, "no judgements")
    return {qid: dataset.queries[qid] for qid in dataset.qrels[split]}


@dataclasses.dataclass(frozen=True)
class Bm25Outcome:
    """What a BM25 job wrote and measured."""

    paths: dict[str, str]  # "run", and when the split has qrels "metrics" (and "per_query" when asked)
    metrics: dict[str, float] | None  # measure -> value; None without qrels
    num_queries: int


def run_bm25(
    dataset: formats.BeirDataset, split: str, settings: Bm25Settings, workdir: str, *, source: str,
) -> Bm25Outcome:
    """Searches a split's queries (all queries when `split` is ""), writes `<workdir>/bm25-<split>.trec` and,
    when the split has qrels, `<workdir>/bm25-<split>.metrics.json`. The run is evaluated before anything is
    written, so a split without judgements or a run that finds nothing leaves no file behind."""
    queries = _queries_of_split(dataset, split, source)
    if not dataset.corpus:
        raise formats.FormatError(os.path.join(source, "corpus.jsonl"), None, "no documents to index")
    run = Bm25Index.build(dataset.corpus, settings.params).search(queries, settings.top_k)
    result = None
    if split:
        result = evaluation.evaluate(
            run, dataset.qrels[split], settings.measures, relevance_level=settings.relevance_level
        )
    name = f"bm25-{split or 'all'}"
    paths = {"run": os.path.join(workdir, f"{name}.trec")}
    formats.write_run(run, paths["run"], tag="bm25")
    if result is None:
        return Bm25Outcome(paths=paths, metrics=None, num_queries=len(queries))
    extra = {"run": os.path.abspath(paths["run"]), "qrels": f"{source} [{split}]",
             "bm25": dataclasses.asdict(settings.params), "top_k": settings.top_k}
    paths.update(evaluation.save_evaluation(result, workdir, name, per_query=settings.per_query, extra=extra))
    return Bm25Outcome(paths=paths, metrics=result.aggregate, num_queries=len(queries))


def run_from_config(config: ml_collections.ConfigDict, workdir: str) -> Bm25Outcome:
    """The `bm25` mode: BM25 over `config.data`'s corpus, a TREC run of `data.split`'s queries, and its metrics.

    Config values are checked first, then the data is read; nothing is written before both pass."""
    settings = settings_from_config(config)
    dataset, source = sources.load_beir(config, workdir)
    outcome = run_bm25(dataset, config.data.split, settings, workdir, source=source)
    if outcome.metrics is not None:
        label = f"bm25 {evaluation.data_label(config.data)}/{config.data.split}"
        print(evaluation.format_table({label: outcome.metrics}))
    print(f"{outcome.num_queries} queries searched; wrote {', '.join(outcome.paths.values())}")
    return outcome
