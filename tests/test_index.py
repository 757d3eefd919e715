"""The sharded encoding engine (equal to one fully padded batch; 8 devices equal 1; two processes equal one), exact
top-k search over a sharded corpus (equal to a brute-force numpy sort with ties to the lower index, on 8 devices, on 1
and over two processes), pair scores over a sharded corpus (equal to numpy's), and the fingerprinted embedding cache
(round trip; refuses another model, other texts, a changed or half-written cache)."""
import json
import os
import socket
import stat
import subprocess
import sys

import jax
import numpy as np
import pytest
import transformers

from bert_helpers import max_abs_diff, random_params, tiny_config
from distill_ret import distributed, index
from distill_ret.models import heads
from distill_ret.training import partitioning


def mesh_of(num_devices: int) -> jax.sharding.Mesh:
    return partitioning.create_mesh({"data": -1, "fsdp": 1, "model": 1}, jax.devices()[:num_devices])


def brute_force_top_k(queries: np.ndarray, documents: np.ndarray, k: int) -> np.ndarray:
    """[q, k] indices by descending float64 score, ties by ascending document index."""
    scores = queries.astype(np.float64) @ documents.astype(np.float64).T  # [q, n]
    return np.stack([np.lexsort((np.arange(len(documents)), -row))[:k] for row in scores])


def test_bucket_lengths_and_batch_plan():
    assert index.bucket_lengths(256) == tuple(range(16, 257, 16))
    assert index.bucket_lengths(256, step=32) == (32, 64, 96, 128, 160, 192, 224, 256)
    assert index.bucket_lengths(100, step=48) == (48, 96, 100)
    assert index.bucket_lengths(20) == (16, 20)
    assert index.bucket_lengths(12) == (12,)
    lengths = [5, 40, 17, 3, 16, 90, 33]
    plan = index.plan_batches(lengths, 3, (16, 32, 64, 128))
    assert [rows.tolist() for rows, _ in plan] == [[3, 0, 4], [2, 6, 1], [5]]
    assert [length for _, length in plan] == [16, 64, 128]
    with pytest.raises(ValueError, match="more than the largest bucket"):
        index.plan_batches([200], 2, (16, 128))


def test_pad_examples_pads_ids_with_the_pad_id_and_other_features_with_zero():
    examples = [{"input_ids": np.array([5, 6, 7]), "token_type_ids": np.array([0, 1, 1])},
                {"input_ids": np.array([8]), "token_type_ids": np.array([0])}]
    padded = index.pad_examples(examples, ("input_ids", "token_type_ids"), 4, 3, pad_token_id=9)
    assert padded["input_ids"].tolist() == [[5, 6, 7, 9], [8, 9, 9, 9], [9, 9, 9, 9]]
    assert padded["token_type_ids"].tolist() == [[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="token_type_ids has 1 entries for 3 tokens"):
        index.pad_examples([{"input_ids": np.array([1, 2, 3]), "token_type_ids": np.array([0])}],
                           ("input_ids", "token_type_ids"), 4, 1)


def test_engine_is_generic_over_features_and_returns_input_order_on_8_devices():
    """An apply function that reads every feature gives exact, hand-checkable outputs per example."""
    def apply_fn(params, batch):  # [batch, length] each -> [batch, 2]
        ids = (batch["input_ids"] * batch["attention_mask"]).sum(axis=1)
        types = (batch["token_type_ids"] * batch["attention_mask"]).sum(axis=1)
        return jax.numpy.stack([ids + params["bias"], types], axis=1).astype(jax.numpy.float32)

    rng = np.random.RandomState(0)
    lengths = [3, 11, 1, 7, 16, 2, 9, 5, 13, 4, 8]
    examples = [{"input_ids": rng.randint(1, 50, size=n), "token_type_ids": rng.randint(0, 2, size=n)}
                for n in lengths]
    engine = index.EncodingEngine(apply_fn, buckets=(4, 8, 16), features=("input_ids", "token_type_ids"),
                                  batch_size=5, pad_token_id=77)
    assert engine.batch_size == 8  # rounded up to the 8 batch shards
    outputs = engine.encode(engine.replicate({"bias": np.float32(0.5)}), examples)
    expected = [[example["input_ids"].sum() + 0.5, example["token_type_ids"].sum()] for example in examples]
    np.testing.assert_array_equal(outputs, np.asarray(expected, np.float32))
    assert engine.apply._cache_size() <= 3  # one program per bucket at most


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]) + "\n")
    return transformers.BertTokenizer(vocab=str(vocab))


