"""TFDS builder for MS MARCO document ranking from the official TSV files in a manual directory.

Expected in `raw_dir` (each may also be gzipped, `<name>.gz`): `msmarco-docs.tsv` (docid, url, title, body;
the url is dropped), `msmarco-doc<split>-queries.tsv` (qid, text) and `msmarco-doc<split>-qrels.tsv` (TREC
qrels `qid 0 docid rel`), e.g. split `train` and `dev`. Only judged queries are kept; document ids are not
checked against the collection (that would take a second pass over it).
"""
from __future__ import annotations

import re

from distill_ret.data import formats
from distill_ret.data.builders import common, msmarco_passage

QRELS_PATTERN = re.compile(r"msmarco-doc(.+)-qrels\.tsv(?:\.gz)?")
INPUT_PATTERN = re.compile(r"msmarco-doc(?:s|.+-queries|.+-qrels)\.tsv(?:\.gz)?")  # the files read


class MsmarcoDoc(common.ArrayRecordBuilder):
    name = "msmarco_doc"
    DESCRIPTION = "MS MARCO document ranking (official TSV files)."

    def _part_splits(self):
        raw_dir = self.builder_config.raw_dir
        if self.builder_config.part == "corpus":
            documents = formats.iter_msmarco_docs(common.find_raw_file(raw_dir, "msmarco-docs.tsv"))
            return {common.CORPUS_SPLIT: common.corpus_examples_from(documents)}
        return {
            split: msmarco_passage.split_examples(
                raw_dir, f"msmarco-doc{stem}-queries.tsv", f"msmarco-doc{stem}-qrels.tsv"
            )
            for split, stem in common.discover_splits(raw_dir, QRELS_PATTERN).items()
        }


def configs(raw_dir: str, *, name: str = "") -> dict[str, common.PartConfig]:
    """The two part configs; `name` defaults to the raw directory's name and the fingerprint of its files."""
    fingerprint = common.inputs_fingerprint("msmarco_doc", {}, raw_dir, common.matching_files(raw_dir, INPUT_PATTERN))
    base = common.variant_name([common.readable_name(raw_dir)], fingerprint, name)
    return common.part_configs(common.PartConfig, base, fingerprint, raw_dir=str(raw_dir))
