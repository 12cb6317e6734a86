"""Device meshes and partition helpers.

rlzoo uses one mesh with three named axes (size 1 where unused):

    data    pure data parallelism: batch rows are split, parameters replicated
    fsdp    fully-sharded data parallelism: batch rows AND parameters are split
    tensor  tensor (Megatron-style) parallelism: heads / MLP width / vocabulary

Batches shard their leading (row) axis over `("data", "fsdp")`; parameters
shard by the partition annotations the policy puts on every `nnx.Param`
(see `rlzoo.policy.param_shardings`). All axes are `AxisType.Auto`, so
`jax.jit` propagates shardings through ordinary array code (GSPMD) and
algorithms never mention sharding.

Multi-host (several processes, each driving its own devices: TPU pods,
multi-node GPU): every process runs the same program on the same host data
(the data order and sampling keys come from the seed), `jax.devices()` is
then the global device list and the mesh spans all processes. Arrays that
span other processes' devices cannot be read on one host, so whatever the
host inspects (sampled tokens, rewards, metrics) passes `host_readable`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor")
"""The mesh axis names, in mesh order."""
BATCH_AXES = ("data", "fsdp")
"""The mesh axes that a batch's row axis is split over."""


def make_mesh(
    data: int = -1,
    fsdp: int = 1,
    tensor: int = 1,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A `("data", "fsdp", "tensor")` mesh over `devices` (default: all).

    One size may be -1 and then takes all the devices left over, so
    `make_mesh()` is pure data parallelism over every device and
    `make_mesh(data=4, tensor=2)` a 4 x 2 mesh on 8 devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got data={data}, fsdp={fsdp}, tensor={tensor}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive or -1, got data={data}, fsdp={fsdp}, tensor={tensor}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(
                f"{len(devices)} devices cannot be split into a mesh whose fixed axes "
                f"multiply to {known} (data={data}, fsdp={fsdp}, tensor={tensor})"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        if math.prod(sizes) > len(devices):
            raise ValueError(
                f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
                f"{math.prod(sizes)} devices, only {len(devices)} available"
            )
        devices = devices[: math.prod(sizes)]
    return jax.make_mesh(
        tuple(sizes), AXES,
        axis_types=(jax.sharding.AxisType.Auto,) * len(AXES),
        devices=devices,
    )


def fit_spec(spec: PartitionSpec | Sequence[Any], shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """`spec` with every mesh axis that does not divide its dimension dropped
    (that dimension is then replicated over the axis), and axes the mesh
    lacks dropped too. E.g. 3 key-value heads on a tensor axis of 2 are
    replicated instead of failing to place."""
    fitted = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))):
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        kept, size = [], 1
        for name in names:
            axis = mesh.shape.get(name, None)
            if axis is None or axis == 1:
                continue
            if dim % (size * axis) == 0:
                kept.append(name)
                size *= axis
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    while fitted and fitted[-1] is None:
        fitted.pop()
    return PartitionSpec(*fitted)


def batch_spec(ndim: int = 2) -> PartitionSpec:
    """Partition spec of a batch array: rows over ("data", "fsdp"), the rest replicated."""
    return PartitionSpec(BATCH_AXES, *([None] * (ndim - 1)))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """NamedSharding of a batch array of rank `ndim` on `mesh`."""
    return NamedSharding(mesh, batch_spec(ndim))


def replicated(mesh: Mesh) -> NamedSharding:
    """NamedSharding that replicates an array on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Place every array leaf of `tree` with its leading axis split over the
    batch axes (scalars and arrays whose rows do not divide are replicated)."""

    def place(x):
        if not hasattr(x, "shape"):
            return x
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.ndim == 0:
            return jax.device_put(x, replicated(mesh))
        spec = fit_spec(batch_spec(x.ndim), x.shape, mesh)
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree.map(place, tree)


# --------------------------------------------------------------------------
# Multi-host
# --------------------------------------------------------------------------

def initialize_distributed(coordinator_address: str | None, num_processes: int = 1, process_id: int = 0) -> None:
    """Join a multi-process run through `jax.distributed.initialize` (before
    any computation). `coordinator_address` is process 0's "host:port", or
    "auto" to let JAX detect the cluster (TPU pods, SLURM, Open MPI);
    None means a single process and does nothing."""
    if coordinator_address is None or jax.distributed.is_initialized():
        return
    if coordinator_address == "auto":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)


def is_primary() -> bool:
    """True on the process that writes run files (metrics, plots, logs)."""
    return jax.process_index() == 0


def host_readable(tree: Any) -> Any:
    """`tree` with every array that spans devices of other processes made
    fully replicated, so each host can read it whole with `np.asarray`.
    A no-op in a single-process run (every array is addressable)."""

    def gather(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return x
        if isinstance(x.sharding, NamedSharding):
            return jax.device_put(x, replicated(x.sharding.mesh))
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(x, tiled=True)

    return jax.tree.map(gather, tree)
