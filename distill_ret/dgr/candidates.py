"""Mode `candidates`: the stage-1 student's candidates for DGR stage 2, ranked by a teacher, as a fingerprinted
directory; and `read_candidates`, which stage 2 reads them with.

  distill-ret candidates --config=configs/dgr.py:cranfield_stage2 --workdir=workdirs/dgr/stage2

Student: `candidates.student` (a dgr training workdir or a Hugging Face T5 directory; "" = `model.init_from`) at
`candidates.step` (best, latest or a step number; "" = `model.init_step`), with its identifiers
(`config.identifiers`, as stage 1 built them). Its constrained beam search (`dgr.retrieve.Retriever`:
`candidates.num_beams`, `length_penalty`, `aggregation`, `batch_size`, `max_query_length`) runs over the queries of
`candidates.split` that have judged positives (gain >= `data.min_positive_gain`) and keeps each query's top
`candidates.depth` passages. The teacher (`config.teacher`, `teachers.loader.load_teacher`: cross_encoder, dense,
run_file or bm25) scores those passages together with the query's judged positives (so every positive has a teacher
score and a place in the teacher's order, whether the student found it or not).

Pseudo-queries (`candidates.pseudo`, drawn by `data/pseudo_queries.py`; off when `count` = 0): besides the split's
queries, up to `pseudo.count` sentences drawn from passage texts (`min_words`..`max_words` words, starting at or
after word `skip_words`, seeded by `pseudo.seed`) are searched and ranked the same way, each with its source passage
as its one positive (gain 1). Their teacher ranking is a label nobody judged: distillation then reaches queries the
student has not memorised.

Output, an atomic directory at `candidates.output` (default `distill.candidates_dir`, else
`<workdir>/inputs/candidates`):
- `teacher.trec`: per query the teacher's scores of its candidates, in teacher order (ties by document id);
- `student.trec`: the student's top `depth` passages with its scores;
- `qrels.tsv`: the positives of each query (BEIR qrels; a pseudo-query's is its source passage);
- `queries.jsonl`: the text of each query (BEIR queries), which stage 2 encodes;
- `fingerprint.json`: flat string fields `student.*` (workdir path, step, params digest), `teacher.*` (kind, path, a
  cheap identity of the files, and `teacher.fingerprint.*` = `Teacher.fingerprint()`), `data.*` (digest of corpus,
  queries and judgements; split; minimum gain), `identifiers.sha256`, `option.*` (the search options) and
  `pseudo.*` (the pseudo-query fields).
Running again with the same fingerprint reuses the directory (prints so); any other fingerprint is refused
(StaleCandidatesError naming the differing fields), never overwritten.

Stage 2 names the student by `model.init_from` / `model.init_step` and the teacher by `config.teacher` and calls
`read_candidates(dir, stage_two_parts(...))`, which compares what it can know without loading the teacher: the
student's path, step and params digest, the teacher's kind, path and file identity, the data and the identifiers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jax

from distill_ret.data import formats, pseudo_queries, sources
from distill_ret.dgr import identifiers, retrieve, student
from distill_ret.errors import ConfigError, UserError, describe_differences, section_integer, section_number
from distill_ret.hf import core
from distill_ret.hf.identity import params_digest
from distill_ret.teachers.base import TeacherQuery, rank_order
from distill_ret.teachers.loader import check_location, load_teacher
from distill_ret.training import checkpointing, state

FORMAT = "distill_ret.dgr_candidates/2"
TEACHER_RUN, STUDENT_RUN, QRELS_FILE, QUERIES_FILE, FINGERPRINT_FILE = (
    "teacher.trec", "student.trec", "qrels.tsv", "queries.jsonl", "fingerprint.json")
OUTPUT_NAME = os.path.join("inputs", "candidates")
SEARCH_OPTIONS = ("depth", "num_beams", "length_penalty", "aggregation", "max_query_length")
PSEUDO_FIELDS = ("count", "seed", "min_words", "max_words", "skip_words")


class StaleCandidatesError(UserError, ValueError):
    """A candidates directory was written for another student, teacher, data set or identifiers."""


@dataclasses.dataclass(frozen=True)
class Candidates:
    """What a candidates directory holds."""

    teacher: dict[str, dict[str, float]]  # query id -> passage id -> teacher score, teacher order
    student: dict[str, dict[str, float]]  # query id -> passage id -> student score, best first
    positives: dict[str, dict[str, int]]  # query id -> positive (judged, or a pseudo-query's passage) -> gain
    queries: dict[str, str]  # query id -> text
    fingerprint: dict[str, str]


# ------------------------------------------------------------------------------------------------ fingerprints


def _file_sha256(path: pathlib.Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def student_parts(path: str, step: Any, field: str) -> tuple[retrieve.Student, dict[str, str]]:
    """(the student, its fingerprint fields): absolute path, resolved step ("hf" for a Hugging Face directory) and
    params digest."""
    if not path:
        raise ConfigError(f"{field} is empty: name the stage-1 student (a dgr run's workdir or an HF T5 directory)")
    source = state.read_init_source(path, step or "best", field=field)
    learner = retrieve.load_student(source.path, source.step if source.kind == "run" else "best", field)
    return learner, {"student.path": source.path, "student.step": str(source.step) if source.kind == "run" else "hf",
                     "student.params_sha256": params_digest(learner.params)}


def teacher_parts(section: Any) -> dict[str, str]:
    """What identifies a teacher without loading it: kind, absolute path, the scoring options of the section, and
    the files' identity (a run file's or HF weights' sha256, a training run's best step)."""
    if section.kind == "bm25":  # its statistics and settings are in its fingerprint
        return {"teacher.kind": "bm25", "teacher.path": str(pathlib.Path(section.path).absolute()) if section.path
                else ""}
    path = pathlib.Path(section.path).absolute()
    parts = {"teacher.kind": section.kind, "teacher.path": str(path)}
    if section.kind != "run_file":
        parts["teacher.max_length"] = str(section.max_length)
    if section.kind == "dense":
        parts.update({"teacher.pooling": str(section.pooling), "teacher.normalize": str(section.normalize)})
    if path.is_file():
        parts["teacher.file_sha256"] = _file_sha256(path)
    elif checkpointing.is_run_workdir(path):
        parts["teacher.step"] = str(checkpointing.read_run_record(path, "best")[0])
    elif (path / core.SAFETENSORS_FILE).is_file():
        parts["teacher.weights_sha256"] = _file_sha256(path / core.SAFETENSORS_FILE)
    return parts


def data_parts(dataset: formats.BeirDataset, split: str, min_gain: int) -> dict[str, str]:
    """sha256 of the corpus, the split's queries and judgements; the split; the minimum gain of a positive."""
    judged = dataset.qrels[split]
    digest = hashlib.sha256(identifiers.corpus_digest(dataset.corpus).encode())
    digest.update(json.dumps([sorted((qid, dataset.queries[qid]) for qid in judged),
                              sorted((qid, sorted(docs.items())) for qid, docs in judged.items())],
                             ensure_ascii=False).encode())
    return {"data.sha256": digest.hexdigest(), "data.split": split, "data.min_positive_gain": str(min_gain)}


