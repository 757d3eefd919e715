"""The DGR chain on a tiny fixture through the real mode functions: stage 1 (train, 2 steps) -> mode candidates (the
student's top passages plus the judged positives, ranked by a run-file teacher) -> stage 2 (train, 2 steps).

The candidates directory holds the teacher order with the teacher's scores, the student's run, the positives and a
fingerprint; a second run with the same inputs reuses it; another teacher, another step or another run of the
student is refused by the mode and by stage 2's reader, naming the field, and the directory stays as it was. Stage
2 starts from stage 1's final parameters, changes them, and its checkpoint holds exactly the student's T5 tree.
Pseudo-queries join the lists with their source passage as positive and their text in the directory."""
import json
import pathlib
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest
import transformers

from configs import dgr as dgr_config
from distill_ret.data import formats, pseudo_queries
from distill_ret.dgr import candidates
from distill_ret.dgr import task as dgr_task
from distill_ret.models.t5 import T5
from distill_ret.training import checkpointing, trainer

WORDS = ("wing", "lift", "drag", "shock", "cone", "plate", "heat", "layer", "flow", "mach", "delta", "swept")
CORPUS = {f"d{i}": formats.Document(f"d{i}", f"{WORDS[i]} {WORDS[(i + 1) % 12]}" if i % 4 else "",
                                    f"{WORDS[i]} {WORDS[(i + 3) % 12]} of a {WORDS[(i + 5) % 12]} body number {i}")
          for i in range(12)}
QUERIES = {f"q{i}": f"{WORDS[i % 12]} {WORDS[(i + 3) % 12]}" for i in range(14)}
QRELS = {"train": {f"q{i}": {f"d{i}": 1 + i % 2, f"d{(i + 1) % 12}": 0 if i % 3 else 1} for i in range(12)},
         "dev": {"q12": {"d0": 1}, "q13": {"d1": 1}}}


def teacher_run(shift: int) -> dict[str, dict[str, float]]:
    return {f"q{i}": {f"d{j}": float((i * 5 + j * 7 + shift) % 12) for j in range(12)} for i in range(12)}


def snapshot(directory: pathlib.Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file()}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Stage 1 trained 2 steps (checkpoints 1 and 2), the teacher run files and mode candidates' first output."""
    root = tmp_path_factory.mktemp("dgr_chain")
    formats.write_beir(formats.BeirDataset(CORPUS, QUERIES, QRELS), root / "beir")
    formats.write_run(teacher_run(0), root / "teacher.trec", tag="teacher")
    formats.write_run(teacher_run(5), root / "teacher2.trec", tag="teacher")
    stage_1 = dgr_config.get_config("tiny")
    stage_1.data.beir_dir, stage_1.identifiers.dir = str(root / "beir"), str(root / "identifiers")
    stage_1.train.num_steps = 2
    stage_1.checkpoint.every, stage_1.checkpoint.keep, stage_1.checkpoint.best_metric = 1, 2, ""
    stage_1.evals.dev.every = 0
    trainer.run_from_config(stage_1, str(root / "stage1"))
    config = dgr_config.get_config("tiny_stage2")
    config.data.beir_dir, config.identifiers.dir = stage_1.data.beir_dir, stage_1.identifiers.dir
    config.model.init_from = str(root / "stage1")
    config.teacher.path = str(root / "teacher.trec")
    config.distill.candidates_dir = str(root / "candidates")
    output = candidates.run_from_config(config, str(root / "stage2"))
    return root, config, output


def with_changes(config, **changes):
    changed = config.copy_and_resolve_references()
    for path, value in changes.items():
        section, field = path.split(".")
        changed[section][field] = value
    return changed


