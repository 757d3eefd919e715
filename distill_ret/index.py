"""One sharded encoding engine, exact top-k search over a sharded corpus, and a fingerprinted embedding cache.

Encoding (`EncodingEngine`): tokenised examples ({feature: [length] int32}, e.g. input_ids for a bi-encoder tower,
input_ids + token_type_ids for a cross-encoder pair) are sorted by length (stable) and cut into batches of
`batch_size` rows; each batch is padded to the smallest bucket length that fits (one compiled program per bucket)
and to the full batch size. The batch axis is split over the mesh's data x fsdp devices (NamedSharding) and the
parameters are replicated; in a multi-process job every process plans the same batches and pads only the rows its
own devices hold. Outputs come back replicated, as float32 in input order. `TextEncoder` (single texts: bi-encoder
towers, dense teachers, students) and the cross-encoder's `PairScorer` are the engine's users.

Search (`top_k_search`): the corpus is split over every device of a mesh; each device keeps a running top-k over
chunks of its shard (the [queries, documents] score matrix never exists at once), then the per-device lists are
merged into the global top-k. Ties go to the lower document index (`jax.lax.top_k` keeps the lower position first,
and every concatenation puts lower document indices first).

Cache (`encode_or_load`): `<dir>/embeddings.npy` + `<dir>/fingerprint.json`, each written to a temporary file and
renamed; the fingerprint holds the model's identity (params digest, config, pooling, max length...), a digest of the
texts in order and the embeddings file's own sha256. A cache built from anything else is refused, never overwritten.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import io
import json
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from distill_ret.data import formats
from distill_ret.errors import UserError, describe_differences
from distill_ret.models import heads
from distill_ret.training import partitioning

Example = Mapping[str, np.ndarray]  # feature name -> [length] int32: one tokenised input, unpadded
ApplyFn = Callable[[Any, Mapping[str, jax.Array]], jax.Array]  # (params, {feature: [batch, length]}) -> [batch, ...]
EncodeFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, input_ids, attention_mask) -> [batch, hidden]

IN_FLIGHT_BATCHES = 4  # batches dispatched ahead of the one being read back (host padding overlaps device work)
EMBEDDINGS_FILE = "embeddings.npy"
FINGERPRINT_FILE = "fingerprint.json"
CACHE_FORMAT = "embeddings-v1"


class StaleEmbeddingCacheError(UserError, ValueError):
    """An embedding cache was built from another model or other texts than the ones it is asked to serve."""


def default_mesh() -> Mesh:
    """Every device of every process on the `data` axis: the engine's and the search's layout unless one is given."""
    return partitioning.create_mesh({"data": -1, "fsdp": 1, "model": 1})


# ------------------------------------------------------------------------------------------------- encoding

def bucket_lengths(max_length: int, step: int = 16) -> tuple[int, ...]:
    """Multiples of `step` below `max_length`, then `max_length`: e.g. 256 -> (16, 32, ..., 240, 256).

    Length-sorted batches padded to multiples of 16 waste about 5% of the compute on padding on Cranfield (32: 10%,
    powers of two: 20%), for at most max_length / step compilations, amortised over a corpus.
    """
    if max_length < 1 or step < 1:
        raise ValueError(f"max_length and step must be >= 1, got {max_length} and {step}")
    return (*range(step, max_length, step), max_length)


def plan_batches(lengths: Sequence[int], batch_size: int, buckets: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    """Texts sorted by length (stable) in chunks of `batch_size` -> [(text indices, padded length)]."""
    buckets = sorted(buckets)
    if max(lengths, default=0) > buckets[-1]:
        raise ValueError(f"a text has {max(lengths)} tokens, more than the largest bucket ({buckets[-1]})")
    order = np.argsort(np.asarray(lengths), kind="stable")
    plan = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        longest = max(int(lengths[i]) for i in chunk)
        plan.append((chunk, next(b for b in buckets if b >= longest)))
    return plan


def pad_examples(examples: Sequence[Example], features: Sequence[str], length: int, rows: int,
                 pad_token_id: int = 0) -> dict[str, np.ndarray]:
    """Examples -> {feature: [rows, length] int32} plus "attention_mask" [rows, length]; rows beyond the examples
    are all padding. `input_ids` pad with `pad_token_id`, every other feature with 0."""
    if len(examples) > rows:
        raise ValueError(f"{len(examples)} examples do not fit in {rows} rows")
    padded = {name: np.full((rows, length), pad_token_id if name == "input_ids" else 0, np.int32)  # [rows, length]
              for name in features}
    padded["attention_mask"] = np.zeros((rows, length), np.int32)  # [rows, length]
    for row, example in enumerate(examples):
        size = len(example["input_ids"])
        if size > length:
            raise ValueError(f"example {row} has {size} tokens, more than the padded length {length}")
        for name in features:
            if len(example[name]) != size:
                raise ValueError(f"example {row}: {name} has {len(example[name])} entries for {size} tokens")
            padded[name][row, :size] = example[name]
        padded["attention_mask"][row, :size] = 1
    return padded


class EncodingEngine:
    """Jitted, length-bucketed application of a model to tokenised examples, split over every device of a mesh.

    One instance compiles once per bucket length and is reused with changing params (e.g. dev evaluation during
    training). `batch_size` is rounded up to a multiple of the mesh's data x fsdp devices.
    """

    def __init__(self, apply_fn: ApplyFn, *, buckets: Sequence[int], features: Sequence[str] = ("input_ids",),
                 batch_size: int = 64, pad_token_id: int = 0, mesh: Mesh | None = None, show_progress: bool = False,
                 description: str = "encoding"):
        if "input_ids" not in features or "attention_mask" in features:
            raise ValueError(f"features must name input_ids and not attention_mask (it is derived), got {features}")
        self.mesh = mesh or default_mesh()
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        self.batch_size = -(-batch_size // shards) * shards
        self.buckets = tuple(sorted(buckets))
        self.features = tuple(features)
        self.pad_token_id = pad_token_id
        self.show_progress, self.description = show_progress, description
        self._rows = partitioning.process_batch_rows(self.mesh, self.batch_size)  # this process's rows of a batch
        self.apply = jax.jit(apply_fn, out_shardings=partitioning.replicated(self.mesh))

    def replicate(self, params: Any) -> Any:
        """Host or device params -> params replicated over the engine's mesh."""
        return jax.device_put(nn.unbox(params), partitioning.replicated(self.mesh))

    def _dispatch(self, params: Any, examples: Sequence[Example], rows: np.ndarray, length: int) -> jax.Array:
        """Starts one batch: this process pads its own rows of it; the device work runs asynchronously."""
        local = [examples[i] for i in rows[self._rows]]
        host = pad_examples(local, self.features, length, self._rows.stop - self._rows.start, self.pad_token_id)
        return self.apply(params, partitioning.host_to_global(host, self.mesh, self.batch_size))  # [batch, ...]

    def encode(self, params: Any, examples: Sequence[Example]) -> np.ndarray:
        """[n] examples -> [n, ...] float32 outputs in input order (the same on every process)."""
        if not examples:
            raise ValueError("no examples to encode")
        plan = plan_batches([len(example["input_ids"]) for example in examples], self.batch_size, self.buckets)
        outputs: np.ndarray | None = None
        pending: collections.deque = collections.deque()
        with tqdm.tqdm(total=len(plan), desc=self.description, unit="batch", leave=False,
                       disable=not self.show_progress or jax.process_index() != 0) as progress:
            for step, (rows, length) in enumerate(plan):
                pending.append((rows, self._dispatch(params, examples, rows, length)))
                while pending and (len(pending) > IN_FLIGHT_BATCHES or step == len(plan) - 1):
                    done_rows, result = pending.popleft()
                    result = np.asarray(result, np.float32)[: len(done_rows)]
                    if outputs is None:
                        outputs = np.zeros((len(examples), *result.shape[1:]), np.float32)
                    outputs[done_rows] = result
                    progress.update()
        return outputs


