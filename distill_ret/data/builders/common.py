"""Shared pieces of the TFDS builders: the feature schema, the array_record base builder, long documents.

TFDS gives every split of a builder the same features, so each data set is built as two parts, two builder
configs `<name>_corpus` and `<name>_queries` of the same builder (directories `<data_dir>/<builder>/<name>_<part>/`).
Schema (strings are TFDS `Text` features, which data sources return as UTF-8 `bytes`):

* part `corpus`, split `corpus`, one example per retrieval unit, in source order:
  `doc_id`, `title`, `text`; long-document builders (`long_docs`, `pydocs`) add `passages`, a sequence of
  {`passage_id`, `title`, `text`, `start`, `end`} where `text[start:end]` of the document (offsets in
  characters of the decoded string) is the passage's segment (see `assemble_document`).
* part `queries`, one split per judged query set (`train`, `dev`, `test`, ...), one example per query that has
  judgements, in qrels order (a split without judged queries is left out):
  `query_id`, `text`, and its judgements as parallel lists `doc_ids` / `gains` over the `corpus` split;
  long-document builders add `passage_ids` / `passage_gains`, the judgements at passage level.

Examples are written in generation order (shuffling disabled), so index i of the `corpus` split is the i-th
document of the source. Builders never download: their raw files come from a directory in the builder config.

A build is keyed by a fingerprint of its inputs (the path relative to the raw directory, size and SHA-256 of every
file the builder reads) and options: the default variant name ends with it, so an edited input or another
directory with the same base name gives another build, and identical inputs find their build again. The
fingerprint is also recorded as the builder config's description (`configDescription` in `dataset_info.json`),
which is how a build with a user-chosen name is checked against its inputs.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import hashlib
import io
import itertools
import json
import logging
import os
import pathlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from distill_ret.data.formats import Document, FormatError

VERSION = "1.0.0"
CORPUS_SPLIT = "corpus"
# Separates passage segments inside a long document's text.
PASSAGE_SEPARATOR = "\n\n"
_SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
FINGERPRINT_PREFIX = "inputs fingerprint "
FINGERPRINT_CHARS = 12  # hex characters of the fingerprint in a default variant name


def corpus_features(*, with_passages: bool = False) -> tfds.features.FeaturesDict:
    features = {"doc_id": tfds.features.Text(), "title": tfds.features.Text(), "text": tfds.features.Text()}
    if with_passages:
        features["passages"] = tfds.features.Sequence(
            {
                "passage_id": tfds.features.Text(),
                "title": tfds.features.Text(),
                "text": tfds.features.Text(),
                "start": np.int64,
                "end": np.int64,
            }
        )
    return tfds.features.FeaturesDict(features)


def query_features(*, with_passages: bool = False) -> tfds.features.FeaturesDict:
    features = {
        "query_id": tfds.features.Text(),
        "text": tfds.features.Text(),
        "doc_ids": tfds.features.Sequence(tfds.features.Text()),
        "gains": tfds.features.Sequence(np.int64),
    }
    if with_passages:
        features["passage_ids"] = tfds.features.Sequence(tfds.features.Text())
        features["passage_gains"] = tfds.features.Sequence(np.int64)
    return tfds.features.FeaturesDict(features)


PARTS = ("corpus", "queries")


@dataclasses.dataclass(eq=False)
class PartConfig(tfds.core.BuilderConfig):
    """A builder config: which part to build and where the raw files live (never downloaded).

    Builders subclass this to add their options; `name` must identify the raw source and the options, since
    TFDS treats an existing `<data_dir>/<builder>/<name>/<version>` directory as already built.
    """

    part: str = "corpus"
    raw_dir: str = ""

    def __post_init__(self):
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {self.part!r}")


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of our builders: array_record output, source order kept, one fixed version, two parts.

    Subclasses define `DESCRIPTION`, `WITH_PASSAGES` and `_part_splits()` (split name -> iterator of
    (key, example)) for `self.builder_config.part`. Builders are not put in TFDS's global registry (TFDS
    already registers an unrelated `beir`); read a built part back with
    `tfds.builder_from_directory(path).as_data_source()`.
    """

    VERSION = tfds.core.Version(VERSION)
    DESCRIPTION = ""
    WITH_PASSAGES = False

    @tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls) -> None:
        """No download checksums: nothing is downloaded (and TFDS's lookup would need `importlib_resources`)."""
        return None

    def __init__(self, *, config: PartConfig, data_dir: str):
        super().__init__(config=config, data_dir=data_dir, file_format="array_record")

    def _info(self) -> tfds.core.DatasetInfo:
        make = corpus_features if self.builder_config.part == "corpus" else query_features
        features = make(with_passages=self.WITH_PASSAGES)
        return tfds.core.DatasetInfo(
            builder=self, description=self.DESCRIPTION, features=features, disable_shuffling=True
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        splits = self._part_splits()
        if self.builder_config.part == "queries":
            check_split_names(list(splits), self.builder_config.raw_dir)
        non_empty = {}
        for name, examples in splits.items():
            first = next(examples, None)  # TFDS refuses empty splits: a split without examples is left out
            if first is not None:
                non_empty[name] = self._generate_examples(itertools.chain([first], examples))
        if not non_empty:
            raise FormatError(self.builder_config.raw_dir, None,
                              f"nothing to build for part {self.builder_config.part!r}")
        return non_empty

    def _generate_examples(self, examples: Iterator[tuple[int, dict]]):
        yield from examples

    @abc.abstractmethod
    def _part_splits(self) -> dict[str, Iterator[tuple[int, dict]]]:
        """Split name -> (key, example) iterator for the configured part."""


def _is_not_tfds_chatter(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or f"{os.sep}tensorflow_datasets{os.sep}" not in record.pathname


@contextlib.contextmanager
def quiet_tfds() -> Iterator[None]:
    """Hides TFDS's "Using custom data configuration" warnings and its "Downloading and preparing dataset" prints
    (nothing is downloaded); the build mode prints its own summary instead."""
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(_is_not_tfds_chatter)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        absl_logger.removeFilter(_is_not_tfds_chatter)


def prepare(builder_cls: type[ArrayRecordBuilder], config: PartConfig, data_dir: str | os.PathLike) -> pathlib.Path:
    """Builds one part under `data_dir` unless it exists there (TFDS makes that a no-op); returns its directory."""
    tfds.disable_progress_bar()
    with quiet_tfds():
        builder = builder_cls(config=config, data_dir=str(data_dir))
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=config.raw_dir or None)
        )
    return pathlib.Path(str(builder.data_dir))