def test_candidates_are_the_students_top_passages_and_the_positives_in_teacher_order(chain, capsys):
    root, config, output = chain
    assert output == root / "candidates"
    ranked = formats.read_run(output / candidates.TEACHER_RUN)
    student = formats.read_run(output / candidates.STUDENT_RUN)
    positives = formats.read_qrels(output / candidates.QRELS_FILE)
    assert positives == {qid: {doc: gain for doc, gain in judged.items() if gain >= 1}
                         for qid, judged in QRELS["train"].items()}
    reference = teacher_run(0)
    for qid, docs in ranked.items():
        assert 1 <= len(student[qid]) <= config.candidates.depth
        assert set(docs) == set(student[qid]) | set(positives[qid])
        assert list(docs.items()) == [(doc, reference[qid][doc])
                                      for doc in sorted(docs, key=lambda d: (-reference[qid][d], d))]
    fingerprint = json.loads((output / candidates.FINGERPRINT_FILE).read_text())["fingerprint"]
    assert fingerprint["student.path"] == str(root / "stage1") and fingerprint["student.step"] == "2"
    assert fingerprint["teacher.kind"] == "run_file" and fingerprint["option.depth"] == "3"
    before = snapshot(output)
    capsys.readouterr()
    assert candidates.run_from_config(config, str(root / "stage2")) == output
    assert "reused them" in capsys.readouterr().out
    assert snapshot(output) == before


@pytest.mark.parametrize("changes, fields", [
    ({"teacher.path": "teacher2.trec"}, ("teacher.path", "teacher.file_sha256", "teacher.fingerprint.run_sha256")),
    ({"candidates.step": "1"}, ("student.step", "student.params_sha256")),
    ({"candidates.student": "stage1_copy"}, ("student.path",)),
])
def test_the_mode_refuses_other_teachers_and_students_naming_the_fields(chain, changes, fields):
    root, config, output = chain
    if not (root / "stage1_copy").exists():
        shutil.copytree(root / "stage1", root / "stage1_copy")
    changed = with_changes(config, **{key: str(root / value) if value.endswith(("trec", "copy")) else value
                                      for key, value in changes.items()})
    before = snapshot(output)
    with pytest.raises(candidates.StaleCandidatesError) as error:
        candidates.run_from_config(changed, str(root / "stage2"))
    named = str(error.value).split("(", 1)[1].rsplit(")", 1)[0]
    assert {part.split(":")[0].strip() for part in named.split(";")} == set(fields)
    assert snapshot(output) == before


def test_stage_two_reads_the_candidates_only_for_its_own_student_and_teacher(chain):
    root, config, output = chain
    dataset = formats.read_beir(root / "beir")
    found = candidates.read_candidates(output, candidates.stage_two_parts(config, dataset, config.identifiers.dir))
    assert found.positives == formats.read_qrels(output / candidates.QRELS_FILE)
    for changes, field in (({"model.init_step": "1"}, "student.step"), ({"teacher.path": str(root / "teacher2.trec")},
                                                                      "teacher.file_sha256")):
        changed = with_changes(config, **changes)
        with pytest.raises(candidates.StaleCandidatesError, match=field):
            candidates.read_candidates(output, candidates.stage_two_parts(changed, dataset, config.identifiers.dir))
        with pytest.raises(candidates.StaleCandidatesError, match=field):
            dgr_task.build_task(changed)


def test_stage_two_starts_from_stage_one_trains_the_student_only_and_logs_its_metrics(chain):
    root, config, _ = chain
    teacher_bytes = (root / "teacher.trec").read_bytes()
    stage_1 = checkpointing.read_run_checkpoint(root / "stage1", "latest")
    assert stage_1.step == 2
    task = dgr_task.build_task(config)
    initial = nn.unbox(task.init_params(jax.random.PRNGKey(7)))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), initial, stage_1.params)
    trainer.run_from_config(config, str(root / "stage2"))
    stage_2 = checkpointing.read_run_checkpoint(root / "stage2", "latest")
    t5_config = dgr_task.model_config(config, None)
    t5_tree = jax.eval_shape(lambda: T5(t5_config).init(jax.random.PRNGKey(0), np.ones((1, 4), np.int32),
                                                        np.ones((1, 4), np.int32))["params"])
    assert jax.tree.structure(nn.unbox(t5_tree)) == jax.tree.structure(stage_2.params)  # no teacher, nothing else
    assert stage_2.step == 2 and stage_2.model["head"] == "t5"
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                           stage_2.params, stage_1.params))
    assert any(changed)
    records = [json.loads(line) for line in (root / "stage2" / "metrics.jsonl").read_text().splitlines()]
    train = [record for record in records if record["split"] == "train"]
    assert len(train) == 2 and all(0.0 <= record["pair_accuracy"] <= 1.0 for record in train)
    assert all(record["rank_loss"] >= 0.0 and record["gen_loss"] > 0.0 for record in train)
    assert any(record["split"] == "eval" and "dev/nDCG@10" in record for record in records)
    assert (root / "teacher.trec").read_bytes() == teacher_bytes


