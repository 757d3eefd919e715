"""TFDS builders (array_record, no downloads) and the `build-data` mode.

Config fields read (all under `config.data`):
  name            one of BUILDERS: beir, msmarco_passage, msmarco_doc, msmarco_doc_long, nq, long_docs, pydocs
  raw_dir         the manual directory with the raw files (pydocs: empty = this Python's stdlib)
  data_dir        TFDS output root; empty = `<workdir>/tfds`
  config_name     optional name of the built variant; empty = the raw directory's name, the options and the
                  fingerprint of the inputs (see `common`); a chosen name is refused when an existing build of
                  that name was made from other inputs or options
  passages_per_doc  long_docs: (min, max) passages per long document, default (4, 8)
  seed            long_docs: grouping seed, default 0
  passage_words   msmarco_doc_long: words per passage window, default 100
  packages        pydocs: top-level stdlib packages to use, default () = all but the excluded
  dev_fraction, test_fraction  pydocs: query split fractions, default 0.1 each
  export_beir     write the BEIR-layout export after building, default True
  level           long_docs/pydocs: which BEIR export `load_beir_from_config` reads, "documents" (default)
                  or "passages"

Layout under the TFDS root: `<builder>/<variant>_corpus/1.0.0/` and `<builder>/<variant>_queries/1.0.0/`
(see `common` for the schema), and the BEIR export `beir_layout/<builder>/<variant>/` (long-document builders:
its `documents/` and `passages/` subdirectories). Building is idempotent: an existing part or export is kept.

Every config value is checked before anything is written. Parts are built in a staging directory under the
TFDS root and renamed into place once all of them are complete; exports are written to a staging directory
and renamed. A failed build removes its staging directory and the directories it created, and nothing else.
"""
from __future__ import annotations

import contextlib
import math
import os
import pathlib
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping

import tensorflow_datasets as tfds

from distill_ret.data import formats
from distill_ret.data.builders import (beir, common, long_docs, msmarco_doc, msmarco_doc_long, msmarco_passage, nq,
                                       pydocs)
from distill_ret.errors import ConfigError, integer_field

BUILDERS = {
    "beir": beir.Beir,
    "msmarco_passage": msmarco_passage.MsmarcoPassage,
    "msmarco_doc": msmarco_doc.MsmarcoDoc,
    "msmarco_doc_long": msmarco_doc_long.MsmarcoDocLong,
    "nq": nq.NaturalQuestions,
    "long_docs": long_docs.LongDocs,
    "pydocs": pydocs.Pydocs,
}
LEVELS = ("documents", "passages")
LONG_DOCUMENT_BUILDERS = ("long_docs", "pydocs", "msmarco_doc_long")


def _passage_range(data_config) -> tuple[int, int]:
    sizes = data_config.get("passages_per_doc", (4, 8))
    low, high = (sizes, sizes) if isinstance(sizes, int) else tuple(sizes)
    return low, high