def bi_encoder_fn(model: heads.BiEncoder, side: str = "document") -> EncodeFn:
    """(params, input_ids, attention_mask) -> embeddings through one tower of `model`."""
    method = {"query": heads.BiEncoder.encode_queries, "document": heads.BiEncoder.encode_documents}[side]
    return lambda params, input_ids, attention_mask: model.apply({"params": params}, input_ids, attention_mask,
                                                                 method=method)


class TextEncoder:
    """Texts -> [n, hidden] float32 embeddings through the encoding engine (single texts: input_ids + mask)."""

    def __init__(self, encode_fn: EncodeFn, tokenizer, *, max_length: int = 256, batch_size: int = 64,
                 buckets: Sequence[int] | None = None, mesh: Mesh | None = None, show_progress: bool = False):
        self.tokenizer = tokenizer
        self.max_length = max_length
        buckets = tuple(sorted(buckets)) if buckets else bucket_lengths(max_length)
        if buckets[-1] < max_length:
            raise ValueError(f"the largest bucket ({buckets[-1]}) is shorter than max_length={max_length}")
        self.engine = EncodingEngine(
            lambda params, batch: encode_fn(params, batch["input_ids"], batch["attention_mask"]),
            buckets=buckets, batch_size=batch_size, pad_token_id=tokenizer.pad_token_id or 0, mesh=mesh,
            show_progress=show_progress, description="encoding texts",
        )

    def tokenize(self, texts: Sequence[str]) -> list[Example]:
        token_ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        return [{"input_ids": np.asarray(ids, np.int32)} for ids in token_ids]

    def replicate(self, params: Any) -> Any:
        return self.engine.replicate(params)

    def encode(self, params: Any, texts: Sequence[str]) -> np.ndarray:
        """[n] texts -> [n, hidden] float32 in input order."""
        if not texts:
            raise ValueError("no texts to encode")
        return self.engine.encode(params, self.tokenize(texts))


