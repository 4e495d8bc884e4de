"""Swin layers of the ResShift denoiser (reference `models/swin_transformer.py`), NHWC.

Differences from textbook Swin that the reference has and we reproduce (spec §4.3):
GroupNorm over the whole feature map instead of LayerNorm, 1x1 convs for the MLP, the shift
decided from the *construction* resolution, and a quirky shifted-window mask that is rebuilt
for the runtime size (`calculate_mask`).

Attribute names mirror the PyTorch state_dict (`patch_embed.proj`, `blocks.{j}.attn.qkv`, ...).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resshift_jax.models.layers import Conv2d, GroupNorm, Linear, gelu_exact

MASK_VALUE = -100.0  # the reference adds -100, not -inf


# ----------------------------------------------------------------------------- pure helpers

@functools.lru_cache(maxsize=None)
def _relative_position_index(window_size: int) -> np.ndarray:
    w = window_size
    rows, cols = np.meshgrid(np.arange(w), np.arange(w), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)  # token k = r*w + c
    dr = rows[:, None] - rows[None, :] + (w - 1)
    dc = cols[:, None] - cols[None, :] + (w - 1)
    index = (dr * (2 * w - 1) + dc).astype(np.int64)
    index.setflags(write=False)
    return index


def relative_position_index(window_size: int) -> np.ndarray:
    """(w*w, w*w) int64: index into the (2w-1)^2 bias table for tokens i, j of a window,
    (h_i - h_j + w - 1)(2w - 1) + (w_i - w_j + w - 1)."""
    return _relative_position_index(int(window_size))


@functools.lru_cache(maxsize=None)
def _calculate_mask(H: int, W: int, window_size: int, shift_size: int) -> np.ndarray:
    w, s = window_size, shift_size
    if H % w or W % w:
        raise ValueError(f"calculate_mask: feature size {H}x{W} is not a multiple of window {w}")
    nh, nw = H // w, W // w
    if s == 0:  # the reference's builder yields all zeros for unshifted blocks
        mask = np.zeros((nh * nw, w * w, w * w), np.float32)
    else:
        # Region label of image row R: bands [0, H-w), [H-w, H-s), [H-s, H). Because the reference
        # indexes a (1,1,H,W) tensor as (1,H,W,1) and flattens window labels column-major, the
        # token at (r, c) of a window with top row R0 carries the label of row R0 + c; the
        # window column and W play no part.
        row = np.arange(H)
        band = np.where(row < H - w, 0, np.where(row < H - s, 1, 2))
        top = np.arange(nh) * w  # R0 of each window row
        col_label = band[top[:, None] + np.arange(w)[None, :]]  # (nh, w): label of column c
        token_label = np.tile(col_label, (1, w))  # (nh, w*w): token r*w + c -> col_label[c]
        diff = token_label[:, None, :] != token_label[:, :, None]  # [i, j]: label_j != label_i
        mask = np.where(diff, MASK_VALUE, 0.0).astype(np.float32)  # (nh, N, N)
        mask = np.repeat(mask, nw, axis=0)  # windows row-major over the (nh, nw) grid
    mask.setflags(write=False)
    return mask


def calculate_mask(H: int, W: int, window_size: int, shift_size: int) -> np.ndarray:
    """The reference `SwinTransformerBlock.calculate_mask((H, W))`: (nW, w*w, w*w) float32 of
    0 / -100, windows row-major over the window grid. Reproduces the repo's quirk (spec §4.3)."""
    return _calculate_mask(int(H), int(W), int(window_size), int(shift_size))


