"""Small building blocks shared by the UNet, the autoencoder and LPIPS (NHWC everywhere).

Attribute names mirror PyTorch (see resshift_jax.weights): a Conv has `kernel` (kh,kw,I,O)
and `bias`, a norm has `scale` and `bias`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def init_uniform(key, shape, low: float, high: float) -> jax.Array:
    """U(low, high) float32 initial weights.

    Eagerly (a concrete key) the draw is made with NumPy seeded from the key: a jax.random call
    per new weight shape would compile one small program each, which made building the UNet
    take about a minute on a CPU. Under tracing (nnx.eval_shape, jit) it stays jax.random.
    """
    if isinstance(key, jax.core.Tracer):
        return jax.random.uniform(key, shape, jnp.float32, low, high)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    return jnp.asarray(rng.uniform(low, high, size=shape).astype(np.float32))


def init_constant(shape, value: float) -> jax.Array:
    return jnp.asarray(np.full(shape, value, np.float32))


class GroupNorm(nnx.Module):
    """torch.nn.GroupNorm on NHWC, statistics and affine in float32, output in the input dtype.

    The UNet uses eps 1e-5 (GroupNorm32), the VQ autoencoder eps 1e-6.
    """

    def __init__(self, num_channels: int, *, num_groups: int = 32, eps: float = 1e-5):
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels not divisible by {num_groups} groups")
        self.num_groups = num_groups
        self.eps = eps
        self.scale = nnx.Param(init_constant((num_channels,), 1.0))
        self.bias = nnx.Param(init_constant((num_channels,), 0.0))

    def __call__(self, x):
        dtype = x.dtype
        c = x.shape[-1]
        xf = x.astype(jnp.float32)
        # two passes (mean, then mean squared deviation), each reducing over the pixels per
        # channel first (contiguous channels vectorise: ~1.6x faster on XLA:CPU than reducing
        # (pixels, channels-in-group) at once), then over the channels of each group
        mean = self._group_mean(jnp.mean(xf, axis=(1, 2)))[:, None, None, :]
        d = xf - mean
        var = self._group_mean(jnp.mean(jnp.square(d), axis=(1, 2)))[:, None, None, :]
        y = d * jax.lax.rsqrt(var + self.eps)
        y = y * self.scale[...] + self.bias[...]
        return y.astype(dtype)

    def _group_mean(self, per_channel):
        """(b, c) per-channel means -> (b, c): each channel gets the mean of its group."""
        b, c = per_channel.shape
        g = per_channel.reshape(b, self.num_groups, c // self.num_groups).mean(-1)
        return jnp.repeat(g, c // self.num_groups, axis=1)


class Conv2d(nnx.Module):
    """torch.nn.Conv2d semantics on NHWC: explicit symmetric/asymmetric padding, float32 params,
    computed in `dtype` (params cast on use)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, *, stride: int = 1,
                 padding=None, dtype=jnp.float32, rngs: nnx.Rngs):
        k = kernel_size
        if padding is None:
            padding = k // 2
        if isinstance(padding, int):
            padding = ((padding, padding), (padding, padding))
        self.stride = stride
        self.padding = tuple(tuple(p) for p in padding)
        self.dtype = dtype
        fan_in = in_ch * k * k
        bound = 1.0 / fan_in ** 0.5  # PyTorch's default (kaiming_uniform a=sqrt(5)) bound
        self.kernel = nnx.Param(init_uniform(rngs.params(), (k, k, in_ch, out_ch), -bound, bound))
        self.bias = nnx.Param(init_uniform(rngs.params(), (out_ch,), -bound, bound))

    def __call__(self, x):
        y = conv2d(x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.stride, self.padding)
        return (y + self.bias[...].astype(y.dtype)).astype(self.dtype)

    def upsample2x(self, x):
        """self(F.interpolate(x, scale_factor=2, mode='nearest')) for this 3x3 / stride 1 /
        padding 1 conv, computed at the input resolution: output pixel (2i+a, 2j+b) reads only
        input rows i-1+a..i+a and columns j-1+b..j+b, with the 3x3 taps summed onto those 2x2
        (`subpixel_kernels`). One 2x2 conv
        with 4x the output channels gives all four phases: 16 instead of 36 multiply-adds per
        input pixel and channel pair, and the 4x larger upsampled input never exists."""
        if self.kernel.shape[:2] != (3, 3) or self.stride != 1 or self.padding != ((1, 1), (1, 1)):
            raise ValueError("upsample2x needs a 3x3 conv with stride 1 and padding 1")
        b, h, w, _ = x.shape
        o = self.kernel.shape[-1]
        k = subpixel_kernels(self.kernel[...]).astype(self.dtype)  # (2, 2, I, 4*O), phases (a, c)
        y = conv2d(x.astype(self.dtype), k, 1, ((1, 1), (1, 1)))  # (b, h+1, w+1, 4*o)
        y = y.reshape(b, h + 1, w + 1, 2, 2, o)
        # phase (a, c) of output (i, j) sits at window position (i + a, j + c)
        rows = [jnp.stack([y[:, a:a + h, c:c + w, a, c] for c in (0, 1)], axis=3) for a in (0, 1)]
        y = jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, o)  # (b, h, 2, w, 2, o) interleaved
        return (y + self.bias[...].astype(y.dtype)).astype(self.dtype)