# ------------------------------------------------------------------------------------------------- search

ScoreFn = Callable[..., jax.Array]  # (queries [q, h], corpus chunk {name: [chunk, ...]}, *score_args) -> [q, chunk]


def inner_product(queries: jax.Array, chunk: Mapping[str, jax.Array]) -> jax.Array:
    """The default score: <query, document> of chunk["documents"] [chunk, h] -> [q, chunk], float32 exact."""
    return jnp.dot(queries, chunk["documents"].T, precision=jax.lax.Precision.HIGHEST)  # [q, chunk]


@functools.lru_cache(maxsize=32)
def _sharded_top_k(mesh: Mesh, k: int, chunk: int, num_documents: int, score_fn: ScoreFn) -> Callable:
    """jit (queries [q, h] replicated, corpus {name: [shards * per_shard, ...]} split over every mesh device on
    axis 0, score_args replicated) -> (scores [q, k], indices [q, k]) replicated."""
    axes = tuple(mesh.axis_names)

    def local_top_k(queries, corpus, score_args):
        per_shard = next(iter(corpus.values())).shape[0]
        first = jax.lax.axis_index(axes) * per_shard  # global index of this shard's first document
        k_local = min(k, per_shard)

        def merge_chunk(best, chunk_start):
            best_scores, best_indices = best  # [q, k_local] each, lower document indices first among equals
            part = {name: jax.lax.dynamic_slice_in_dim(array, chunk_start, chunk) for name, array in corpus.items()}
            scores = score_fn(queries, part, *score_args)  # [q, chunk]
            indices = first + chunk_start + jnp.arange(chunk)  # [chunk] global document indices
            scores = jnp.where(indices[None, :] < num_documents, scores, -jnp.inf)
            chunk_scores, positions = jax.lax.top_k(scores, min(k_local, chunk))  # [q, k']
            merged_scores = jnp.concatenate([best_scores, chunk_scores], axis=1)  # [q, k_local + k']
            merged_indices = jnp.concatenate([best_indices, indices[positions]], axis=1)
            top_scores, top = jax.lax.top_k(merged_scores, k_local)  # [q, k_local]
            return (top_scores, jnp.take_along_axis(merged_indices, top, axis=1)), None

        start = jax.lax.pcast((jnp.full((queries.shape[0], k_local), -jnp.inf, jnp.float32),
                               jnp.zeros((queries.shape[0], k_local), jnp.int32)), axes, to="varying")
        (scores, indices), _ = jax.lax.scan(merge_chunk, start, jnp.arange(0, per_shard, chunk))
        return scores, indices

    per_device = jax.shard_map(local_top_k, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(axes), PartitionSpec()),
                               out_specs=(PartitionSpec(None, axes), PartitionSpec(None, axes)))

    def search(queries, corpus, score_args):
        scores, indices = per_device(queries, corpus, score_args)  # [q, shards * k_local], shards in document order
        top_scores, top = jax.lax.top_k(scores, k)  # [q, k]
        return top_scores, jnp.take_along_axis(indices, top, axis=1)

    return jax.jit(search, out_shardings=partitioning.replicated(mesh))


