"""MATLAB `imresize` (bicubic, a = -0.5, antialiased when shrinking), as the bicsr data uses.

The reference (`matlab_functions.imresize`, `util_image.imresize_np`) computes per-output
weights over a window of input pixels, mirrors the border symmetrically (edge repeated), and
applies H then W. The same map along one axis is a dense (out, in) matrix, built here once in
float64 with the mirror folded in; applying it is two float32 matmuls (exact on device).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax ** 2, ax ** 3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


@functools.lru_cache(maxsize=64)
def imresize_matrix(in_len: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """(ceil(in_len*scale), in_len) float64 matrix of MATLAB bicubic resizing along one axis."""
    out_len = math.ceil(in_len * scale)
    width = 4.0 / scale if (scale < 1 and antialiasing) else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    p = math.ceil(width) + 2
    idx = left[:, None] + np.arange(p)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if (scale < 1 and antialiasing) else _cubic(dist)
    w = w / w.sum(1, keepdims=True)
    # symmetric mirror (edge repeated): -1 -> 0, in_len -> in_len - 1 (0-based)
    j = idx.astype(np.int64) - 1
    j = np.where(j < 0, -j - 1, j)
    j = np.where(j >= in_len, 2 * in_len - 1 - j, j)
    if j.min() < 0 or j.max() >= in_len:
        raise ValueError(f"imresize: input length {in_len} too short for scale {scale}")
    m = np.zeros((out_len, in_len))
    np.add.at(m, (np.repeat(np.arange(out_len), p), j.ravel()), w.ravel())
    return m


def imresize(x: jax.Array, scale: float, antialiasing: bool = True) -> jax.Array:
    """MATLAB bicubic resize of NHWC (or HWC) float `x` by `scale`; output ceil(scale*size)."""
    squeeze = x.ndim == 3
    x = x[None] if squeeze else x
    _, h, w, _ = x.shape
    mh = jnp.asarray(imresize_matrix(h, float(scale), antialiasing), jnp.float32)
    mw = jnp.asarray(imresize_matrix(w, float(scale), antialiasing), jnp.float32)
    hp = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,bhwc->bowc", mh, x.astype(jnp.float32), precision=hp)
    y = jnp.einsum("pw,bowc->bopc", mw, y, precision=hp)
    return y[0] if squeeze else y


def imresize_np(x: np.ndarray, scale: float, antialiasing: bool = True) -> np.ndarray:
    """Host (NumPy) version on HWC float images, for data loaders without a device."""
    h, w = x.shape[:2]
    mh = imresize_matrix(h, float(scale), antialiasing).astype(np.float32)
    mw = imresize_matrix(w, float(scale), antialiasing).astype(np.float32)
    y = np.einsum("oh,hw...->ow...", mh, x.astype(np.float32))
    return np.einsum("pw,ow...->op...", mw, y)
