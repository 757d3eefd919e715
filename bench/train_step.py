"""Train-step throughput of our T5 and BERT bi-encoder against Hugging Face PyTorch, in the same run.

  python bench/train_step.py [t5|bert|both] [--steps 5]

Shapes and units follow the peer, ../shared/bench/peers/hf_train_step.py (run as a subprocess first, then ours):
  t5    T5 6+6 layers, d_model 512, d_ff 2048, 8 heads, vocab 32128; batch 16, source 64, target 16; seq2seq NLL
        with dropout 0.1, AdamW -> tokens/s = batch * (64 + 16) / step time.
  bert  MiniLM shape (6 layers, hidden 384, 12 heads, ffn 1536, vocab 30522); bi-encoder, one shared tower,
        [CLS] pooling, InfoNCE of 16 queries (length 32) against 32 passages (length 256), dropout 0.1, AdamW
        -> passages/s = 32 / step time.
Ours is the trainer's jitted step (gradient clipping + AdamW, donated state) on one CPU device, float32.
Each side runs one warm-up step (compilation) before timing --steps steps.
"""
import argparse
import pathlib
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill_ret.models.bert import BertConfig
from distill_ret.models.heads import BiEncoder
from distill_ret.models.t5 import T5, T5Config, shift_right
from distill_ret.training import partitioning, state as state_lib, trainer
from distill_ret.training.tasks import Task

PEER = pathlib.Path(__file__).resolve().parents[2] / "shared" / "bench" / "peers" / "hf_train_step.py"
BATCH = 16


def t5_task() -> tuple[Task, dict, int]:
    config = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6,
                      num_heads=8, dropout_rate=0.1)
    model = T5(config)
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.integers(2, 32128, (BATCH, 64), dtype=np.int32),
             "targets": rng.integers(2, 32128, (BATCH, 16), dtype=np.int32)}

    def init_params(key):
        return model.init(key, jnp.ones((1, 64), jnp.int32), jnp.ones((1, 16), jnp.int32))["params"]

    def loss_fn(params, batch, key):
        logits = model.apply({"params": params}, batch["inputs"], shift_right(batch["targets"], 0),
                             deterministic=False, rngs={"dropout": key})  # [batch, 16, vocab]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["targets"])
        return nll.mean(), {}

    return Task(init_params=init_params, loss_fn=loss_fn, train_source=[], collate=list), batch, BATCH * (64 + 16)


def bert_task() -> tuple[Task, dict, int]:
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536)
    model = BiEncoder(config, pooling="cls", normalize=False, tied=True)
    rng = np.random.default_rng(0)
    # The trainer splits every batch array over the batch axis, so the 2 * BATCH passages ride as [BATCH, 2, 256].
    batch = {"queries": rng.integers(1000, 30522, (BATCH, 32), dtype=np.int32),
             "passages": rng.integers(1000, 30522, (BATCH, 2, 256), dtype=np.int32)}

    def init_params(key):
        ids = jnp.ones((1, 8), jnp.int32)
        return model.init(key, ids, ids, ids, ids)["params"]

    def loss_fn(params, batch, key):
        passages = batch["passages"].reshape(-1, batch["passages"].shape[-1])  # [2 * batch, 256]
        queries, documents = model.apply(
            {"params": params}, batch["queries"], jnp.ones_like(batch["queries"]), passages,
            jnp.ones_like(passages), deterministic=False, rngs={"dropout": key},
        )  # [batch, hidden], [2 * batch, hidden]
        scores = queries @ documents.T  # [batch, 2 * batch]
        positives = 2 * jnp.arange(scores.shape[0])  # passage 2i is query i's positive
        return optax.softmax_cross_entropy_with_integer_labels(scores, positives).mean(), {}

    return Task(init_params=init_params, loss_fn=loss_fn, train_source=[], collate=list), batch, 2 * BATCH


def our_rate(task: Task, host_batch: dict, units: int, steps: int, learning_rate: float) -> float:
    mesh = partitioning.create_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
    rules = partitioning.axis_rules("data_parallel")
    optimizer = state_lib.OptimizerConfig(learning_rate=learning_rate, warmup_steps=0, decay_steps=1,
                                          decay="constant", weight_decay=0.01)
    tx, schedule = state_lib.make_optimizer(optimizer), state_lib.learning_rate_schedule(optimizer)
    step, _, shardings, frozen = trainer.compile_train_step(task, tx, schedule, mesh, rules)
    state = state_lib.create_state(task.init_params, tx, shardings, seed=0)
    batch = partitioning.host_to_global(host_batch, mesh, BATCH)
    state, metrics = step(state, batch, frozen)  # compile + warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch, frozen)
    jax.block_until_ready((state, metrics))
    return units * steps / (time.perf_counter() - start)


def peer_rate(kind: str, steps: int) -> float:
    output = subprocess.run([sys.executable, str(PEER), kind, "--steps", str(steps)], capture_output=True, text=True,
                            check=True).stdout
    return float(re.search(r"_per_s=([0-9.]+)", output).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", default="both", choices=("t5", "bert", "both"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps on each side (after one warm-up step)")
    args = parser.parse_args()
    benches = {"t5": (t5_task, "tokens", 1e-4), "bert": (bert_task, "passages", 1e-5)}
    for kind in ("t5", "bert") if args.kind == "both" else (args.kind,):
        make_task, unit, learning_rate = benches[kind]
        peer = peer_rate(kind, args.steps)
        ours = our_rate(*make_task(), args.steps, learning_rate)
        print(f"{kind}_train_step {unit}_per_s ours={ours:.1f} hf_pytorch={peer:.1f} ratio={ours / peer:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
