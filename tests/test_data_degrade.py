"""Device degradation: resize modes vs torch's formulas, noise, and the full device data step
(degradation + USM + NaN replacement + pair pool): shapes, range, determinism."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resshift_jax.config import load_config
from resshift_jax.data import ops
from resshift_jax.data.degrade import bicubic_degrade
from resshift_jax.data.params import DegradationSpec, draw_params, example_rng, stack_params
from resshift_jax.data.pipeline import make_train_pairs_fn
from resshift_jax.resize import bicubic_matrix


_resize_matrix = jax.jit(ops.resize_matrix, static_argnums=(4, 5))
_IN, _OUT = 256, 332  # one canvas for every case: one compile; valid block sliced out


def _mat(n_in, n_out, mode, ratio=None, full=False):
    ratio = n_in / n_out if ratio is None else ratio
    m = np.asarray(_resize_matrix(jnp.int32(n_in), jnp.int32(n_out), jnp.float32(ratio), jnp.int32(mode), _IN, _OUT))
    assert np.all(m[n_out:] == 0) and np.all(m[:, n_in:] == 0)  # outside the valid block: zero
    return m if full else m[:n_out, :n_in]


def test_resize_bicubic_matches_torch_matrix():
    for n_in, n_out in [(256, 64), (64, 76), (40, 23)]:
        np.testing.assert_allclose(_mat(n_in, n_out, 2), bicubic_matrix(n_in, n_out), atol=5e-6)  # f32 vs f64 weights
    # scale-factor form (ratio = 1/scale), as the first resize uses
    np.testing.assert_allclose(_mat(256, 332, 2, ratio=np.float32(1 / 1.3)), bicubic_matrix(256, 332, 1.3), atol=5e-5)  # torch: float32 source coords


def test_resize_area_and_bilinear():
    a = _mat(12, 4, 0)
    np.testing.assert_allclose(a, np.kron(np.eye(4), np.full((1, 3), 1 / 3)), atol=1e-7)
    a = _mat(5, 3, 0)  # adaptive pooling windows [0,2), [1,4), [3,5)
    np.testing.assert_allclose(a, [[.5, .5, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, .5, .5]], atol=1e-7)
    b = _mat(4, 8, 1)  # x2 bilinear, half-pixel centres, source clamped at 0
    np.testing.assert_allclose(b[0], [1, 0, 0, 0]); np.testing.assert_allclose(b[1], [.75, .25, 0, 0])
    np.testing.assert_allclose(b[7], [0, 0, 0, 1])
    for mode in range(3):
        np.testing.assert_allclose(_mat(7, 7, mode), np.eye(7), atol=1e-7)
    m = _mat(5, 3, 2, full=True)  # canvas: extra rows/cols are zero
    assert m.shape == (_OUT, _IN) and np.all(m[3:] == 0) and np.all(m[:, 5:] == 0)


def test_poisson_levels_and_noise_statistics():
    x = jnp.zeros((2, 8, 8, 3)).at[0, :2, :2].set(jnp.array([0.0, 0.5, 1.0])).at[1].set(0.2)
    hw = jnp.array([[8, 8], [4, 4]])
    lv = jax.jit(ops._poisson_levels)(x, hw)
    assert lv.ravel().tolist() == [4.0, 1.0]  # 3 distinct values -> 4; one value -> 1
    # an image of 64 distinct 8-bit values in [64, 191] -> 64 levels; noise = (Poisson(q*64)/64 - q)*scale
    codes = 64 + np.arange(64 * 64 * 3).reshape(1, 64, 64, 3) % 128 // 2
    q = np.repeat(codes, 2, 0).astype(np.float32) / 255
    scale = np.array([1.0, 0.5], np.float32)
    y = np.asarray(jax.jit(ops.add_poisson_noise)(jnp.asarray(q), jnp.full((2, 2), 64),
                                                  jax.random.split(jax.random.key(1), 2), jnp.asarray(scale),
                                                  jnp.array([0, 1])))
    assert y.min() >= 0 and y.max() <= 1
    z = (y[0] - q[0]) * 64 / np.sqrt(q[0] * 64)  # standardised Poisson counts: mean 0, variance 1
    assert abs(z.mean()) < 0.03 and abs(z.var() - 1) < 0.05, (z.mean(), z.var())
    c = np.round((y[0] - q[0]) * 64).astype(int) + np.round(q[0] * 64).astype(int)
    assert np.allclose((y[0] - q[0]) * 64, c - q[0] * 64, atol=1e-3) and c.min() >= 0  # integer counts
    g = y[1] - q[1]  # gray noise: one plane for the three channels, scaled by 0.5
    np.testing.assert_allclose(g[..., 0], g[..., 1], atol=1e-6)
    np.testing.assert_allclose(g[..., 0], g[..., 2], atol=1e-6)
    assert 0.3 < g.std() / (0.5 * np.sqrt(np.mean(q[1]) / 64)) < 3


@pytest.fixture(scope="module")
def small():
    """One compile of the whole device data step (degradation, USM on, NaN replacement, pool)."""
    cfg = load_config("realsr_v3")
    cfg.data.train.gt_size = cfg.degradation.gt_size = 64
    cfg.degradation.use_sharp = True
    cfg.degradation.queue_size = 12
    spec = DegradationSpec.from_config(cfg)
    assert spec.gt_size == 64 and spec.use_sharp
    b = 6
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    ph = np.random.default_rng(0).uniform(0, 6, size=(b, 1, 1, 3))
    hr = (0.5 + 0.4 * np.sin(3 * xx[None, ..., None] + 2 * yy[None, ..., None] + ph)).astype(np.float32)
    params = stack_params([draw_params(example_rng(3, 0, i), spec) for i in range(b)])
    # cover both branches of every per-sample choice
    params["second"][:] = [0, 1, 0, 1, 0, 1]
    params["final_order"][:] = [0, 0, 1, 1, 0, 1]
    params["noise1_gaussian"][:] = [0, 1, 0, 1, 1, 0]
    fn, init_pool = make_train_pairs_fn(cfg)
    return spec, hr, params, fn, init_pool


def test_realesrgan_pairs_shapes_range_determinism_usm_nan_pool(small):
    spec, hr, params, fn, init_pool = small
    st = init_pool(6, seed=0)
    assert st["lq"].shape == (12, 16, 16, 3) and st["gt"].shape == (12, 64, 64, 3)
    batch = dict(hr=hr, **params)
    lq, gt, st, n_nan = fn(batch, st)  # pool filling: the batch passes through
    assert lq.shape == (6, 16, 16, 3) and gt.shape == (6, 64, 64, 3) and int(n_nan) == 0
    assert bool(jnp.isfinite(lq).all())
    v = (np.asarray(lq) + 1) / 2 * 255
    np.testing.assert_allclose(v, np.round(v), atol=1e-3)  # 8-bit quantised
    assert v.min() >= -1e-3 and v.max() <= 255 + 1e-3
    usm = np.asarray(jax.jit(lambda x: ops.usm_sharp(x, method=ops.default_conv_method()))(jnp.asarray(hr)))
    np.testing.assert_allclose(np.asarray(gt), usm * 2 - 1, atol=1e-6)  # use_sharp: the GT is sharpened
    assert np.abs(usm - hr).max() > 1e-3
    lq2, _, st, _ = fn(batch, st)
    assert np.array_equal(np.asarray(lq), np.asarray(lq2))
    # a pair depends on its own example only: the same example in another batch position
    perm = np.array([5, 4, 3, 2, 1, 0])
    batch_p = dict(hr=hr[perm], **{k: v[perm] for k, v in params.items()})
    lq3, _, _, _ = fn(batch_p, init_pool(6))
    assert np.array_equal(np.asarray(lq3), np.asarray(lq)[perm])
    # LQ resembles a downscaled GT (not noise): correlation with a 4x box-downsample
    box = hr.reshape(6, 16, 4, 16, 4, 3).mean((2, 4))
    c = np.corrcoef(box.ravel(), ((np.asarray(lq) + 1) / 2).ravel())[0, 1]
    assert c > 0.5, c
    # NaN in a sample: replaced by the next valid one and counted
    bad = hr.copy()
    bad[2, 5, 5, 1] = np.nan
    lq4, gt4, _, n_nan = fn(dict(batch, hr=bad), init_pool(6))
    assert int(n_nan) == 1 and np.array_equal(np.asarray(lq4)[2], np.asarray(lq)[3])
    assert np.array_equal(np.asarray(gt4)[2], np.asarray(gt)[3]) and bool(jnp.isfinite(lq4).all())
    # the pool is full after two batches: the third hands out pooled pairs, the batch goes in
    assert int(st["ptr"]) == 12
    lq5, gt5, st, _ = fn(batch_p, st)
    pooled = np.concatenate([np.asarray(lq), np.asarray(lq2)])
    assert all(any(np.array_equal(x, p) for p in pooled) for x in np.asarray(lq5))
    assert np.array_equal(np.asarray(st["lq"])[:6], np.asarray(lq3)) and int(st["ptr"]) == 12


def test_bicubic_degrade():
    hr = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32))
    lq, gt = bicubic_degrade(hr)
    assert lq.shape == (2, 8, 8, 3) and gt.shape == (2, 32, 32, 3)
    fn, init_pool = make_train_pairs_fn(load_config("bicsr"))  # bicsr: no pool, no NaN step
    assert init_pool(2) is None
    lq2, gt2, st, n_nan = fn({"hr": hr}, None)
    assert st is None and int(n_nan) == 0
    np.testing.assert_allclose(np.asarray(lq2), np.asarray(lq), atol=1e-6)
    np.testing.assert_allclose(np.asarray(gt2), np.asarray(gt), atol=1e-6)