def identifier_parts(directory: str | os.PathLike) -> dict[str, str]:
    """sha256 of an identifiers directory's fingerprint and its identifiers file."""
    metadata = identifiers.read_metadata(directory)
    text = json.dumps([metadata["fingerprint"], metadata.get("identifiers_sha256")], sort_keys=True)
    return {"identifiers.sha256": hashlib.sha256(text.encode()).hexdigest()}


def stage_two_parts(config: Any, dataset: formats.BeirDataset, identifiers_dir: str | os.PathLike
                    ) -> dict[str, str]:
    """The fingerprint fields stage 2 checks: its student (`model.init_from`, `model.init_step`), its teacher
    (`config.teacher`, not loaded), the data of `candidates.split` and its identifiers."""
    _, student_fields = student_parts(config.model.init_from, config.model.init_step, "config.model.init_from")
    return {**student_fields, **teacher_parts(config.teacher),
            **data_parts(dataset, config.candidates.split, config.data.min_positive_gain),
            **identifier_parts(identifiers_dir)}


# ------------------------------------------------------------------------------------------------ files


def read_fingerprint(directory: str | os.PathLike) -> dict[str, str]:
    """The fingerprint of a candidates directory (FormatError naming the file when it is not one)."""
    path = pathlib.Path(directory) / FINGERPRINT_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT!r}")
        return {str(key): str(value) for key, value in record["fingerprint"].items()}
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise formats.FormatError(path, None, f"not a DGR candidates fingerprint ({error})") from None


def check_fingerprint(directory: str | os.PathLike, expected: Mapping[str, str]) -> None:
    """StaleCandidatesError naming every field of `expected` that the directory's fingerprint does not match."""
    stored = read_fingerprint(directory)
    differing = {key for key in expected if stored.get(key) != expected[key]}
    if differing:
        details = describe_differences({key: stored.get(key) for key in differing},
                                       {key: expected[key] for key in differing}, "file")
        raise StaleCandidatesError(f"{directory}: these candidates were written for other inputs ({details}); run "
                                   "mode candidates for this student and teacher into another directory")


