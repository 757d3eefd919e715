"""Mode `export`: a training checkpoint (written by the training core's CheckpointStore) or a Hugging Face directory
-> a Hugging Face directory that transformers loads, end to end through the command line and by direct calls."""
import json
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from bert_helpers import hf_config, max_abs_diff, padded_batch, random_params, tiny_config, to_torch
from configs import export as export_configs
from distill_ret.errors import ConfigError
from distill_ret.hf import core, export as export_mode, export_to_hf, import_from_hf
from distill_ret.models import heads, t5
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


def _save_run(run: pathlib.Path, steps_params: dict, job_config: dict, model: dict | None = None) -> None:
    store = checkpointing.CheckpointStore(run / "checkpoints", keep=5, async_save=False)
    for step, params in steps_params.items():
        state = TrainState(step=jnp.array(step, jnp.int32), params=params,
                           opt_state={"mu": params}, rng=jnp.zeros((2,), jnp.uint32))
        store.save(step, state, {"next_index": step}, job_config, model=model)
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
    # orbax's read-only restore chatter ("Item "data" was found ... could not be restored", ...) is silenced.
    assert "orbax" not in result.stderr and "read only" not in result.stderr, result.stderr[-2000:]
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
        export_mode.export_from_config(job, str(tmp_path / "out2"))


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


def _snapshot(directory: pathlib.Path) -> dict:
    return {str(path.relative_to(directory)): path.read_bytes()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def _cli_export(tmp_path, *overrides):
    return subprocess.run(
        [sys.executable, "-m", "distill_ret.main", "export", f"--workdir={tmp_path / 'w'}", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )


def test_an_existing_output_directory_loses_nothing(tmp_path, base_dir):
    """Defect: exporting into a directory deleted everything in it (notes, a MiniLM folder's sentence-transformers
    files) and exited 0. Now a non-empty directory is refused, and overwrite=True replaces only exported names."""
    out = tmp_path / "d"
    (out / "1_Pooling").mkdir(parents=True)
    (out / "notes.txt").write_text("x\n")
    (out / "modules.json").write_text("[]")
    (out / "1_Pooling" / "config.json").write_text("{}")
    (out / "config.json").write_text('{"old": true}')
    before = _snapshot(out)
    result = _cli_export(tmp_path, "--config=configs/export.py:hf", f"--config.input_dir={base_dir}",
                         f"--config.export.output_dir={out}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"distill-ret export: error: config.export.output_dir={out} already holds files; choose an empty or new "
        "directory, or set config.export.overwrite=True to replace the files an export writes (config.json, "
        "model.safetensors, tokenizer files) and leave the others"]
    assert _snapshot(out) == before

    job = export_configs.get_config("hf")
    job.input_dir, job.export.output_dir, job.export.overwrite = str(base_dir), str(out), True
    export_mode.export_from_config(job, str(tmp_path / "w"))
    after = _snapshot(out)
    for kept in ("notes.txt", "modules.json", "1_Pooling/config.json"):
        assert after[kept] == before[kept]
    assert json.loads(after["config.json"])["architectures"] == ["BertModel"]
    assert after["vocab.txt"] == (base_dir / "vocab.txt").read_bytes()
    assert not [name for name in after if name.startswith(".")]  # no staging files left


def _t5_config(**overrides) -> t5.T5Config:
    fields = dict(vocab_size=64, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                  relative_attention_num_buckets=8, relative_attention_max_distance=32)
    return t5.T5Config(**{**fields, **overrides})


def _t5_params(config: t5.T5Config, seed: int = 0) -> dict:
    ids = jnp.ones((1, 4), jnp.int32)
    return nn.unbox(t5.T5(config).init(jax.random.PRNGKey(seed), ids, ids)["params"])


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory) -> pathlib.Path:
    """A 30-token WordPiece tokenizer (fits the tiny T5's vocabulary of 64)."""
    directory = tmp_path_factory.mktemp("tokenizer")
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"t{i}" for i in range(25)]) + "\n")
    transformers.BertTokenizer(vocab=str(vocab)).save_pretrained(directory)
    return directory