def check_split_names(names: Sequence[str], where: str) -> None:
    """Query split names must be identifiers and must not collide with the corpus split."""
    for name in names:
        if not _SPLIT_NAME.match(name) or name == CORPUS_SPLIT:
            raise FormatError(where, None, f"split name {name!r} is not usable (letters, digits, _; not 'corpus')")


def find_raw_file(raw_dir: str | pathlib.Path, name: str) -> pathlib.Path:
    """`raw_dir/name`, or its gzipped `name.gz` as distributed officially; a clear error when neither exists."""
    path = pathlib.Path(raw_dir) / name
    for candidate in (path, path.with_name(name + ".gz")):
        if candidate.is_file():
            return candidate
    raise FormatError(path, None, f"file not found (nor {name}.gz) in the raw directory")


def discover_splits(raw_dir: str | pathlib.Path, pattern: re.Pattern) -> dict[str, str]:
    """split name -> file stem for files in `raw_dir` matching `pattern` (group 1 = split; `.` becomes `_`)."""
    splits = {}
    for path in sorted(pathlib.Path(raw_dir).iterdir()):
        match = pattern.fullmatch(path.name)
        if match:
            splits.setdefault(match.group(1).replace(".", "_"), match.group(1))
    if not splits:
        raise FormatError(raw_dir, None, f"no qrels files matching {pattern.pattern!r}")
    return splits


def config_name(*parts: str) -> str:
    """A TFDS-safe builder config name from free-form parts (lowercase, [a-z0-9_])."""
    return "_".join(re.sub(r"[^a-z0-9]+", "_", str(part).lower()).strip("_") or "x" for part in parts)


