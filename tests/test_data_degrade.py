"""Device degradation: resize modes vs torch's formulas, noise, and the full pipeline's shapes/determinism."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resshift_jax.config import load_config
from resshift_jax.data import ops
from resshift_jax.data.degrade import bicubic_degrade, realesrgan_degrade_jit
from resshift_jax.data.params import DegradationSpec, draw_params, example_rng, stack_params
from resshift_jax.resize import bicubic_matrix


_resize_matrix = jax.jit(ops.resize_matrix, static_argnums=(4, 5))


def _mat(n_in, n_out, mode, ratio=None, in_max=None, out_max=None):
    ratio = n_in / n_out if ratio is None else ratio
    return np.asarray(_resize_matrix(jnp.int32(n_in), jnp.int32(n_out), jnp.float32(ratio), jnp.int32(mode),
                                     in_max or n_in, out_max or n_out))


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
    m = _mat(5, 3, 2, in_max=9, out_max=6)  # canvas: extra rows/cols are zero
    assert m.shape == (6, 9) and np.all(m[3:] == 0) and np.all(m[:, 5:] == 0)


def test_poisson_levels_and_noise_range():
    x = jnp.zeros((2, 8, 8, 3)).at[0, :2, :2].set(jnp.array([0.0, 0.5, 1.0])).at[1].set(0.2)
    hw = jnp.array([[8, 8], [4, 4]])
    lv = jax.jit(ops._poisson_levels)(x, hw)
    assert lv.ravel().tolist() == [4.0, 1.0]  # 3 distinct values -> 4; one value -> 1
    keys = jax.random.split(jax.random.key(0), 2)
    y = jax.jit(ops.add_poisson_noise)(jnp.full((2, 16, 16, 3), 0.5), jnp.full((2, 2), 16), keys,
                              jnp.ones(2), jnp.array([0, 1]))
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    # Poisson mean is the rate: a constant 0.5 image (1 level) -> counts of Poisson(0.5)
    counts = jax.jit(ops._poisson)(jax.random.split(jax.random.key(1), 1), jnp.full((1, 200, 200), 128), jnp.ones(1) * 64)
    lam = 128 / 255 * 64
    assert abs(float(counts.mean()) - lam) < 0.05 * lam and abs(float(counts.var()) - lam) < 0.1 * lam


@pytest.fixture(scope="module")
def small():
    spec = dataclasses.replace(DegradationSpec.from_config(load_config("realsr_v3")), gt_size=64)
    b = 6
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    ph = np.random.default_rng(0).uniform(0, 6, size=(b, 1, 1, 3))
    hr = (0.5 + 0.4 * np.sin(3 * xx[None, ..., None] + 2 * yy[None, ..., None] + ph)).astype(np.float32)
    params = stack_params([draw_params(example_rng(3, 0, i), spec) for i in range(b)])
    # cover both branches of every per-sample choice
    params["second"][:] = [0, 1, 0, 1, 0, 1]
    params["final_order"][:] = [0, 0, 1, 1, 0, 1]
    params["noise1_gaussian"][:] = [0, 1, 0, 1, 1, 0]
    return spec, hr, params


def test_realesrgan_degrade_shapes_range_determinism(small):
    spec, hr, params = small
    lq, gt = realesrgan_degrade_jit(jnp.asarray(hr), params, spec=spec)
    assert lq.shape == (6, 16, 16, 3) and gt.shape == (6, 64, 64, 3)
    assert bool(jnp.isfinite(lq).all())
    v = (np.asarray(lq) + 1) / 2 * 255
    np.testing.assert_allclose(v, np.round(v), atol=1e-3)  # 8-bit quantised
    assert v.min() >= -1e-3 and v.max() <= 255 + 1e-3
    np.testing.assert_allclose(np.asarray(gt), hr * 2 - 1, atol=1e-6)
    lq2, _ = realesrgan_degrade_jit(jnp.asarray(hr), params, spec=spec)
    assert np.array_equal(np.asarray(lq), np.asarray(lq2))
    # a pair depends on its own example only: the same example in another batch position
    perm = np.array([5, 4, 3, 2, 1, 0])
    lq3, _ = realesrgan_degrade_jit(jnp.asarray(hr[perm]), {k: v[perm] for k, v in params.items()}, spec=spec)
    assert np.array_equal(np.asarray(lq3), np.asarray(lq)[perm])
    # LQ resembles a downscaled GT (not noise): correlation with a 4x box-downsample
    box = hr.reshape(6, 16, 4, 16, 4, 3).mean((2, 4))
    c = np.corrcoef(box.ravel(), ((np.asarray(lq) + 1) / 2).ravel())[0, 1]
    assert c > 0.5, c


def test_bicubic_degrade():
    hr = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32))
    lq, gt = bicubic_degrade(hr)
    assert lq.shape == (2, 8, 8, 3) and gt.shape == (2, 32, 32, 3)
