"""A job config's `data` section -> the data a job reads.

`load_beir`: a BEIR-layout data set, read from `data.beir_dir` or built by a builder. `load_long_docs`: long
documents with their passages and the passages' character boundaries (what FGD segments), read from a
long-document builder's TFDS output (`long_docs`, `pydocs`), checked as it is read.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import ml_collections

from distill_ret.data import builders, formats
from distill_ret.data.builders import common
from distill_ret.errors import ConfigError

# A long document and its passages: `document.text[span.start:span.end]` is the passage's segment
# (`common.passage_segment`: its title on the first line when it has one, then its text).
LongDocument = common.LongDocument
PassageSpan = common.PassageSpan
Qrels = dict[str, dict[str, dict[str, int]]]  # split -> query id -> id -> gain


def load_beir(config: ml_collections.ConfigDict, workdir: str) -> tuple[formats.BeirDataset, str]:
    """(data set, where it was read from). `data.beir_dir` wins; otherwise `data.name` names a builder whose
    BEIR export (built on first use, see `distill_ret.data.builders`) is read."""
    beir_dir = config.data.get("beir_dir", "")
    if beir_dir:
        return formats.read_beir(beir_dir), str(beir_dir)
    if config.data.name not in builders.BUILDERS:
        raise ConfigError(
            f"set config.data.beir_dir to a BEIR directory, or config.data.name to a builder "
            f"({', '.join(sorted(builders.BUILDERS))}); got name={config.data.name!r} and no beir_dir"
        )
    return builders.load_beir_from_config(config, workdir), str(builders.beir_dir(config, workdir))


@dataclasses.dataclass(frozen=True)
class LongDocsDataset:
    """Long documents with their passages, the judged queries, and judgements at both levels.

    `qrels` judge documents (a document's gain is the maximum gain of its judged passages), `passage_qrels`
    judge passages; both map split -> query id -> id -> gain, in the builder's order.
    """

    documents: dict[str, LongDocument]  # document id -> document, in build order
    queries: dict[str, str]
    qrels: Qrels
    passage_qrels: Qrels
    passage_document: dict[str, str]  # passage id -> id of the document that holds it

    def passage_chars(self, doc_id: str) -> list[tuple[int, int]]:
        """The [start, end) character spans of a document's passages (what `segment.segment_document` takes)."""
        return [(span.start, span.end) for span in self.documents[doc_id].passages]


def load_long_docs(config: ml_collections.ConfigDict, workdir: str) -> tuple[LongDocsDataset, str]:
    """(long documents, where they were read from) for `config.data`, built on first use.

    `config.data.name` must name a builder that keeps passages (long_docs, pydocs). The boundaries are checked
    as the documents are read: FormatError names the array_record file and record of the first problem.
    """
    if config.data.get("beir_dir", ""):
        raise ConfigError(
            f"config.data.beir_dir={config.data.beir_dir!r}: a BEIR directory has no passage boundaries; long "
            f"documents come from a builder that keeps them (config.data.name = one of {passage_builders()}) "
            "with config.data.beir_dir empty"
        )
    if config.data.get("name", "") not in passage_builders():
        raise ConfigError(
            f"config.data.name={config.data.get('name', '')!r}: long documents with passages come from one of "
            f"{passage_builders()}"
        )
    data_sources = builders.load_data_sources(config, workdir)
    corpus = data_sources[common.CORPUS_SPLIT]
    splits = {name: source for name, source in sorted(data_sources.items()) if name != common.CORPUS_SPLIT}
    return read_long_docs(corpus, splits), str(corpus.dataset_info.data_dir)


def passage_builders() -> list[str]:
    """The builders whose documents carry passages with boundaries."""
    return sorted(name for name, builder in builders.BUILDERS.items() if builder.WITH_PASSAGES)


def read_long_docs(corpus, splits: Mapping[str, object]) -> LongDocsDataset:
    """A LongDocsDataset from the data sources of a long-document build: its `corpus` split, and its query
    splits (name -> source), checking every passage boundary and judgement."""
    documents: dict[str, LongDocument] = {}
    passage_document: dict[str, str] = {}
    for index, record in enumerate(corpus):
        document = _long_document(corpus, index, record)
        if document.doc_id in documents:
            raise _record_error(corpus, index, f"duplicate document id {document.doc_id!r}")
        for span in document.passages:
            if span.passage_id in passage_document:
                first = passage_document[span.passage_id]
                raise _record_error(corpus, index, f"passage {span.passage_id!r} is also in document {first!r}")
            passage_document[span.passage_id] = document.doc_id
        documents[document.doc_id] = document
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    passage_qrels: Qrels = {}
    for split, source in splits.items():
        qrels[split], passage_qrels[split] = {}, {}
        for index, record in enumerate(source):
            query_id = _text(record["query_id"])
            judged = _judgements(source, index, record, "doc_ids", "gains", documents, "document")
            judged_passages = _judgements(
                source, index, record, "passage_ids", "passage_gains", passage_document, "passage"
            )
            carried = common.propagate_gains({query_id: judged_passages}, passage_document)[query_id]
            if carried != judged:
                raise _record_error(
                    source, index, f"query {query_id!r}: document gains {judged} are not the maximum gains of "
                    f"their judged passages {carried}"
                )
            queries.setdefault(query_id, _text(record["text"]))
            qrels[split][query_id] = judged
            passage_qrels[split][query_id] = judged_passages
    return LongDocsDataset(documents, queries, qrels, passage_qrels, passage_document)


def _text(value: bytes) -> str:
    return value.decode("utf-8")


def _long_document(source, index: int, record: Mapping) -> LongDocument:
    """One corpus record as a LongDocument, once its passages sit in order inside its text, each at its segment."""
    text = _text(record["text"])
    passages = record.get("passages")
    if passages is None:
        raise _record_error(source, index, "no passages: this build does not keep long documents' passages")
    spans, previous_end = [], 0
    columns = (passages[key] for key in ("passage_id", "title", "text", "start", "end"))
    for passage_id, title, body, start, end in zip(*columns, strict=True):
        span = PassageSpan(_text(passage_id), _text(title), _text(body), int(start), int(end))
        if not previous_end <= span.start <= span.end <= len(text):  # a passage may be empty (Cranfield has some)
            raise _record_error(
                source, index, f"passage {span.passage_id!r} at [{span.start}, {span.end}) is not inside the "
                f"{len(text)} characters of the text after the previous passage (which ends at {previous_end})"
            )
        segment = common.passage_segment(formats.Document(span.passage_id, span.title, span.text))
        if text[span.start : span.end] != segment:
            raise _record_error(
                source, index, f"passage {span.passage_id!r}: text[{span.start}:{span.end}] is not its title and text"
            )
        spans.append(span)
        previous_end = span.end
    return LongDocument(_text(record["doc_id"]), _text(record["title"]), text, tuple(spans))


def _judgements(source, index: int, record: Mapping, ids_key: str, gains_key: str, known, what: str) -> dict[str, int]:
    judged = {}
    for item_id, gain in zip(record.get(ids_key, []), record.get(gains_key, []), strict=True):
        item_id = _text(item_id)
        if item_id not in known:
            raise _record_error(source, index, f"judgement of an unknown {what} {item_id!r}")
        judged[item_id] = int(gain)
    return judged


def _record_error(source, index: int, message: str) -> formats.FormatError:
    """A FormatError naming the array_record file that holds record `index` of a data source, and the record."""
    offset = index
    for instruction in source.dataset_info.splits[source.split].file_instructions:
        if offset < instruction.take:
            return formats.FormatError(instruction.filename, None, f"record {instruction.skip + offset}: {message}")
        offset -= instruction.take
    return formats.FormatError(source.dataset_info.data_dir, None, f"split {source.split!r}, record {index}: {message}")
