"""TFDS builder for MS MARCO passage ranking from the official TSV files in a manual directory.

Expected in `raw_dir` (each may also be gzipped, `<name>.gz`): `collection.tsv` (pid, text),
`queries.<split>.tsv` (qid, text) and `qrels.<split>.tsv` (TREC qrels `qid 0 pid rel`). The query splits are
the qrels files present (`qrels.dev.small.tsv` gives split `dev_small`); only judged queries are kept. Query
ids in qrels are checked against the split's queries; passage ids are not checked against the collection,
which would take a second pass over it.
"""
from __future__ import annotations

import re

from distill_ret.data import formats
from distill_ret.data.builders import common

QRELS_PATTERN = re.compile(r"qrels\.(.+)\.tsv(?:\.gz)?")
INPUT_PATTERN = re.compile(r"(?:collection|queries\..+|qrels\..+)\.tsv(?:\.gz)?")  # the files read


def split_examples(raw_dir: str, queries_name: str, qrels_name: str):
    """(key, example) for the judged queries of one split, from MS MARCO TSV queries and TREC qrels."""
    queries = formats.read_msmarco_queries(common.find_raw_file(raw_dir, queries_name))
    qrels = formats.read_trec_qrels(common.find_raw_file(raw_dir, qrels_name), queries=queries)
    return common.query_examples(queries, qrels)


class MsmarcoPassage(common.ArrayRecordBuilder):
    name = "msmarco_passage"
    DESCRIPTION = "MS MARCO passage ranking (official TSV files)."

    def _part_splits(self):
        raw_dir = self.builder_config.raw_dir
        if self.builder_config.part == "corpus":
            collection = formats.iter_msmarco_collection(common.find_raw_file(raw_dir, "collection.tsv"))
            return {common.CORPUS_SPLIT: common.corpus_examples_from(collection)}
        return {
            split: split_examples(raw_dir, f"queries.{stem}.tsv", f"qrels.{stem}.tsv")
            for split, stem in common.discover_splits(raw_dir, QRELS_PATTERN).items()
        }


def configs(raw_dir: str, *, name: str = "") -> dict[str, common.PartConfig]:
    """The two part configs; `name` defaults to the raw directory's name and the fingerprint of its files."""
    fingerprint = common.inputs_fingerprint("msmarco_passage", {}, raw_dir,
                                            common.matching_files(raw_dir, INPUT_PATTERN))
    base = common.variant_name([common.readable_name(raw_dir)], fingerprint, name)
    return common.part_configs(common.PartConfig, base, fingerprint, raw_dir=str(raw_dir))
