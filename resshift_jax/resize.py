"""PyTorch-exact bicubic resampling (F.interpolate(mode='bicubic'), align_corners=False).

The reference upsamples the LR image with torch's cubic convolution (a = −0.75, half-pixel
centres, border taps clamped, no antialiasing, no clamping of the result). `jax.image.resize`
uses a different kernel and antialiases, so we build the separable (out, in) weight matrices
once in float64 and apply them with two matmuls in float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

A = -0.75


def _cubic_weights(frac: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution weights for taps at offsets -1, 0, 1, 2 (shape (..., 4))."""
    def near(x):  # |x| <= 1
        return ((A + 2) * x - (A + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A

    return np.stack([far(frac + 1), near(frac), near(1 - frac), far(2 - frac)], axis=-1)


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int, scale: float | None = None) -> np.ndarray:
    """(out_size, in_size) float64 matrix of torch's bicubic interpolation along one axis.

    `scale` is the user's scale_factor (torch then maps with 1/scale); None maps by size ratio.
    """
    ratio = (1.0 / scale) if scale else (in_size / out_size)
    dst = np.arange(out_size, dtype=np.float64)
    src = (dst + 0.5) * ratio - 0.5
    base = np.floor(src)
    frac = src - base
    w = _cubic_weights(frac)
    mat = np.zeros((out_size, in_size), np.float64)
    for k in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(mat, (np.arange(out_size), idx), w[:, k])
    return mat


def bicubic_resize(x: jax.Array, out_hw: tuple[int, int], scale: float | None = None) -> jax.Array:
    """Resize NHWC `x` to `out_hw` with torch's bicubic kernel (result not clamped)."""
    _, h, w, _ = x.shape
    mh = jnp.asarray(bicubic_matrix(h, out_hw[0], scale), jnp.float32)
    mw = jnp.asarray(bicubic_matrix(w, out_hw[1], scale), jnp.float32)
    hp = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,bhwc->bowc", mh, x.astype(jnp.float32), precision=hp)
    y = jnp.einsum("pw,bowc->bopc", mw, y, precision=hp)
    return y.astype(x.dtype)


def bicubic_upsample(x: jax.Array, scale: int = 4) -> jax.Array:
    """F.interpolate(x, scale_factor=scale, mode='bicubic') on NHWC."""
    _, h, w, _ = x.shape
    return bicubic_resize(x, (int(h * scale), int(w * scale)), float(scale))
