"""What the FGD task and the mining mode both read: the long documents segmented into passages and sentences, the
tokenizer, and the bi-encoder student (its architecture, head options and where its weights come from).

Config fields read: `data` (a long-document builder: name, raw_dir, data_dir, ...; max_length: document tokens;
query_max_length), `model` (init_from, init_step, tokenizer_dir, dtype, random-init sizes; pooling, normalize,
tied: the bi-encoder's head options).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from distill_ret.data import segment, sources
from distill_ret.errors import ConfigError, integer_field
from distill_ret.hf.identity import load_tokenizer
from distill_ret.models import heads
from distill_ret.models.bert import BertConfig
from distill_ret.teachers import cross_encoder_task
from distill_ret.training import state
from distill_ret.training.tasks import ModelRecord


@dataclasses.dataclass(frozen=True)
class LongDocuments:
    """The long documents, their segmentations (one truncated encoding each) and the tokenizer that made them."""

    dataset: sources.LongDocsDataset
    segmented: dict[str, segment.SegmentedDocument]
    tokenizer: Any

    def visible_passages(self) -> set[str]:
        """Ids of the passages that keep at least one token within their document's truncated encoding."""
        return {passage.passage_id for doc_id, document in self.dataset.documents.items()
                for passage, shown in zip(document.passages, self.segmented[doc_id].passage_mask, strict=True)
                if shown}


@dataclasses.dataclass(frozen=True)
class Student:
    """The bi-encoder student: module, record, and the source of its initial weights (None: random)."""

    model: heads.BiEncoder
    record: ModelRecord
    source: state.InitSource | None
    tokenizer: Any


def check_lengths(config: Any) -> None:
    """ConfigError naming the field unless the token lengths are usable."""
    for field in ("max_length", "query_max_length"):
        integer_field(config.data.get(field), f"config.data.{field}", 4, "tokens")


def student(config: Any) -> Student:
    """The student that `config.model` describes; an earlier run's record must agree on the head options."""
    model = config.model
    if model.pooling not in heads.POOLINGS:
        raise ConfigError(f"config.model.pooling={model.pooling!r}: expected one of {heads.POOLINGS}")
    source = state.read_init_source(model.init_from, model.init_step)
    tokenizer_directory = cross_encoder_task.tokenizer_dir(config, source)
    tokenizer = load_tokenizer(tokenizer_directory)
    bert_config: BertConfig = cross_encoder_task.model_config(config, tokenizer, source)
    if bert_config.max_position_embeddings < max(config.data.max_length, config.data.query_max_length):
        raise ConfigError(f"config.data.max_length={config.data.max_length}: longer than the model's "
                          f"max_position_embeddings={bert_config.max_position_embeddings}")
    options = {"pooling": model.pooling, "normalize": bool(model.normalize), "tied": bool(model.tied)}
    record = ModelRecord(config=bert_config.to_hf().to_dict(), head="bi_encoder", tokenizer_dir=tokenizer_directory,
                         options=options)
    return Student(heads.BiEncoder(bert_config, **options), record, source, tokenizer)


def long_documents(config: Any, tokenizer) -> LongDocuments:
    """The long documents of `config.data`, each segmented once (`segment.segment_document`) at data.max_length."""
    if not config.data.get("data_dir", ""):
        raise ConfigError("config.data.data_dir: set the TFDS root that holds (or will hold) the long documents, so "
                          "that every stage reads the same build")
    dataset, _ = sources.load_long_docs(config, config.data.data_dir)
    segmented = {doc_id: segment.segment_document(tokenizer, document.text, dataset.passage_chars(doc_id),
                                                  max_length=config.data.max_length)
                 for doc_id, document in dataset.documents.items()}
    return LongDocuments(dataset, segmented, tokenizer)
