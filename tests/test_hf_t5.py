"""T5 checkpoints in both directions against transformers' PyTorch T5ForConditionalGeneration (v1.0 and v1.1)."""
import json

import flax.linen as nn
import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from distill_ret.hf import core, export_to_hf, import_from_hf
from distill_ret.models import t5

TOLERANCE = 1e-4
VARIANTS = {
    "v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def hf_config(variant: str) -> transformers.T5Config:
    return transformers.T5Config(
        vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20, **VARIANTS[variant],
    )


def hf_model(variant: str) -> transformers.T5ForConditionalGeneration:
    """A random HF model; v1.1 gets its own lm head, as released v1.1 / Flan-T5 checkpoints have."""
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(hf_config(variant))
    if variant == "v1.1":
        model.lm_head.weight = torch.nn.Parameter(torch.randn(96, 32) * 32 ** -0.5)
    return model.eval()


def inputs():
    """Encoder ids with trailing padding in two rows, and teacher-forced decoder ids that start with token 0."""
    rng = np.random.RandomState(0)
    encoder_ids = rng.randint(2, 96, size=(3, 9))
    encoder_ids[1, 6:] = 0
    encoder_ids[2, 3:] = 0
    labels = rng.randint(2, 96, size=(3, 6))
    return encoder_ids.astype(np.int32), np.array(t5.shift_right(labels.astype(np.int32), 0))


def hf_outputs(model, encoder_ids, decoder_ids):
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(encoder_ids), attention_mask=torch.from_numpy(encoder_ids != 0).long(),
            decoder_input_ids=torch.from_numpy(decoder_ids),
        )
    return out.encoder_last_hidden_state.numpy(), out.logits.numpy()


def our_outputs(config, params, encoder_ids, decoder_ids):
    model = t5.T5(config)
    encoded = model.apply({"params": params}, encoder_ids, method=t5.T5.encode)
    return np.asarray(encoded), np.asarray(model.apply({"params": params}, encoder_ids, decoder_ids))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hf_to_ours_matches_pytorch(tmp_path, variant):
    model = hf_model(variant)
    model.save_pretrained(tmp_path, safe_serialization=True)
    config, params = import_from_hf(tmp_path)
    assert config == t5.T5Config.from_hf(hf_config(variant))
    assert config.tie_word_embeddings == (variant == "v1.0")
    encoder_ids, decoder_ids = inputs()
    hf_encoded, hf_logits = hf_outputs(model, encoder_ids, decoder_ids)
    encoded, logits = our_outputs(config, params, encoder_ids, decoder_ids)
    assert np.abs(hf_logits).max() > 1.0  # the comparison is not between near-zero tensors
    np.testing.assert_allclose(encoded, hf_encoded, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(logits, hf_logits, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ours_to_hf_matches_and_round_trips(tmp_path, variant):
    config = t5.T5Config.from_hf(hf_config(variant))
    encoder_ids, decoder_ids = inputs()
    params = nn.unbox(t5.T5(config).init(jax.random.PRNGKey(3), encoder_ids, decoder_ids)["params"])
    export_to_hf(params, config, tmp_path / "export")
    model = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "export").eval()
    hf_encoded, hf_logits = hf_outputs(model, encoder_ids, decoder_ids)
    encoded, logits = our_outputs(config, params, encoder_ids, decoder_ids)
    np.testing.assert_allclose(hf_encoded, encoded, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(hf_logits, logits, atol=TOLERANCE, rtol=0)

    config_back, params_back = import_from_hf(tmp_path / "export")
    assert config_back == config
    flat, flat_back = core.flatten_params(params), core.flatten_params(params_back)
    assert sorted(flat) == sorted(flat_back)
    for path in flat:
        np.testing.assert_array_equal(flat_back[path], flat[path], err_msg=path)


def test_v1_1_checkpoint_without_lm_head_uses_shared_embedding(tmp_path):
    """transformers 5 saves an unscaled model whose head is tied to shared.weight without lm_head.weight."""
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(hf_config("v1.1")).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert "lm_head.weight" not in safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    config, params = import_from_hf(tmp_path)
    np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"], params["token_embedder"]["embedding"].T)
    encoder_ids, decoder_ids = inputs()
    np.testing.assert_allclose(our_outputs(config, params, encoder_ids, decoder_ids)[1],
                               hf_outputs(model, encoder_ids, decoder_ids)[1], atol=TOLERANCE, rtol=0)


def _rewrite(directory, config_update=None, tensor_update=None):
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config.update(config_update or {})
    config_path.write_text(json.dumps(config))
    tensors = safetensors.numpy.load_file(str(directory / "model.safetensors"))
    tensors.update(tensor_update or {})
    safetensors.numpy.save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def test_unsupported_or_inconsistent_checkpoints_are_refused(tmp_path):
    hf_model("v1.0").save_pretrained(tmp_path / "silu", safe_serialization=True)
    _rewrite(tmp_path / "silu", {"feed_forward_proj": "gated-silu"})
    with pytest.raises(core.HfCheckpointError, match="config.json: .*feed_forward_proj='gated-silu' is not supported"):
        import_from_hf(tmp_path / "silu")

    hf_model("v1.0").save_pretrained(tmp_path / "head", safe_serialization=True)
    _rewrite(tmp_path / "head", tensor_update={"lm_head.weight": np.ones((96, 32), np.float32)})
    with pytest.raises(core.HfCheckpointError, match="tied tensor lm_head.weight differs"):
        import_from_hf(tmp_path / "head")

    hf_model("v1.1").save_pretrained(tmp_path / "extra", safe_serialization=True)
    _rewrite(tmp_path / "extra",
             tensor_update={"encoder.block.0.layer.1.DenseReluDense.wi.weight": np.ones((64, 32), np.float32)})
    with pytest.raises(core.HfCheckpointError, match="not understood.*DenseReluDense.wi.weight"):
        import_from_hf(tmp_path / "extra")
