"""Mesh construction, the sharding rules table, batch rows per process, distributed-init args."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from resshift_jax import sharding as shd


def test_resolve_mesh_shape():
    assert shd.resolve_mesh_shape((-1, 1), 8) == (8, 1)
    assert shd.resolve_mesh_shape((2, -1), 8) == (2, 4)
    assert shd.resolve_mesh_shape((4, 2), 8) == (4, 2)
    with pytest.raises(ValueError, match="does not divide"):
        shd.resolve_mesh_shape((3, -1), 8)
    with pytest.raises(ValueError, match="at most one -1"):
        shd.resolve_mesh_shape((-1, -1), 8)
    with pytest.raises(ValueError, match="uses 4 devices"):
        shd.resolve_mesh_shape((2, 2), 8)


def test_make_mesh_axes_auto():
    mesh = shd.make_mesh((2, -1))
    assert mesh.axis_names == ("data", "fsdp") and dict(mesh.shape) == {"data": 2, "fsdp": 4}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_param_rules():
    # largest dimension divisible by fsdp, ties -> last dim; small / norm / bias / Swin tables replicated
    assert shd.param_spec("a/conv/kernel", (3, 3, 320, 640), 4) == P(None, None, None, "fsdp")
    assert shd.param_spec("a/conv/kernel", (3, 3, 640, 320), 4) == P(None, None, "fsdp", None)
    assert shd.param_spec("a/lin/kernel", (4096, 6), 8) == P("fsdp", None)
    assert shd.param_spec("a/lin/kernel", (4097, 7), 8) == P()  # nothing divides
    assert shd.param_spec("a/lin/kernel", (64, 64), 8) == P()  # below min_size
    assert shd.param_spec("a/norm/scale", (2 ** 16,), 8) == P()
    assert shd.param_spec("x/relative_position_bias_table", (4096, 64), 8) == P()
    assert shd.param_spec("a/lin/kernel", (640, 640), 1) == P()  # no fsdp axis


def test_tree_shardings_and_batch():
    mesh = shd.make_mesh((2, 4))
    tree = {"big": np.zeros((256, 128), np.float32), "small": np.zeros((3,), np.float32),
            "count": np.zeros((), np.int32)}
    sh = shd.tree_shardings(tree, mesh, min_size=1024)
    assert sh["big"].spec == P("fsdp", None) and sh["small"].spec == P() and sh["count"].spec == P()
    b = shd.batch_sharding(mesh)
    assert b.spec == P(("data", "fsdp"), None, None, None)
    assert shd.batch_size_divisor(mesh) == 8
    assert shd.local_batch_slice(mesh, 16) == slice(0, 16)  # one process owns every row
    x = shd.global_batch_from_local(mesh, {"hr": np.arange(16 * 2, dtype=np.float32).reshape(16, 2)}, 16)["hr"]
    assert x.shape == (16, 2) and x.sharding.spec == P(("data", "fsdp"), None)
    assert len({s.index for s in x.addressable_shards}) == 8


def test_initialize_distributed_args(monkeypatch):
    for k in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "NUM_PROCESSES",
              "WORLD_SIZE", "JAX_PROCESS_ID", "PROCESS_ID", "RANK", "JAX_AUTO_DISTRIBUTED"):
        monkeypatch.delenv(k, raising=False)
    assert shd.initialize_distributed() is False  # single process: nothing to do
    assert shd.initialize_distributed(num_processes=1) is False
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:12345")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert shd.initialize_distributed() is True
    assert calls[0]["coordinator_address"] == "127.0.0.1:12345" and calls[0]["num_processes"] == 2
    assert calls[0]["process_id"] == 1 and calls[0]["coordinator_bind_address"] == "127.0.0.1:12345"
    monkeypatch.delenv("JAX_PROCESS_ID")
    with pytest.raises(ValueError, match="process_id"):
        shd.initialize_distributed()
