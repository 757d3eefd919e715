"""Builds a teacher from a config section (`kind`, `path` and scoring options), for every mode and task that uses one.

The section's fields: kind (cross_encoder | dense | run_file | bm25), path (a `train` workdir whose checkpoints hold a
cross-encoder, or a BertForSequenceClassification Hugging Face directory; a BERT Hugging Face directory; a TREC
run; a BEIR directory whose corpus gives BM25's statistics), max_length (0 = the checkpoint's training length, 256
for Hugging Face directories), batch_size, bucket_step, pooling and normalize (dense only), show_progress, and for
bm25 an optional `bm25` subsection (the fields of `config.bm25`; bm25s defaults without it); a bm25 teacher with an
empty path takes the statistics of the job's own corpus.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Mapping

import ml_collections

from distill_ret.data import formats
from distill_ret.errors import ConfigError
from distill_ret.teachers.base import Teacher

TEACHER_KINDS = ("cross_encoder", "dense", "run_file", "bm25")


def check_location(section: ml_collections.ConfigDict, name: str = "teacher") -> None:
    """A known `kind` and an existing `path` (a bm25 teacher's may be empty: the job's corpus), before any file is
    read."""
    if section.kind not in TEACHER_KINDS:
        raise ConfigError(f"config.{name}.kind must be one of {TEACHER_KINDS}, got {section.kind!r}")
    if section.kind == "bm25" and not section.path:
        return
    if not section.path or not os.path.exists(section.path):
        raise ConfigError(f"config.{name}.path={section.path!r} does not exist")


def load_teacher(section: ml_collections.ConfigDict, name: str = "teacher",
                 corpus: Mapping[str, formats.Document] | None = None) -> Teacher:
    """The teacher that section `config.<name>` describes. `corpus`: the job's own corpus, whose statistics a bm25
    teacher with an empty path takes."""
    check_location(section, name)
    kind, path = section.kind, section.path
    if kind == "bm25":
        return _bm25_teacher(section, name, corpus)
    if kind == "run_file":
        from distill_ret.teachers.run_file import RunFileTeacher

        return RunFileTeacher.from_file(path)
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


def _bm25_teacher(section: ml_collections.ConfigDict, name: str,
                  corpus: Mapping[str, formats.Document] | None) -> Teacher:
    """BM25 with the statistics of the BEIR directory at `path`, or of the job's corpus when `path` is empty."""
    from distill_ret import bm25
    from distill_ret.teachers.lexical import Bm25Teacher

    params = (bm25.params_from_config(section.bm25, f"config.{name}.bm25") if "bm25" in section
              else bm25.Bm25Params())
    path = section.path
    if not path:
        if corpus is None:
            raise ConfigError(f"config.{name}.path='': this mode has no corpus of its own for a bm25 teacher; name a "
                              "BEIR directory")
        return Bm25Teacher(bm25.Bm25Scorer.build(corpus, params))
    if not os.path.isfile(os.path.join(path, "corpus.jsonl")):
        raise ConfigError(f"config.{name}.path={path!r}: a bm25 teacher needs a BEIR directory (corpus.jsonl)")
    return Bm25Teacher.from_beir(path, params)


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
