"""TFDS builder for Natural Questions in the DPR retrieval layout (Karpukhin et al. 2020), from a manual directory.

Why DPR's layout: the official NQ release is whole Wikipedia pages with HTML spans (tens of GB), and NQ320k-style
sets are preprocessed differently by every paper; DPR's files are the documented, widely reused form of NQ for
passage retrieval (the generative retrievers DGR builds on, SEAL, MINDER and LTRGR, use them), so they are what
this builder reads. Expected in `raw_dir` (each may also be gzipped, `<name>.gz`):
- `psgs_w100.tsv`: the 21M Wikipedia passages of 100 words, a header line `id<TAB>text<TAB>title`, then one
  passage per line; fields may be quoted as DPR writes them (`"..."`, with `""` for a quote inside), and are
  read with Python's csv module as DPR reads them;
- `nq-<split>.json` (DPR's `biencoder-nq-<split>.json`, e.g. `nq-train.json`, `nq-dev.json`): a JSON array of
  objects with `question` and `positive_ctxs`, a list of objects whose `passage_id` names a passage of
  `psgs_w100.tsv` (other keys such as `answers` and the negatives are ignored).
Query splits are the `nq-<split>.json` files present. A question's id is `<split>-<index>` (its position in the
file, from 0; DPR's files have no ids); each positive passage is judged with gain 1, and questions without a
positive are left out. Passage ids are not checked against the collection (that would take a second pass).
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import pathlib
import re
from collections.abc import Iterator

from distill_ret.data import formats
from distill_ret.data.builders import common

QUESTIONS_PATTERN = re.compile(r"nq-(.+)\.json(?:\.gz)?")
INPUT_PATTERN = re.compile(r"(?:psgs_w100\.tsv|nq-.+\.json)(?:\.gz)?")  # the files read
HEADER = ["id", "text", "title"]


@contextlib.contextmanager
def _text(path: pathlib.Path) -> Iterator[io.TextIOWrapper]:
    """The (possibly gzipped) UTF-8 file as text, newlines untranslated (csv needs them inside quotes); read
    errors become FormatError naming the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            yield io.TextIOWrapper(handle, encoding="utf-8", newline="")
    except UnicodeDecodeError as error:
        raise formats.FormatError(path, None, f"invalid UTF-8 at byte {error.start}") from None
    except (OSError, EOFError) as error:
        raise formats.FormatError(path, None, f"cannot read the file: {error}") from None


def iter_passages(path: str | pathlib.Path) -> Iterator[formats.Document]:
    """Streams `psgs_w100.tsv` (header `id text title`) as documents; FormatError names the file and the row."""
    path = pathlib.Path(path)
    seen = set()
    with _text(path) as handle:
        reader = csv.reader(handle, delimiter="\t")
        try:
            header = next(reader, [])
            if [field.strip() for field in header] != HEADER:
                raise formats.FormatError(path, 1, f"expected the header {' '.join(HEADER)!r}")
            for row in reader:
                if row:
                    document = _passage(path, reader.line_num, row)
                    if document.doc_id in seen:
                        raise formats.FormatError(path, reader.line_num, f"duplicate passage id {document.doc_id!r}")
                    seen.add(document.doc_id)
                    yield document
        except csv.Error as error:
            raise formats.FormatError(path, reader.line_num, f"malformed TSV: {error}") from None
    if not seen:
        raise formats.FormatError(path, None, "empty corpus: no passages")


def _passage(path: pathlib.Path, line: int, row: list[str]) -> formats.Document:
    if len(row) != 3:
        raise formats.FormatError(path, line, f"expected 3 tab-separated columns (id, text, title), got {len(row)}")
    pid, text, title = row
    if not pid or pid != pid.strip() or " " in pid:
        raise formats.FormatError(path, line, f"passage id {pid!r} must be non-empty, without whitespace")
    return formats.Document(pid, " ".join(title.split()), " ".join(text.split()))


def read_questions(path: str | pathlib.Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """(query id -> question, query id -> {passage id: 1}) from a DPR `nq-<split>.json` file."""
    path = pathlib.Path(path)
    try:
        with _text(path) as handle:
            records = json.load(handle)
    except json.JSONDecodeError as error:
        raise formats.FormatError(path, error.lineno, f"malformed JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(records, list):
        raise formats.FormatError(path, None, "expected a JSON array of questions")
    queries, qrels = {}, {}
    for index, record in enumerate(records):
        where = f"question {index}"
        if not isinstance(record, dict) or not isinstance(record.get("question"), str):
            raise formats.FormatError(path, None, f"{where}: expected an object with a string 'question'")
        positives = record.get("positive_ctxs", [])
        if not isinstance(positives, list):
            raise formats.FormatError(path, None, f"{where}: 'positive_ctxs' must be a list")
        judged = {}
        for context in positives:
            pid = context.get("passage_id") if isinstance(context, dict) else None
            if not isinstance(pid, (str, int)) or isinstance(pid, bool) or not str(pid).strip():
                raise formats.FormatError(path, None, f"{where}: a positive context without a 'passage_id'")
            judged[str(pid).strip()] = 1
        question = " ".join(record["question"].split())
        if judged and question:
            query_id = f"{split}-{index}"
            queries[query_id] = question
            qrels[query_id] = judged
    return queries, qrels


class NaturalQuestions(common.ArrayRecordBuilder):
    name = "nq"
    DESCRIPTION = "Natural Questions for passage retrieval in DPR's layout (psgs_w100.tsv, nq-<split>.json)."

    def _part_splits(self):
        raw_dir = self.builder_config.raw_dir
        if self.builder_config.part == "corpus":
            passages = iter_passages(common.find_raw_file(raw_dir, "psgs_w100.tsv"))
            return {common.CORPUS_SPLIT: common.corpus_examples_from(passages)}
        splits = {}
        for split, stem in common.discover_splits(raw_dir, QUESTIONS_PATTERN).items():
            queries, qrels = read_questions(common.find_raw_file(raw_dir, f"nq-{stem}.json"), split)
            splits[split] = common.query_examples(queries, qrels)
        return splits


def configs(raw_dir: str, *, name: str = "") -> dict[str, common.PartConfig]:
    """The two part configs; `name` defaults to the raw directory's name and the fingerprint of its files."""
    fingerprint = common.inputs_fingerprint("nq", {}, raw_dir, common.matching_files(raw_dir, INPUT_PATTERN))
    base = common.variant_name([common.readable_name(raw_dir)], fingerprint, name)
    return common.part_configs(common.PartConfig, base, fingerprint, raw_dir=str(raw_dir))
