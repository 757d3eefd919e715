"""Train state, optimizer and sharded initialisation.

`TrainState` holds only what a checkpoint must restore: the step, the float32 parameters, the optimizer state
and the base RNG key (each step folds the step number into it, so the key itself never changes). A frozen
teacher is not part of it: the trainer passes it to the step as a separate, non-differentiated argument, so it
can never end up in a student checkpoint.

Sharded init follows flax's lm1b example: `jax.eval_shape` of the init function gives the abstract state with
the models' logical axis annotations still boxed; those give one NamedSharding per parameter (optimizer
sub-trees shaped like the parameters, Adam's moments, get the same shardings), and the real state is created
by a jit with those out_shardings, so no device ever holds more than its shard.

Staged runs: `read_init_source(model.init_from, model.init_step)` finds the model an earlier run's workdir
(recognised by its checkpoints/ directory; best, latest or a step) or a Hugging Face directory holds, and
`init_from_source(random_init, source, expected_record)` is the one init function every task uses: it refuses a
different model (naming the differing config fields) and places the weights into the task's boxed init, shape
for shape.
"""
import dataclasses
import json
import pathlib
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from distill_ret import hf
from distill_ret.errors import ConfigError
from distill_ret.training import checkpointing, partitioning
from distill_ret.training.tasks import ModelRecord


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of optimizer updates applied
    params: Any  # float32 parameter tree
    opt_state: Any  # optax state
    rng: jax.Array  # uint32[2] base key


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """What `make_optimizer` needs; built from the `train` config section by `optimizer_config`."""

    learning_rate: float
    warmup_steps: int
    decay_steps: int  # steps of the decay phase after warm-up (usually num_steps - warmup_steps)
    decay: str = "linear"  # "linear" | "cosine" | "constant"
    end_learning_rate_fraction: float = 0.0  # final rate as a fraction of the peak
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip_norm: float = 1.0  # 0 disables clipping
    lr_multipliers: tuple[tuple[str, float], ...] = ()  # (top-level parameter subtree, learning-rate factor) pairs


def parse_lr_multipliers(spec: str) -> tuple[tuple[str, float], ...]:
    """"pooler=10,classifier=10" -> (("pooler", 10.0), ("classifier", 10.0)); "" -> ()."""
    pairs = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, factor = item.partition("=")
        try:
            value = float(factor)
        except ValueError:
            value = float("nan")
        if not sep or not name.strip() or not value > 0:
            raise ConfigError(f"config.train.lr_multipliers={spec!r}: expected 'subtree=positive factor', got {item!r}")
        pairs.append((name.strip(), value))
    return tuple(pairs)


def optimizer_config(train: Any) -> OptimizerConfig:
    """Reads the optimizer fields of a `train` config section."""
    return OptimizerConfig(
        learning_rate=float(train.learning_rate),
        warmup_steps=int(train.warmup_steps),
        decay_steps=max(int(train.num_steps) - int(train.warmup_steps), 1),
        decay=str(train.decay),
        end_learning_rate_fraction=float(train.end_learning_rate_fraction),
        weight_decay=float(train.weight_decay),
        b1=float(train.adam_b1),
        b2=float(train.adam_b2),
        eps=float(train.adam_eps),
        grad_clip_norm=float(train.grad_clip_norm),
        lr_multipliers=parse_lr_multipliers(str(train.get("lr_multipliers", ""))),
    )


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
    """Linear warm-up from 0 to the peak, then linear or cosine decay to end_learning_rate_fraction * peak."""
    peak, end = config.learning_rate, config.learning_rate * config.end_learning_rate_fraction
    if config.decay == "linear":
        decay = optax.linear_schedule(peak, end, config.decay_steps)
    elif config.decay == "cosine":
        decay = optax.cosine_decay_schedule(peak, config.decay_steps, alpha=config.end_learning_rate_fraction)
    elif config.decay == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"train.decay must be 'linear', 'cosine' or 'constant', got {config.decay!r}")
    if config.warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, peak, config.warmup_steps)
    return optax.join_schedules([warmup, decay], [config.warmup_steps])


