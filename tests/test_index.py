"""Corpus encoding with length buckets (equal to one fully padded batch) and exact top-k search (equal to a
brute-force sort, ties to the lower index)."""
import numpy as np
import pytest
import transformers

from bert_helpers import max_abs_diff, random_params, tiny_config
from distill_ret import index
from distill_ret.models import heads


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


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]) + "\n")
    return transformers.BertTokenizer(vocab=str(vocab))


def test_text_encoder_equals_one_padded_batch_in_input_order(tokenizer):
    config = tiny_config()
    rng = np.random.RandomState(0)
    texts = [" ".join(f"w{i}" for i in rng.randint(0, 95, size=n)) for n in [3, 30, 7, 1, 12, 50, 9, 20, 2]]
    model = heads.BiEncoder(config, pooling="mean", normalize=True)
    ids = np.ones((1, 4), np.int32)
    params = random_params(model, ids, ids, ids, ids, seed=2)
    encoder = index.TextEncoder(index.bi_encoder_fn(model, "document"), tokenizer, max_length=24, batch_size=4)
    embeddings = encoder.encode(params, texts)
    assert embeddings.shape == (9, 32) and embeddings.dtype == np.float32
    padded = tokenizer(texts, truncation=True, max_length=24, padding="max_length", return_tensors="np")
    expected = model.apply({"params": params}, padded["input_ids"], padded["attention_mask"],
                           method=heads.BiEncoder.encode_documents)  # one batch, no bucketing, no reordering
    assert max_abs_diff(embeddings, expected) < 1e-5
    assert encoder.encode_batch._cache_size() <= len(encoder.buckets)  # one program per bucket at most


def test_top_k_search_equals_brute_force():
    rng = np.random.RandomState(1)
    queries, documents = rng.randn(5, 8).astype(np.float32), rng.randn(23, 8).astype(np.float32)
    expected = np.argsort(-(queries @ documents.T), axis=1, kind="stable")[:, :6]
    for doc_chunk, query_chunk in [(65536, 1024), (7, 2), (6, 5)]:
        scores, indices = index.top_k_search(queries, documents, 6, doc_chunk=doc_chunk, query_chunk=query_chunk)
        np.testing.assert_array_equal(indices, expected)
        np.testing.assert_allclose(scores, np.take_along_axis(queries @ documents.T, expected, 1), rtol=1e-6)
    scores, indices = index.top_k_search(queries, documents[:4], 10, doc_chunk=3)
    assert indices.shape == (5, 4) and sorted(indices[0].tolist()) == [0, 1, 2, 3]


def test_ties_go_to_the_lower_index_and_runs_carry_ids():
    documents = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.0]], np.float32)
    queries = np.array([[1.0, 0.0]], np.float32)
    _, indices = index.top_k_search(queries, documents, 3, doc_chunk=3)
    assert indices.tolist() == [[0, 2, 3]]
    run = index.dense_run(["q1"], queries, ["a", "b", "c", "d", "e"], documents, 4, doc_chunk=2)
    assert run == {"q1": {"a": 1.0, "c": 1.0, "d": 1.0, "e": 0.5}}
    with pytest.raises(ValueError, match="exactly one id"):
        index.dense_run(["q1", "q2"], queries, ["a"], documents, 1)
