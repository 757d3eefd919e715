"""Export of a DGR (T5) student: the vocabulary size comes from the parameters, identifiers.jsonl is copied (and
refused when another tokenizer made it), and on the exported weights transformers' PyTorch `generate` with
`hf_constraint.IdentifierIndex.prefix_allowed_tokens_fn` returns our jitted search's identifiers in the same order
with the same scores (1e-4); the PyTorch-side trie allows exactly the children of each prefix."""
import functools
import importlib.util
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from distill_ret.data import formats
from distill_ret.dgr import decoding, hf_constraint, identifiers
from distill_ret.dgr import trie as trie_lib
from distill_ret.errors import ConfigError
from distill_ret.hf import export as export_mode
from distill_ret.models import t5
from distill_ret.training import checkpointing
from distill_ret.training.state import TrainState

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _config_module(name: str):
    spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export_configs, retrieve_configs = _config_module("export"), _config_module("retrieve")
WORDS = "wing flow shock boundary layer heat transfer plate cone pressure supersonic laminar jet nozzle".split()
CONFIG = t5.T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=1, num_heads=2,
                     relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                     feed_forward_proj="gated-gelu", tie_word_embeddings=False)


def test_allowed_tokens_are_the_children_of_each_prefix():
    index = hf_constraint.IdentifierIndex([[5, 6, 1], [5, 7, 1], [9, 1], [5, 6, 1]], [["a"], ["b"], ["c"], ["d"]], 1)
    assert index.allowed_tokens([]) == [5, 9]
    assert index.allowed_tokens([5]) == [6, 7]
    assert index.allowed_tokens([5, 6]) == [1]
    assert index.allowed_tokens([8]) == [1]  # off the trie: EOS only, never an empty row
    assert index.prefix_allowed_tokens_fn(0, torch.tensor([0, 5])) == [6, 7]  # the decoder start token is skipped
    assert index.passages([0, 5, 6, 1, 0, 0]) == ["a", "d"] and index.passages([0, 9, 1]) == ["c"]
    assert index.passages([0, 5, 1]) == [] and index.max_length == 3
    with pytest.raises(ValueError, match="must end in EOS 1"):
        hf_constraint.IdentifierIndex([[5, 1, 6]], [["a"]], 1)


@functools.cache
def params():
    ids = jnp.ones((1, 4), jnp.int32)
    return jax.tree.map(np.asarray, nn.unbox(t5.T5(CONFIG).init(jax.random.PRNGKey(11), ids, ids)["params"]))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(export directory, identifier set): a run whose model record says the tokenizer's vocabulary (smaller than
    the parameters' 64 rows), exported with its identifiers."""
    root = tmp_path_factory.mktemp("dgr_export")
    rng = np.random.default_rng(0)
    corpus = {f"d{i}": formats.Document(f"d{i}", f"{WORDS[i % 6]} {i % 4}", " ".join(rng.choice(WORDS, size=10)))
              for i in range(14)}
    tokenizer = identifiers.train_unigram([identifiers.passage_text(doc) for doc in corpus.values()], 60)
    tokenizer.save_pretrained(str(root / "tokenizer"))
    section = retrieve_configs.identifiers()
    section.title.weight, section.atomic.weight, section.semantic.weight = 1.0, 1.0, 0.0
    options = identifiers.options_from_config(section)
    identifier_set, _, _ = identifiers.build_or_load(root / "ids", corpus, options,
                                                     tokenizer_dir=str(root / "tokenizer"))
    record_config = CONFIG.to_hf().to_dict() | {"vocab_size": len(tokenizer)}
    assert record_config["vocab_size"] < CONFIG.vocab_size
    record = {"config": record_config, "head": "t5", "tokenizer_dir": str(root / "tokenizer"), "options": {}}
    store = checkpointing.CheckpointStore(root / "run" / "checkpoints", keep=2, async_save=False)
    store.save(2, TrainState(step=jnp.array(2, jnp.int32), params=params(), opt_state={},
                             rng=jnp.zeros((2,), jnp.uint32)), {"next_index": 0}, {"task": "dgr"}, model=record)
    store.wait()
    store.close()
    job = export_configs.get_config("checkpoint")
    job.checkpoint.workdir, job.export.identifiers_dir = str(root / "run"), str(root / "ids")
    written = export_mode.export_from_config(job, str(root / "out"))
    return written, identifier_set, root


def test_export_takes_the_vocabulary_from_the_params_and_copies_the_identifiers(exported):
    written, _, root = exported
    assert json.loads((written / "config.json").read_text())["vocab_size"] == CONFIG.vocab_size
    assert (written / "identifiers.jsonl").read_bytes() == (root / "ids" / "identifiers.jsonl").read_bytes()
    assert (written / "tokenizer.json").is_file()


def test_identifiers_of_another_tokenizer_are_refused(exported, tmp_path):
    _, _, root = exported
    other = identifiers.train_unigram(["completely different text about ships and sails"] * 4, 40)
    other.save_pretrained(str(tmp_path / "other"))
    job = export_configs.get_config("checkpoint")
    job.checkpoint.workdir, job.export.identifiers_dir = str(root / "run"), str(root / "ids")
    job.export.tokenizer_dir = str(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"config.export.identifiers_dir=.*ids: its identifiers were tokenised by "
                                          r"another tokenizer"):
        export_mode.export_from_config(job, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("length_penalty, num_beams", [(1.0, 4), (0.0, 6), (2.0, 3)])
def test_pytorch_generate_returns_our_identifiers_and_scores(exported, length_penalty, num_beams):
    written, identifier_set, _ = exported
    model = transformers.T5ForConditionalGeneration.from_pretrained(written).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(written)
    index = hf_constraint.IdentifierIndex.from_directory(written, tokenizer)
    trie = identifier_set.trie(CONFIG.vocab_size)
    assert index.max_length == trie.max_depth
    search = decoding.make_t5_search(CONFIG, num_beams=num_beams, max_length=trie.max_depth,
                                     length_penalty=length_penalty)
    queries = ["shock wave on a cone", "heat transfer", "laminar jet nozzle pressure flow"]
    for query in queries:
        inputs = tokenizer([query], return_tensors="pt")
        with torch.no_grad():
            theirs = model.generate(**inputs, num_beams=num_beams, num_return_sequences=num_beams,
                                    max_new_tokens=index.max_length,
                                    prefix_allowed_tokens_fn=index.prefix_allowed_tokens_fn,
                                    length_penalty=length_penalty, early_stopping="never", do_sample=False,
                                    output_scores=True, return_dict_in_generate=True)
        ours = jax.device_get(search(params(), inputs["input_ids"].numpy().astype(np.int32), trie_lib.to_device(trie)))
        assert ours.found[0].all()
        our_sequences = [tuple(row[:row.index(CONFIG.eos_token_id) + 1]) for row in ours.sequences[0].tolist()]
        their_sequences = [tuple(row[1:row.index(CONFIG.eos_token_id) + 1]) for row in theirs.sequences.tolist()]
        assert their_sequences == our_sequences
        np.testing.assert_allclose(theirs.sequences_scores.numpy(), ours.scores[0], atol=1e-4, rtol=0)
        assert all(index.passages([0, *sequence]) for sequence in their_sequences)
