"""Prefix-constrained beam search: our jitted search (`distill_ret.dgr.decoding`, device trie) against transformers'
`generate(prefix_allowed_tokens_fn=...)` over a nested-dict trie (../shared/bench/peers/hf_constrained_beam.py), in
the same run with the same model, identifiers, beams and queries; plus our constrained search against our own
unconstrained search on the same shape (the constraint's overhead).

Usage: python bench/beam_search.py [--ids 100000] [--layers 2] [--d-model 256] [--beams 10] [--queries 32]
       [--batch 8] [--qlen 32] [--id-len 8] [--vocab 32128] [--threads 2] [--repeats 2] [--skip-peer]
Same inputs as the peer: it seeds torch and Python's `random` with 0, builds a random T5 from its config, draws the
identifiers with `random` and the queries with `torch.randint`; we repeat those calls and import that very model's
weights into our T5, so both sides search the same model over the same identifiers. Length penalty 1.0
(transformers' default). Prints queries/s of each and `ratio=` ours / peer (> 1 means we are faster), best pass each.
"""
import argparse
import pathlib
import random
import re
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

from distill_ret import hf
from distill_ret.dgr import decoding
from distill_ret.dgr import trie as trie_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
PEER = REPO.parent / "shared" / "bench" / "peers" / "hf_constrained_beam.py"
EOS = 1


def peer_inputs(args):
    """The peer's model (saved as an HF directory, imported into ours), identifiers and queries, drawn as it does."""
    torch.manual_seed(0)
    random.seed(0)
    hf_config = transformers.T5Config(
        vocab_size=args.vocab, d_model=args.d_model, d_kv=64, d_ff=4 * args.d_model, num_layers=args.layers,
        num_decoder_layers=args.layers, num_heads=args.d_model // 64, decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(hf_config).eval()
    identifiers = [[random.randrange(2, args.vocab) for _ in range(random.randint(2, args.id_len))] + [EOS]
                   for _ in range(args.ids)]
    queries = torch.randint(2, args.vocab, (args.queries, args.qlen)).numpy().astype(np.int32)
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        config, params = hf.import_from_hf(directory)
    return config, params, identifiers, queries


def run_peer(args) -> float:
    command = [sys.executable, str(PEER), "--ids", str(args.ids), "--id-len", str(args.id_len), "--beams",
               str(args.beams), "--queries", str(args.queries), "--batch", str(args.batch), "--qlen", str(args.qlen),
               "--layers", str(args.layers), "--d-model", str(args.d_model), "--vocab", str(args.vocab),
               "--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    match = re.search(r"queries_per_s=([0-9.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"unexpected peer output: {result.stdout!r} {result.stderr[-500:]!r}")
    return float(match.group(1))


def queries_per_second(search, queries: np.ndarray, batch: int, *extra) -> float:
    start = time.perf_counter()
    for first in range(0, len(queries), batch):
        jax.block_until_ready(search(*extra[:1], queries[first:first + batch], *extra[1:]))
    return len(queries) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=100_000)
    parser.add_argument("--id-len", type=int, default=8)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--qlen", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the peer")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-peer", action="store_true", help="only our constrained vs unconstrained search")
    args = parser.parse_args()
    if args.queries % args.batch:
        parser.error("--queries must be a multiple of --batch")

    config, params, identifiers, queries = peer_inputs(args)
    start = time.perf_counter()
    trie = trie_lib.from_sequences(identifiers, vocab_size=config.vocab_size, eos_id=EOS)
    device_trie = jax.block_until_ready(trie_lib.to_device(trie))
    build = time.perf_counter() - start
    options = dict(num_beams=args.beams, max_length=trie.max_depth, length_penalty=1.0)
    constrained = decoding.make_t5_search(config, **options)
    unconstrained = decoding.make_t5_search(config, **options, constrained=False)
    start = time.perf_counter()
    jax.block_until_ready(constrained(params, queries[:args.batch], device_trie))
    jax.block_until_ready(unconstrained(params, queries[:args.batch]))
    compile_seconds = time.perf_counter() - start

    # Alternate the runs so that a change in machine load affects all of them; keep each one's best pass.
    rates = {"peer": [], "constrained": [], "unconstrained": []}
    for _ in range(args.repeats):
        if not args.skip_peer:
            rates["peer"].append(run_peer(args))
        rates["constrained"].append(queries_per_second(constrained, queries, args.batch, params, device_trie))
        rates["unconstrained"].append(queries_per_second(unconstrained, queries, args.batch, params))
    best = {name: max(values) for name, values in rates.items() if values}
    shape = (f"ids={args.ids} beams={args.beams} layers={args.layers} d_model={args.d_model} vocab={args.vocab} "
             f"batch={args.batch} queries={args.queries} device={jax.devices()[0].platform}")
    print(f"trie build+transfer {build:.2f}s, {trie.device_nbytes() / 1e6:.1f} MB on device; "
          f"compile {compile_seconds:.1f}s")
    for name, values in rates.items():
        if values:
            print(f"{name} queries_per_s={best[name]:.2f} (passes: {', '.join(f'{v:.2f}' for v in values)})")
    if "peer" in best:
        print(f"ratio ours/peer={best['constrained'] / best['peer']:.2f} {shape}")
    overhead = best["unconstrained"] / best["constrained"] - 1
    print(f"constraint overhead={100 * overhead:.1f}% (constrained vs unconstrained, same shape) {shape}")


if __name__ == "__main__":
    main()