def _decay_mask(params: Any) -> Any:
    """Weight decay on matrices only (not on biases and norm scales), as in BERT/T5 fine-tuning recipes."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def scale_subtrees(multipliers: tuple[tuple[str, float], ...]) -> optax.GradientTransformation:
    """Multiplies the updates of the named top-level parameter subtrees by their factors (after AdamW, so a factor
    scales that subtree's learning rate, weight-decay step included); an unknown name raises at init."""
    factors = dict(multipliers)

    def scales(params: Any) -> dict[str, float]:
        unknown = sorted(set(factors) - set(params))
        if unknown:
            raise ConfigError(f"config.train.lr_multipliers names {unknown}, not top-level parameters {sorted(params)}")
        return {name: factors.get(name, 1.0) for name in params}

    def init_fn(params):
        scales(params)
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        scaled = {name: jax.tree.map(lambda u, f=factor: u * f, updates[name]) if factor != 1.0 else updates[name]
                  for name, factor in scales(updates).items()}
        return scaled, state

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """clip_by_global_norm -> AdamW with the schedule (weight decay on matrices only) -> per-subtree lr factors."""
    transforms = [optax.adamw(
        learning_rate_schedule(config), b1=config.b1, b2=config.b2, eps=config.eps,
        weight_decay=config.weight_decay, mask=_decay_mask,
    )]
    if config.grad_clip_norm > 0:
        transforms.insert(0, optax.clip_by_global_norm(config.grad_clip_norm))
    if config.lr_multipliers:
        transforms.append(scale_subtrees(config.lr_multipliers))
    return transforms[0] if len(transforms) == 1 else optax.chain(*transforms)


def _boxed_state(init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
                 rng: jax.Array) -> TrainState:
    """The initial state with the parameters (and therefore the Adam moments) still boxed with logical axes."""
    params = init_params(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(nn.unbox(params)), rng=rng)


def state_shardings(
    init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation, mesh: Mesh, rules: partitioning.Rules,
) -> tuple[TrainState, TrainState]:
    """(abstract unboxed state with shardings attached, NamedSharding tree) for a task's init function.

    Optimizer leaves that mirror a parameter (Adam's mu and nu) get that parameter's sharding; the rest
    (counters, the RNG) are replicated.
    """
    abstract = jax.eval_shape(lambda key: _boxed_state(init_params, tx, key), jax.random.PRNGKey(0))
    param_shardings = partitioning.logical_shardings(abstract.params, mesh, rules)
    opt_shardings = _mirror_param_shardings(abstract.opt_state, nn.unbox(abstract.params), param_shardings, mesh)
    shardings = TrainState(
        step=partitioning.replicated(mesh), params=param_shardings, opt_state=opt_shardings,
        rng=partitioning.replicated(mesh),
    )
    unboxed = nn.unbox(abstract)
    with_shardings = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), unboxed, shardings,
    )
    return with_shardings, shardings


def _mirror_param_shardings(opt_state: Any, params: Any, param_shardings: Any, mesh: Mesh) -> Any:
    """Gives each optimizer sub-tree that has the parameters' structure the parameters' shardings."""
    params_structure = jax.tree.structure(params)

    def is_param_like(node: Any) -> bool:
        return jax.tree.structure(node) == params_structure and jax.tree.leaves(node) != []

    def sharding_for(node: Any) -> Any:
        if is_param_like(node):
            return param_shardings
        return jax.tree.map(lambda _: partitioning.replicated(mesh), node)

    return jax.tree.map(sharding_for, opt_state, is_leaf=is_param_like)


def create_state(
    init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation, shardings: TrainState, seed: int,
) -> TrainState:
    """The initial state, created directly in its shards."""
    init = jax.jit(lambda key: nn.unbox(_boxed_state(init_params, tx, key)), out_shardings=shardings)
    return init(jax.random.PRNGKey(seed))


# --- initialisation from other weights (staged runs) ----------------------------------------------------------------

# Hugging Face config fields that do not change what the parameters mean: bookkeeping and training-time dropout.
NON_ARCHITECTURE_FIELDS = frozenset({
    "transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype", "use_cache", "output_past",
    "dropout_rate", "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
})


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model")  # any one: a tokenizer