@functools.lru_cache(maxsize=4096)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file's bytes (cached per path, size and modification time within one process)."""
    del size, mtime_ns  # cache key only
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def inputs_fingerprint(builder: str, options: Mapping, root: str | pathlib.Path, files: Iterable[pathlib.Path]) -> str:
    """SHA-256 over the builder, the schema version, its options and, for every input file, its path relative to
    `root`, its size and the SHA-256 of its contents."""
    digest = hashlib.sha256(json.dumps({"builder": builder, "version": VERSION, "options": options}, sort_keys=True,
                                       default=list).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"\n{path.relative_to(root)}\t{stat.st_size}\t".encode())
        digest.update(_content_digest(str(path), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()


def variant_name(readable: Sequence[str], fingerprint: str, name: str = "") -> str:
    """`name` when the user chose one, else the readable parts followed by the fingerprint's first characters."""
    return name or config_name(*readable, fingerprint[:FINGERPRINT_CHARS])


def readable_name(raw_dir: str | pathlib.Path) -> str:
    """The raw directory's own name, as a config name (the start of a default variant name)."""
    return config_name(pathlib.Path(raw_dir).resolve().name)


def part_configs(config_cls: type[PartConfig], base_name: str, fingerprint: str, **options) -> dict[str, PartConfig]:
    """part -> config named `<base_name>_<part>`, both with the same options and the inputs' fingerprint."""
    return {
        part: config_cls(name=f"{base_name}_{part}", part=part, description=f"{FINGERPRINT_PREFIX}{fingerprint}",
                         **options)
        for part in PARTS
    }


def built_fingerprint(part_dir: str | pathlib.Path) -> str | None:
    """The inputs fingerprint a built part records, or None (no build there, or one without a fingerprint)."""
    try:
        info = json.loads((pathlib.Path(part_dir) / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    description = info.get("configDescription", "") if isinstance(info, dict) else ""
    return description.removeprefix(FINGERPRINT_PREFIX) if description.startswith(FINGERPRINT_PREFIX) else None


def beir_input_files(raw_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """The files `formats.read_beir` reads from a BEIR directory (those present)."""
    raw_dir = pathlib.Path(raw_dir)
    candidates = [raw_dir / "corpus.jsonl", raw_dir / "queries.jsonl", *sorted((raw_dir / "qrels").glob("*.tsv"))]
    return [path for path in candidates if path.is_file()]


def matching_files(raw_dir: str | pathlib.Path, pattern: re.Pattern) -> list[pathlib.Path]:
    """The regular files directly in `raw_dir` whose names match `pattern`, sorted by name."""
    return sorted(path for path in pathlib.Path(raw_dir).iterdir() if pattern.fullmatch(path.name) and path.is_file())


def corpus_examples_from(documents: Iterable[Document]) -> Iterator[tuple[int, dict]]:
    for index, doc in enumerate(documents):
        yield index, {"doc_id": doc.doc_id, "title": doc.title, "text": doc.text}


def corpus_examples(corpus: Mapping[str, Document]) -> Iterator[tuple[int, dict]]:
    return corpus_examples_from(corpus.values())


def query_examples(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]) -> Iterator[tuple[int, dict]]:
    """One example per judged query, in qrels order, with its judgements as parallel lists."""
    for index, (query_id, judged) in enumerate(qrels.items()):
        yield index, {
            "query_id": query_id,
            "text": queries[query_id],
            "doc_ids": list(judged),
            "gains": list(judged.values()),
        }


# ------------------------------------------------------------------------------------------ long documents


@dataclasses.dataclass(frozen=True)
class PassageSpan:
    """A passage inside a long document: `document.text[start:end]` is its segment."""

    passage_id: str
    title: str
    text: str
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class LongDocument:
    doc_id: str
    title: str
    text: str
    passages: tuple[PassageSpan, ...]


def passage_segment(passage: Document) -> str:
    """A passage as it appears inside a long document: its title on the first line (when it has one), then its text."""
    return f"{passage.title}\n{passage.text}" if passage.title else passage.text


def assemble_document(doc_id: str, title: str, passages: Sequence[Document]) -> LongDocument:
    """Concatenates passage segments with PASSAGE_SEPARATOR, recording each segment's [start, end) characters."""
    spans, pieces, offset = [], [], 0
    for passage in passages:
        segment = passage_segment(passage)
        if pieces:
            pieces.append(PASSAGE_SEPARATOR)
            offset += len(PASSAGE_SEPARATOR)
        spans.append(PassageSpan(passage.doc_id, passage.title, passage.text, offset, offset + len(segment)))
        pieces.append(segment)
        offset += len(segment)
    return LongDocument(doc_id, title, "".join(pieces), tuple(spans))


def propagate_gains(
    qrels: Mapping[str, Mapping[str, int]], passage_to_document: Mapping[str, str]
) -> dict[str, dict[str, int]]:
    """Document-level qrels: a document's gain is the maximum gain of its judged passages."""
    documents: dict[str, dict[str, int]] = {}
    for query_id, judged in qrels.items():
        gains = documents.setdefault(query_id, {})
        for passage_id, gain in judged.items():
            doc_id = passage_to_document[passage_id]
            gains[doc_id] = max(gain, gains.get(doc_id, gain))
    return documents


def long_document_examples(documents: Sequence[LongDocument]) -> Iterator[tuple[int, dict]]:
    for index, doc in enumerate(documents):
        yield index, {
            "doc_id": doc.doc_id,
            "title": doc.title,
            "text": doc.text,
            "passages": [dataclasses.asdict(span) for span in doc.passages],
        }


def long_query_examples(
    queries: Mapping[str, str],
    passage_qrels: Mapping[str, Mapping[str, int]],
    passage_to_document: Mapping[str, str],
) -> Iterator[tuple[int, dict]]:
    """Query examples carrying document-level judgements (max over passages) and the passage-level ones."""
    document_qrels = propagate_gains(passage_qrels, passage_to_document)
    for index, (query_id, judged) in enumerate(passage_qrels.items()):
        yield index, {
            "query_id": query_id,
            "text": queries[query_id],
            "doc_ids": list(document_qrels[query_id]),
            "gains": list(document_qrels[query_id].values()),
            "passage_ids": list(judged),
            "passage_gains": list(judged.values()),
        }
