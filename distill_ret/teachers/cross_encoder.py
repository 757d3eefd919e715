"""The cross-encoder teacher: our `CrossEncoder` (BERT + pooler + classifier) scoring (query, passage) pairs.

Scoring goes through the sharded encoding engine (`distill_ret.index.EncodingEngine`): pairs are tokenised once,
sorted by length and padded to bucket lengths (one compiled program per bucket), the batch axis is split over the
mesh's data x fsdp devices and the parameters are replicated. The parameters enter the computation through
`jax.lax.stop_gradient`: a teacher is frozen, it is never differentiated and never saved with a student.

A teacher is rebuilt from a Hugging Face directory (`from_hf`) or from a training run's checkpoint
(`from_checkpoint`) through the model record the checkpoint carries (model config, head, tokenizer directory), so
this module needs no knowledge of the task that trained the model.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill_ret import index
from distill_ret.errors import ConfigError
from distill_ret.hf import core as hf_core
from distill_ret.hf.identity import load_tokenizer, params_digest, tokenizer_digest
from distill_ret.models.bert import BertConfig
from distill_ret.models.heads import CrossEncoder
from distill_ret.teachers import pairs
from distill_ret.teachers.base import Teacher, TeacherQuery
from distill_ret.training import checkpointing
from distill_ret.training.tasks import ModelRecord

HEAD = "cross_encoder"  # the model record's head of a cross-encoder run


def cross_encoder_scores(params: Any, config: BertConfig, batch: Mapping[str, jax.Array]) -> jax.Array:
    """Frozen teacher scores of a padded pair batch:
    {input_ids, attention_mask, token_type_ids} [batch, len] -> [batch].

    The parameters pass through stop_gradient, so a loss that uses these scores never differentiates the teacher.
    """
    params = jax.lax.stop_gradient(params)
    scores = CrossEncoder(config).apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], deterministic=True
    )  # [batch, 1]
    return scores[:, 0]


class PairScorer:
    """Scoring of text pairs with any `CrossEncoder` params of one config: a thin user of the encoding engine.

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
        self.engine = index.EncodingEngine(
            lambda params, batch: cross_encoder_scores(params, config, batch),
            buckets=index.bucket_lengths(max_length, bucket_step), features=pairs.FEATURES, batch_size=batch_size,
            pad_token_id=config.pad_token_id, mesh=mesh, show_progress=show_progress, description="cross-encoder",
        )

    @property
    def batch_size(self) -> int:
        return self.engine.batch_size

    def replicate(self, params: Any) -> Any:
        """Host or device params -> params replicated over this scorer's mesh."""
        return self.engine.replicate(params)

    def score_pairs(self, params: Any, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """[num_pairs] float32 scores of (query text, passage text) pairs, in input order."""
        encoded = pairs.encode_pairs(self.tokenizer, queries, passages, self.max_length)
        if not encoded:
            return np.zeros([0], np.float32)
        return self.engine.encode(params, encoded)  # [num_pairs]


class CrossEncoderTeacher(Teacher):
    """Scores (query, title + text) pairs with a frozen cross-encoder; higher = more relevant.

    `CrossEncoderTeacher(scorer, params)` scores with `params` exactly as given (host or device arrays; no copy),
    e.g. the model under training during a dev evaluation; `from_params`, `from_hf` and `from_checkpoint` build the
    scorer and replicate the parameters over its mesh. The fingerprint's params digest is computed on first use.
    """

    def __init__(self, scorer: PairScorer, params: Any, *, checkpoint_step: int | None = None):
        self.scorer = scorer
        self.params = params
        self.checkpoint_step = checkpoint_step  # the training step, when loaded from a checkpoint
        self._params_sha256: str | None = None

    @classmethod
    def from_params(cls, params: Any, config: BertConfig, tokenizer, *, checkpoint_step: int | None = None,
                    **scorer_options) -> "CrossEncoderTeacher":
        """A teacher over `params` (replicated over the scorer's mesh); options (max_length, batch_size,
        bucket_step, mesh, show_progress) go to `PairScorer`."""
        scorer = PairScorer(config, tokenizer, **scorer_options)
        return cls(scorer, scorer.replicate(params), checkpoint_step=checkpoint_step)

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
        return cls.from_params(params, config, load_tokenizer(directory), **scorer_options)

    @classmethod
    def from_checkpoint(cls, workdir: str | os.PathLike, step: int | str = "best",
                        **scorer_options) -> "CrossEncoderTeacher":
        """A checkpoint of a `train` run of a cross-encoder ("best", "latest" or a step), rebuilt from the model
        record it carries (older checkpoints without one: from their saved job config). Without a `max_length`
        option the run's training length is used."""
        checkpoint = checkpointing.read_run_checkpoint(workdir, step)
        if checkpoint.model is not None:
            record = ModelRecord.from_dict(checkpoint.model)
        else:
            record = record_from_job_config(checkpoint.job_config, str(workdir))
        if record.head != HEAD:
            raise ConfigError(f"{workdir}: the checkpoint holds a {record.head!r} model, not a {HEAD}")
        if record.options.get("num_labels", 1) != 1:
            raise ConfigError(f"{workdir}: a teacher needs one output label, the checkpoint's model has "
                              f"{record.options['num_labels']}")
        if not record.tokenizer_dir:
            raise ConfigError(f"{workdir}: the checkpoint's model record names no tokenizer directory")
        if not os.path.isdir(record.tokenizer_dir):
            raise ConfigError(f"{workdir}: the tokenizer directory {record.tokenizer_dir} that the checkpoint's model "
                              "record names does not exist")
        tokenizer = load_tokenizer(record.tokenizer_dir)
        dtype = checkpoint.job_config.get("model", {}).get("dtype", "float32")
        config = BertConfig.from_hf(record.config, dtype=dtype)
        check_shapes(checkpoint.params, config, str(workdir))
        scorer_options.setdefault("max_length", checkpoint.job_config.get("data", {}).get("max_length", 256))
        return cls.from_params(checkpoint.params, config, tokenizer, checkpoint_step=checkpoint.step, **scorer_options)

    def fingerprint(self) -> dict[str, str]:
        if self._params_sha256 is None:
            self._params_sha256 = params_digest(jax.tree.map(np.asarray, self.params))
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


def check_shapes(params: Any, config: BertConfig, source: str) -> None:
    """Raises ConfigError naming `source` and the first parameter whose shape differs from what `config` builds."""
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)  # [batch, length]
    expected = nn.unbox(jax.eval_shape(CrossEncoder(config).init, jax.random.PRNGKey(0), ids, ids, ids)["params"])
    shapes = {jax.tree_util.keystr(path): tuple(leaf.shape)
              for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]}
    given = {jax.tree_util.keystr(path): tuple(np.shape(leaf))
             for path, leaf in jax.tree_util.tree_flatten_with_path(nn.unbox(params))[0]}
    for name in sorted(set(shapes) | set(given)):
        if shapes.get(name) != given.get(name):
            raise ConfigError(f"{source}: parameter {name} has shape {given.get(name)} in the checkpoint where the "
                              f"model config gives {shapes.get(name)}")