def write_candidates(directory: str | os.PathLike, candidates: Candidates) -> None:
    """The directory described in the module docstring, staged and renamed."""
    with formats.atomic_directory(directory) as staging:
        formats.write_run(candidates.teacher, staging / TEACHER_RUN, tag="teacher")
        formats.write_run(candidates.student, staging / STUDENT_RUN, tag="dgr")
        formats.write_qrels(candidates.positives, staging / QRELS_FILE)
        formats.write_queries(candidates.queries, staging / QUERIES_FILE)
        record = {"format": FORMAT, "fingerprint": candidates.fingerprint, "queries": len(candidates.teacher),
                  "teacher_scored": sum(len(docs) for docs in candidates.teacher.values())}
        with formats.atomic_write(staging / FINGERPRINT_FILE) as handle:
            json.dump(record, handle, indent=1, sort_keys=True)


def read_candidates(directory: str | os.PathLike, expected_fingerprint_parts: Mapping[str, str]) -> Candidates:
    """The candidates in `directory`, after checking that its fingerprint matches every given field
    (StaleCandidatesError naming the differing ones); FormatError naming the file for a broken directory."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"config.distill.candidates_dir={str(directory)!r} is not a directory; run mode "
                          "candidates for this stage first")
    check_fingerprint(directory, expected_fingerprint_parts)
    teacher = formats.read_run(directory / TEACHER_RUN)
    teacher = {qid: {doc: docs[doc] for doc in _ranked(docs)} for qid, docs in teacher.items()}
    positives = formats.read_qrels(directory / QRELS_FILE)
    queries = formats.read_queries(directory / QUERIES_FILE)
    for qid, judged in positives.items():
        missing = sorted(set(judged) - set(teacher.get(qid, {})))
        if missing:
            raise formats.FormatError(directory / TEACHER_RUN, None, f"query {qid!r}: the teacher did not score its "
                                                                      f"positive {missing[0]!r}")
        if qid not in queries:
            raise formats.FormatError(directory / QUERIES_FILE, None, f"no text for query {qid!r}")
    return Candidates(teacher, formats.read_run(directory / STUDENT_RUN), positives, queries,
                      read_fingerprint(directory))


def _ranked(scores: Mapping[str, float]) -> list[str]:
    """Passage ids by descending score, ties by id (the teacher's and the run files' order)."""
    doc_ids = list(scores)
    return [doc_ids[i] for i in rank_order([scores[d] for d in doc_ids], doc_ids)]


# ------------------------------------------------------------------------------------------------ mode


def output_dir(config: Any, workdir: str) -> pathlib.Path:
    """`candidates.output`, else `distill.candidates_dir`, else `<workdir>/inputs/candidates`."""
    chosen = config.candidates.output or config.get("distill", {}).get("candidates_dir", "")
    return pathlib.Path(chosen or os.path.join(workdir, OUTPUT_NAME)).absolute()


def check_fields(config: Any) -> None:
    """The `candidates` and `teacher` fields, before any file is read (ConfigError naming the field)."""
    missing = [name for name in ("candidates", "teacher") if name not in config]
    if missing:
        raise ConfigError(f"the config has no {', '.join(missing)} section; mode candidates needs a stage-2 preset "
                          "(configs/dgr.py:cranfield_stage2, pydocs_stage2, tiny_stage2)")
    section = config.candidates
    for name in ("depth", "num_beams", "batch_size", "max_query_length"):
        section_integer(section, "config.candidates", name, 1)
    if section.aggregation not in retrieve.AGGREGATIONS:
        raise ConfigError(f"config.candidates.aggregation={section.aggregation!r}: must be one of "
                          f"{retrieve.AGGREGATIONS}")
    section_number(section, "config.candidates", "length_penalty")
    if section.step:
        state.parse_init_step(section.step, "config.candidates.step")
    pseudo = section.pseudo
    for name in PSEUDO_FIELDS:
        section_integer(pseudo, "config.candidates.pseudo", name, 1 if name in ("min_words", "max_words") else 0)
    if pseudo.max_words < pseudo.min_words:
        raise ConfigError(f"config.candidates.pseudo.max_words={pseudo.max_words!r}: must be >= pseudo.min_words "
                          f"({pseudo.min_words})")
    check_location(config.teacher)


def judged_positives(dataset: formats.BeirDataset, split: str, min_gain: int) -> dict[str, dict[str, int]]:
    """query id -> its judged passages with gain >= min_gain, for the split's queries that have one (sorted ids)."""
    positives = {qid: {doc: gain for doc, gain in sorted(judged.items()) if gain >= min_gain}
                 for qid, judged in sorted(dataset.qrels[split].items())}
    return {qid: docs for qid, docs in positives.items() if docs}