def _check_writable_location(path: str, field: str) -> None:
    """`path` is a directory that exists or can be created (its nearest existing ancestor is a writable directory)."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{field}={path!r}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{field}={path!r}: {existing} is not writable")


def _check_long_docs(data_config) -> None:
    sizes = data_config.get("passages_per_doc", (4, 8))
    try:
        low, high = _passage_range(data_config)
    except (TypeError, ValueError):
        raise ConfigError(f"config.data.passages_per_doc={sizes!r}: must be (min, max) passages") from None
    if not all(isinstance(size, int) and not isinstance(size, bool) for size in (low, high)) or not 1 <= low <= high:
        raise ConfigError(f"config.data.passages_per_doc={sizes!r}: needs integers 1 <= min <= max")
    integer_field(data_config.get("seed", 0), "config.data.seed", 0)


def _check_pydocs(data_config, raw_dir: str) -> None:
    fractions = {field: data_config.get(field, 0.1) for field in ("dev_fraction", "test_fraction")}
    for field, value in fractions.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"config.data.{field}={value!r}: must be a number in [0, 1]")
    if math.fsum(fractions.values()) > 1:
        raise ConfigError(f"config.data.dev_fraction + config.data.test_fraction = {math.fsum(fractions.values())}: "
                          "must be at most 1")
    packages = data_config.get("packages", ()) or ()
    root = pathlib.Path(raw_dir or pydocs.stdlib_dir())
    if isinstance(packages, str) or not all(isinstance(package, str) for package in packages):
        raise ConfigError(f"config.data.packages={packages!r}: must be a tuple of package names, e.g. ('json',)")
    unknown = [p for p in packages if not ((root / p).is_dir() or (root / f"{p}.py").is_file())]
    if unknown:
        raise ConfigError(f"config.data.packages={tuple(packages)!r}: no module or package {unknown} in {root}")


def check_data_config(data_config) -> None:
    """Checks the `config.data` fields of a build (see the module docstring) before anything is read or written."""
    name = data_config.name
    if name not in BUILDERS:
        raise ConfigError(f"config.data.name={name!r}: must be one of {sorted(BUILDERS)}")
    raw_dir = str(data_config.get("raw_dir", "") or "")
    if not raw_dir and name != "pydocs":
        raise ConfigError(f"config.data.raw_dir is required for the {name!r} builder")
    if raw_dir and not os.path.isdir(raw_dir):
        raise ConfigError(f"config.data.raw_dir={raw_dir!r}: not a directory")
    data_dir = str(data_config.get("data_dir", "") or "")
    if data_dir:
        _check_writable_location(data_dir, "config.data.data_dir")
    variant = data_config.get("config_name", "") or ""
    if variant and variant != common.config_name(variant):
        raise ConfigError(f"config.data.config_name={variant!r}: use lowercase letters, digits and _ only")
    level = data_config.get("level", "documents") or "documents"
    if level not in LEVELS:
        raise ConfigError(f"config.data.level={level!r}: must be one of {LEVELS}")
    if name == "long_docs":
        _check_long_docs(data_config)
    if name == "pydocs":
        _check_pydocs(data_config, raw_dir)
    words = data_config.get("passage_words", msmarco_doc_long.DEFAULT_PASSAGE_WORDS)
    if name == "msmarco_doc_long":
        integer_field(words, "config.data.passage_words", 1)


def part_configs(data_config) -> dict[str, common.PartConfig]:
    """part -> builder config for `config.data` (see the module docstring for the fields), after checking them."""
    check_data_config(data_config)
    name = data_config.name
    raw_dir = str(data_config.get("raw_dir", "") or "")
    variant = data_config.get("config_name", "") or ""
    if name == "pydocs":
        return pydocs.configs(
            raw_dir,
            packages=tuple(data_config.get("packages", ()) or ()),
            dev_fraction=float(data_config.get("dev_fraction", 0.1)),
            test_fraction=float(data_config.get("test_fraction", 0.1)),
            name=variant,
        )
    if name == "long_docs":
        low, high = _passage_range(data_config)
        seed = int(data_config.get("seed", 0))
        return long_docs.configs(raw_dir, min_passages=low, max_passages=high, seed=seed, name=variant)
    if name == "msmarco_doc_long":
        words = data_config.get("passage_words", msmarco_doc_long.DEFAULT_PASSAGE_WORDS)
        return msmarco_doc_long.configs(raw_dir, passage_words=words, name=variant)
    module = {"beir": beir, "msmarco_passage": msmarco_passage, "msmarco_doc": msmarco_doc, "nq": nq}[name]
    return module.configs(raw_dir, name=variant)


def data_root(config, workdir: str) -> pathlib.Path:
    return pathlib.Path(config.data.get("data_dir", "") or os.path.join(workdir, "tfds"))


def _variant(configs: Mapping[str, common.PartConfig]) -> str:
    return configs["corpus"].name.removesuffix("_corpus")


def part_dir(root: str | os.PathLike, name: str, config: common.PartConfig) -> pathlib.Path:
    """Where TFDS keeps a built part: `<root>/<builder>/<config name>/<version>`."""
    return pathlib.Path(root) / name / config.name / common.VERSION


@contextlib.contextmanager
def removing_new_empty_dirs(paths: Iterable[pathlib.Path]) -> Iterator[None]:
    """On error, removes those of `paths` and their ancestors that did not exist on entry, when empty (rmdir only:
    a file, or a directory someone else filled meanwhile, is never removed)."""
    new = {directory for path in paths for directory in (path, *path.parents) if not directory.exists()}
    try:
        yield
    except BaseException:
        for directory in sorted(new, key=lambda path: len(path.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _check_named_build(name: str, configs: Mapping[str, common.PartConfig], root: pathlib.Path) -> None:
    """A part that exists under a chosen `config_name` must have been built from the same inputs and options."""
    for config in configs.values():
        target = part_dir(root, name, config)
        expected = config.description.removeprefix(common.FINGERPRINT_PREFIX)
        if target.exists() and common.built_fingerprint(target) != expected:
            raise ConfigError(
                f"config.data.config_name={_variant(configs)!r}: {target} was built from other inputs or options; "
                "choose another name, or leave it empty to name the build by its inputs"
            )


def build(name: str, configs: Mapping[str, common.PartConfig], root: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Builds the missing parts (none when all exist: a no-op); part -> its TFDS directory.

    The parts are built in a staging directory under `root` and renamed into place when all are complete."""
    root = pathlib.Path(root)
    _check_named_build(name, configs, root)
    targets = {part: part_dir(root, name, config) for part, config in configs.items()}
    missing = [part for part, target in targets.items() if not target.exists()]
    if not missing:
        return targets
    with removing_new_empty_dirs(targets.values()):
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f".staging-{os.getpid()}-{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            built = {part: common.prepare(BUILDERS[name], configs[part], staging) for part in missing}
            for part, directory in built.items():
                targets[part].parent.mkdir(parents=True, exist_ok=True)
                try:
                    directory.rename(targets[part])
                except OSError:
                    if not targets[part].exists():  # else the same build finished first in another process
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return targets


