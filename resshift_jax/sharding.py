"""Device mesh ('data', 'fsdp'), the one sharding rules table, and multi-host start-up.

Parameters, optimizer state and EMA are sharded over `fsdp` on their largest dimension that the
fsdp size divides (replicated when none does or when they are small); the batch is sharded over
both axes. The same code runs on 1 CPU, 8 fake CPU devices, a GPU host or a TPU pod.
"""

from __future__ import annotations

import logging
import math
import os
import re

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")

# The rules table: (regex on the '/'-joined parameter path, rule). First match wins.
#   "fsdp"       shard the largest dimension divisible by the fsdp size (if size >= min_size)
#   "replicate"  keep a full copy on every device
SHARDING_RULES: tuple[tuple[str, str], ...] = (
    (r"relative_position", "replicate"),  # Swin tables: small and indexed by gathers
    (r"(^|/)(scale|bias)$", "replicate"),  # norms and biases: 1-D, small
    (r".*", "fsdp"),
)


def resolve_mesh_shape(mesh_shape, num_devices: int) -> tuple[int, ...]:
    """Replace one -1 by "all remaining devices"; check the product."""
    shape = [int(s) for s in mesh_shape]
    if shape.count(-1) > 1:
        raise ValueError(f"mesh_shape {tuple(mesh_shape)}: at most one -1 allowed")
    known = math.prod(s for s in shape if s != -1)
    if known <= 0 or num_devices % known:
        raise ValueError(f"mesh_shape {tuple(mesh_shape)} does not divide {num_devices} devices")
    shape = [num_devices // known if s == -1 else s for s in shape]
    if math.prod(shape) != num_devices:
        raise ValueError(f"mesh_shape {tuple(mesh_shape)} -> {tuple(shape)} uses {math.prod(shape)} "
                         f"devices, but {num_devices} are available")
    return tuple(shape)


def make_mesh(mesh_shape=(-1, 1), axis_names=MESH_AXES, devices=None) -> Mesh:
    """A mesh with Auto axis types over `devices` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh_shape, len(devices))
    types = (AxisType.Auto,) * len(shape)
    try:
        return jax.make_mesh(shape, tuple(axis_names), axis_types=types, devices=devices)
    except Exception:  # e.g. topologies the physical-layout helper does not know
        return Mesh(np.asarray(devices).reshape(shape), tuple(axis_names), axis_types=types)


def mesh_from_config(cfg, devices=None) -> Mesh:
    sh = cfg.sharding if "sharding" in cfg else cfg
    return make_mesh(tuple(sh.mesh_shape), tuple(sh.mesh_axes), devices)


def path_str(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def param_spec(path: str, shape, fsdp_size: int, min_size: int = 2 ** 14, rules=SHARDING_RULES) -> P:
    """PartitionSpec of one parameter-like array by the rules table."""
    rule = next(r for pat, r in rules if re.search(pat, path))
    if rule == "replicate" or fsdp_size <= 1 or len(shape) == 0 or math.prod(shape) < min_size:
        return P()
    dims = sorted(range(len(shape)), key=lambda d: (-shape[d], -d))  # largest; ties: last dim
    for d in dims:
        if shape[d] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[d] = "fsdp"
            return P(*spec)
    return P()


def tree_shardings(tree, mesh: Mesh, min_size: int = 2 ** 14, rules=SHARDING_RULES):
    """NamedShardings for a pytree of arrays / ShapeDtypeStructs (params, opt state, EMA)."""
    fsdp = mesh.shape.get("fsdp", 1)

    def one(path, x):
        return NamedSharding(mesh, param_spec(path_str(path), np.shape(x), fsdp, min_size, rules))
    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh, ndim: int = 4) -> NamedSharding:
    """Leading (batch) dimension over ('data', 'fsdp')."""
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    return NamedSharding(mesh, P(axes, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_size_divisor(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.axis_names)


def local_batch_slice(mesh: Mesh, global_batch: int) -> slice:
    """The rows of a batch-sharded (global_batch, ...) array this process must supply."""
    sh = batch_sharding(mesh, 1)
    idx = sh.addressable_devices_indices_map((global_batch,))
    starts = sorted({s[0].start or 0 for s in idx.values()})
    stops = sorted({s[0].stop if s[0].stop is not None else global_batch for s in idx.values()})
    lo, hi = starts[0], stops[-1]
    if hi - lo != sum(b - a for a, b in zip(starts, stops)):
        raise ValueError("this process's batch rows are not contiguous; use a mesh whose devices "
                         "are ordered by process (make_mesh does this)")
    return slice(lo, hi)


def global_batch_from_local(mesh: Mesh, local: dict, global_batch: int) -> dict:
    """Assemble per-process rows into global batch-sharded arrays."""
    out = {}
    for k, v in local.items():
        v = np.asarray(v)
        out[k] = jax.make_array_from_process_local_data(
            batch_sharding(mesh, v.ndim), v, (global_batch,) + v.shape[1:])
    return out


# ------------------------------------------------------------------------- multi-host
def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, initialization_timeout: int = 300) -> bool:
    """`jax.distributed.initialize` from flags, else the usual environment variables.

    Env: JAX_COORDINATOR_ADDRESS / COORDINATOR_ADDRESS, JAX_NUM_PROCESSES / NUM_PROCESSES /
    WORLD_SIZE, JAX_PROCESS_ID / PROCESS_ID / RANK. With nothing given, single-process runs stay
    single-process and cluster environments (SLURM, TPU pods, ...) are left to jax's auto-detection
    when JAX_AUTO_DISTRIBUTED=1. Returns True when distributed mode was initialised.
    """
    env = os.environ

    def first(*names):
        return next((env[n] for n in names if env.get(n)), None)
    coordinator_address = coordinator_address or first("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
    if num_processes is None and first("JAX_NUM_PROCESSES", "NUM_PROCESSES", "WORLD_SIZE"):
        num_processes = int(first("JAX_NUM_PROCESSES", "NUM_PROCESSES", "WORLD_SIZE"))
    if process_id is None and first("JAX_PROCESS_ID", "PROCESS_ID", "RANK"):
        process_id = int(first("JAX_PROCESS_ID", "PROCESS_ID", "RANK"))
    if coordinator_address is None and num_processes is None:
        if env.get("JAX_AUTO_DISTRIBUTED") == "1":
            jax.distributed.initialize(initialization_timeout=initialization_timeout)
            return True
        return False
    if num_processes is not None and num_processes <= 1:
        return False
    if coordinator_address is None or num_processes is None or process_id is None:
        raise ValueError("multi-host needs coordinator_address, num_processes and process_id "
                         f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r})")
    kwargs = {}
    host = coordinator_address.rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost"):
        kwargs["coordinator_bind_address"] = coordinator_address  # stay on loopback
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=initialization_timeout,
                               **kwargs)
    log.info("jax.distributed: process %d of %d, coordinator %s", process_id, num_processes,
             coordinator_address)
    return True
