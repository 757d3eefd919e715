"""The built-in demo data set: docstrings of the installed Python's standard library, parsed with `ast`.

Nothing is imported or executed: every `.py` file under the stdlib directory is read and parsed. A long
document is a module (id and title = its dotted name); a passage is the docstring of a function, class or
method (id and title = its qualified name, e.g. `json.decoder.JSONDecoder.decode`, found through module and
class bodies; functions nested in functions are skipped; when a name is defined twice the first wins).

The query of a passage is its docstring's summary, the first paragraph (lines up to the first blank line,
joined by spaces), and the passage text is the rest of the docstring. Filter: a docstring is used only when
its summary has at least MIN_SUMMARY_WORDS alphabetic words and the rest has at least MIN_PASSAGE_WORDS words.
Query id = `q:<qualified name>`. The split of a query (train/dev/test) comes from the SHA-256 of its qualified
name, so it is deterministic across runs and machines. Judgements: the query's passage (gain 1) at passage
level, the passage's module (gain 1) at document level.

Files are visited in sorted order and nodes in source order, so the output is deterministic. Skipped: test
suites (any `test`/`tests` directory), EXCLUDED_TOP_LEVEL, non-identifier paths (e.g. `site-packages`) and
files that do not parse.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import pathlib
import re
import sys
import sysconfig
from collections.abc import Iterator, Sequence

from distill_ret.data import formats
from distill_ret.data.builders import common

MIN_SUMMARY_WORDS = 3
MIN_PASSAGE_WORDS = 10
SPLITS = ("train", "dev", "test")
# Top-level stdlib entries left out: the IDE, demos, the 2to3 tool, packaging helpers and bundled data.
EXCLUDED_TOP_LEVEL = frozenset(
    {"idlelib", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "site-packages", "__phello__"}
)
_WORD = re.compile(r"[A-Za-z]{2,}")


@dataclasses.dataclass(eq=False)
class PydocsConfig(common.PartConfig):
    packages: tuple[str, ...] = ()  # top-level stdlib modules/packages to use; empty = all but the excluded
    dev_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclasses.dataclass(frozen=True)
class PydocsCorpus:
    """Modules as long documents, the queries, and which split each query belongs to."""

    documents: list[common.LongDocument]
    queries: dict[str, str]
    split_of: dict[str, str]
    passage_of: dict[str, str]
    skipped_files: list[str]


def stdlib_dir() -> pathlib.Path:
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def module_name(relative: pathlib.Path) -> str | None:
    """Dotted module name of a stdlib file path, or None when the path is not importable Python."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts)


def source_files(root: pathlib.Path, packages: Sequence[str]) -> Iterator[tuple[str, pathlib.Path]]:
    """(module name, path) of the stdlib sources to read, sorted by path."""
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        top = relative.parts[0].removesuffix(".py")
        if packages and top not in packages or not packages and top in EXCLUDED_TOP_LEVEL:
            continue
        if any(part in ("test", "tests", "__pycache__") for part in relative.parts[:-1]) or path.name == "__main__.py":
            continue
        name = module_name(relative)
        if name is not None:
            yield name, path


def split_docstring(docstring: str) -> tuple[str, str] | None:
    """(summary, rest) of a cleaned docstring, or None when it fails the size filter."""
    summary, _, rest = docstring.strip().partition("\n\n")
    summary, rest = " ".join(summary.split()), rest.strip()
    if len(_WORD.findall(summary)) < MIN_SUMMARY_WORDS or len(rest.split()) < MIN_PASSAGE_WORDS:
        return None
    return summary, rest


