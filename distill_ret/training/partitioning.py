"""Device mesh, logical-axis rules and shardings: how parameters and batches are laid out over the devices.

The mesh has three axes in the t5x/MaxText vocabulary: `data` (pure data parallelism), `fsdp` (data parallelism
with parameters sharded across it) and `model` (tensor parallelism). Models annotate every parameter with logical
axis names (see `models/layers.py`); a rule set maps those names onto mesh axes. The batch is split over
`data` x `fsdp`. Each process feeds only the rows of the global batch that its own devices hold
(`process_batch_rows`), and `host_to_global` assembles the per-process pieces into one global `jax.Array`.
"""
import contextlib
import math
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# Logical axis name -> mesh axes. Names absent from a rule set are replicated.
AXIS_RULES = {
    # Every parameter replicated, the batch split over all devices.
    "data_parallel": (
        ("batch", BATCH_AXES),
    ),
    # 2-D sharding as in t5x: the embed dimension over `fsdp`, the heads/mlp/vocab dimensions over `model`.
    "fsdp_model": (
        ("batch", BATCH_AXES),
        ("embed", "fsdp"),
        ("vocab", "model"),
        ("mlp", "model"),
        ("heads", "model"),
        ("joined_kv", "model"),
        ("kv", None),
        ("length", None),
    ),
}

Rules = Sequence[tuple[str, Any]]


def mesh_shape(sizes: dict[str, int], num_devices: int) -> tuple[int, int, int]:
    """Resolves {'data': d, 'fsdp': f, 'model': m} (at most one -1 = 'the rest') into sizes whose product is
    num_devices."""
    shape = [int(sizes[name]) for name in MESH_AXES]
    free = [i for i, size in enumerate(shape) if size == -1]
    if len(free) > 1 or any(size == 0 or size < -1 for size in shape):
        raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, shape))}: each must be positive, at most one may be -1")
    known = math.prod(size for size in shape if size != -1)
    if free:
        if num_devices % known:
            raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, shape))} do not divide the {num_devices} devices")
        shape[free[0]] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                         f"{num_devices} are available")
    return tuple(shape)


def create_mesh(sizes: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, model) mesh over `devices` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(sizes, len(devices))
    return Mesh(mesh_utils.create_device_mesh(shape, devices=devices), MESH_AXES)


def axis_rules(name: str) -> Rules:
    """The logical-axis rule set called `name` (see AXIS_RULES)."""
    if name not in AXIS_RULES:
        raise ValueError(f"unknown logical-axis rules {name!r}; expected one of {sorted(AXIS_RULES)}")
    return AXIS_RULES[name]


def _fit_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Drops the mesh axes of any dimension they do not divide evenly (that dimension is then replicated)."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = math.prod(mesh.shape[name] for name in names)
        fitted.append(axes if size > 1 and dim % size == 0 else None)
    return PartitionSpec(*fitted)


def logical_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for an abstract (eval_shape) tree whose leaves may be boxed with logical axis names.

    The result has the structure of the *unboxed* tree: one NamedSharding per array. Unannotated leaves are
    replicated; a dimension that the assigned mesh axes do not divide is replicated rather than padded.
    """
    specs = nn.get_partition_spec(abstract_tree)  # boxed leaves -> PartitionSpec of logical names
    mesh_shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
    shapes = nn.unbox(abstract_tree)
    return jax.tree.map(
        lambda sharding, leaf: NamedSharding(mesh, _fit_spec(sharding.spec, leaf.shape, mesh)),
        mesh_shardings, shapes,
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def process_batch_rows(mesh: Mesh, global_batch_size: int) -> slice:
    """The contiguous rows of a global batch that this process's devices hold (what its data pipeline must load)."""
    if global_batch_size % (mesh.shape["data"] * mesh.shape["fsdp"]):
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by data x fsdp = "
            f"{mesh.shape['data'] * mesh.shape['fsdp']} devices"
        )
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
    rows = sorted({(index[0].start or 0, index[0].stop or global_batch_size) for index in index_map.values()})
    for (_, previous_stop), (next_start, _) in zip(rows, rows[1:]):
        if next_start != previous_stop:
            raise ValueError(f"process {jax.process_index()} holds non-contiguous batch rows {rows}; reorder the mesh")
    return slice(rows[0][0], rows[-1][1])


def host_to_global(host_batch: Any, mesh: Mesh, global_batch_size: int) -> Any:
    """Per-process host arrays (this process's rows, see process_batch_rows) -> global arrays split over the batch."""
    sharding = batch_sharding(mesh)

    def to_global(local: np.ndarray) -> jax.Array:
        local = np.asarray(local)
        return jax.make_array_from_process_local_data(sharding, local, (global_batch_size,) + local.shape[1:])

    return jax.tree.map(to_global, host_batch)


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Mesh and logical-axis rules in scope, for models that constrain activations with logical names."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield
