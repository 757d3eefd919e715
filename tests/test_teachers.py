"""Teacher interface, run-file teacher (with its fallback), cross-encoder and dense teachers: PyTorch parity,
8 devices equal 1, rebuilding a cross-encoder from a checkpoint's model record (or an older checkpoint's job
config) without its training task, scoring with given params, and the dense teacher's corpus embedding cache."""
import dataclasses

import numpy as np
import pytest

from distill_ret.data import formats
from distill_ret.errors import ConfigError
from distill_ret.teachers import RunFileTeacher, TeacherQuery, rank_order, rerank_run

CORPUS = {doc_id: formats.Document(doc_id, f"title {doc_id}", f"text of {doc_id}")
          for doc_id in ("a", "b", "c", "d", "e")}
QUERIES = {"q1": "first query", "q2": "second query"}


def query(query_id, *doc_ids):
    return TeacherQuery(query_id, QUERIES[query_id], tuple(CORPUS[doc_id] for doc_id in doc_ids))


def test_rank_order_sorts_by_score_then_doc_id():
    assert rank_order([1.0, 3.0, 3.0, 2.0], ["w", "z", "y", "x"]) == [2, 1, 3, 0]
    with pytest.raises(ValueError, match="3 scores for 2 candidates"):
        rank_order([1.0, 2.0, 3.0], ["a", "b"])


def test_run_file_teacher_scores_from_the_file_and_ranks_absent_candidates_last(tmp_path):
    path = tmp_path / "teacher.trec"
    formats.write_run({"q1": {"a": 5.0, "b": 7.0, "c": 2.5}, "q2": {"e": 1.0}}, path)
    teacher = RunFileTeacher.from_file(path)
    ranking = teacher.rank(query("q1", "d", "a", "c", "e", "b"))
    # d and e are absent from the run: score = lowest run score of q1 (2.5) - 1, ranked after c, tie by doc id.
    np.testing.assert_array_equal(ranking.scores, [1.5, 5.0, 2.5, 1.5, 7.0])
    assert ranking.ranked_ids() == ["b", "a", "c", "d", "e"]
    assert list(ranking.order) == [4, 1, 2, 0, 3]
    assert ranking.as_run() == {"b": 7.0, "a": 5.0, "c": 2.5, "d": 1.5, "e": 1.5}
    with pytest.raises(formats.FormatError, match="teacher.trec: the teacher run ranks no document for query 'q3'"):
        teacher.rank(TeacherQuery("q3", "x", (CORPUS["a"],)))


def test_run_file_teacher_fingerprint_follows_the_file(tmp_path):
    first, second = tmp_path / "1.trec", tmp_path / "2.trec"
    formats.write_run({"q1": {"a": 1.0}}, first)
    formats.write_run({"q1": {"a": 2.0}}, second)
    assert RunFileTeacher.from_file(first).fingerprint() == RunFileTeacher.from_file(first).fingerprint()
    assert RunFileTeacher.from_file(first).fingerprint() != RunFileTeacher.from_file(second).fingerprint()
    assert RunFileTeacher({"q1": {"a": 1.0}}).fingerprint()["kind"] == "run_file"


def test_rerank_run_keeps_the_top_depth_candidates_in_teacher_order():
    candidates = {"q1": {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}, "q2": {}}
    teacher = RunFileTeacher({"q1": {"c": 9.0, "a": 1.0, "b": 5.0}})
    reranked = rerank_run(teacher, candidates, QUERIES, CORPUS, depth=3)
    assert reranked == {"q1": {"c": 9.0, "b": 5.0, "a": 1.0}, "q2": {}}
    full = rerank_run(teacher, candidates, QUERIES, CORPUS)
    assert list(full["q1"]) == ["c", "b", "a", "d"] and full["q1"]["d"] == 0.0
    with pytest.raises(ValueError, match="document 'zz' for query 'q1'"):
        rerank_run(teacher, {"q1": {"zz": 1.0}}, QUERIES, CORPUS)
    with pytest.raises(ValueError, match="query 'q9'"):
        rerank_run(teacher, {"q9": {"a": 1.0}}, QUERIES, CORPUS)


# ------------------------------------------------------------------------------------------- cross-encoder teacher

