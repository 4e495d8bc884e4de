"""Training-pair pool (Real-ESRGAN `_dequeue_and_enqueue`) and NaN replacement, on tiny arrays."""

import jax
import jax.numpy as jnp
import numpy as np

from resshift_jax.data import pool

_step = jax.jit(pool.pool_step)


def _batch(k, b=2):  # pair ids are encoded in the pixel values: lq = id, gt = -id
    ids = np.arange(k * b, (k + 1) * b, dtype=np.float32) + 1
    return np.broadcast_to(ids[:, None, None, None], (b, 2, 2, 1)).copy(), \
        -np.broadcast_to(ids[:, None, None, None], (b, 4, 4, 1)).copy()


def _ids(x):
    return np.abs(np.asarray(x)[:, 0, 0, 0]).astype(int).tolist()


def test_pool_fills_then_swaps_and_resumes_exactly():
    st = pool.init_pool(6, (2, 2, 1), (4, 4, 1), seed=3)
    for k in range(3):  # filling: the batch passes through, the pool is written at ptr
        lq, gt = _batch(k)
        st, lq_o, gt_o = _step(st, lq, gt)
        assert _ids(lq_o) == _ids(lq) and _ids(gt_o) == _ids(lq) and int(st["ptr"]) == 2 * (k + 1)
    assert _ids(st["lq"]) == [1, 2, 3, 4, 5, 6] and _ids(st["gt"]) == [1, 2, 3, 4, 5, 6]
    saved = jax.tree.map(np.array, st)
    outs = []
    for k in range(3, 6):  # full: permute, hand out the first B, put the batch there
        lq, gt = _batch(k)
        before = set(_ids(st["lq"]))
        perm = np.asarray(jax.random.permutation(jax.random.split(jax.random.wrap_key_data(st["key"]))[1], 6))
        want_out = np.asarray(st["lq"])[perm[:2]]
        st, lq_o, gt_o = _step(st, lq, gt)
        assert np.array_equal(np.asarray(lq_o), want_out) and _ids(gt_o) == _ids(lq_o)  # pairs stay paired
        assert set(_ids(lq_o)) <= before and set(_ids(st["lq"])) == (before - set(_ids(lq_o))) | set(_ids(lq))
        assert _ids(st["lq"])[:2] == _ids(lq) and _ids(st["gt"]) == _ids(st["lq"]) and int(st["ptr"]) == 6
        outs.append(_ids(lq_o))
    assert outs[0] != outs[1] or outs[1] != outs[2]  # the key advances
    st2 = jax.tree.map(jnp.asarray, saved)  # restore from a checkpointed copy: same sequence
    for k in range(3, 6):
        st2, lq_o, _ = _step(st2, *_batch(k))
        assert _ids(lq_o) == outs[k - 3]


def test_pool_size_from_config():
    from resshift_jax.config import load_config
    cfg = load_config("realsr_v3")
    assert pool.pool_size(cfg, 8) == 80  # 10 x batch, as the reference
    cfg.degradation.queue_size = 24
    assert pool.pool_size(cfg, 8) == 24


def test_replace_nan():
    lq = np.arange(4, dtype=np.float32)[:, None, None, None] * np.ones((4, 2, 2, 3), np.float32)
    gt = -lq
    lq[1, 0, 1, 2] = np.nan
    lq[3, 1, 1, 0] = np.nan
    f = jax.jit(pool.replace_nan)
    lo, go, n = f(lq, gt)
    assert int(n) == 2 and _ids(lo) == [0, 2, 2, 0] and _ids(go) == [0, 2, 2, 0]
    allnan = np.full_like(lq, np.nan)
    lo, go, n = f(allnan, gt)
    assert int(n) == 4 and np.isfinite(np.asarray(lo)).all() and _ids(go) == [0, 1, 2, 3]


def test_pool_sharded_over_devices_matches_single_device():
    from jax.sharding import NamedSharding, PartitionSpec as P
    n = min(jax.device_count(), 8)
    mesh = jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))  # as sharding.make_mesh
    rows, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    b = n
    st = pool.init_pool(2 * b, (2, 2, 1), (4, 4, 1), seed=1)
    sst = pool.place_pool(st, rows, rep)
    assert sst["lq"].sharding == rows and sst["key"].sharding == rep
    for k in range(4):
        lq, gt = _batch(k, b)
        st, a, _ = _step(st, lq, gt)
        sst, c, _ = _step(sst, jax.device_put(lq, rows), jax.device_put(gt, rows))
        assert _ids(a) == _ids(c)
    assert _ids(st["lq"]) == _ids(sst["lq"])
