"""What `model.remat` buys: the activations one training step keeps for its backward pass, with and without
rematerialised layers, and what remat costs in step time.

  python bench/remat.py [bert|t5|both] [--steps 3]

saved_MiB: the bytes of every residual the value-and-grad of the loss below keeps from its forward pass (JAX's own
list, `jax.ad_checkpoint.print_saved_residuals`, less the parameters and the batch, which stay either way), traced
from abstract shapes only (nothing is allocated, so paper shapes fit on any host). It is what an accelerator's
memory-aware XLA schedule holds at the peak; it does not depend on the backend:
  bert  BERT-base (12 layers, hidden 768), bfloat16: one device's micro-batch of configs/experiments/
        msmarco_doc_fgd.py on 8 GPUs, 8 queries (64 tokens) x 8 documents (512 tokens), InfoNCE over the group.
  t5    T5-base (12 + 12 layers, d_model 768), bfloat16: one device's share of configs/experiments/
        msmarco_passage_dgr.py:stage1 on 8 devices, 32 pairs of 128 input and 16 identifier tokens, token NLL.
cpu_temp_MiB and step_s: this backend's compiled step at a CPU-sized shape (MiniLM, 2 queries x 8 documents of 256
tokens; T5 6 + 6 layers, d_model 512, 8 pairs of 128 -> 16 tokens), float32: XLA's temp buffer size, and the best
of `--steps` timed steps after one warm-up, remat off and on alternately.
"""
import argparse
import contextlib
import io
import re
import time
from collections.abc import Callable

import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np
import optax

from distill_ret.models.bert import BertConfig
from distill_ret.models.heads import BiEncoder
from distill_ret.models.t5 import T5, T5Config, shift_right

MiB = 2 ** 20


def bert_loss(config: BertConfig, queries: int, documents: int, query_length: int, length: int):
    """(loss(params, batch), params shapes, batch): InfoNCE of each query over its group of `documents`."""
    model = BiEncoder(config, pooling="cls", normalize=False, tied=True)
    rng = np.random.default_rng(0)
    batch = {"queries": rng.integers(1000, config.vocab_size, (queries, query_length), dtype=np.int32),
             "documents": rng.integers(1000, config.vocab_size, (queries * documents, length), dtype=np.int32)}

    def loss(params, batch):
        encoded_queries, encoded_documents = model.apply(
            {"params": params}, batch["queries"], jnp.ones_like(batch["queries"]), batch["documents"],
            jnp.ones_like(batch["documents"]), deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)},
        )  # [queries, hidden], [queries * documents, hidden]
        groups = encoded_documents.reshape(queries, documents, -1)  # [queries, documents, hidden]
        scores = jnp.einsum("qh,qdh->qd", encoded_queries, groups).astype(jnp.float32)  # [queries, documents]
        return optax.softmax_cross_entropy_with_integer_labels(scores, jnp.zeros(queries, jnp.int32)).mean()

    ids = jnp.ones((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, ids, ids, ids)["params"])
    return loss, shapes, batch


def t5_loss(config: T5Config, pairs: int, source: int, target: int):
    """(loss(params, batch), params shapes, batch): token NLL of `pairs` (source -> target) sequences."""
    model = T5(config)
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.integers(2, config.vocab_size, (pairs, source), dtype=np.int32),
             "targets": rng.integers(2, config.vocab_size, (pairs, target), dtype=np.int32)}

    def loss(params, batch):
        logits = model.apply({"params": params}, batch["inputs"], shift_right(batch["targets"], 0),
                             deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})  # [pairs, target, vocab]
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()

    ids = jnp.ones((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, ids)["params"])
    return loss, shapes, batch


def _abstract(make: Callable, config):
    loss, shapes, batch = make(config)
    return loss, jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), (shapes, batch))


def saved_mib(make: Callable, config) -> float:
    """MiB of the residuals the backward pass of `make(config)`'s loss keeps, its inputs excepted."""
    loss, abstract = _abstract(make, config)
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        jax.ad_checkpoint.print_saved_residuals(loss, *abstract)
    total = 0
    for line in report.getvalue().splitlines():  # "bf16[8,512,768] output of ..." / "... from the argument ..."
        bits, dims = re.match(r"[a-z]+(\d*)\[([\d,]*)\]", line).groups()  # bool: no digits, one byte
        if "from the argument" not in line:
            total += (int(bits) // 8 if bits else 1) * int(np.prod([int(d) for d in dims.split(",") if d]))
    return total / MiB


def cpu_temp_mib(make: Callable, config) -> float:
    """XLA's temp buffer size (MiB) of the value-and-grad of `make(config)`'s loss, compiled for this backend."""
    loss, abstract = _abstract(make, config)
    return jax.jit(jax.value_and_grad(loss)).lower(*abstract).compile().memory_analysis().temp_size_in_bytes / MiB


def step_seconds(make: Callable, configs: dict, steps: int) -> dict[str, float]:
    """Best of alternating passes: seconds per jitted gradient step for each config (same params and batch)."""
    steps_fns, arguments = {}, None
    for name, config in configs.items():
        loss, shapes, batch = make(config)
        if arguments is None:
            rng = np.random.default_rng(1)
            params = jax.tree.map(lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype), shapes)
            arguments = (params, batch)
        steps_fns[name] = jax.jit(jax.value_and_grad(loss))
        jax.block_until_ready(steps_fns[name](*arguments))  # compile + warm-up
    best = {name: float("inf") for name in configs}
    for _ in range(steps):
        for name, fn in steps_fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*arguments))
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", default="both", choices=("bert", "t5", "both"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one warm-up step)")
    args = parser.parse_args()
    bert_base = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, dtype="bfloat16")
    minilm = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536)
    t5_base = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
                       num_heads=12, dtype="bfloat16")
    t5_small = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6,
                        num_heads=8)
    benches = {
        "bert": (lambda c: bert_loss(c, 8, 8, 64, 512), bert_base, lambda c: bert_loss(c, 2, 8, 32, 256), minilm),
        "t5": (lambda c: t5_loss(c, 32, 128, 16), t5_base, lambda c: t5_loss(c, 8, 128, 16), t5_small),
    }
    for kind in ("bert", "t5") if args.kind == "both" else (args.kind,):
        paper, paper_config, cpu, cpu_config = benches[kind]
        off, on = (saved_mib(paper, paper_config.replace(remat=remat)) for remat in (False, True))
        print(f"{kind}_remat saved_MiB off={off:.0f} on={on:.0f} ratio={off / on:.1f}", flush=True)
        cpu_off, cpu_on = (cpu_temp_mib(cpu, cpu_config.replace(remat=remat)) for remat in (False, True))
        seconds = step_seconds(cpu, {"off": cpu_config, "on": cpu_config.replace(remat=True)}, args.steps)
        print(f"{kind}_remat cpu_temp_MiB off={cpu_off:.0f} on={cpu_on:.0f} step_s off={seconds['off']:.2f} "
              f"on={seconds['on']:.2f} overhead={seconds['on'] / seconds['off'] - 1:+.0%}", flush=True)


if __name__ == "__main__":
    main()