@functools.lru_cache(maxsize=32)
def _sharded_pair_scores(mesh: Mesh, score_fn: ScoreFn) -> Callable:
    """jit (queries [q, h] replicated, corpus split on axis 0 as in `_sharded_top_k`, candidates [q, c] int32
    replicated (-1 = none), score_args) -> [q, c] replicated: score_fn of each query with each of its candidates."""
    axes = tuple(mesh.axis_names)

    def local_scores(queries, corpus, candidates, score_args):
        per_shard = next(iter(corpus.values())).shape[0]
        local = candidates - jax.lax.axis_index(axes) * per_shard  # [q, c] row in this shard
        here = (candidates >= 0) & (local >= 0) & (local < per_shard)  # [q, c] the candidate lives on this device
        rows = jnp.where(here, local, 0)  # [q, c]

        def one_query(query, query_rows):  # [h], [c] -> [c]
            part = {name: array[query_rows] for name, array in corpus.items()}  # [c, ...]
            return score_fn(query[None], part, *score_args)[0]

        scores = jax.vmap(one_query)(queries, rows)  # [q, c]
        return jax.lax.psum(jnp.where(here, scores, 0.0), axes)  # exactly one device holds each candidate

    per_device = jax.shard_map(local_scores, mesh=mesh,
                               in_specs=(PartitionSpec(), PartitionSpec(axes), PartitionSpec(), PartitionSpec()),
                               out_specs=PartitionSpec())
    return jax.jit(per_device, out_shardings=partitioning.replicated(mesh))


