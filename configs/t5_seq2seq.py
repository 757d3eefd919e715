"""Toy T5 seq2seq training (mode `train`): learn to reverse random token sequences.

`distill-ret train --config=configs/t5_seq2seq.py:tiny --workdir=/tmp/x` exercises the whole training core
(mesh, sharded jitted step, grain pipeline, orbax checkpoints with resume, metrics) in a minute on a CPU.
Presets: `tiny` (2+2 layers, d_model 64, CPU) and `small` (T5-small shape: 6+6 layers, d_model 512, vocab 32128).
"""
import ml_collections

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
    preset_name = arg or "tiny"
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r} for configs/t5_seq2seq.py; presets: {sorted(PRESETS)}")
    preset = PRESETS[preset_name]
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

    config.data = ml_collections.ConfigDict()
    config.data.seed = 0  # example i is generated from (seed, i); evaluation uses seed + 1
    config.data.vocab_size = preset["data"]["vocab_size"]  # tokens drawn from 2 .. vocab_size - 1
    config.data.min_length = preset["data"]["min_length"]  # shortest sequence (before EOS)
    config.data.max_length = preset["data"]["max_length"]  # longest sequence; batches are padded to max_length + 1
    config.data.num_train = preset["data"]["num_train"]  # training examples (reshuffled every epoch)
    config.data.num_eval = preset["data"]["num_eval"]  # evaluation examples

    config.train = ml_collections.ConfigDict()
    config.train.seed = 0  # parameter init, dropout and data order
    config.train.batch_size = preset["train"]["batch_size"]  # global batch (all processes), divisible by data x fsdp
    config.train.grad_accum_steps = 1  # micro-batches per step (lax.scan); batch_size must be divisible by it
    config.train.num_steps = preset["train"]["num_steps"]  # optimizer updates
    config.train.learning_rate = preset["train"]["learning_rate"]  # peak learning rate
    config.train.warmup_steps = preset["train"]["warmup_steps"]  # linear warm-up from 0
    config.train.decay = "linear"  # after warm-up: "linear", "cosine" or "constant"
    config.train.end_learning_rate_fraction = 0.0  # final learning rate / peak
    config.train.weight_decay = 0.01  # AdamW decoupled weight decay (matrices only)
    config.train.adam_b1 = 0.9  # Adam first-moment decay
    config.train.adam_b2 = 0.999  # Adam second-moment decay
    config.train.adam_eps = 1e-8  # Adam epsilon
    config.train.grad_clip_norm = 1.0  # clip gradients to this global norm; 0 = off
    config.train.log_every = 10  # steps between metric records (means over the interval)
    config.train.eval_every = 100  # steps between evaluations (and at the end); 0 = no evaluation
    config.train.prefetch = 2  # host batches prepared ahead by a background thread; 0 = none

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # data-parallel axis size; -1 = all devices not used by the other axes
    config.mesh.fsdp = 1  # fully-sharded data-parallel axis size (parameters split over it)
    config.mesh.model = 1  # tensor-parallel axis size
    config.mesh.rules = "fsdp_model"  # logical-axis rules: "data_parallel" or "fsdp_model"

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = preset["train"]["batch_size"]  # global evaluation batch
    config.eval.num_batches = 4  # evaluation batches (the same ones each time)

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every = preset["checkpoint"]["every"]  # steps between checkpoints (and always at the end)
    config.checkpoint.keep = 3  # checkpoints kept (the latest ones, or the best ones with best_metric)
    config.checkpoint.async_save = True  # write checkpoints in the background
    config.checkpoint.best_metric = ""  # eval metric that ranks checkpoints to keep, e.g. "loss"; "" = keep latest
    config.checkpoint.best_mode = "min"  # "min" or "max" for best_metric
    return config