def test_mode_retrieve_reads_the_runs_own_identifiers_back(chain, tmp_path):
    """The stage-1 run's tokenizer was trained into identifiers.dir: mode retrieve with that directory reads the
    identifiers back (no rebuild, nothing changed there) and ranks the train queries as mode candidates did."""
    from configs import retrieve as retrieve_config
    from distill_ret.dgr import retrieve

    root, config, output = chain
    before = snapshot(root / "identifiers")
    settings = retrieve_config.get_config("cranfield")
    settings.data.beir_dir, settings.data.split = str(root / "beir"), "train"
    settings.model.path = str(root / "stage1")
    settings.identifiers = config.identifiers.copy_and_resolve_references()
    for field in ("num_beams", "length_penalty", "aggregation", "batch_size", "max_query_length"):
        settings.retrieve[field] = config.candidates[field]
    settings.retrieve.depth, settings.retrieve.show_progress = config.candidates.depth, False
    result = retrieve.run_from_config(settings, str(tmp_path))
    assert snapshot(root / "identifiers") == before
    written = formats.read_run(result["run"])
    student = formats.read_run(output / candidates.STUDENT_RUN)
    assert {qid: list(docs) for qid, docs in written.items() if docs} == {
        qid: list(docs) for qid, docs in student.items() if docs}


def test_pseudo_queries_join_the_lists_with_their_source_passage_as_positive(chain):
    root, config, _ = chain
    pseudo = config.candidates.pseudo
    drawn = pseudo_queries.draw(CORPUS, 3, seed=pseudo.seed, min_words=pseudo.min_words,
                                max_words=pseudo.max_words, skip_words=pseudo.skip_words)
    assert len(drawn) == 3
    run = teacher_run(0)
    run.update({f"pseudo-d{i}": {f"d{j}": float((i * 3 + j * 5) % 12) for j in range(12)} for i in range(12)})
    formats.write_run(run, root / "teacher_pseudo.trec", tag="teacher")
    changed = with_changes(config, **{"teacher.path": str(root / "teacher_pseudo.trec"),
                                      "distill.candidates_dir": str(root / "candidates_pseudo")})
    changed.candidates.pseudo.count = 3
    output = candidates.run_from_config(changed, str(root / "stage2_pseudo"))
    queries = formats.read_queries(output / candidates.QUERIES_FILE)
    positives = formats.read_qrels(output / candidates.QRELS_FILE)
    ranked = formats.read_run(output / candidates.TEACHER_RUN)
    assert queries == {**{qid: QUERIES[qid] for qid in QRELS["train"]}, **{q.query_id: q.text for q in drawn}}
    for query in drawn:
        assert positives[query.query_id] == {query.doc_id: 1}
        docs = ranked[query.query_id]
        assert query.doc_id in docs
        assert list(docs) == sorted(docs, key=lambda d: (-run[query.query_id][d], d))
    fingerprint = candidates.read_fingerprint(output)
    assert fingerprint["pseudo.count"] == "3" and fingerprint["pseudo.min_words"] == str(pseudo.min_words)
    fewer = changed.copy_and_resolve_references()
    fewer.candidates.pseudo.count = 2
    with pytest.raises(candidates.StaleCandidatesError, match="pseudo.count"):
        candidates.run_from_config(fewer, str(root / "stage2_pseudo"))
    task = dgr_task.build_task(changed)
    examples = task.train_source
    tokenizer = transformers.AutoTokenizer.from_pretrained(config.identifiers.dir)
    for query in drawn:  # stage 2 encodes the pseudo-query's text from the candidates directory
        example = examples[examples.query_ids.index(query.query_id)]
        expected = tokenizer([query.text], truncation=True, max_length=changed.data.max_input_length)["input_ids"][0]
        np.testing.assert_array_equal(example["query"], expected)
        assert example["positive"][0] and example["teacher"][0] == run[query.query_id][query.doc_id]
