"""TFDS builders (array_record, no downloads) and the `build-data` mode.

Config fields read (all under `config.data`):
  name            one of BUILDERS: beir, msmarco_passage, msmarco_doc, long_docs, pydocs
  raw_dir         the manual directory with the raw files (pydocs: empty = this Python's stdlib)
  data_dir        TFDS output root; empty = `<workdir>/tfds`
  config_name     optional name of the built variant; empty = derived from raw_dir and the options
  passages_per_doc  long_docs: (min, max) passages per long document, default (4, 8)
  seed            long_docs: grouping seed, default 0
  packages        pydocs: top-level stdlib packages to use, default () = all but the excluded
  dev_fraction, test_fraction  pydocs: query split fractions, default 0.1 each
  export_beir     write the BEIR-layout export after building, default True
  level           long_docs/pydocs: which BEIR export `load_beir_from_config` reads, "documents" (default)
                  or "passages"

Layout under the TFDS root: `<builder>/<variant>_corpus/1.0.0/` and `<builder>/<variant>_queries/1.0.0/`
(see `common` for the schema), and the BEIR export `beir_layout/<builder>/<variant>/` (long-document builders:
its `documents/` and `passages/` subdirectories). Building is idempotent: an existing part or export is kept.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping

import tensorflow_datasets as tfds

from distill_ret.data import formats
from distill_ret.data.builders import beir, common, long_docs, msmarco_doc, msmarco_passage, pydocs

BUILDERS = {
    "beir": beir.Beir,
    "msmarco_passage": msmarco_passage.MsmarcoPassage,
    "msmarco_doc": msmarco_doc.MsmarcoDoc,
    "long_docs": long_docs.LongDocs,
    "pydocs": pydocs.Pydocs,
}
LEVELS = ("documents", "passages")


def part_configs(data_config) -> dict[str, common.PartConfig]:
    """part -> builder config for `config.data` (see the module docstring for the fields)."""
    name = data_config.name
    raw_dir = str(data_config.get("raw_dir", "") or "")
    variant = data_config.get("config_name", "") or ""
    if name not in BUILDERS:
        raise ValueError(f"config.data.name must be one of {sorted(BUILDERS)}, got {name!r}")
    if name == "pydocs":
        return pydocs.configs(
            raw_dir,
            packages=tuple(data_config.get("packages", ()) or ()),
            dev_fraction=float(data_config.get("dev_fraction", 0.1)),
            test_fraction=float(data_config.get("test_fraction", 0.1)),
            name=variant,
        )
    if not raw_dir:
        raise ValueError(f"config.data.raw_dir is required for the {name!r} builder")
    if name == "long_docs":
        sizes = data_config.get("passages_per_doc", (4, 8))
        low, high = (sizes, sizes) if isinstance(sizes, int) else tuple(sizes)
        seed = int(data_config.get("seed", 0))
        return long_docs.configs(raw_dir, min_passages=int(low), max_passages=int(high), seed=seed, name=variant)
    module = {"beir": beir, "msmarco_passage": msmarco_passage, "msmarco_doc": msmarco_doc}[name]
    return module.configs(raw_dir, name=variant)


def data_root(config, workdir: str) -> pathlib.Path:
    return pathlib.Path(config.data.get("data_dir", "") or os.path.join(workdir, "tfds"))


def _variant(configs: Mapping[str, common.PartConfig]) -> str:
    return configs["corpus"].name.removesuffix("_corpus")


def build(name: str, configs: Mapping[str, common.PartConfig], root: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Builds both parts (no-op for a part already built); part -> its TFDS directory."""
    return {part: common.prepare(BUILDERS[name](config=config, data_dir=str(root))) for part, config in configs.items()}


def data_sources(part_dirs: Mapping[str, str | os.PathLike]) -> dict[str, object]:
    """split -> random-access array_record data source (what grain reads), over both parts."""
    sources = {}
    for part_dir in part_dirs.values():
        sources.update(tfds.builder_from_directory(str(part_dir)).as_data_source())
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
    directory = pathlib.Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        formats.write_beir(_to_beir(sources, level), staging)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def beir_dir(config, workdir: str) -> pathlib.Path:
    """Where `build_from_config` exports `config.data`'s data set in BEIR layout (the level's directory)."""
    name = config.data.name
    directory = data_root(config, workdir) / "beir_layout" / name / _variant(part_configs(config.data))
    if name in ("long_docs", "pydocs"):
        level = config.data.get("level", "documents") or "documents"
        if level not in LEVELS:
            raise ValueError(f"config.data.level must be one of {LEVELS}, got {level!r}")
        directory = directory / level
    return directory


def build_from_config(config, workdir: str) -> dict[str, pathlib.Path]:
    """The `build-data` mode: builds `config.data`'s TFDS parts and its BEIR export; prints the sizes."""
    name = config.data.name
    configs = part_configs(config.data)
    part_dirs = build(name, configs, data_root(config, workdir))
    sources = data_sources(part_dirs)
    if config.data.get("export_beir", True):
        export = data_root(config, workdir) / "beir_layout" / name / _variant(configs)
        levels = LEVELS if name in ("long_docs", "pydocs") else (None,)
        for level in levels:
            target = export / level if level else export
            if not target.exists():
                export_beir(sources, target, level=level or "documents")
    sizes = ", ".join(f"{split}: {len(source)}" for split, source in sources.items())
    print(f"{name}/{_variant(configs)}: {sizes} (TFDS in {data_root(config, workdir)})")
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
        raise FileNotFoundError(f"{directory}: no BEIR export (config.data.export_beir is off); build it first")
    return formats.read_beir(directory)