def record_from_job_config(job_config: Mapping[str, Any], source: str) -> ModelRecord:
    """The model record of a cross-encoder checkpoint written before checkpoints carried one, read from its saved
    job config: `model.init_from` (a Hugging Face BERT directory) or the random-init fields, and the tokenizer of
    `model.tokenizer_dir` (else `model.init_from`)."""
    if job_config.get("task") != HEAD:
        raise ConfigError(f"{source}: the checkpoint has no model record and is of task {job_config.get('task')!r}, "
                          f"not a {HEAD}")
    model = job_config.get("model", {})
    tokenizer_dir = model.get("tokenizer_dir") or model.get("init_from") or ""
    if not tokenizer_dir:
        raise ConfigError(f"{source}: the checkpoint's config names neither model.tokenizer_dir nor model.init_from")
    if model.get("init_from"):
        hf_config = hf_core.read_config(model["init_from"])
    else:
        try:
            tokenizer = load_tokenizer(tokenizer_dir)
            hf_config = BertConfig(
                vocab_size=len(tokenizer), hidden_size=model["hidden_size"],
                num_hidden_layers=model["num_hidden_layers"], num_attention_heads=model["num_attention_heads"],
                intermediate_size=model["intermediate_size"], max_position_embeddings=model["max_position_embeddings"],
                pad_token_id=tokenizer.pad_token_id or 0,
            ).to_hf().to_dict()
        except KeyError as error:
            raise ConfigError(f"{source}: the checkpoint's config lacks model.{error.args[0]}") from None
    if hf_config.get("model_type") != "bert":
        raise ConfigError(f"{source}: model.init_from={model['init_from']!r} is not a BERT checkpoint")
    return ModelRecord(config=hf_config, head=HEAD, tokenizer_dir=os.path.abspath(tokenizer_dir),
                       options={"num_labels": 1})