def docstring_nodes(body: Sequence[ast.stmt], prefix: str) -> Iterator[tuple[str, str]]:
    """(qualified name, cleaned docstring) of functions, classes and methods, in source order."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            qualified = f"{prefix}.{node.name}"
            docstring = ast.get_docstring(node, clean=True)
            if docstring:
                yield qualified, docstring
            if isinstance(node, ast.ClassDef):
                yield from docstring_nodes(node.body, qualified)


def split_for(qualified_name: str, dev_fraction: float, test_fraction: float) -> str:
    """Deterministic split from the SHA-256 of the name (not Python's salted hash())."""
    digest = hashlib.sha256(qualified_name.encode("utf-8")).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64
    if unit < test_fraction:
        return "test"
    return "dev" if unit < test_fraction + dev_fraction else "train"


def collect(
    root: pathlib.Path, packages: Sequence[str] = (), dev_fraction: float = 0.1, test_fraction: float = 0.1
) -> PydocsCorpus:
    """Parses the stdlib sources under `root` into modules, passages, queries and splits."""
    documents, queries, split_of, passage_of, skipped, seen = [], {}, {}, {}, [], set()
    for name, path in source_files(root, packages):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError):
            skipped.append(str(path))
            continue
        passages = []
        for qualified, docstring in docstring_nodes(tree.body, name):
            parts = split_docstring(docstring)
            if parts is None or qualified in seen:
                continue
            seen.add(qualified)
            summary, rest = parts
            passages.append(formats.Document(qualified, qualified, rest))
            query_id = f"q:{qualified}"
            queries[query_id] = summary
            passage_of[query_id] = qualified
            split_of[query_id] = split_for(qualified, dev_fraction, test_fraction)
        if passages:
            documents.append(common.assemble_document(name, name, passages))
    if not documents:
        raise formats.FormatError(root, None, f"no usable docstrings (packages={list(packages) or 'all'})")
    return PydocsCorpus(documents, queries, split_of, passage_of, skipped)


@functools.lru_cache(maxsize=2)
def _collect_once(
    root: pathlib.Path, packages: tuple[str, ...], dev_fraction: float, test_fraction: float, fingerprint: str
) -> PydocsCorpus:
    """`collect`, cached (per fingerprint of the sources) so that building both parts parses the sources once."""
    del fingerprint  # cache key only: edited sources are parsed again
    return collect(root, packages, dev_fraction, test_fraction)


def passage_qrels(corpus: PydocsCorpus, split: str) -> dict[str, dict[str, int]]:
    """Passage-level judgements of one split: each query -> its own passage, gain 1."""
    return {qid: {corpus.passage_of[qid]: 1} for qid, name in corpus.split_of.items() if name == split}


class Pydocs(common.ArrayRecordBuilder):
    name = "pydocs"
    DESCRIPTION = "Docstrings of the Python standard library: modules, passages and summary-line queries."
    WITH_PASSAGES = True

    def _part_splits(self):
        config = self.builder_config
        corpus = _collect_once(
            pathlib.Path(config.raw_dir), config.packages, config.dev_fraction, config.test_fraction, config.description
        )
        if config.part == "corpus":
            return {common.CORPUS_SPLIT: common.long_document_examples(corpus.documents)}
        owner = {span.passage_id: doc.doc_id for doc in corpus.documents for span in doc.passages}
        return {
            split: common.long_query_examples(corpus.queries, passage_qrels(corpus, split), owner) for split in SPLITS
        }


def configs(
    raw_dir: str = "",
    *,
    packages: Sequence[str] = (),
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    name: str = "",
) -> dict[str, PydocsConfig]:
    """The two part configs; `raw_dir` defaults to this interpreter's stdlib directory.

    The default name records the Python version, the package subset, the split fractions and the fingerprint of
    the source files read (their relative paths, sizes and contents) and the options.
    """
    root = pathlib.Path(raw_dir or stdlib_dir())
    packages = tuple(sorted(packages))
    options = dict(packages=packages, dev_fraction=dev_fraction, test_fraction=test_fraction)
    fingerprint = common.inputs_fingerprint("pydocs", options, root, [path for _, path in source_files(root, packages)])
    subset = "_".join(packages) if len(packages) <= 4 else hashlib.sha256(" ".join(packages).encode()).hexdigest()[:10]
    readable = [f"py{sys.version_info.major}{sys.version_info.minor}", subset or "stdlib", f"dev{dev_fraction}",
                f"test{test_fraction}"]
    base = common.variant_name(readable, fingerprint, name)
    return common.part_configs(PydocsConfig, base, fingerprint, raw_dir=str(root), **options)
