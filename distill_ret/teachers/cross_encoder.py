"""The cross-encoder teacher: our `CrossEncoder` (BERT + pooler + classifier) scoring (query, passage) pairs.

Scoring is batched and jitted: pairs are tokenised once, sorted by length and padded to bucket lengths (one
compiled program per bucket), the batch axis is split over every device of a `data` mesh (NamedSharding) and the
parameters are replicated. The parameters enter the computation through `jax.lax.stop_gradient`: a teacher is
frozen, it is never differentiated and never saved with a student.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import tqdm
import transformers

from distill_ret import index
from distill_ret.models.bert import BertConfig
from distill_ret.models.heads import CrossEncoder
from distill_ret.teachers import pairs
from distill_ret.teachers.base import Teacher, TeacherQuery
from distill_ret.training import checkpointing, partitioning


def cross_encoder_scores(params: Any, config: BertConfig, batch: Mapping[str, jax.Array]) -> jax.Array:
    """Frozen teacher scores of a padded pair batch: {input_ids, attention_mask, token_type_ids} [batch, len] -> [batch].

    The parameters pass through stop_gradient, so a loss that uses these scores never differentiates the teacher.
    """
    params = jax.lax.stop_gradient(params)
    scores = CrossEncoder(config).apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], deterministic=True
    )  # [batch, 1]
    return scores[:, 0]


def params_digest(params: Any) -> str:
    """sha256 over every parameter's path, dtype, shape and bytes (the identity of a set of weights)."""
    digest = hashlib.sha256()
    flat = jax.tree_util.tree_flatten_with_path(nn.unbox(params))[0]
    for path, leaf in sorted(flat, key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """sha256 of a tokenizer's full definition (fast tokenizers) or of its class and vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(
        [type(tokenizer).__name__, sorted(tokenizer.get_vocab().items())])
    return hashlib.sha256(text.encode()).hexdigest()


class PairScorer:
    """Jitted, sharded, bucketed scoring of text pairs with any `CrossEncoder` params of one config.

    One instance compiles once per bucket length and is reused with changing params (e.g. dev evaluation during
    training). The batch axis is split over the mesh's data x fsdp devices; scores come back replicated.
    """

    def __init__(
        self,
        config: BertConfig,
        tokenizer,
        *,
        max_length: int = 256,
        batch_size: int = 64,
        bucket_step: int = 32,
        mesh: jax.sharding.Mesh | None = None,
        show_progress: bool = True,
    ):
        if max_length > config.max_position_embeddings:
            raise ValueError(f"max_length {max_length} exceeds the model's {config.max_position_embeddings} positions")
        self.config = config
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.mesh = mesh or partitioning.create_mesh({"data": -1, "fsdp": 1, "model": 1})
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        self.batch_size = -(-batch_size // shards) * shards  # rounded up to a multiple of the batch shards
        self.buckets = index.bucket_lengths(max_length, bucket_step)
        self.show_progress = show_progress
        self._rows = partitioning.process_batch_rows(self.mesh, self.batch_size)
        self._score = jax.jit(
            lambda params, batch: cross_encoder_scores(params, config, batch),
            out_shardings=partitioning.replicated(self.mesh),
        )

    def replicate(self, params: Any) -> Any:
        """Host or device params -> params replicated over this scorer's mesh."""
        return jax.device_put(nn.unbox(params), partitioning.replicated(self.mesh))

    def score_pairs(self, params: Any, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """[num_pairs] float32 scores of (query text, passage text) pairs, in input order."""
        encoded = pairs.encode_pairs(self.tokenizer, queries, passages, self.max_length)
        scores = np.zeros([len(encoded)], dtype=np.float32)  # [num_pairs]
        batches = index.plan_batches([len(pair.input_ids) for pair in encoded], self.batch_size, self.buckets)
        for indices, length in tqdm.tqdm(batches, desc="cross-encoder", unit="batch", disable=not self.show_progress,
                                         leave=False):
            host = pairs.pad_pairs([encoded[i] for i in indices], length, self.batch_size, self.config.pad_token_id)
            local = {name: array[self._rows] for name, array in host.items()}
            batch = partitioning.host_to_global(local, self.mesh, self.batch_size)  # [batch, length] each
            scores[indices] = np.asarray(self._score(params, batch))[: len(indices)]
        return scores


def load_tokenizer(directory: str | os.PathLike):
    """The Hugging Face tokenizer saved in a local directory (nothing is downloaded)."""
    return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


class CrossEncoderTeacher(Teacher):
    """Scores (query, title + text) pairs with a frozen cross-encoder; higher = more relevant.

    Keyword arguments (max_length, batch_size, bucket_step, mesh, show_progress) go to `PairScorer`.
    """

    def __init__(self, params: Any, config: BertConfig, tokenizer, **scorer_options):
        self.scorer = PairScorer(config, tokenizer, **scorer_options)
        host_params = jax.tree.map(np.asarray, nn.unbox(params))
        self._params_sha256 = params_digest(host_params)
        self.params = self.scorer.replicate(host_params)
        self.checkpoint_step: int | None = None  # the training step, when loaded from a checkpoint

    @classmethod
    def from_hf(cls, directory: str | os.PathLike, **scorer_options) -> "CrossEncoderTeacher":
        """A `BertForSequenceClassification` directory (safetensors, config.json, tokenizer files) with one label."""
        from distill_ret.hf import import_from_hf

        config, params = import_from_hf(directory)
        if not isinstance(config, BertConfig) or "classifier" not in params or "pooler" not in params:
            raise ValueError(f"{directory}: not a BERT cross-encoder (expected BertForSequenceClassification weights)")
        if params["classifier"]["kernel"].shape[-1] != 1:
            raise ValueError(f"{directory}: a teacher needs one output label, the classifier has "
                             f"{params['classifier']['kernel'].shape[-1]}")
        return cls(params, config, load_tokenizer(directory), **scorer_options)

    @classmethod
    def from_checkpoint(cls, workdir: str | os.PathLike, **scorer_options) -> "CrossEncoderTeacher":
        """The best checkpoint of a `train` run of task `cross_encoder` (its max length unless one is given)."""
        from distill_ret.teachers import cross_encoder_task

        step, saved, params = checkpointing.read_run_checkpoint(workdir)
        if saved.get("task") != "cross_encoder":
            raise ValueError(f"{workdir}: the checkpoint is of task {saved.get('task')!r}, not a cross_encoder")
        saved = ml_collections.ConfigDict(saved)
        tokenizer = load_tokenizer(cross_encoder_task.tokenizer_dir(saved))
        scorer_options.setdefault("max_length", saved.data.max_length)
        teacher = cls(params, cross_encoder_task.model_config(saved, tokenizer), tokenizer, **scorer_options)
        teacher.checkpoint_step = step
        return teacher

    def fingerprint(self) -> dict[str, str]:
        return {"kind": "cross_encoder", "params_sha256": self._params_sha256,
                "tokenizer_sha256": tokenizer_digest(self.scorer.tokenizer),
                "max_length": str(self.scorer.max_length), "config": repr(self.scorer.config)}

    def score_pairs(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """[num_pairs] float32 scores of (query text, passage text) pairs, in input order."""
        return self.scorer.score_pairs(self.params, queries, passages)

    def score_batch(self, queries: Sequence[TeacherQuery]) -> list[np.ndarray]:
        """All pairs of all queries are scored together (fuller batches), then split per query."""
        texts = [(query.text, pairs.passage_text(doc)) for query in queries for doc in query.candidates]
        flat = self.score_pairs([q for q, _ in texts], [p for _, p in texts])
        bounds = np.cumsum([0] + [len(query.candidates) for query in queries])
        return [flat[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
