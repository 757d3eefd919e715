"""TFDS builder for MS MARCO documents as long documents with passages (what FGD trains on), plus TREC DL.

Reads the official files in a manual directory (each may also be gzipped, `<name>.gz`):
- `msmarco-docs.tsv` (docid, url, title, body; the url is dropped);
- `msmarco-doc<split>-queries.tsv` + `msmarco-doc<split>-qrels.tsv` (TREC qrels), e.g. splits `train`, `dev`;
- TREC Deep Learning document judgements: `<year>qrels-docs.txt` (`qid Q0 docid rel`, gains 0-3) with
  `msmarco-test<year>-queries.tsv` give split `trecdl<year>` (TREC DL 2019: `2019qrels-docs.txt` +
  `msmarco-test2019-queries.tsv` -> `trecdl2019`).
Only judged queries are kept; document ids are not checked against the collection (a second pass over it).

Passages: MS MARCO has no passage boundaries, so a document's body is cut into consecutive windows of
`passage_words` whitespace-separated words (the last window holds the rest); passage `<docid>#<k>` is window k, and
passage 0 carries the document's title (its segment is `title\\nwords`), so the document text, assembled as in
`common.assemble_document`, is the title line followed by the body's windows separated by blank lines (runs of
whitespace inside a window become single spaces). The document's own title is left empty: it is already the
first line of its text. A document with an empty body keeps one (possibly empty) passage.

Judgements: MS MARCO and TREC DL judge documents only. The long-document schema also records passage judgements
whose maximum is the document's gain, so a judged document's gain is put on its first passage `<docid>#0`; the
passage-level BEIR export of this build is therefore not a passage benchmark.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping

from distill_ret.data import formats
from distill_ret.data.builders import common, msmarco_doc

TREC_QRELS_PATTERN = re.compile(r"(\d{4})qrels-docs\.txt(?:\.gz)?")
INPUT_PATTERN = re.compile(r"(?:msmarco-doc(?:s|.+-queries|.+-qrels)\.tsv|msmarco-test\d{4}-queries\.tsv"
                           r"|\d{4}qrels-docs\.txt)(?:\.gz)?")  # the files read
PASSAGE_SEPARATOR = "#"  # passage id = <docid>#<window index>
DEFAULT_PASSAGE_WORDS = 100


@dataclasses.dataclass(eq=False)
class MsmarcoDocLongConfig(common.PartConfig):
    passage_words: int = DEFAULT_PASSAGE_WORDS


def passage_id(doc_id: str, index: int) -> str:
    return f"{doc_id}{PASSAGE_SEPARATOR}{index}"


def long_document(document: formats.Document, passage_words: int) -> common.LongDocument:
    """`document` (title, body) as a long document of `passage_words`-word windows, the title on passage 0."""
    words = document.text.split()
    windows = [" ".join(words[start:start + passage_words]) for start in range(0, len(words), passage_words)] or [""]
    passages = [formats.Document(passage_id(document.doc_id, index), document.title if index == 0 else "", window)
                for index, window in enumerate(windows)]
    return common.assemble_document(document.doc_id, "", passages)


def split_files(raw_dir: str) -> dict[str, tuple[str, str]]:
    """split -> (queries file name, qrels file name): the MS MARCO splits, then the TREC DL years present."""
    splits = {split: (f"msmarco-doc{stem}-queries.tsv", f"msmarco-doc{stem}-qrels.tsv")
              for split, stem in common.discover_splits(raw_dir, msmarco_doc.QRELS_PATTERN).items()}
    for path in sorted(common.matching_files(raw_dir, TREC_QRELS_PATTERN)):
        year = TREC_QRELS_PATTERN.fullmatch(path.name).group(1)
        splits[f"trecdl{year}"] = (f"msmarco-test{year}-queries.tsv", f"{year}qrels-docs.txt")
    return splits


def first_passage_examples(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]
                           ) -> Iterator[tuple[int, dict]]:
    """One example per judged query (qrels order): document judgements, and each one on the document's passage 0."""
    for index, example in common.query_examples(queries, qrels):
        yield index, {**example, "passage_ids": [passage_id(doc_id, 0) for doc_id in example["doc_ids"]],
                      "passage_gains": list(example["gains"])}


def _split_examples(raw_dir: str, queries_name: str, qrels_name: str) -> Iterator[tuple[int, dict]]:
    queries = formats.read_msmarco_queries(common.find_raw_file(raw_dir, queries_name))
    qrels = formats.read_trec_qrels(common.find_raw_file(raw_dir, qrels_name), queries=queries)
    return first_passage_examples(queries, qrels)


def _documents(documents: Iterable[formats.Document], passage_words: int) -> Iterator[common.LongDocument]:
    for document in documents:
        yield long_document(document, passage_words)


class MsmarcoDocLong(common.ArrayRecordBuilder):
    name = "msmarco_doc_long"
    DESCRIPTION = "MS MARCO documents cut into passages of fixed word windows (official TSV files), with TREC DL."
    WITH_PASSAGES = True

    def _part_splits(self):
        config = self.builder_config
        if config.part == "corpus":
            documents = formats.iter_msmarco_docs(common.find_raw_file(config.raw_dir, "msmarco-docs.tsv"))
            return {common.CORPUS_SPLIT: common.long_document_examples(_documents(documents, config.passage_words))}
        return {split: _split_examples(config.raw_dir, queries, qrels)
                for split, (queries, qrels) in split_files(config.raw_dir).items()}


def configs(raw_dir: str, *, passage_words: int = DEFAULT_PASSAGE_WORDS, name: str = ""
            ) -> dict[str, MsmarcoDocLongConfig]:
    """The two part configs; the default name records the raw directory, the window size and the fingerprint."""
    options = {"passage_words": passage_words}
    fingerprint = common.inputs_fingerprint("msmarco_doc_long", options, raw_dir,
                                            common.matching_files(raw_dir, INPUT_PATTERN))
    base = common.variant_name([common.readable_name(raw_dir), f"w{passage_words}"], fingerprint, name)
    return common.part_configs(MsmarcoDocLongConfig, base, fingerprint, raw_dir=str(raw_dir), **options)