@dataclasses.dataclass(frozen=True)
class InitSource:
    """Where `model.init_from` points: a training run's checkpoint or a Hugging Face directory.

    config is the HF config.json dict of the model found there (a run: its model record's; a directory: its
    config.json as our config class normalises it); tokenizer_dir the tokenizer that goes with it ("" if none).
    """

    path: str
    kind: str  # "run" | "hf"
    config: dict
    tokenizer_dir: str
    step: int | None = None  # the run's checkpoint step
    record: ModelRecord | None = None  # the run's model record

    def describe(self) -> str:
        if self.kind == "run":
            return f"step {self.step} of the run in {self.path}"
        return f"the Hugging Face directory {self.path}"


def parse_init_step(value: Any, field: str = "config.model.init_step") -> int | str:
    """"best" | "latest" | a step number (int or digit string) -> "best" | "latest" | int."""
    if value in ("best", "latest"):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) >= 1:
        return int(value)
    raise ConfigError(f"{field}={value!r}: expected 'best', 'latest' or a saved step number")


def read_init_source(init_from: str, init_step: Any = "best", *,
                     field: str = "config.model.init_from") -> InitSource | None:
    """The model that `init_from` names: a run workdir (recognised by its checkpoints/ directory; the checkpoint
    chosen by `init_step`) or a Hugging Face directory; None when `init_from` is empty."""
    if not init_from:
        return None
    path = pathlib.Path(init_from)
    if checkpointing.is_run_workdir(path):
        step, _, record = checkpointing.read_run_record(path, parse_init_step(init_step))
        if record is None:
            raise ConfigError(f"{field}={init_from!r}: the checkpoint at step {step} carries no model record (written "
                              "before records existed), so its model cannot be checked; retrain that stage")
        model = ModelRecord.from_dict(record)
        return InitSource(path=str(path.absolute()), kind="run", config=model.config,
                          tokenizer_dir=model.tokenizer_dir, step=step, record=model)
    if not (path / hf.core.CONFIG_FILE).is_file():
        raise ConfigError(f"{field}={init_from!r}: neither a training run's workdir (no "
                          f"{checkpointing.CHECKPOINTS_DIR}/ directory) nor a Hugging Face directory (no "
                          f"{hf.core.CONFIG_FILE})")
    config = hf.config_from_hf(path).to_hf().to_dict()
    has_tokenizer = any((path / name).is_file() for name in TOKENIZER_FILES)
    return InitSource(path=str(path.absolute()), kind="hf", config=config,
                      tokenizer_dir=str(path.absolute()) if has_tokenizer else "")


def model_differences(found: dict, expected: dict) -> list[str]:
    """'field: found -> expected' for every architecture field in which two HF config dicts differ (compared as
    JSON, as checkpoints store them: integer keys become strings)."""
    found, expected = json.loads(json.dumps(found)), json.loads(json.dumps(expected))
    missing = object()

    def show(value: Any) -> str:
        return "<absent>" if value is missing else json.dumps(value)

    fields = sorted((set(found) | set(expected)) - NON_ARCHITECTURE_FIELDS)
    return [f"{name}: {show(found.get(name, missing))} -> {show(expected.get(name, missing))}"
            for name in fields if found.get(name, missing) != expected.get(name, missing)]


def read_source_params(source: InitSource, expected: ModelRecord, field: str,
                        adapt_hf: Callable[[dict], dict] | None) -> dict:
    """The source's params in the task's layout, after checking that the source's model is the expected one."""
    differences = model_differences(source.config, expected.config)
    if source.kind == "run":
        if source.record.head != expected.head:
            differences.insert(0, f"head: {json.dumps(source.record.head)} -> {json.dumps(expected.head)}")
        differences += [f"options.{name}: {json.dumps(source.record.options.get(name))} -> "
                        f"{json.dumps(expected.options.get(name))}"
                        for name in sorted(set(source.record.options) | set(expected.options))
                        if source.record.options.get(name) != expected.options.get(name)]
    if differences:
        raise ConfigError(f"{field}={source.path!r}: {source.describe()} holds a different model; these fields differ "
                          f"(there -> this run): {'; '.join(differences)}")
    if source.kind == "run":
        return checkpointing.read_run_checkpoint(source.path, source.step).params
    _, params = hf.import_from_hf(source.path)
    return adapt_hf(params) if adapt_hf is not None else params


