"""FGD spans: span masks from segmented documents, eq. 7 against the document embedding and a numpy recomputation,
and the Table 2 piece representations (FG pooling, All pooling, separately encoded pieces)."""
import jax
import numpy as np
import pytest
from scipy.special import erf

from bert_helpers import random_params, tiny_config
from distill_ret.data.segment import SegmentedDocument
from distill_ret.fgd import spans
from distill_ret.models import heads
from distill_ret.models.bert import Bert

LENGTH = 16


def _document(length: int, passage_spans, sentence_spans, owners, seed: int) -> SegmentedDocument:
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, 100, size=length).astype(np.int32)
    ids[0], ids[-1] = 1, 2
    return SegmentedDocument(
        input_ids=ids, passage_spans=np.asarray(passage_spans, np.int32).reshape(-1, 2),
        sentence_spans=np.asarray(sentence_spans, np.int32).reshape(-1, 2),
        sentence_passage=np.asarray(owners, np.int32), passage_chars=(), sentence_chars=())


@pytest.fixture(scope="module")
def documents():
    first = _document(14, [(1, 7), (7, 13)], [(1, 4), (4, 7), (7, 13)], [0, 0, 1], seed=0)
    second = _document(9, [(1, 8), (0, 0)], [(1, 3), (3, 8), (0, 0)], [0, 0, 1], seed=1)  # 2nd passage truncated
    return [first, second]


@pytest.fixture(scope="module")
def bert_params(documents):
    batch = spans.batch_documents(documents, length=LENGTH, num_passages=2, num_sentences=3)
    return random_params(Bert(tiny_config()), batch.input_ids, batch.attention_mask, seed=5, scale=0.2)


def test_span_masks_by_hand(documents):
    batch = spans.batch_documents(documents, length=LENGTH, num_passages=2, num_sentences=4,
                                  sentences=[[2, 0], None])
    assert batch.span_mask.shape == (2, 6, LENGTH) and batch.num_sentences == 4
    np.testing.assert_array_equal(batch.piece_valid, [[True, True, True, True, False, False],
                                                      [True, False, True, True, False, False]])
    np.testing.assert_array_equal(np.flatnonzero(batch.span_mask[0, 2]), np.arange(7, 13))  # sentence 2 first
    np.testing.assert_array_equal(np.flatnonzero(batch.span_mask[0, 3]), np.arange(1, 4))
    np.testing.assert_array_equal(np.flatnonzero(batch.span_mask[1, 0]), np.arange(1, 8))
    assert not batch.span_mask[1, 1].any() and not batch.span_mask[:, 4:].any()
    np.testing.assert_array_equal(batch.attention_mask.sum(1), [14, 9])
    np.testing.assert_array_equal(batch.input_ids[1, :9], documents[1].input_ids)
    assert not batch.input_ids[1, 9:].any()


def _model(pooling="cls", normalize=False):
    return heads.BiEncoder(tiny_config(), pooling=pooling, normalize=normalize)


@pytest.mark.parametrize("representation,pooling,normalize", [("global", "cls", False), ("global", "cls", True),
                                                              ("all_pooling", "mean", True)])
def test_whole_input_span_reproduces_the_document_embedding(documents, bert_params, representation, pooling,
                                                            normalize):
    batch = spans.batch_documents(documents, length=LENGTH, num_passages=2, num_sentences=3)
    whole = batch.attention_mask.astype(bool)[:, None, :]  # [docs, 1, length]
    model = _model(pooling, normalize)
    params = heads.bi_encoder_params({"bert": bert_params})
    documents_out, pieces = spans.granularity_embeddings(model, params, batch.input_ids, batch.attention_mask,
                                                         whole, representation)
    reference = model.apply({"params": params}, batch.input_ids, batch.attention_mask,
                            method=heads.BiEncoder.encode_documents)
    np.testing.assert_allclose(np.asarray(pieces[:, 0]), np.asarray(reference), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(documents_out), np.asarray(reference), atol=1e-6, rtol=0)