def test_cross_encoder_teacher_matches_pytorch_with_sharded_bucketed_batches(tmp_path):
    import jax

    from distill_ret.teachers.cross_encoder import CrossEncoderTeacher
    from tests.teacher_helpers import DOCS, torch_scores, write_torch_cross_encoder

    model = write_torch_cross_encoder(tmp_path / "ce")
    teacher = CrossEncoderTeacher.from_hf(tmp_path / "ce", max_length=24, batch_size=5, bucket_step=8,
                                          show_progress=False)
    assert len(jax.devices()) == 8 and teacher.scorer.batch_size == 8  # rounded up to the 8 batch shards
    requests = [TeacherQuery("q1", "wing lift", tuple(DOCS.values())[:11]),
                TeacherQuery("q2", "heat", tuple(DOCS.values())[5:])]
    rankings = teacher.rank_batch(requests)
    for request, ranking in zip(requests, rankings):
        passages = [f"{doc.title} {doc.text}" for doc in request.candidates]
        expected = torch_scores(model, teacher.scorer.tokenizer, [request.text] * len(passages), passages, 24)
        np.testing.assert_allclose(ranking.scores, expected, atol=1e-5)
        assert np.all(np.diff(ranking.scores[ranking.order]) <= 0)  # rank list = descending teacher scores
    # One compiled program per padded length: at most one per bucket (8, 16, 24), however many batches ran.
    assert teacher.scorer.engine.apply._cache_size() <= 3
    print_ = teacher.fingerprint()
    assert print_["kind"] == "cross_encoder" and print_["max_length"] == "24" and len(print_["params_sha256"]) == 64


def test_cross_encoder_scores_give_the_teacher_no_gradient():
    import jax
    import jax.numpy as jnp

    from distill_ret.models.heads import CrossEncoder
    from distill_ret.teachers.cross_encoder import cross_encoder_scores
    from tests.bert_helpers import padded_batch, random_params, tiny_config

    config = tiny_config()
    ids, mask, types = padded_batch()
    params = random_params(CrossEncoder(config), ids, mask, types)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def distillation_loss(teacher_params, student_scores):
        teacher = cross_encoder_scores(teacher_params, config, batch)  # [batch]
        return jnp.sum((student_scores - teacher) ** 2)

    student = jnp.arange(3, dtype=jnp.float32)
    teacher_grads, student_grads = jax.grad(distillation_loss, argnums=(0, 1))(params, student)
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree.leaves(teacher_grads))
    assert float(jnp.abs(student_grads).max()) > 0.0


# ------------------------------------------------------------------------------------------------- dense teacher

def test_dense_teacher_equals_pytorch_mean_pooled_cosine_and_retrieves(tmp_path):
    import torch
    import transformers

    from distill_ret.teachers.dense import DenseTeacher
    from tests.teacher_helpers import DOCS, write_tokenizer

    tokenizer = write_tokenizer(tmp_path / "bert")
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64)).eval()
    model.save_pretrained(tmp_path / "bert", safe_serialization=True)
    teacher = DenseTeacher.from_hf(tmp_path / "bert", max_length=32, batch_size=4)

    def reference(texts):
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"][..., None].float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()

    candidates = tuple(DOCS.values())[:6]
    ranking = teacher.rank(TeacherQuery("q1", "wing lift", candidates))
    expected = reference([f"{d.title} {d.text}" for d in candidates]) @ reference(["wing lift"])[0]
    np.testing.assert_allclose(ranking.scores, expected, atol=1e-5)
    run = teacher.retrieve({"q1": "wing lift"}, DOCS, k=3)
    every = teacher.rank(TeacherQuery("q1", "wing lift", tuple(DOCS.values())))
    assert list(run["q1"]) == every.ranked_ids()[:3]
    assert teacher.fingerprint()["kind"] == "dense"
    # The passage cache is keyed by text: the same id with another text (a title-less copy) is encoded anew.
    first = candidates[0]
    untitled = dataclasses.replace(first, title="")
    scores = teacher.score_batch([TeacherQuery("q1", "wing lift", (first, untitled)),
                                  TeacherQuery("q2", "wing lift", (untitled,))])
    expected = reference([f"{first.title} {first.text}", first.text]) @ reference(["wing lift"])[0]
    np.testing.assert_allclose(np.concatenate(scores), [*expected, expected[1]], atol=1e-5)


