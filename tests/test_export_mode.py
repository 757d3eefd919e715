"""Mode `export`: a training checkpoint (written by the training core's CheckpointStore) or a Hugging Face directory
-> a Hugging Face directory that transformers loads, end to end through the command line and by direct calls."""
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from bert_helpers import hf_config, max_abs_diff, padded_batch, random_params, tiny_config, to_torch
from configs import export as export_configs
from distill_ret.errors import ConfigError
from distill_ret.hf import core, export as export_mode, import_from_hf
from distill_ret.models import heads
from distill_ret.models.bert import Bert
from distill_ret.training import checkpointing
from distill_ret.training.state import TrainState

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> pathlib.Path:
    """A tiny Hugging Face BertModel with a WordPiece tokenizer: what a training run's model.init_from names."""
    directory = tmp_path_factory.mktemp("base")
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]) + "\n")
    transformers.BertTokenizer(vocab=str(vocab)).save_pretrained(directory)
    transformers.BertModel(hf_config(tiny_config())).save_pretrained(directory, safe_serialization=True)
    return directory


def _save_run(run: pathlib.Path, steps_params: dict, job_config: dict) -> None:
    store = checkpointing.CheckpointStore(run / "checkpoints", keep=5, async_save=False)
    for step, params in steps_params.items():
        state = TrainState(step=jnp.array(step, jnp.int32), params=params,
                           opt_state={"mu": params}, rng=jnp.zeros((2,), jnp.uint32))
        store.save(step, state, {"next_index": step}, job_config)
    store.wait()
    store.close()


def test_cross_encoder_checkpoint_through_the_command_line(tmp_path, base_dir):
    config = tiny_config()
    ids, mask, types = padded_batch()
    model = heads.CrossEncoder(config)
    params = random_params(model, ids, mask, types, seed=4)
    _save_run(tmp_path / "run", {7: params}, {"task": "cross_encoder", "model": {"init_from": str(base_dir)}})
    result = subprocess.run(
        [sys.executable, "-m", "distill_ret.main", "export", "--config=configs/export.py:checkpoint",
         f"--workdir={tmp_path / 'out'}", f"--config.checkpoint.workdir={tmp_path / 'run'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = tmp_path / "out" / "hf_model"
    assert f"step 7 of {tmp_path / 'run'}" in result.stdout and "BertForSequenceClassification" in result.stdout
    hf_model = transformers.BertForSequenceClassification.from_pretrained(written).eval()
    with torch.no_grad():
        expected = hf_model(*to_torch(ids, mask, types)).logits.numpy()
    assert max_abs_diff(model.apply({"params": params}, ids, mask, types), expected) < 1e-4
    tokenizer = transformers.AutoTokenizer.from_pretrained(written)
    assert tokenizer.convert_tokens_to_ids("w7") == 12


def test_bi_encoder_tower_at_a_chosen_step(tmp_path, base_dir):
    config = tiny_config()
    ids, mask, _ = padded_batch()
    model = heads.BiEncoder(config, tied=False)
    steps = {step: random_params(model, ids, mask, ids, mask, seed=step) for step in (1, 2)}
    _save_run(tmp_path / "run", steps, {"model": {"init_from": ""}})
    job = export_configs.get_config("checkpoint")
    job.checkpoint.workdir, job.checkpoint.step = str(tmp_path / "run"), 1
    with pytest.raises(ConfigError, match="config.model.config_dir"):
        export_mode.export_from_config(job, str(tmp_path / "out"))
    job.model.config_dir, job.model.tower = str(base_dir), "query"
    written = export_mode.export_from_config(job, str(tmp_path / "out"))
    assert core.read_config(written)["architectures"] == ["BertModel"]
    _, exported = import_from_hf(written)
    for name, value in core.flatten_params(steps[1]["query_encoder"]).items():
        np.testing.assert_array_equal(core.flatten_params(exported["bert"])[name], value)
    hf_model = transformers.BertModel.from_pretrained(written).eval()
    with torch.no_grad():
        expected = hf_model(*to_torch(ids, mask)).last_hidden_state[:, 0].numpy()
    queries = model.apply({"params": steps[1]}, ids, mask, method=heads.BiEncoder.encode_queries)
    assert max_abs_diff(queries, expected) < 1e-4
    job.checkpoint.step = 5
    with pytest.raises(ConfigError, match=r"step=5 is not in .* \(saved steps: \[1, 2\]\)"):
        export_mode.export_from_config(job, str(tmp_path / "out"))


def test_hf_source_reduces_a_task_checkpoint(tmp_path, base_dir):
    torch.manual_seed(0)
    transformers.BertForMaskedLM(hf_config(tiny_config())).save_pretrained(tmp_path / "mlm", safe_serialization=True)
    job = export_configs.get_config("hf")
    job.input_dir, job.export.tokenizer_dir = str(tmp_path / "mlm"), str(base_dir)
    job.export.output_dir = str(tmp_path / "bert")
    written = export_mode.export_from_config(job, str(tmp_path / "unused"))
    assert written == tmp_path / "bert" and core.read_config(written)["architectures"] == ["BertModel"]
    names = set(core.read_safetensors(written))
    assert "encoder.layer.1.output.dense.weight" in names
    assert not any(name.startswith(("bert.", "cls.", "pooler.")) for name in names)  # MLM head and prefix dropped
    ids, mask, types = padded_batch()
    _, params = import_from_hf(written)
    mlm = transformers.BertForMaskedLM.from_pretrained(tmp_path / "mlm").eval()
    with torch.no_grad():
        expected = mlm.bert(*to_torch(ids, mask, types)).last_hidden_state.numpy()
    assert max_abs_diff(Bert(tiny_config()).apply({"params": params["bert"]}, ids, mask, types).last_hidden_state,
                        expected) < 1e-4


def test_config_errors(tmp_path):
    job = export_configs.get_config("checkpoint")
    with pytest.raises(ConfigError, match="config.checkpoint.workdir: set it"):
        export_mode.export_from_config(job, str(tmp_path))
    job.checkpoint.workdir = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="does not exist"):
        export_mode.export_from_config(job, str(tmp_path))
    job.model.tower = "passage"
    with pytest.raises(ConfigError, match="tower must be one of"):
        export_mode.export_from_config(job, str(tmp_path))
    with pytest.raises(ValueError, match="unknown preset"):
        export_configs.get_config("orbax")