def window_partition(x, window_size: int):
    """(B, H, W, C) -> (B*nW, w*w, C); windows ordered (batch, window-row, window-col),
    tokens row-major inside a window."""
    b, h, w_, c = x.shape
    ws = window_size
    x = x.reshape(b, h // ws, ws, w_ // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b * (h // ws) * (w_ // ws), ws * ws, c)


def window_reverse(windows, window_size: int, H: int, W: int):
    """Inverse of window_partition: (B*nW, w*w, C) -> (B, H, W, C)."""
    ws = window_size
    c = windows.shape[-1]
    x = windows.reshape(-1, H // ws, W // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, c)


# ----------------------------------------------------------------------------- modules

class WindowAttention(nnx.Module):
    """Multi-head self-attention inside windows with a relative position bias (W-MSA)."""

    def __init__(self, dim: int, window_size: int, num_heads: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"WindowAttention: dim {dim} not divisible by {num_heads} heads")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dtype = dtype
        table_shape = ((2 * window_size - 1) ** 2, num_heads)  # torch layout, no transpose on load
        self.relative_position_bias_table = nnx.Param(
            0.02 * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, table_shape, jnp.float32))
        self.qkv = Linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
        self.proj = Linear(dim, dim, dtype=dtype, rngs=rngs)

    def relative_position_bias(self):
        """(heads, N, N) float32."""
        n = self.window_size ** 2
        idx = relative_position_index(self.window_size).reshape(-1)
        bias = self.relative_position_bias_table[...][idx].reshape(n, n, self.num_heads)
        return jnp.transpose(bias, (2, 0, 1))

    def __call__(self, x, mask=None):
        """x: (B*nW, N, C) windows; mask: None or (nW, N, N) additive, shared over heads/batch."""
        bn, n, c = x.shape
        qkv = self.qkv(x).reshape(bn, n, 3, self.num_heads, self.head_dim)  # [q | k | v] x heads
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B*nW, N, heads, hd)
        bias = self.relative_position_bias()[None]  # (1, heads, N, N)
        if mask is not None:
            nw = mask.shape[0]
            bias = bias[None] + jnp.asarray(mask)[None, :, None]  # (1, nW, heads, N, N)
            bias = jnp.broadcast_to(bias, (bn // nw,) + bias.shape[1:]).reshape(bn, self.num_heads, n, n)
        out = jax.nn.dot_product_attention(q, k, v, bias=bias, scale=self.head_dim ** -0.5)
        return self.proj(out.reshape(bn, n, c))


class Mlp(nnx.Module):
    """fc1 (1x1 conv) -> exact GELU -> fc2 (1x1 conv)."""

    def __init__(self, dim: int, hidden: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.fc1 = Conv2d(dim, hidden, 1, dtype=dtype, rngs=rngs)
        self.fc2 = Conv2d(hidden, dim, 1, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.fc2(gelu_exact(self.fc1(x)))


class SwinTransformerBlock(nnx.Module):
    """x + WMSA(GN1(x)), then x + MLP(GN2(x)); shifted windows when shift_size > 0.

    The window/shift are fixed from `input_resolution` (the construction size): a block built
    at a resolution <= window uses window = that resolution and never shifts.
    """

    def __init__(self, dim: int, input_resolution, num_heads: int, *, window_size: int, shift_size: int,
                 mlp_ratio: float = 4.0, dtype=jnp.float32, rngs: nnx.Rngs):
        if min(input_resolution) <= window_size:
            shift_size = 0
            window_size = min(input_resolution)
        if not 0 <= shift_size < window_size:
            raise ValueError(f"SwinTransformerBlock: shift {shift_size} not in [0, {window_size})")
        self.window_size = int(window_size)
        self.shift_size = int(shift_size)
        self.norm1 = GroupNorm(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads, dtype=dtype, rngs=rngs)
        self.norm2 = GroupNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dtype=dtype, rngs=rngs)

    def __call__(self, x):
        _, h, w, _ = x.shape
        ws, s = self.window_size, self.shift_size
        if h % ws or w % ws:
            raise ValueError(f"Swin block: feature map {h}x{w} is not a multiple of its window {ws}; "
                             "pad the input so every UNet level is a multiple of the window size")
        y = self.norm1(x)
        if s:
            y = jnp.roll(y, (-s, -s), axis=(1, 2))
        mask = calculate_mask(h, w, ws, s) if s else None
        y = window_reverse(self.attn(window_partition(y, ws), mask), ws, h, w)
        if s:
            y = jnp.roll(y, (s, s), axis=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nnx.Module):
    """1x1 conv in_chans -> embed_dim (patch size 1, no norm)."""

    def __init__(self, in_chans: int, embed_dim: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.proj = Conv2d(in_chans, embed_dim, 1, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.proj(x)


PatchUnEmbed = PatchEmbed  # same shape of module: `proj` 1x1 conv embed_dim -> out_chans


class BasicLayer(nnx.Module):
    """patch_embed -> `depth` Swin blocks (shift 0, w/2, 0, ...) -> patch_unembed; no outer residual."""

    def __init__(self, in_chans: int, embed_dim: int, num_heads: int, window_size: int, *, depth: int,
                 img_size: int, mlp_ratio: float = 4.0, dtype=jnp.float32, rngs: nnx.Rngs):
        res = (img_size, img_size)
        self.patch_embed = PatchEmbed(in_chans, embed_dim, dtype=dtype, rngs=rngs)
        self.patch_unembed = PatchUnEmbed(embed_dim, in_chans, dtype=dtype, rngs=rngs)
        self.blocks = nnx.List([
            SwinTransformerBlock(embed_dim, res, num_heads, window_size=window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2,
                                 mlp_ratio=mlp_ratio, dtype=dtype, rngs=rngs)
            for i in range(depth)])

    def __call__(self, x):
        x = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.patch_unembed(x)