def data_sources(part_dirs: Mapping[str, str | os.PathLike]) -> dict[str, object]:
    """split -> random-access array_record data source (what grain reads), over both parts."""
    sources = {}
    for part_dir_ in part_dirs.values():
        sources.update(tfds.builder_from_directory(str(part_dir_)).as_data_source())
    return sources


def load_data_sources(config, workdir: str) -> dict[str, object]:
    """Builds the data set of `config.data` if needed and returns split -> data source (`corpus`, `train`, ...)."""
    configs = part_configs(config.data)
    return data_sources(build(config.data.name, configs, data_root(config, workdir)))


def _text(value: bytes) -> str:
    return value.decode("utf-8")


def _to_beir(sources: Mapping[str, object], level: str) -> formats.BeirDataset:
    """A BeirDataset from built data sources; level "passages" reads the long documents' passages."""
    corpus: dict[str, formats.Document] = {}
    for record in sources[common.CORPUS_SPLIT]:
        if level == "passages" and "passages" in record:
            passages = record["passages"]
            for pid, title, text in zip(passages["passage_id"], passages["title"], passages["text"]):
                corpus[_text(pid)] = formats.Document(_text(pid), _text(title), _text(text))
        else:
            doc_id = _text(record["doc_id"])
            corpus[doc_id] = formats.Document(doc_id, _text(record["title"]), _text(record["text"]))
    ids_key, gains_key = ("passage_ids", "passage_gains") if level == "passages" else ("doc_ids", "gains")
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split in sorted(name for name in sources if name != common.CORPUS_SPLIT):
        judged = qrels.setdefault(split, {})
        for record in sources[split]:
            query_id = _text(record["query_id"])
            queries.setdefault(query_id, _text(record["text"]))
            judged[query_id] = {_text(d): int(g) for d, g in zip(record.get(ids_key, []), record.get(gains_key, []))}
    return formats.BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def export_beir(sources: Mapping[str, object], directory: str | os.PathLike, *, level: str = "documents") -> None:
    """Writes the built data set in BEIR layout to `directory`, atomically (the directory appears complete)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    try:
        with formats.atomic_directory(directory) as staging:
            formats.write_beir(_to_beir(sources, level), staging)
    except FileExistsError:
        if not pathlib.Path(directory).is_dir():  # else the same export finished first in another process
            raise


def _export_dirs(config, configs: Mapping[str, common.PartConfig], workdir: str) -> dict[str, pathlib.Path]:
    """level -> BEIR export directory of `config.data`'s build (one level, "documents", for passage builders)."""
    name = config.data.name
    export = data_root(config, workdir) / "beir_layout" / name / _variant(configs)
    if name in LONG_DOCUMENT_BUILDERS:
        return {level: export / level for level in LEVELS}
    return {"documents": export}


def beir_dir(config, workdir: str) -> pathlib.Path:
    """Where `build_from_config` exports `config.data`'s data set in BEIR layout (the level's directory)."""
    level = config.data.get("level", "documents") or "documents"
    exports = _export_dirs(config, part_configs(config.data), workdir)
    return exports.get(level, exports["documents"])


def build_from_config(config, workdir: str) -> dict[str, pathlib.Path]:
    """The `build-data` mode: builds `config.data`'s TFDS parts and its BEIR export; prints the sizes."""
    name = config.data.name
    configs = part_configs(config.data)
    root = data_root(config, workdir)
    exports = _export_dirs(config, configs, workdir) if config.data.get("export_beir", True) else {}
    with removing_new_empty_dirs([part_dir(root, name, c) for c in configs.values()] + list(exports.values())):
        part_dirs = build(name, configs, root)
        sources = data_sources(part_dirs)
        for level, target in exports.items():
            if not target.exists():
                export_beir(sources, target, level=level)
    sizes = ", ".join(f"{split}: {len(source)}" for split, source in sources.items())
    print(f"{name}/{_variant(configs)}: {sizes} (TFDS in {root})")
    return part_dirs


def load_beir_from_config(config, workdir: str) -> formats.BeirDataset:
    """The BEIR-layout view of `config.data`'s data set (built and exported first when needed).

    Long-document builders give their documents (default) or, with `config.data.level = "passages"`, their
    passages; queries are those with judgements, qrels one split per query split.
    """
    directory = beir_dir(config, workdir)
    if not directory.exists():
        build_from_config(config, workdir)
    if not directory.exists():
        raise ConfigError(f"{directory}: no BEIR export (config.data.export_beir is off); build it first")
    return formats.read_beir(directory)