def _layer_norm(x, scale, bias, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def _dense(x, params):
    return x @ np.asarray(params["kernel"], np.float64) + np.asarray(params["bias"], np.float64)


def _eq7_by_hand(hidden: np.ndarray, span: np.ndarray, layer: dict, heads_: int) -> np.ndarray:
    """FGD eq. 7 with numpy: [CLS] of the previous layer attends over the span's tokens only, then the layer's
    output projection, residual + norm, GELU FFN, residual + norm. hidden [length, h], span [length] bool."""
    hidden = hidden.astype(np.float64)
    attention = layer["attention"]
    query = _dense(hidden[:1], attention["query"])  # [1, h]
    keys, values = _dense(hidden[span], attention["key"]), _dense(hidden[span], attention["value"])  # [n, h]
    size = hidden.shape[1] // heads_
    outputs = []
    for head in range(heads_):
        cut = slice(head * size, (head + 1) * size)
        logits = query[:, cut] @ keys[:, cut].T / np.sqrt(size)  # [1, n]
        weights = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        outputs.append(weights @ values[:, cut])  # [1, size]
    attended = _dense(np.concatenate(outputs, -1), attention["out"])  # [1, h]
    norm = layer["attention_norm"]
    mid = _layer_norm(hidden[:1] + attended, norm["scale"], norm["bias"])
    inner = _dense(mid, layer["intermediate"])
    inner = 0.5 * inner * (1 + erf(inner / np.sqrt(2)))
    out = _layer_norm(mid + _dense(inner, layer["output"]), layer["output_norm"]["scale"],
                      layer["output_norm"]["bias"])
    return out[0]


def test_span_embedding_equals_a_recomputation_by_hand(documents, bert_params):
    batch = spans.batch_documents(documents, length=LENGTH, num_passages=2, num_sentences=3)
    config = tiny_config()
    output = Bert(config).apply({"params": bert_params}, batch.input_ids, batch.attention_mask)
    model = _model()
    _, pieces = spans.batch_embeddings(model, heads.bi_encoder_params({"bert": bert_params}), batch)
    last_layer = jax.tree.map(np.asarray, bert_params[f"layers_{config.num_hidden_layers - 1}"])
    for doc, piece in [(0, 0), (0, 1), (0, 3), (1, 0), (1, 3)]:
        expected = _eq7_by_hand(np.asarray(output.last_layer_input[doc]), batch.span_mask[doc, piece], last_layer,
                                config.num_attention_heads)
        np.testing.assert_allclose(np.asarray(pieces[doc, piece]), expected, atol=1e-5, rtol=0)
    assert np.abs(np.asarray(pieces[0, 0]) - np.asarray(pieces[0, 1])).max() > 1e-3  # spans differ


def test_fg_pooling_means_the_span_tokens_and_keeps_the_cls_document(documents, bert_params):
    batch = spans.batch_documents(documents, length=LENGTH, num_passages=2, num_sentences=3)
    hidden = np.asarray(Bert(tiny_config()).apply({"params": bert_params}, batch.input_ids,
                                                  batch.attention_mask).last_hidden_state)
    params = heads.bi_encoder_params({"bert": bert_params})
    documents_out, pieces = spans.batch_embeddings(_model(), params, batch, "fg_pooling")
    np.testing.assert_allclose(np.asarray(documents_out), hidden[:, 0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(pieces[0, 1]), hidden[0, 7:13].mean(0), atol=1e-6)
    np.testing.assert_allclose(np.asarray(pieces[1, 3]), hidden[1, 3:8].mean(0), atol=1e-6)
    _, all_pieces = spans.batch_embeddings(_model("mean"), params, batch, "all_pooling")
    np.testing.assert_allclose(np.asarray(all_pieces), np.asarray(pieces), atol=1e-6)  # same pieces, mean doc


SHAPE = spans.PieceShape(passages=4, passage_length=8, sentences=5, sentence_length=6)


def test_piece_lengths_are_the_longest_valid_pieces_rounded_up(documents):
    assert spans.piece_lengths(documents, LENGTH, multiple=1) == (9, 8)  # 7-token passage, 6-token sentence
    assert spans.piece_lengths(documents, LENGTH) == (16, 8)
    assert spans.piece_lengths(documents, 12) == (12, 8)  # at most the document length


def test_separate_pieces_pack_only_the_valid_pieces(documents):
    packed = spans.batch_documents(documents, length=LENGTH, num_passages=2, num_sentences=3, separate=SHAPE).separate
    # passages (doc, piece): (0,0) (0,1) (1,0) then slot 3 unused; sentences (0,0) (0,1) (0,2) (1,0) (1,1)
    np.testing.assert_array_equal(packed.index, [[0, 1, 4, 5, 6], [2, 0, 7, 8, 0]])
    np.testing.assert_array_equal(packed.passage_input_ids[0], [1, *documents[0].input_ids[1:7], 2])
    np.testing.assert_array_equal(packed.passage_input_ids[2], [1, *documents[1].input_ids[1:7], 2])  # 7 tokens cut
    assert not packed.passage_attention_mask[3].any() and packed.passage_attention_mask[:3].all()
    np.testing.assert_array_equal(packed.sentence_input_ids[2], [1, *documents[0].input_ids[7:11], 2])
    np.testing.assert_array_equal(packed.sentence_attention_mask.sum(1), [5, 5, 6, 4, 6])
    with pytest.raises(ValueError, match="more than 2 valid passages in the batch"):
        spans.batch_documents(documents, length=LENGTH, num_passages=2, num_sentences=3,
                              separate=spans.PieceShape(2, 8, 5, 6))


def test_separate_pieces_are_encoded_on_their_own(documents, bert_params):
    batch = spans.batch_documents(documents, length=LENGTH, num_passages=2, num_sentences=3, separate=SHAPE)
    model = _model(normalize=True)
    params = heads.bi_encoder_params({"bert": bert_params})
    documents_out, pieces = spans.batch_embeddings(model, params, batch, "separate")
    for doc, row, tokens in [(0, 2, documents[0].input_ids[1:4]), (1, 0, documents[1].input_ids[1:7]),
                             (1, 3, documents[1].input_ids[3:7])]:
        ids = np.array([[1, *tokens, 2]], np.int32)
        alone = model.apply({"params": params}, ids, np.ones_like(ids), method=heads.BiEncoder.encode_documents)
        np.testing.assert_allclose(np.asarray(pieces[doc, row]), np.asarray(alone[0]), atol=1e-5)
    assert not np.asarray(pieces[1, 1]).any() and not np.asarray(pieces[1, 4]).any()  # invalid rows are zero
    reference = model.apply({"params": params}, batch.input_ids, batch.attention_mask,
                            method=heads.BiEncoder.encode_documents)
    np.testing.assert_allclose(np.asarray(documents_out), np.asarray(reference), atol=1e-6)


def test_merged_examples_find_their_own_pieces(documents, bert_params):
    examples = [spans.batch_documents(order, length=LENGTH, num_passages=2, num_sentences=3, separate=SHAPE)
                for order in (documents, documents[::-1])]
    stacked = {name: np.stack([example.separate.arrays()[name] for example in examples])
               for name in examples[0].separate.arrays()}
    merged = spans.merge_separate(stacked)
    model = _model()
    params = heads.bi_encoder_params({"bert": bert_params})
    _, together = spans.granularity_embeddings(
        model, params, np.concatenate([e.input_ids for e in examples]),
        np.concatenate([e.attention_mask for e in examples]), np.concatenate([e.span_mask for e in examples]),
        "separate", separate=merged)  # [2 * docs, pieces, hidden]
    alone = np.concatenate([np.asarray(spans.batch_embeddings(model, params, e, "separate")[1]) for e in examples])
    np.testing.assert_allclose(np.asarray(together), alone, atol=1e-5)
    np.testing.assert_allclose(np.asarray(together[0]), np.asarray(together[3]), atol=1e-5)  # doc 0 in both


def test_representation_must_fit_the_pooling():
    with pytest.raises(ValueError, match="needs a bi-encoder with 'cls' pooling"):
        spans.check_representation("global", "mean")
    with pytest.raises(ValueError, match="representation must be one of"):
        spans.check_representation("rgat", "cls")
    spans.check_representation("separate", "mean")