def _is_box(node: Any) -> bool:
    return isinstance(node, nn.Partitioned)


def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(key, "key", key)) for key in path)


def _leaves(tree: Any) -> dict[str, Any]:
    """'a/b/c' -> leaf of a nested dict (a boxed leaf stays whole)."""
    return {_path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_box)[0]}


def check_weights(boxed: Any, weights: Any, partial: bool, where: str) -> None:
    """ConfigError naming `where` and the parameter path unless `weights` fit the (boxed or abstract) tree `boxed`:
    every parameter present with its shape, nothing extra; with `partial`, whole top-level subtrees may be absent."""
    targets, sources = _leaves(boxed), _leaves(weights)
    covered = {path.split("/")[0] for path in sources}
    missing = sorted(path for path in targets if path not in sources and (not partial or path.split("/")[0] in covered))
    unexpected = sorted(set(sources) - set(targets))
    if missing or unexpected:
        raise ConfigError(f"{where}: the weights do not fit the model: missing {missing[:5]}, unexpected "
                          f"{unexpected[:5]}" + (" ..." if len(missing) > 5 or len(unexpected) > 5 else ""))
    for path, value in sources.items():
        shape = tuple(nn.unbox(targets[path]).shape)
        if shape != tuple(np.shape(value)):
            raise ConfigError(f"{where}: weight {path} has shape {tuple(np.shape(value))}, the model expects {shape}")


def place_weights(boxed: Any, weights: Any, partial: bool, where: str) -> Any:
    """`boxed` with every leaf present in `weights` replaced (dtype kept), after `check_weights`. With `partial`,
    top-level subtrees absent from `weights` keep their initialisation (e.g. a fresh classifier over an encoder)."""
    check_weights(boxed, weights, partial, where)
    sources = _leaves(weights)

    def replace(path: tuple, box: Any) -> Any:
        name = _path_name(path)
        if name not in sources:
            return box
        value = jnp.asarray(sources[name], nn.unbox(box).dtype)
        return box.replace_boxed(value) if _is_box(box) else value

    return jax.tree_util.tree_map_with_path(replace, boxed, is_leaf=_is_box)


def init_from_source(
    random_init: Callable[[jax.Array], Any],
    source: InitSource | None,
    expected: ModelRecord,
    *,
    field: str = "config.model.init_from",
    adapt_hf: Callable[[dict], dict] | None = None,
) -> Callable[[jax.Array], Any]:
    """A task's init function started from `source` (see `read_init_source`): the one way every task loads
    pretrained or earlier-stage weights.

    A run's checkpoint must hold the same model as `expected` (HF config fields except NON_ARCHITECTURE_FIELDS,
    head and options; ConfigError naming each differing field) and every parameter of it, shape for shape: stage 2
    starts exactly where stage 1 ended. A Hugging Face directory must hold the same architecture; its weights
    (mapped by `adapt_hf` to the task's layout, e.g. a bi-encoder's towers) replace the subtrees they cover and
    the others (e.g. a new classifier) keep their random init. Weights are read and checked now, once; the returned
    function (rng -> boxed params) places them under jit and eval_shape alike. No source: `random_init` itself.
    """
    if source is None:
        return random_init
    weights = jax.tree.map(np.asarray, read_source_params(source, expected, field, adapt_hf))
    where = f"{field}={source.path!r} ({source.describe()})"
    abstract = jax.eval_shape(random_init, jax.random.PRNGKey(0))
    check_weights(abstract, weights, partial=source.kind == "hf", where=where)  # now, before anything is written

    def init_params(rng: jax.Array) -> Any:
        return place_weights(random_init(rng), weights, partial=source.kind == "hf", where=where)

    return init_params