def _config_dir(tmp_path, name: str, config: t5.T5Config) -> pathlib.Path:
    config.to_hf().save_pretrained(tmp_path / name)
    return tmp_path / name


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, small_tokenizer):
    """Defect: a d_model 64 checkpoint exported with a d_model 32 config.json and exited 0."""
    _save_run(tmp_path / "run", {3: _t5_params(_t5_config())}, {"task": "t5_reverse", "model": {}})
    job = export_configs.get_config("checkpoint")
    job.checkpoint.workdir, job.export.tokenizer_dir = str(tmp_path / "run"), str(small_tokenizer)
    job.model.config_dir = str(_config_dir(tmp_path, "cfg32", _t5_config(d_model=32)))
    with pytest.raises(ConfigError, match=r"config.model.config_dir=.*cfg32 does not describe the weights of step 3 "
                                          r"of .*run: parameters: \d+ tensor shapes do not match the model config: "
                                          r"decoder.final_layer_norm.weight: \(64,\) \(config gives \(32,\)\)"):
        export_mode.export_from_config(job, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_random_init_run_fields_are_checked_against_config_dir(tmp_path, small_tokenizer):
    """Defect: same shapes, another relative_attention_max_distance: silently wrong logits. A run without a model
    record that started from random weights has its architecture in its job config's model fields."""
    config = _t5_config()
    _save_run(tmp_path / "run", {3: _t5_params(config)},
              {"task": "t5_reverse", "model": {"d_model": 64, "relative_attention_max_distance": 32}})
    job = export_configs.get_config("checkpoint")
    job.checkpoint.workdir, job.export.tokenizer_dir = str(tmp_path / "run"), str(small_tokenizer)
    job.model.config_dir = str(_config_dir(tmp_path, "dist16", _t5_config(relative_attention_max_distance=16)))
    with pytest.raises(ConfigError, match=r"config.model.config_dir=.*dist16 describes another model than the run's "
                                          r"job config: relative_attention_max_distance: 32 .run. vs 16"):
        export_mode.export_from_config(job, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    job.model.config_dir = str(_config_dir(tmp_path, "same", config))
    written = export_mode.export_from_config(job, str(tmp_path / "out"))
    assert core.read_config(written)["relative_attention_max_distance"] == 32


def test_the_runs_model_record_wins(tmp_path, small_tokenizer):
    """A checkpoint with a model record exports with the record's config and tokenizer; a config_dir that disagrees
    with it is refused naming both."""
    config = _t5_config()
    params = _t5_params(config, seed=3)
    record = {"config": config.to_hf().to_dict(), "head": "t5", "tokenizer_dir": str(small_tokenizer), "options": {}}
    _save_run(tmp_path / "run", {5: params}, {"task": "t5_reverse", "model": {}}, model=record)
    job = export_configs.get_config("checkpoint")
    job.checkpoint.workdir = str(tmp_path / "run")
    job.model.config_dir = str(_config_dir(tmp_path, "dist16", _t5_config(relative_attention_max_distance=16)))
    with pytest.raises(ConfigError, match=r"config.model.config_dir=.*dist16 describes another model than the model "
                                          r"record saved with step 5 of .*run \(record vs config_dir: "
                                          r"relative_attention_max_distance: 32 vs 16\); leave config.model.config_dir "
                                          r"empty"):
        export_mode.export_from_config(job, str(tmp_path / "out"))
    job.model.config_dir = ""
    written = export_mode.export_from_config(job, str(tmp_path / "out"))
    assert core.read_config(written)["relative_attention_max_distance"] == 32
    exported_config, exported = import_from_hf(written)
    assert exported_config == config
    for name, value in core.flatten_params(params).items():
        np.testing.assert_array_equal(core.flatten_params(exported)[name], value)
    for name in ("vocab.txt", "tokenizer_config.json"):
        assert (written / name).read_bytes() == (small_tokenizer / name).read_bytes()


def test_an_export_without_a_real_tokenizer_is_refused(tmp_path, small_tokenizer):
    """Defect: with no tokenizer in the source, export invented one (a 104-token Unigram for T5) and exited 0."""
    config = _t5_config()
    export_to_hf(_t5_params(config), config, tmp_path / "t5")  # weights and config.json only
    job = export_configs.get_config("hf")
    job.input_dir, job.export.output_dir = str(tmp_path / "t5"), str(tmp_path / "out")
    with pytest.raises(ConfigError, match=r"config.export.tokenizer_dir: .*t5 \(from config.input_dir\) holds no "
                                          r"tokenizer .*; set config.export.tokenizer_dir to the directory of the "
                                          r"tokenizer the model was trained with"):
        export_mode.export_from_config(job, str(tmp_path))
    job.export.tokenizer_dir = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"config.export.tokenizer_dir: the tokenizer directory .*absent .from "
                                          r"config.export.tokenizer_dir. does not exist"):
        export_mode.export_from_config(job, str(tmp_path))
    too_big = tmp_path / "big_tokenizer"
    too_big.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(80)]
    (too_big / "vocab.txt").write_text("\n".join(words))
    transformers.BertTokenizer(vocab=str(too_big / "vocab.txt")).save_pretrained(too_big)
    job.export.tokenizer_dir = str(too_big)
    with pytest.raises(ConfigError, match="has 85 tokens, more than the model's vocab_size 64"):
        export_mode.export_from_config(job, str(tmp_path))
    assert not (tmp_path / "out").exists()
    job.export.tokenizer_dir = str(small_tokenizer)
    written = export_mode.export_from_config(job, str(tmp_path))
    assert len(transformers.AutoTokenizer.from_pretrained(written)) == 30