@pytest.fixture(scope="module")
def bi_encoder():
    model = heads.BiEncoder(tiny_config(), pooling="mean", normalize=True)
    ids = np.ones((1, 4), np.int32)
    return model, random_params(model, ids, ids, ids, ids, seed=2)


TEXTS = [" ".join(f"w{i}" for i in np.random.RandomState(0).randint(0, 95, size=n))
         for n in [3, 30, 7, 1, 12, 50, 9, 20, 2, 17, 5]]


def test_text_encoder_equals_one_padded_batch_in_input_order(tokenizer, bi_encoder):
    model, params = bi_encoder
    encoder = index.TextEncoder(index.bi_encoder_fn(model, "document"), tokenizer, max_length=24, batch_size=4)
    embeddings = encoder.encode(encoder.replicate(params), TEXTS)
    assert embeddings.shape == (11, 32) and embeddings.dtype == np.float32
    padded = tokenizer(TEXTS, truncation=True, max_length=24, padding="max_length", return_tensors="np")
    expected = model.apply({"params": params}, padded["input_ids"], padded["attention_mask"],
                           method=heads.BiEncoder.encode_documents)  # one batch, no bucketing, no reordering
    assert max_abs_diff(embeddings, expected) < 1e-5
    assert encoder.engine.apply._cache_size() <= len(encoder.engine.buckets)  # one program per bucket at most


def test_encoding_on_8_devices_equals_1_device(tokenizer, bi_encoder):
    model, params = bi_encoder
    results = []
    for devices in (8, 1):
        encoder = index.TextEncoder(index.bi_encoder_fn(model, "query"), tokenizer, max_length=24, batch_size=8,
                                    mesh=mesh_of(devices))
        assert encoder.engine.mesh.devices.size == devices
        results.append(encoder.encode(encoder.replicate(params), TEXTS))
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=1e-6)


def test_top_k_search_equals_brute_force_on_8_devices_and_on_1():
    rng = np.random.RandomState(1)
    queries, documents = rng.randn(5, 8).astype(np.float32), rng.randn(23, 8).astype(np.float32)
    expected = brute_force_top_k(queries, documents, 6)
    exact = np.take_along_axis(queries @ documents.T, expected, 1)
    for devices in (8, 1):
        for doc_chunk, query_chunk in [(65536, 1024), (2, 2), (1, 5), (7, 3)]:
            scores, indices = index.top_k_search(queries, documents, 6, mesh=mesh_of(devices), doc_chunk=doc_chunk,
                                                 query_chunk=query_chunk)
            np.testing.assert_array_equal(indices, expected)
            np.testing.assert_allclose(scores, exact, rtol=1e-6, atol=1e-6)
    scores, indices = index.top_k_search(queries, documents[:4], 10, doc_chunk=3)  # 4 documents over 8 devices
    assert indices.shape == (5, 4) and sorted(indices[0].tolist()) == [0, 1, 2, 3]


def test_per_device_merge_breaks_ties_by_lower_index_across_shards():
    """Few distinct scores and many equal ones, spread over every shard and chunk: the merged top-k equals a
    brute-force sort with ties by document index, on 8 devices and on 1."""
    rng = np.random.RandomState(3)
    documents = rng.randint(-2, 3, size=(37, 3)).astype(np.float32)  # small integers: exact, many equal scores
    queries = rng.randint(-2, 3, size=(6, 3)).astype(np.float32)
    for k in (1, 5, 13, 37):
        expected = brute_force_top_k(queries, documents, k)
        for devices, doc_chunk in [(8, 65536), (8, 2), (1, 65536), (1, 4)]:
            scores, indices = index.top_k_search(queries, documents, k, mesh=mesh_of(devices), doc_chunk=doc_chunk)
            np.testing.assert_array_equal(indices, expected, err_msg=f"k={k} devices={devices} chunk={doc_chunk}")
            np.testing.assert_array_equal(scores, np.take_along_axis(queries @ documents.T, expected, 1))


