"""Train state, optimizer and sharded initialisation.

`TrainState` holds only what a checkpoint must restore: the step, the float32 parameters, the optimizer state
and the base RNG key (each step folds the step number into it, so the key itself never changes). A frozen
teacher is not part of it: the trainer passes it to the step as a separate, non-differentiated argument, so it
can never end up in a student checkpoint.

Sharded init follows flax's lm1b example: `jax.eval_shape` of the init function gives the abstract state with
the models' logical axis annotations still boxed; those give one NamedSharding per parameter (optimizer
sub-trees shaped like the parameters, Adam's moments, get the same shardings), and the real state is created
by a jit with those out_shardings, so no device ever holds more than its shard.
"""
import dataclasses
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from distill_ret.training import partitioning


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
            raise ValueError(f"train.lr_multipliers: expected 'subtree=positive factor', got {item!r} in {spec!r}")
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
            raise ValueError(f"train.lr_multipliers names {unknown}, not top-level parameters {sorted(params)}")
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


def _boxed_state(init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
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
