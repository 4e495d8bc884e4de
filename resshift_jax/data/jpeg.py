"""JPEG compression as the reference DiffJPEG(differentiable=False) computes it, in JAX.

Steps (all float32, as the reference): RGB*255 -> YCbCr (JPEG matrix, +128 on chroma),
2x2 average chroma subsampling, 8x8 blocks, DCT (-128 first), divide by the quality-scaled
table and round half-to-even, multiply back, inverse DCT (+128), nearest chroma upsampling,
YCbCr -> RGB, clamp to [0, 255], /255. Images are zero-padded on the bottom/right to
multiples of 16 and cropped back. Quality may be a Python number or a per-image array.
Every contraction runs at HIGHEST precision (TPU default matmuls are bf16).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

_HP = jax.lax.Precision.HIGHEST

# Standard luminance/chrominance tables, transposed as the reference stores them.
_Y_TABLE = np.array(
    [[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
     [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
     [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32).T
_C_TABLE = np.full((8, 8), 99, np.float32)
_C_TABLE[:4, :4] = np.array([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]).T

_RGB2YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                    np.float32).T
_YCC2RGB = np.array([[1.0, 0.0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]], np.float32).T


def _dct_tensors():
    dct = np.zeros((8, 8, 8, 8), np.float32)
    idct = np.zeros((8, 8, 8, 8), np.float32)
    for x, y, u, v in itertools.product(range(8), repeat=4):
        dct[x, y, u, v] = np.cos((2 * x + 1) * u * np.pi / 16) * np.cos((2 * y + 1) * v * np.pi / 16)
        idct[x, y, u, v] = np.cos((2 * u + 1) * x * np.pi / 16) * np.cos((2 * v + 1) * y * np.pi / 16)
    alpha = np.array([1.0 / np.sqrt(2)] + [1] * 7)
    scale = (np.outer(alpha, alpha) * 0.25).astype(np.float32)
    return dct, idct, scale, np.outer(alpha, alpha).astype(np.float32)


_DCT, _IDCT, _DCT_SCALE, _IDCT_ALPHA = _dct_tensors()


def quality_to_factor(quality):
    """Compression factor of a quality: 50/q below 50, else 2 - q/50 (float32 for arrays)."""
    if isinstance(quality, (int, float)):
        q = float(quality)
        return np.float32((5000.0 / q if q < 50 else 200.0 - q * 2) / 100.0)
    q = jnp.asarray(quality, jnp.float32)
    return jnp.where(q < 50, jnp.float32(5000.0) / q, jnp.float32(200.0) - q * 2) / jnp.float32(100.0)


def _blocks(c):  # (B, H, W) -> (B, H/8, W/8, 8, 8)
    b, h, w = c.shape
    return c.reshape(b, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4)


def _merge(c):  # inverse of _blocks
    b, i, j, _, _ = c.shape
    return c.transpose(0, 1, 3, 2, 4).reshape(b, i * 8, j * 8)


def _code(c, table):
    """DCT -> quantise -> dequantise -> inverse DCT of one component; table (B,1,1,8,8)."""
    d = _DCT_SCALE * jnp.einsum("bijxy,xyuv->bijuv", _blocks(c) - 128, _DCT, precision=_HP)
    q = jnp.round(d / table) * table
    return _merge(0.25 * jnp.einsum("bijxy,xyuv->bijuv", q * _IDCT_ALPHA, _IDCT, precision=_HP) + 128)


def diff_jpeg(x: jax.Array, quality) -> jax.Array:
    """JPEG round trip of NHWC RGB `x` in [0, 1]; `quality` scalar or (B,). Returns [0, 1]."""
    b, h, w, _ = x.shape
    factor = quality_to_factor(quality)
    factor = jnp.broadcast_to(jnp.asarray(factor, jnp.float32), (b,)).reshape(b, 1, 1, 1, 1)
    ph, pw = (-h) % 16, (-w) % 16
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, ph), (0, pw), (0, 0)))
    ycc = jnp.einsum("bhwc,cd->bhwd", x * 255, _RGB2YCC, precision=_HP) + jnp.array([0.0, 128.0, 128.0])
    y = ycc[..., 0]
    ch = ycc[..., 1:].reshape(b, (h + ph) // 2, 2, (w + pw) // 2, 2, 2)
    ch = (((ch[:, :, 0, :, 0] + ch[:, :, 0, :, 1]) + ch[:, :, 1, :, 0]) + ch[:, :, 1, :, 1]) / 4
    y = _code(y, _Y_TABLE * factor)
    cb = _code(ch[..., 0], _C_TABLE * factor)
    cr = _code(ch[..., 1], _C_TABLE * factor)
    up = lambda c: jnp.repeat(jnp.repeat(c, 2, axis=1), 2, axis=2)  # noqa: E731
    ycc = jnp.stack([y, up(cb), up(cr)], axis=-1) + jnp.array([0.0, -128.0, -128.0])
    rgb = jnp.einsum("bhwc,cd->bhwd", ycc, _YCC2RGB, precision=_HP)
    rgb = jnp.minimum(255.0, jnp.maximum(0.0, rgb)) / 255
    return rgb[:, :h, :w]
