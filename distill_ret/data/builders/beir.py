"""TFDS builder for any BEIR-layout directory: a `corpus` split plus one query split per `qrels/<split>.tsv`."""
from __future__ import annotations

from distill_ret.data import formats
from distill_ret.data.builders import common


class Beir(common.ArrayRecordBuilder):
    """Builds `raw_dir`'s `corpus.jsonl`, `queries.jsonl` and `qrels/*.tsv` (validated by `formats.read_beir`)."""

    name = "beir"
    DESCRIPTION = "A BEIR-layout retrieval data set."

    def _part_splits(self):
        dataset = formats.read_beir(self.builder_config.raw_dir)
        if self.builder_config.part == "corpus":
            return {common.CORPUS_SPLIT: common.corpus_examples(dataset.corpus)}
        return {split: common.query_examples(dataset.queries, qrels) for split, qrels in dataset.qrels.items()}


def configs(raw_dir: str, *, name: str = "") -> dict[str, common.PartConfig]:
    """The two part configs for a BEIR directory; `name` defaults to the directory's name and the fingerprint of
    its files."""
    fingerprint = common.inputs_fingerprint("beir", {}, raw_dir, common.beir_input_files(raw_dir))
    base = common.variant_name([common.readable_name(raw_dir)], fingerprint, name)
    return common.part_configs(common.PartConfig, base, fingerprint, raw_dir=str(raw_dir))