def run_from_config(config: Any, workdir: str) -> pathlib.Path:
    """Mode `candidates` (see the module docstring); returns the candidates directory."""
    check_fields(config)
    options = student.check_identifier_fields(config)
    output = output_dir(config, workdir)
    if output.exists() and not (output / FINGERPRINT_FILE).is_file():
        raise ConfigError(f"config.candidates.output: {output} exists and is not a candidates directory; choose "
                          "another output")
    split = config.candidates.split
    dataset, source = sources.load_beir(config, workdir)
    if split not in dataset.qrels:
        raise ConfigError(f"config.candidates.split={split!r} has no qrels in {source}; splits: "
                          f"{sorted(dataset.qrels)}")
    positives = judged_positives(dataset, split, config.data.min_positive_gain)
    if not positives:
        raise formats.FormatError(os.path.join(source, "qrels", f"{split}.tsv"), None,
                                  f"no judgement with gain >= {config.data.min_positive_gain}")
    pseudo = draw_pseudo_queries(config.candidates.pseudo, dataset)
    queries = {**{qid: dataset.queries[qid] for qid in positives}, **{query.query_id: query.text for query in pseudo}}
    field = "config.candidates.student" if config.candidates.student else "config.model.init_from"
    learner, student_fields = student_parts(config.candidates.student or config.model.init_from,
                                            config.candidates.step or config.model.init_step, field)
    teacher = load_teacher(config.teacher, corpus=dataset.corpus)
    ids = student.load_identifiers(config, options, dataset.corpus, learner.tokenizer_dir, learner.config)
    expected = {"format": FORMAT, **student_fields, **teacher_parts(config.teacher),
                **{f"teacher.fingerprint.{key}": str(value) for key, value in teacher.fingerprint().items()},
                **data_parts(dataset, split, config.data.min_positive_gain), **identifier_parts(ids.directory),
                **{f"option.{name}": str(config.candidates[name]) for name in SEARCH_OPTIONS},
                **{f"pseudo.{name}": str(config.candidates.pseudo[name]) for name in PSEUDO_FIELDS}}
    if output.exists():
        check_fingerprint(output, expected)
        print(f"candidates: {output} already holds these candidates (same student, teacher, data and options); "
              "reused them")
        return output
    depth = config.candidates.depth
    retriever = retrieve.Retriever(
        learner.params, learner.config, ids.tokenizer, ids.identifier_set, list(dataset.corpus), ids.weights(options),
        num_beams=config.candidates.num_beams, length_penalty=float(config.candidates.length_penalty),
        aggregation=config.candidates.aggregation, batch_size=config.candidates.batch_size,
        max_query_length=config.candidates.max_query_length, show_progress=True)
    judged = list(positives)
    positives.update({query.query_id: {query.doc_id: 1} for query in pseudo})
    found = retriever.retrieve(queries)
    student_run = {qid: {doc: found[qid][doc] for doc in _ranked(found[qid])[:depth]} for qid in positives}
    requests = [TeacherQuery(qid, queries[qid], tuple(dataset.corpus[doc] for doc in
                                                      dict.fromkeys([*student_run[qid], *positives[qid]])))
                for qid in positives]
    teacher_run = {request.query_id: ranking.as_run()
                   for request, ranking in zip(requests, teacher.rank_batch(requests))}
    if jax.process_index() == 0:
        write_candidates(output, Candidates(teacher_run, student_run, positives, queries, expected))

    def found_positives(qids: list[str]) -> str:
        hits = sum(len(set(student_run[qid]) & set(positives[qid])) for qid in qids)
        return f"{hits} of their {sum(len(positives[qid]) for qid in qids)} positives"

    pseudo_note = (f" and {len(pseudo)} pseudo-queries ({found_positives([query.query_id for query in pseudo])})"
                   if pseudo else "")
    print(f"candidates: {len(judged)} queries of split {split!r} (the student's top {depth} hold "
          f"{found_positives(judged)}){pseudo_note}; teacher {config.teacher.kind} ranked them with the positives "
          f"-> {output}")
    return output


def draw_pseudo_queries(section: Any, dataset: formats.BeirDataset) -> list[pseudo_queries.PseudoQuery]:
    """`candidates.pseudo`'s pseudo-queries (none when count = 0); ConfigError when an id is a real query's."""
    drawn = pseudo_queries.draw(dataset.corpus, section.count, seed=section.seed, min_words=section.min_words,
                                max_words=section.max_words, skip_words=section.skip_words)
    clash = sorted(query.query_id for query in drawn if query.query_id in dataset.queries)
    if clash:
        raise ConfigError(f"config.candidates.pseudo.count: the pseudo-query id {clash[0]!r} is also a query id of "
                          "the data set; set pseudo.count=0 for this data set")
    if section.count and not drawn:
        raise ConfigError(f"config.candidates.pseudo: no passage has a sentence of {section.min_words}-"
                          f"{section.max_words} words after word {section.skip_words}")
    return drawn
