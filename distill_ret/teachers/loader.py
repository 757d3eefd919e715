"""Builds a teacher from a config section (`kind`, `path` and scoring options), for every mode and task that uses one.

The section's fields: kind (cross_encoder | dense | run_file | bm25), path (a `train` workdir whose checkpoints hold a
cross-encoder, or a BertForSequenceClassification Hugging Face directory; a BERT Hugging Face directory; a TREC
run; a BEIR directory whose corpus gives BM25's statistics), max_length (0 = the checkpoint's training length, 256
for Hugging Face directories), batch_size, bucket_step, pooling and normalize (dense only), show_progress, and for
bm25 an optional `bm25` subsection (the fields of `config.bm25`; bm25s defaults without it).
"""
from __future__ import annotations

import contextlib
import os
import pathlib

import ml_collections

from distill_ret.errors import ConfigError
from distill_ret.teachers.base import Teacher

TEACHER_KINDS = ("cross_encoder", "dense", "run_file", "bm25")


def load_teacher(section: ml_collections.ConfigDict, name: str = "teacher") -> Teacher:
    """The teacher that section `config.<name>` describes."""
    kind, path = section.kind, section.path
    if kind not in TEACHER_KINDS:
        raise ConfigError(f"config.{name}.kind must be one of {TEACHER_KINDS}, got {kind!r}")
    if not path or not os.path.exists(path):
        raise ConfigError(f"config.{name}.path={path!r} does not exist")
    if kind == "run_file":
        from distill_ret.teachers.run_file import RunFileTeacher

        return RunFileTeacher.from_file(path)
    if kind == "bm25":
        from distill_ret import bm25
        from distill_ret.teachers.lexical import Bm25Teacher

        if not os.path.isfile(os.path.join(path, "corpus.jsonl")):
            raise ConfigError(f"config.{name}.path={path!r}: a bm25 teacher needs a BEIR directory (corpus.jsonl)")
        params = (bm25.params_from_config(section.bm25, f"config.{name}.bm25") if "bm25" in section
                  else bm25.Bm25Params())
        return Bm25Teacher.from_beir(path, params)
    if kind == "dense":
        from distill_ret.teachers.dense import DenseTeacher

        with _length_named(section, name):
            return DenseTeacher.from_hf(path, max_length=section.max_length or 256, pooling=section.pooling,
                                        normalize=section.normalize, batch_size=section.batch_size,
                                        show_progress=bool(section.get("show_progress", False)))
    options = {"batch_size": section.batch_size, "show_progress": section.show_progress,
               "bucket_step": section.bucket_step}
    if section.max_length:
        options["max_length"] = section.max_length
    with _length_named(section, name):
        return load_cross_encoder(path, **options)


@contextlib.contextmanager
def _length_named(section: ml_collections.ConfigDict, name: str):
    """A teacher longer than its model's position table is the user's `max_length` (or its default): one line."""
    try:
        yield
    except ValueError as error:
        if "positions" not in str(error):
            raise
        raise ConfigError(f"config.{name}.max_length={section.max_length!r} (0 = the default): {error}") from None


def load_cross_encoder(path: str | os.PathLike, **scorer_options) -> Teacher:
    """A cross-encoder teacher from a `train` workdir (its best checkpoint) or a Hugging Face directory."""
    from distill_ret.teachers.cross_encoder import CrossEncoderTeacher

    if (pathlib.Path(path) / "checkpoints").is_dir():
        return CrossEncoderTeacher.from_checkpoint(path, **scorer_options)
    return CrossEncoderTeacher.from_hf(path, **scorer_options)
