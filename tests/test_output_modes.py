"""Outputs follow the umask like any other tool's: formats' atomic writers and the Hugging Face export used to make
every file 0600 and every export directory 0700 (mkstemp/mkdtemp), whatever the umask."""
import os
import stat

import numpy as np
import pytest
import transformers

from distill_ret.data import formats
from distill_ret.hf import core


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_is_read_without_changing_it(umask):
    assert formats.current_umask() == umask
    assert formats.current_umask() == umask
    assert formats.output_mode() == 0o666 & ~umask and formats.output_mode(directory=True) == 0o777 & ~umask


def test_atomic_writers_follow_the_umask(tmp_path, umask):
    formats.write_run({"q1": {"d1": 1.0}}, tmp_path / "run.trec")
    with formats.atomic_write(tmp_path / "blob.bin", "wb") as handle:
        handle.write(b"\x00")
    assert _mode(tmp_path / "run.trec") == 0o666 & ~umask
    assert _mode(tmp_path / "blob.bin") == 0o666 & ~umask
    with formats.atomic_directory(tmp_path / "built") as staging:
        formats.write_queries({"q1": "text"}, staging / "queries.jsonl")
    assert _mode(tmp_path / "built") == 0o777 & ~umask
    assert _mode(tmp_path / "built" / "queries.jsonl") == 0o666 & ~umask
    with pytest.raises(FileExistsError):
        with formats.atomic_directory(tmp_path / "built"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "built", "run.trec"]


def test_hf_export_follows_the_umask(tmp_path, umask):
    config = transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "vocab.txt").write_text("[PAD]\n")
    os.chmod(tokenizer / "vocab.txt", 0o444)  # a read-only source (site-packages) must not make the copy read-only
    tensors = {"x": np.zeros(2, np.float32)}
    out = core.write_directory(tmp_path / "export", tensors, config, copies=core.tokenizer_files(tokenizer))
    assert _mode(out) == 0o777 & ~umask
    assert {path.name: _mode(path) for path in out.iterdir()} == dict.fromkeys(
        ["config.json", "model.safetensors", "vocab.txt"], 0o666 & ~umask)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o775)
    os.chmod(shared, 0o775)
    (shared / "notes.txt").write_text("x")
    core.write_directory(shared, tensors, config, overwrite=True)
    assert _mode(shared) == 0o775  # an existing directory keeps its own mode
    assert _mode(shared / "model.safetensors") == 0o666 & ~umask
