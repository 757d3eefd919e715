"""Toy T5 seq2seq training (mode `train`): learn to reverse random token sequences.

`distill-ret train --config=configs/t5_seq2seq.py:tiny --workdir=/tmp/x` exercises the whole training core
(mesh, sharded jitted step, grain pipeline, orbax checkpoints with resume, metrics) in a minute on a CPU.
Presets: `tiny` (2+2 layers, d_model 64, CPU) and `small` (T5-small shape: 6+6 layers, d_model 512, vocab 32128).
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)

PRESETS = {
    "tiny": dict(
        model=dict(vocab_size=64, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=32),
        data=dict(vocab_size=16, min_length=2, max_length=8, num_train=4096, num_eval=256),
        train=dict(batch_size=32, num_steps=300, learning_rate=3e-3, warmup_steps=30),
        checkpoint=dict(every=100),
    ),
    "small": dict(
        model=dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6,
                   num_heads=8, relative_attention_num_buckets=32, relative_attention_max_distance=128),
        data=dict(vocab_size=32128, min_length=8, max_length=63, num_train=1_000_000, num_eval=2048),
        train=dict(batch_size=128, num_steps=20_000, learning_rate=1e-3, warmup_steps=1000),
        checkpoint=dict(every=1000),
    ),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = PRESETS[common.pick_preset(PRESETS, arg, __file__)]
    config = ml_collections.ConfigDict()
    config.task = "t5_reverse"  # registered task (distill_ret/training/tasks.py TASKS)

    config.model = ml_collections.ConfigDict()
    config.model.vocab_size = preset["model"]["vocab_size"]  # token ids 0 = pad, 1 = EOS
    config.model.d_model = preset["model"]["d_model"]  # hidden size
    config.model.d_kv = preset["model"]["d_kv"]  # size of one attention head
    config.model.d_ff = preset["model"]["d_ff"]  # feed-forward inner size
    config.model.num_layers = preset["model"]["num_layers"]  # encoder layers
    config.model.num_decoder_layers = preset["model"]["num_decoder_layers"]  # decoder layers
    config.model.num_heads = preset["model"]["num_heads"]  # attention heads
    config.model.relative_attention_num_buckets = preset["model"]["relative_attention_num_buckets"]  # position buckets
    config.model.relative_attention_max_distance = preset["model"]["relative_attention_max_distance"]  # bucket range
    config.model.dropout_rate = 0.0  # dropout in training (evaluation is deterministic)
    config.model.feed_forward_proj = "relu"  # "relu" (T5 v1.0) or "gated-gelu" (v1.1)
    config.model.tie_word_embeddings = True  # share input embedding and output projection (v1.0)
    config.model.dtype = "float32"  # compute dtype: "float32" or "bfloat16" (parameters stay float32)
    config.model.remat = False  # recompute layer activations in the backward pass: less memory, ~1/3 more compute
    config.model.init_from = ""  # a t5_reverse run's workdir or an HF T5 directory of this architecture; "" = random
    config.model.init_step = "best"  # when init_from is a run: its "best" or "latest" checkpoint, or a step number

    config.data = ml_collections.ConfigDict()
    config.data.seed = 0  # example i is generated from (seed, i); evaluation uses seed + 1
    config.data.vocab_size = preset["data"]["vocab_size"]  # tokens drawn from 2 .. vocab_size - 1
    config.data.min_length = preset["data"]["min_length"]  # shortest sequence (before EOS)
    config.data.max_length = preset["data"]["max_length"]  # longest sequence; batches are padded to max_length + 1
    config.data.num_train = preset["data"]["num_train"]  # training examples (reshuffled every epoch)
    config.data.num_eval = preset["data"]["num_eval"]  # evaluation examples

    config.train = common.train(**preset["train"], log_every=10)  # batch_size, num_steps, learning_rate, warmup_steps
    config.mesh = common.mesh("fsdp_model")

    config.evals = ml_collections.ConfigDict()  # named evaluators (training.evaluators), logged as <name>/<measure>
    config.evals.dev = common.batches_evaluator(every=100, batch_size=preset["train"]["batch_size"], num_batches=4)

    config.checkpoint = common.checkpoint(every=preset["checkpoint"]["every"], keep=3, best_metric="", best_mode="min")
    return config