def _global_array(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array present on every process -> a global array laid out by `sharding`."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _replicated_args(args: Sequence[Any], mesh: Mesh) -> tuple[jax.Array, ...]:
    return tuple(_global_array(np.asarray(arg), partitioning.replicated(mesh)) for arg in args)


class ShardedCorpus:
    """A corpus placed once over every device of a mesh, searched and scored exactly many times.

    `arrays` maps names to host arrays that share their first axis (one row per document), e.g. {"documents":
    [n, h]} for single-vector search, or documents with their pieces [n, pieces, h] and validity masks. Each device
    holds a contiguous shard of `per_shard` rows (whole chunks of `chunk` rows, zero-padded past the end), so that a
    search scans every shard chunk by chunk and never holds a [queries, documents] score matrix.
    """

    def __init__(self, arrays: np.ndarray | Mapping[str, np.ndarray], *, mesh: Mesh | None = None,
                 doc_chunk: int = 65536):
        arrays = {"documents": arrays} if isinstance(arrays, np.ndarray) else dict(arrays)
        sizes = {name: len(array) for name, array in arrays.items()}
        if not arrays or len(set(sizes.values())) != 1 or doc_chunk < 1:
            raise ValueError(f"a corpus needs arrays with one shared first axis and doc_chunk >= 1, got {sizes} "
                             f"and doc_chunk={doc_chunk}")
        self.mesh = mesh or default_mesh()
        shards, self.size = self.mesh.devices.size, next(iter(sizes.values()))
        if self.size == 0:
            raise ValueError("a corpus needs at least one document")
        rows = -(-self.size // shards)  # documents per device before padding
        chunks = -(-rows // doc_chunk)
        self.chunk = -(-rows // chunks)  # as even as possible: the padding is less than one row per chunk
        self.per_shard = chunks * self.chunk
        sharding = NamedSharding(self.mesh, PartitionSpec(tuple(self.mesh.axis_names)))
        self.arrays = {name: _global_array(self._padded(np.asarray(array), shards * self.per_shard), sharding)
                       for name, array in arrays.items()}

    @staticmethod
    def _padded(array: np.ndarray, rows: int) -> np.ndarray:
        if len(array) == rows:
            return array
        padded = np.zeros((rows, *array.shape[1:]), array.dtype)  # [shards * per_shard, ...]
        padded[: len(array)] = array
        return padded

    def search(self, queries: np.ndarray, k: int, *, score_fn: ScoreFn = inner_product,
               score_args: Sequence[Any] = (), query_chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by `score_fn`: queries [q, h] -> (scores [q, k'], indices [q, k']) with k' = min(k, n), best
        first, ties to the lower document index; queries go `query_chunk` at a time."""
        queries = np.asarray(queries, np.float32)
        if queries.ndim != 2 or k < 1 or query_chunk < 1:
            raise ValueError(f"search needs queries [q, h], k >= 1 and query_chunk >= 1, got {queries.shape}, k={k}, "
                             f"query_chunk={query_chunk}")
        k = min(k, self.size)
        search = _sharded_top_k(self.mesh, k, self.chunk, self.size, score_fn)
        args = _replicated_args(score_args, self.mesh)
        rows = min(query_chunk, len(queries))
        all_scores, all_indices = [], []
        for start in range(0, len(queries), rows):
            batch = np.zeros((rows, queries.shape[1]), np.float32)  # [rows, h]: the last chunk padded to one shape
            part = queries[start:start + rows]
            batch[: len(part)] = part
            scores, indices = search(_global_array(batch, partitioning.replicated(self.mesh)), self.arrays, args)
            all_scores.append(np.asarray(scores)[: len(part)])
            all_indices.append(np.asarray(indices)[: len(part)])
        return np.concatenate(all_scores), np.concatenate(all_indices)

    def score(self, queries: np.ndarray, candidates: np.ndarray, *, score_fn: ScoreFn = inner_product,
              score_args: Sequence[Any] = ()) -> np.ndarray:
        """queries [q, h], candidates [q, c] document indices (-1 = no candidate) -> [q, c] float32 scores by
        `score_fn` (0 where there is no candidate), each computed on the device that holds the document."""
        queries, candidates = np.asarray(queries, np.float32), np.asarray(candidates, np.int32)
        if queries.ndim != 2 or candidates.shape[:1] != queries.shape[:1] or candidates.ndim != 2:
            raise ValueError(f"expected queries [q, h] and candidates [q, c], got {queries.shape} and "
                             f"{candidates.shape}")
        if candidates.size and (candidates.max() >= self.size or candidates.min() < -1):
            raise ValueError(f"candidates must be document indices in [0, {self.size}) or -1")
        if candidates.size == 0:
            return np.zeros(candidates.shape, np.float32)
        scores = _sharded_pair_scores(self.mesh, score_fn)(
            _global_array(queries, partitioning.replicated(self.mesh)), self.arrays,
            _global_array(candidates, partitioning.replicated(self.mesh)), _replicated_args(score_args, self.mesh))
        return np.asarray(scores, np.float32)


def top_k_search(queries: np.ndarray, documents: np.ndarray, k: int, *, mesh: Mesh | None = None,
                 doc_chunk: int = 65536, query_chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: queries [q, hidden], documents [n, hidden] -> (scores [q, k'], indices [q, k'])
    with k' = min(k, n), best first, ties to the lower document index.

    The documents are split over every device of `mesh` (default: all devices); each device scans its shard in
    chunks of at most `doc_chunk` documents, queries go `query_chunk` at a time (`ShardedCorpus` places a corpus
    once for many searches).
    """
    queries, documents = np.asarray(queries, np.float32), np.asarray(documents, np.float32)
    if queries.ndim != 2 or documents.ndim != 2 or queries.shape[1] != documents.shape[1]:
        raise ValueError(f"expected queries [q, h] and documents [n, h], got {queries.shape} and {documents.shape}")
    if k < 1 or len(documents) == 0 or doc_chunk < 1 or query_chunk < 1:
        raise ValueError(f"top-k search needs k, doc_chunk, query_chunk >= 1 and at least one document (k={k}, "
                         f"n={len(documents)}, doc_chunk={doc_chunk}, query_chunk={query_chunk})")
    corpus = ShardedCorpus(documents, mesh=mesh, doc_chunk=doc_chunk)
    return corpus.search(queries, k, query_chunk=query_chunk)


def dense_run(query_ids: Sequence[str], query_embeddings: np.ndarray, doc_ids: Sequence[str],
              doc_embeddings: np.ndarray, k: int, **search_options) -> dict[str, dict[str, float]]:
    """Exact top-k retrieval as a run: query id -> document id -> inner-product score."""
    if len(query_ids) != len(query_embeddings) or len(doc_ids) != len(doc_embeddings):
        raise ValueError("every query and document embedding needs exactly one id")
    scores, indices = top_k_search(query_embeddings, doc_embeddings, k, **search_options)
    return {qid: {doc_ids[i]: float(s) for s, i in zip(row_scores, row_indices)}
            for qid, row_scores, row_indices in zip(query_ids, scores, indices)}


# ------------------------------------------------------------------------------------------------- cache

def texts_digest(texts: Sequence[str]) -> str:
    """sha256 of the texts in order (each JSON-encoded on its own line, so no two lists share a digest)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(json.dumps(text, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def cache_fingerprint(model: Mapping[str, Any], texts: Sequence[str]) -> dict[str, str]:
    """What an embedding cache must match: the model's identity (e.g. `DenseTeacher.fingerprint()`) and the texts."""
    return {**{f"model.{key}": str(value) for key, value in sorted(model.items())},
            "texts_sha256": texts_digest(texts), "num_texts": str(len(texts)), "format": CACHE_FORMAT}


def save_embeddings(directory: str | os.PathLike, embeddings: np.ndarray, fingerprint: Mapping[str, str]) -> None:
    """Writes `embeddings.npy`, then `fingerprint.json` (which names the embeddings' sha256), each atomically."""
    directory = pathlib.Path(directory)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(embeddings, np.float32), allow_pickle=False)
    data = buffer.getvalue()
    with formats.atomic_write(directory / EMBEDDINGS_FILE, "wb") as handle:
        handle.write(data)
    record = {"fingerprint": dict(fingerprint), "embeddings_sha256": hashlib.sha256(data).hexdigest()}
    with formats.atomic_write(directory / FINGERPRINT_FILE) as handle:
        json.dump(record, handle, indent=1, sort_keys=True)


def load_embeddings(directory: str | os.PathLike, fingerprint: Mapping[str, str]) -> np.ndarray:
    """The cached embeddings [n, hidden] float32; refuses (naming the file) a cache built from other inputs."""
    directory = pathlib.Path(directory)
    record_path, embeddings_path = directory / FINGERPRINT_FILE, directory / EMBEDDINGS_FILE
    if not record_path.is_file() or not embeddings_path.is_file():
        missing = record_path if not record_path.is_file() else embeddings_path
        raise StaleEmbeddingCacheError(f"{missing}: the embedding cache in {directory} is incomplete (this file is "
                                       "missing); delete the directory's cache files or choose another directory")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        stored, expected_sha256 = dict(record["fingerprint"]), str(record["embeddings_sha256"])
    except (ValueError, KeyError, TypeError) as error:
        raise formats.FormatError(record_path, None, f"not an embedding-cache fingerprint ({error})") from None
    if stored != dict(fingerprint):
        details = describe_differences(stored, dict(fingerprint), "cache")
        raise StaleEmbeddingCacheError(f"{record_path}: these embeddings were built from other inputs ({details}); "
                                       "delete the cache or choose another directory to rebuild it")
    data = embeddings_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise StaleEmbeddingCacheError(f"{embeddings_path}: the file does not match the sha256 that {record_path} "
                                       "records (changed or half-written); delete the cache to rebuild it")
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_or_load(directory: str | os.PathLike, fingerprint: Mapping[str, str],
                   encode: Callable[[], np.ndarray]) -> np.ndarray:
    """The cache in `directory` if it matches `fingerprint` (refused otherwise); else `encode()`, saved there by
    process 0 and returned."""
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise formats.FormatError(directory, None, "the embedding cache must be a directory; this is a file")
    if (directory / FINGERPRINT_FILE).exists() or (directory / EMBEDDINGS_FILE).exists():
        return load_embeddings(directory, fingerprint)
    embeddings = encode()
    if jax.process_index() == 0:
        save_embeddings(directory, embeddings, fingerprint)
    return embeddings
