"""Exact top-k search throughput: our sharded jitted search (distill_ret.index) against faiss `IndexFlatIP`, in the
same run, on the same random vectors, with the bare query x corpus matmul as the limit.

Usage: python bench/index.py [--n 1000000] [--dim 384] [--queries 256] [--k 100] [--threads 2] [--repeats 3]
       [--doc-chunk 65536] [--seed 0]
The corpus and the queries are standard normal float32 vectors (seeded), L2-normalised. Ours: the corpus is placed
once (`index.ShardedCorpus`: split over every device of the default mesh; set XLA_FLAGS=
--xla_force_host_platform_device_count=N before the run for N CPU devices), then each pass searches it; faiss: the
corpus is added once, then each pass searches it with `--threads` OpenMP threads. The limit: the same query x corpus
products computed block by block with numpy and with a jitted jax loop (blocks of 8192 and 32768 rows, the
product only, no top-k), the fastest of them. Passes go round robin over every contender, each keeps its best.
Prints queries/s and GFLOP/s (2 * queries * n * dim per search) of each, checks that our top-k equals faiss's (the
ids may differ only between scores equal within 1e-4: the scores at every rank must agree to 1e-4), and prints
`ratio=<ours / faiss>` as the last line.
"""
import argparse
import time

import faiss
import jax
import jax.numpy as jnp
import numpy as np

from distill_ret import index

LIMIT_BLOCKS = (8192, 32768)  # corpus rows per product block of the limit's measurements
TIE_TOLERANCE = 1e-4


def random_unit_vectors(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((rows, dim), dtype=np.float32)  # [rows, dim]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def best_time(function, repeats: int) -> float:
    """The fastest of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_matmul(queries: np.ndarray, corpus: np.ndarray, block: int):
    """The products of every query with every document, block by block into one reused buffer."""
    out = np.empty((len(queries), block), np.float32)  # [q, block]

    def run():
        for start in range(0, len(corpus) - block + 1, block):
            np.matmul(queries, corpus[start:start + block].T, out=out)
    return run


def jax_matmul(queries: jax.Array, corpus: jax.Array, block: int):
    """The products in a jitted loop over blocks; only each block's row maxima leave the loop (so no block is
    optimised away), which costs one pass over a block's products."""
    blocks = len(corpus) // block

    @jax.jit
    def products(queries, corpus):
        def step(best, start):
            scores = jnp.dot(queries, jax.lax.dynamic_slice_in_dim(corpus, start, block).T,
                             precision=jax.lax.Precision.HIGHEST)  # [q, block]
            return jnp.maximum(best, scores.max(axis=1)), None
        return jax.lax.scan(step, jnp.full(queries.shape[0], -jnp.inf), jnp.arange(blocks) * block)[0]
    return lambda: products(queries, corpus).block_until_ready()


def check_equal(ours: tuple[np.ndarray, np.ndarray], theirs: tuple[np.ndarray, np.ndarray], queries: np.ndarray,
                corpus: np.ndarray) -> int:
    """Raises unless both lists hold the same documents up to ties: at every rank the exact (float64) scores of
    both ids agree within TIE_TOLERANCE. Returns how many (query, rank) ids differ."""
    our_ids, their_ids = ours[1], theirs[1]
    if our_ids.shape != their_ids.shape:
        raise AssertionError(f"shapes differ: ours {our_ids.shape}, faiss {their_ids.shape}")
    q64 = queries.astype(np.float64)
    exact_ours = np.einsum("qh,qkh->qk", q64, corpus[our_ids].astype(np.float64))  # [q, k]
    exact_theirs = np.einsum("qh,qkh->qk", q64, corpus[their_ids].astype(np.float64))  # [q, k]
    gap = np.abs(exact_ours - exact_theirs).max()
    if gap > TIE_TOLERANCE or np.abs(ours[0] - exact_ours).max() > TIE_TOLERANCE:
        raise AssertionError(f"top-k differs from faiss beyond ties: largest score gap {gap:.2e}")
    return int((our_ids != their_ids).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="OpenMP threads of faiss")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--doc-chunk", type=int, default=65536, help="our corpus chunk per device (rows)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    corpus = random_unit_vectors(args.n, args.dim, rng)  # [n, dim]
    queries = random_unit_vectors(args.queries, args.dim, rng)  # [queries, dim]
    gflop = 2 * args.queries * args.n * args.dim / 1e9

    start = time.perf_counter()
    ours_corpus = index.ShardedCorpus(corpus, doc_chunk=args.doc_chunk)
    ours = ours_corpus.search(queries, args.k)  # compiles
    setup = time.perf_counter() - start
    faiss.omp_set_num_threads(args.threads)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(corpus)
    theirs = flat.search(queries, args.k)
    differing = check_equal(ours, (theirs[0], theirs[1].astype(np.int64)), queries, corpus)

    device_corpus = jax.device_put(corpus, jax.devices()[0])
    device_queries = jax.device_put(queries, jax.devices()[0])
    contenders = {"ours": lambda: ours_corpus.search(queries, args.k), "faiss": lambda: flat.search(queries, args.k)}
    for block in LIMIT_BLOCKS:
        contenders[f"numpy block={block}"] = numpy_matmul(queries, corpus, block)
        contenders[f"jax block={block}"] = jax_matmul(device_queries, device_corpus, block)
    work = {name: gflop * (args.n // block * block) / args.n for block in LIMIT_BLOCKS
            for name in (f"numpy block={block}", f"jax block={block}")}
    for name in work:
        contenders[name]()  # warm-up (and compilation)
    times = {name: [] for name in contenders}
    for _ in range(args.repeats):  # round robin, so that a change in machine load affects every contender
        for name, run in contenders.items():
            times[name].append(best_time(run, 1))
    our_times, faiss_times = times["ours"], times["faiss"]
    limits = {name: work[name] / min(times[name]) for name in work}
    limit_name = max(limits, key=limits.get)

    our_rate, faiss_rate = args.queries / min(our_times), args.queries / min(faiss_times)
    print(f"corpus {args.n} x {args.dim} float32, {args.queries} queries, top-{args.k}, "
          f"{len(jax.devices())} jax device(s), faiss threads={args.threads}")
    print(f"faiss IndexFlatIP queries_per_s={faiss_rate:.1f} GFLOP/s={gflop * faiss_rate / args.queries:.1f} "
          f"(passes: {', '.join(f'{t:.2f}s' for t in faiss_times)})")
    print(f"distill_ret queries_per_s={our_rate:.1f} GFLOP/s={gflop * our_rate / args.queries:.1f} "
          f"(passes: {', '.join(f'{t:.2f}s' for t in our_times)}; placement + compilation {setup:.1f}s; "
          f"chunk={ours_corpus.chunk})")
    print("matmul only GFLOP/s: " + ", ".join(f"{name} {rate:.1f}" for name, rate in limits.items()))
    print(f"limit {limit_name} GFLOP/s={limits[limit_name]:.1f}; ours / limit = "
          f"{gflop * our_rate / args.queries / limits[limit_name]:.2f}")
    print(f"top-{args.k} equal to faiss's up to ties ({differing} of {ours[1].size} ids differ between tied scores)")
    print(f"ratio={our_rate / faiss_rate:.2f}")


if __name__ == "__main__":
    main()