def test_sharded_corpus_scores_each_candidate_on_its_device_exactly():
    """Pair scores over a corpus split over 8 devices (and over 1, in uneven shards) equal numpy's, 0 where a query
    has no candidate (-1); an index outside the corpus is refused."""
    rng = np.random.RandomState(2)
    documents = rng.randint(-3, 4, size=(13, 5)).astype(np.float32)  # small integers: every product is exact
    queries = rng.randint(-3, 4, size=(4, 5)).astype(np.float32)
    candidates = np.array([[12, 0, 5], [3, -1, -1], [7, 7, 1], [-1, -1, -1]], np.int32)
    expected = np.where(candidates >= 0, np.einsum("qh,qch->qc", queries, documents[candidates]), 0.0)
    for devices in (8, 1):
        corpus = index.ShardedCorpus(documents, mesh=mesh_of(devices), doc_chunk=2)
        assert corpus.per_shard * devices >= 13 and corpus.per_shard % corpus.chunk == 0
        np.testing.assert_array_equal(corpus.score(queries, candidates), expected)
    with pytest.raises(ValueError, match=r"document indices in \[0, 13\)"):
        corpus.score(queries, np.full((4, 1), 13, np.int32))


def test_dense_run_carries_ids():
    documents = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.0]], np.float32)
    queries = np.array([[1.0, 0.0]], np.float32)
    run = index.dense_run(["q1"], queries, ["a", "b", "c", "d", "e"], documents, 4, doc_chunk=2)
    assert run == {"q1": {"a": 1.0, "c": 1.0, "d": 1.0, "e": 0.5}}
    with pytest.raises(ValueError, match="exactly one id"):
        index.dense_run(["q1", "q2"], queries, ["a"], documents, 1)


MODEL = {"kind": "dense", "params_sha256": "ab" * 32, "pooling": "mean", "max_length": "256"}