# XLA:CPU (YNNPACK) runs a 3x3 conv on a small map with many channels 2-3x slower than the same
# product written as one matmul over the k*k shifted copies (im2col): 8x8, 1280 -> 640 channels
# takes 48 ms as a conv and 17 ms as a matmul; from 32x32 up the conv is as fast or faster.
IM2COL_MAX_PIXELS = 256


def conv2d(x, kernel, stride: int, padding):
    """NHWC x HWIO convolution with explicit ((top, bottom), (left, right)) padding; float32
    accumulation for float32 inputs. On the CPU, stride-1 convs with at most IM2COL_MAX_PIXELS
    input pixels and a kernel larger than 1x1 run as one matmul (same products and sums)."""
    f32 = jnp.float32 if x.dtype == jnp.float32 else None
    kh, kw = kernel.shape[:2]
    if (stride == 1 and kh * kw > 1 and x.shape[1] * x.shape[2] <= IM2COL_MAX_PIXELS
            and jax.default_backend() == "cpu"):
        b, c = x.shape[0], x.shape[3]
        xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
        ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
        cols = jnp.concatenate([xp[:, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)], axis=-1)
        y = jnp.dot(cols.reshape(b * ho * wo, kh * kw * c), kernel.reshape(kh * kw * c, -1),
                    preferred_element_type=f32)
        return y.reshape(b, ho, wo, -1)
    return jax.lax.conv_general_dilated(x, kernel, window_strides=(stride, stride), padding=padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        preferred_element_type=f32)


def subpixel_kernels(kernel):
    """(3, 3, I, O) -> (2, 2, I, 4*O): for output phase a (row parity) the 3 row taps fall on 2
    input rows: a=0 -> (w0, w1+w2), a=1 -> (w0+w1, w2); the same for columns with phase c.
    Output channels are ordered (a, c, o)."""
    def fold(k, axis):  # -> new leading phase axis (2, ...) with the tap axis reduced to 2
        k0, k1, k2 = (jnp.take(k, i, axis=axis) for i in range(3))
        return jnp.stack([jnp.stack([k0, k1 + k2], axis=axis), jnp.stack([k0 + k1, k2], axis=axis)])
    kr = fold(kernel.astype(jnp.float32), 0)        # (2a, 2, 3, I, O)
    kc = fold(kr, 2)                                 # (2c, 2a, 2, 2, I, O)
    kc = jnp.transpose(kc, (2, 3, 4, 1, 0, 5))       # (2, 2, I, a, c, O)
    return kc.reshape(*kc.shape[:3], -1)


class Linear(nnx.Module):
    """torch.nn.Linear with `kernel` (in,out), computed in `dtype`."""

    def __init__(self, in_features: int, out_features: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        bound = 1.0 / in_features ** 0.5
        self.dtype = dtype
        self.kernel = nnx.Param(init_uniform(rngs.params(), (in_features, out_features), -bound, bound))
        self.bias = nnx.Param(init_uniform(rngs.params(), (out_features,), -bound, bound))

    def __call__(self, x):
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        return y + self.bias[...].astype(self.dtype)


def gelu_exact(x):
    """torch.nn.GELU() default: the exact erf form (Flax/JAX default to tanh)."""
    return jax.nn.gelu(x, approximate=False)