def test_dense_teacher_caches_corpus_embeddings_and_refuses_another_model(tmp_path):
    import transformers

    from distill_ret import index
    from distill_ret.teachers.dense import DenseTeacher
    from tests.teacher_helpers import DOCS, write_tokenizer

    tokenizer = write_tokenizer(tmp_path / "bert")
    transformers.BertModel(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64)).save_pretrained(tmp_path / "bert", safe_serialization=True)
    teacher = DenseTeacher.from_hf(tmp_path / "bert", max_length=32, batch_size=4)
    queries = {"q1": "wing lift", "q2": "heat"}
    uncached = teacher.retrieve(queries, DOCS, k=5)
    cached = teacher.retrieve(queries, DOCS, k=5, cache_dir=tmp_path / "cache")
    again = DenseTeacher.from_hf(tmp_path / "bert", max_length=32, batch_size=4)
    again.encode_passages = lambda documents: pytest.fail("a matching cache must be loaded, not re-encoded")
    assert again.retrieve(queries, DOCS, k=5, cache_dir=tmp_path / "cache") == cached == uncached
    shorter = DenseTeacher.from_hf(tmp_path / "bert", max_length=16, batch_size=4)
    with pytest.raises(index.StaleEmbeddingCacheError, match="model.max_length: cache has '32', inputs give '16'"):
        shorter.retrieve(queries, DOCS, k=5, cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------ cross-encoder: meshes, given params, checkpoints

@pytest.fixture(scope="module")
def hf_cross_encoder(tmp_path_factory):
    from tests.teacher_helpers import write_torch_cross_encoder

    directory = tmp_path_factory.mktemp("ce")
    write_torch_cross_encoder(directory)
    return directory


PAIRS = (["wing lift", "heat slab", "shock wave", "jet"] * 3,
         [f"{doc.title} {doc.text}" for doc in list(CORPUS.values()) * 2 + list(CORPUS.values())[:2]])


def test_pair_scores_on_8_devices_equal_1_device_and_scoring_with_given_params(hf_cross_encoder):
    import jax

    from distill_ret.teachers.cross_encoder import CrossEncoderTeacher
    from distill_ret.training import partitioning

    one = partitioning.create_mesh({"data": -1, "fsdp": 1, "model": 1}, jax.devices()[:1])
    eight = CrossEncoderTeacher.from_hf(hf_cross_encoder, max_length=24, batch_size=8, show_progress=False)
    single = CrossEncoderTeacher.from_hf(hf_cross_encoder, max_length=24, batch_size=8, show_progress=False, mesh=one)
    assert eight.scorer.engine.mesh.devices.size == 8 and single.scorer.engine.mesh.devices.size == 1
    np.testing.assert_allclose(eight.score_pairs(*PAIRS), single.score_pairs(*PAIRS), rtol=0, atol=1e-6)
    # The evaluator's path: a teacher over an existing scorer and params as given (host arrays here), no copy made.
    host_params = jax.tree.map(np.asarray, eight.params)
    given = CrossEncoderTeacher(eight.scorer, host_params)
    assert given.params is host_params and given.scorer is eight.scorer
    np.testing.assert_array_equal(given.score_pairs(*PAIRS), eight.score_pairs(*PAIRS))
    assert given.fingerprint() == eight.fingerprint()  # the digest is computed from the given params


def _fake_checkpoint(monkeypatch, params, job_config, model):
    from distill_ret.teachers import cross_encoder
    from distill_ret.training import checkpointing

    checkpoint = checkpointing.RunCheckpoint(step=7, job_config=job_config, params=params, model=model)
    seen = []

    def read(workdir, step="best"):
        seen.append((str(workdir), step))
        return checkpoint

    monkeypatch.setattr(cross_encoder.checkpointing, "read_run_checkpoint", read)
    return seen


def test_from_checkpoint_rebuilds_the_teacher_from_its_model_record(hf_cross_encoder, monkeypatch):
    from distill_ret.hf import import_from_hf
    from distill_ret.teachers.cross_encoder import CrossEncoderTeacher
    from distill_ret.training.tasks import ModelRecord

    reference = CrossEncoderTeacher.from_hf(hf_cross_encoder, max_length=24, show_progress=False)
    config, params = import_from_hf(hf_cross_encoder)
    record = ModelRecord(config=config.to_hf().to_dict(), head="cross_encoder",
                         tokenizer_dir=str(hf_cross_encoder), options={"num_labels": 1})
    # The record alone rebuilds the model: the task name and the model section of the job config are not read.
    seen = _fake_checkpoint(monkeypatch, params, {"task": "some_future_task", "data": {"max_length": 24}},
                            record.to_dict())
    teacher = CrossEncoderTeacher.from_checkpoint("runs/ce", "latest", show_progress=False)
    assert seen == [("runs/ce", "latest")] and teacher.checkpoint_step == 7
    assert teacher.scorer.max_length == 24 and teacher.scorer.config == config
    np.testing.assert_array_equal(teacher.score_pairs(*PAIRS), reference.score_pairs(*PAIRS))
    assert teacher.fingerprint() == reference.fingerprint()

    _fake_checkpoint(monkeypatch, params, {}, {**record.to_dict(), "head": "bi_encoder"})
    with pytest.raises(ConfigError, match="runs/ce: the checkpoint holds a 'bi_encoder' model, not a cross_encoder"):
        CrossEncoderTeacher.from_checkpoint("runs/ce")
    _fake_checkpoint(monkeypatch, params, {}, {**record.to_dict(), "options": {"num_labels": 3}})
    with pytest.raises(ConfigError, match="runs/ce: a teacher needs one output label, the checkpoint's model has 3"):
        CrossEncoderTeacher.from_checkpoint("runs/ce")
    _fake_checkpoint(monkeypatch, params, {}, {**record.to_dict(), "tokenizer_dir": ""})
    with pytest.raises(ConfigError, match="runs/ce: the checkpoint's model record names no tokenizer directory"):
        CrossEncoderTeacher.from_checkpoint("runs/ce")
    _fake_checkpoint(monkeypatch, params, {}, {**record.to_dict(), "tokenizer_dir": "/no/such/tokenizer"})
    with pytest.raises(ConfigError, match="tokenizer directory /no/such/tokenizer that the .* does not exist"):
        CrossEncoderTeacher.from_checkpoint("runs/ce")
    wider = {**record.to_dict(), "config": {**record.config, "intermediate_size": 128}}
    _fake_checkpoint(monkeypatch, params, {}, wider)
    with pytest.raises(ConfigError, match=r"runs/ce: parameter \['bert'\]\['layers_0'\]\['intermediate'\]\['bias'\] "
                                          r"has shape \(64,\) in the checkpoint where the model config gives \(128,\)"):
        CrossEncoderTeacher.from_checkpoint("runs/ce")


def test_from_checkpoint_without_a_record_reads_the_saved_job_config(hf_cross_encoder, monkeypatch):
    from distill_ret.hf import import_from_hf
    from distill_ret.models.bert import BertConfig
    from distill_ret.teachers.cross_encoder import CrossEncoderTeacher, record_from_job_config

    reference = CrossEncoderTeacher.from_hf(hf_cross_encoder, max_length=24, show_progress=False)
    config, params = import_from_hf(hf_cross_encoder)
    model = {"init_from": str(hf_cross_encoder), "tokenizer_dir": "", "dtype": "float32", "hidden_size": 8,
             "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32}
    job_config = {"task": "cross_encoder", "model": model, "data": {"max_length": 24}}
    _fake_checkpoint(monkeypatch, params, job_config, None)
    teacher = CrossEncoderTeacher.from_checkpoint("runs/old")
    assert teacher.scorer.config == config  # from model.init_from, not the random-init fields
    np.testing.assert_array_equal(teacher.score_pairs(*PAIRS), reference.score_pairs(*PAIRS))

    random_init = {**job_config, "model": {**model, "init_from": "", "tokenizer_dir": str(hf_cross_encoder)}}
    record = record_from_job_config(random_init, "runs/old")
    assert record.head == "cross_encoder" and record.tokenizer_dir == str(hf_cross_encoder)
    assert BertConfig.from_hf(record.config) == BertConfig(
        vocab_size=len(reference.scorer.tokenizer), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=32, pad_token_id=0)
    with pytest.raises(ConfigError, match="runs/old: the checkpoint has no model record and is of task 't5_reverse'"):
        record_from_job_config({**job_config, "task": "t5_reverse"}, "runs/old")
    with pytest.raises(ConfigError, match="names neither model.tokenizer_dir nor model.init_from"):
        record_from_job_config({**job_config, "model": {**model, "init_from": ""}}, "runs/old")
    with pytest.raises(ConfigError, match="runs/old: the checkpoint's config lacks model.hidden_size"):
        record_from_job_config({"task": "cross_encoder", "model": {"tokenizer_dir": str(hf_cross_encoder)}},
                               "runs/old")


def test_tokenizer_digest_ignores_call_settings_and_follows_the_vocabulary(tmp_path):
    import transformers

    from distill_ret.hf.identity import load_tokenizer, tokenizer_digest
    from tests.teacher_helpers import write_tokenizer

    write_tokenizer(tmp_path / "tok")
    tokenizer = load_tokenizer(tmp_path / "tok")
    fresh = tokenizer_digest(tokenizer)
    tokenizer(["wing lift drag"], truncation=True, max_length=2, padding="max_length")  # sets truncation and padding
    assert tokenizer_digest(tokenizer) == fresh == tokenizer_digest(load_tokenizer(tmp_path / "tok"))
    vocab = dict(tokenizer.get_vocab())
    vocab["wings"] = vocab.pop("wing")
    assert tokenizer_digest(transformers.BertTokenizerFast(vocab=vocab, do_lower_case=True)) != fresh
