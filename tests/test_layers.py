"""models/layers.py: the sub-pixel form of nearest-x2 + 3x3 conv."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resshift_jax.models.layers import Conv2d, subpixel_kernels


def upsample_nearest2x(x):
    """F.interpolate(scale_factor=2, mode='nearest') on NHWC: the reference's Upsample input."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


@pytest.mark.parametrize("shape", [(2, 7, 5, 32), (1, 1, 1, 8), (1, 4, 6, 16)])
def test_upsample2x_equals_conv_of_nearest_upsample(shape):
    conv = Conv2d(shape[-1], 24, 3, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    want = np.asarray(conv(upsample_nearest2x(x)), np.float64)
    got = np.asarray(conv.upsample2x(x), np.float64)
    assert got.shape == (shape[0], 2 * shape[1], 2 * shape[2], 24)
    # the same 9*C products per output summed in another grouping (folded 2x2 taps): float32 sums
    # of up to 288 terms, |error| <~ sqrt(288) * 6e-8 * max|term| sums ~ 1e-6 * max|out| typically;
    # 5e-6 * max|out| bounds it with margin and is scale-free
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-6 * np.abs(want).max())


def test_subpixel_kernels_fold_the_taps():
    k = np.arange(3 * 3 * 1 * 1, dtype=np.float32).reshape(3, 3, 1, 1)  # k[r, c] = 3r + c
    sub = np.asarray(subpixel_kernels(jnp.asarray(k)))[..., 0, :]  # (2, 2, 4): phases (a, c)
    rows = {0: [[0], [1, 2]], 1: [[0, 1], [2]]}  # taps folded onto 2 input rows, per phase
    for a in (0, 1):
        for c in (0, 1):
            want = [[sum(k[r, q, 0, 0] for r in rows[a][i] for q in rows[c][j]) for j in (0, 1)] for i in (0, 1)]
            np.testing.assert_array_equal(sub[:, :, 2 * a + c], want)


def test_upsample2x_rejects_other_convs():
    with pytest.raises(ValueError, match="3x3 conv with stride 1"):
        Conv2d(4, 4, 3, stride=2, rngs=nnx.Rngs(0)).upsample2x(jnp.zeros((1, 4, 4, 4)))
    with pytest.raises(ValueError, match="3x3 conv with stride 1"):
        Conv2d(4, 4, 1, rngs=nnx.Rngs(0)).upsample2x(jnp.zeros((1, 4, 4, 4)))
