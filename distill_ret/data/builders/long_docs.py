"""TFDS builder grouping a BEIR corpus's passages into multi-topic long documents.

The passages are shuffled with `seed` and cut into groups whose sizes are drawn uniformly from
[min_passages, max_passages] (the last group takes what is left, so it may be smaller). A document's text is
its passages' segments (`title\\ntext`, or `text` when untitled) joined by a blank line; each passage keeps its
id, title, text and [start, end) characters inside the document. Judgements are carried up: a document's gain
for a query is the maximum gain of its judged passages; the passage-level judgements are kept beside them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from distill_ret.data import formats
from distill_ret.data.builders import common


@dataclasses.dataclass(eq=False)
class LongDocsConfig(common.PartConfig):
    min_passages: int = 4
    max_passages: int = 8
    seed: int = 0


def group_passages(passage_ids: Sequence[str], min_size: int, max_size: int, seed: int) -> list[list[str]]:
    """Seeded shuffle of `passage_ids` cut into consecutive groups of sizes uniform in [min_size, max_size]."""
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_passages <= max_passages, got {min_size}, {max_size}")
    rng = np.random.default_rng(seed)
    order = [passage_ids[i] for i in rng.permutation(len(passage_ids))]
    groups, start = [], 0
    while start < len(order):
        size = int(rng.integers(min_size, max_size + 1))
        groups.append(order[start : start + size])
        start += size
    return groups


def build_long_documents(
    corpus: Mapping[str, formats.Document], min_size: int, max_size: int, seed: int
) -> list[common.LongDocument]:
    """The long documents `ld<index>` (zero-padded) made from `corpus`'s passages."""
    groups = group_passages(list(corpus), min_size, max_size, seed)
    width = len(str(max(len(groups) - 1, 0)))
    return [
        common.assemble_document(f"ld{index:0{width}d}", "", [corpus[pid] for pid in group])
        for index, group in enumerate(groups)
    ]


def passage_to_document(documents: Sequence[common.LongDocument]) -> dict[str, str]:
    return {span.passage_id: doc.doc_id for doc in documents for span in doc.passages}


class LongDocs(common.ArrayRecordBuilder):
    name = "long_docs"
    DESCRIPTION = "Multi-topic long documents grouped from a BEIR corpus's passages."
    WITH_PASSAGES = True

    def _part_splits(self):
        config = self.builder_config
        dataset = formats.read_beir(config.raw_dir)
        documents = build_long_documents(dataset.corpus, config.min_passages, config.max_passages, config.seed)
        if config.part == "corpus":
            return {common.CORPUS_SPLIT: common.long_document_examples(documents)}
        owner = passage_to_document(documents)
        return {
            split: common.long_query_examples(dataset.queries, qrels, owner) for split, qrels in dataset.qrels.items()
        }


def configs(
    raw_dir: str, *, min_passages: int = 4, max_passages: int = 8, seed: int = 0, name: str = ""
) -> dict[str, LongDocsConfig]:
    """The two part configs; the default name records the source directory, the group sizes, the seed and the
    fingerprint of the files and options."""
    options = dict(min_passages=min_passages, max_passages=max_passages, seed=seed)
    fingerprint = common.inputs_fingerprint("long_docs", options, raw_dir, common.beir_input_files(raw_dir))
    readable = [common.readable_name(raw_dir), f"p{min_passages}to{max_passages}", f"seed{seed}"]
    base = common.variant_name(readable, fingerprint, name)
    return common.part_configs(LongDocsConfig, base, fingerprint, raw_dir=str(raw_dir), **options)