def test_embedding_cache_round_trips_and_encodes_once(tmp_path):
    embeddings = np.random.RandomState(0).randn(3, 4).astype(np.float32)
    fingerprint = index.cache_fingerprint(MODEL, ["one", "two", "three"])
    calls = []

    def encode():
        calls.append(1)
        return embeddings

    first = index.encode_or_load(tmp_path / "cache", fingerprint, encode)
    second = index.encode_or_load(tmp_path / "cache", fingerprint, encode)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, embeddings)
    np.testing.assert_array_equal(second, embeddings)
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == ["embeddings.npy", "fingerprint.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert {stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "cache").iterdir()} == {0o666 & ~umask}
    record = json.loads((tmp_path / "cache" / "fingerprint.json").read_text())
    assert record["fingerprint"] == fingerprint and record["fingerprint"]["model.pooling"] == "mean"


def test_embedding_cache_refuses_another_model_other_texts_and_changed_files(tmp_path):
    cache = tmp_path / "cache"
    index.save_embeddings(cache, np.ones((2, 4), np.float32), index.cache_fingerprint(MODEL, ["a", "b"]))
    before = {path.name: path.read_bytes() for path in cache.iterdir()}
    other_model = index.cache_fingerprint({**MODEL, "params_sha256": "cd" * 32}, ["a", "b"])
    with pytest.raises(index.StaleEmbeddingCacheError, match=r"fingerprint.json: .*model.params_sha256"):
        index.encode_or_load(cache, other_model, lambda: pytest.fail("a stale cache must not be rebuilt"))
    for texts in (["b", "a"], ["a", "b", "c"], ["a", "b "]):  # order, count and content all count
        with pytest.raises(index.StaleEmbeddingCacheError, match="texts_sha256"):
            index.load_embeddings(cache, index.cache_fingerprint(MODEL, texts))
    assert {path.name: path.read_bytes() for path in cache.iterdir()} == before  # nothing was overwritten
    assert index.texts_digest(["a\n", "b"]) != index.texts_digest(["a", "\nb"])

    (cache / "embeddings.npy").write_bytes(before["embeddings.npy"][:-4] + b"\0\0\0\0")
    with pytest.raises(index.StaleEmbeddingCacheError, match="embeddings.npy: the file does not match the sha256"):
        index.load_embeddings(cache, index.cache_fingerprint(MODEL, ["a", "b"]))
    (cache / "fingerprint.json").unlink()
    with pytest.raises(index.StaleEmbeddingCacheError, match="fingerprint.json: the embedding cache .* incomplete"):
        index.encode_or_load(cache, index.cache_fingerprint(MODEL, ["a", "b"]), lambda: pytest.fail("rebuilt"))
    (cache / "fingerprint.json").write_text("{not json")
    with pytest.raises(index.formats.FormatError, match="fingerprint.json"):
        index.load_embeddings(cache, index.cache_fingerprint(MODEL, ["a", "b"]))
    (tmp_path / "file").write_text("x")
    with pytest.raises(index.formats.FormatError, match="file: the embedding cache must be a directory"):
        index.encode_or_load(tmp_path / "file", index.cache_fingerprint(MODEL, ["a"]), lambda: pytest.fail("encoded"))


TWO_PROCESS_SCRIPT = """
import sys
import numpy as np
import jax
from distill_ret import distributed, index

distributed.initialize()
rng = np.random.RandomState(0)
examples = [{"input_ids": rng.randint(1, 50, size=n), "token_type_ids": rng.randint(0, 2, size=n)}
            for n in [3, 11, 1, 7, 16, 2, 9, 5, 13, 4, 8]]

def apply_fn(params, batch):
    ids = (batch["input_ids"] * batch["attention_mask"]).sum(axis=1)
    types = (batch["token_type_ids"] * batch["attention_mask"]).sum(axis=1)
    return jax.numpy.stack([ids + params["bias"], types], axis=1).astype(jax.numpy.float32)

engine = index.EncodingEngine(apply_fn, buckets=(4, 8, 16), features=("input_ids", "token_type_ids"), batch_size=8)
outputs = engine.encode(engine.replicate({"bias": np.float32(0.5)}), examples)
documents = np.random.RandomState(3).randint(-2, 3, size=(37, 3)).astype(np.float32)
queries = np.random.RandomState(4).randint(-2, 3, size=(6, 3)).astype(np.float32)
scores, indices = index.top_k_search(queries, documents, 9, doc_chunk=2)
np.savez(f"{sys.argv[1]}.{jax.process_index()}.npz", outputs=outputs, scores=scores, indices=indices,
         rows=[engine._rows.start, engine._rows.stop], devices=[len(jax.devices()), len(jax.local_devices())])
"""


def test_two_processes_encode_and_search_as_one(tmp_path):
    """Two processes (4 CPU devices each) share the batches (each pads only its own rows) and the corpus; both get
    the exact outputs of every example and the brute-force top-k."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    processes = []
    for process_id in range(2):
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
               distributed.COORDINATOR_VARIABLE: f"127.0.0.1:{port}", distributed.NUM_PROCESSES_VARIABLE: "2",
               distributed.PROCESS_ID_VARIABLE: str(process_id)}
        processes.append(subprocess.Popen([sys.executable, "-c", TWO_PROCESS_SCRIPT, str(tmp_path / "out")], env=env,
                                          stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    rng = np.random.RandomState(0)
    examples = [(rng.randint(1, 50, size=n), rng.randint(0, 2, size=n)) for n in [3, 11, 1, 7, 16, 2, 9, 5, 13, 4, 8]]
    expected_outputs = np.asarray([[ids.sum() + 0.5, types.sum()] for ids, types in examples], np.float32)
    documents = np.random.RandomState(3).randint(-2, 3, size=(37, 3)).astype(np.float32)
    queries = np.random.RandomState(4).randint(-2, 3, size=(6, 3)).astype(np.float32)
    expected_indices = brute_force_top_k(queries, documents, 9)
    results = [np.load(tmp_path / f"out.{process_id}.npz") for process_id in range(2)]
    assert [result["rows"].tolist() for result in results] == [[0, 4], [4, 8]]  # each pads its own half
    for result in results:
        assert result["devices"].tolist() == [8, 4]
        np.testing.assert_array_equal(result["outputs"], expected_outputs)
        np.testing.assert_array_equal(result["indices"], expected_indices)
        np.testing.assert_array_equal(result["scores"], np.take_along_axis(queries @ documents.T, expected_indices, 1))
