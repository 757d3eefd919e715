"""Identifier trie at scale: build seconds and device bytes of `distill_ret.dgr.trie` for N random identifiers of
up to `--max-len` tokens (EOS included), beside the memory of a dict-of-dicts trie (the GENRE / peer layout)
measured on a subset with tracemalloc and scaled linearly to N.

Usage: python bench/trie.py [--ids 1000000] [--max-len 16] [--vocab 32128] [--dict-subset 50000]
Goals (issue 11): 1M identifiers built in <= 60 s and held in <= 100 MB of device arrays. Prints `ratio=` as
dict-of-dicts bytes / our device bytes.
"""
import argparse
import time
import tracemalloc

import jax
import numpy as np

from distill_ret.dgr import trie as trie_lib

EOS = 1


def random_identifiers(n: int, max_len: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tokens [n, max_len] and lengths: 1 ... max_len - 1 random tokens in [2, vocab), then EOS (as the peers draw)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, max_len + 1, size=n)  # EOS included
    tokens = rng.integers(2, vocab, size=(n, max_len))
    tokens[np.arange(n), lengths - 1] = EOS
    return tokens, lengths


def dict_trie_bytes(tokens: np.ndarray, lengths: np.ndarray) -> int:
    """Python heap bytes of the nested-dict trie of these identifiers."""
    sequences = [row[:length].tolist() for row, length in zip(tokens, lengths)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    trie = {}
    for sequence in sequences:
        node = trie
        for token in sequence:
            node = node.setdefault(token, {})
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del trie
    return used


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--max-len", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32128)
    parser.add_argument("--dict-subset", type=int, default=50_000)
    args = parser.parse_args()
    tokens, lengths = random_identifiers(args.ids, args.max_len, args.vocab)

    start = time.perf_counter()
    trie = trie_lib.from_padded(tokens, lengths, vocab_size=args.vocab, eos_id=EOS)
    build = time.perf_counter() - start
    start = time.perf_counter()
    device = jax.block_until_ready(trie_lib.to_device(trie))
    transfer = time.perf_counter() - start
    device_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(device))

    subset = min(args.dict_subset, args.ids)
    dict_bytes = dict_trie_bytes(tokens[:subset], lengths[:subset]) * args.ids / subset
    print(f"distill_ret trie ids={args.ids} max_len={args.max_len} vocab={args.vocab} nodes={trie.num_nodes} "
          f"build_s={build:.2f} to_device_s={transfer:.2f} device_MB={device_bytes / 1e6:.1f} "
          f"level_widths={trie.level_widths()}")
    print(f"dict_of_dicts MB={dict_bytes / 1e6:.0f} (measured on {subset} identifiers, scaled to {args.ids})")
    print(f"ratio dict_bytes/our_device_bytes={dict_bytes / device_bytes:.1f} "
          f"goals: build_s<=60 {'met' if build <= 60 else 'MISSED'}, device_MB<=100 "
          f"{'met' if device_bytes <= 100e6 else 'MISSED'}")


if __name__ == "__main__":
    main()
