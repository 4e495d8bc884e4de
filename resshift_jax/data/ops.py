"""Per-pixel degradation operators in JAX (NHWC, float32), on images with a per-sample valid size.

Shapes under jit must be static, but the Real-ESRGAN resizes change the image size per
sample. Every image here therefore lives on a fixed *canvas* (B, Hc, Wc, C) with its valid
size `hw` (B, 2) int32 in the top-left corner; pixels outside are zero. The operators only
read valid pixels:

* `filter2d`: reflect padding is a gather with per-sample reflected indices, then a
  per-sample depthwise cross-correlation (kernels (1, k, k) shared or (B, k, k));
* `resize`: torch `F.interpolate` (area / bilinear / bicubic, align_corners=False, no
  antialias) is separable and linear, so each sample gets two dense (out, in) matrices built
  on device from (in size, out size, source/target ratio, mode) and applied with matmuls;
* `add_gaussian_noise` / `add_poisson_noise`: noise on the canvas, the Poisson level count
  (2^ceil(log2(#distinct 8-bit values))) counted over the valid pixels only;
* `diff_jpeg` (jpeg.py) zero-pads to multiples of 16, which a zeroed canvas already is.

With `hw` equal to the canvas size these are the plain fixed-shape operators.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_HP = jax.lax.Precision.HIGHEST
MODES = ("area", "bilinear", "bicubic")


def full_hw(x: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.array(x.shape[1:3], jnp.int32), (x.shape[0], 2))


def mask_valid(x: jax.Array, hw: jax.Array) -> jax.Array:
    """Zero everything outside each sample's valid (h, w)."""
    r = jnp.arange(x.shape[1])[None, :, None] < hw[:, 0, None, None]
    c = jnp.arange(x.shape[2])[None, None, :] < hw[:, 1, None, None]
    return jnp.where((r & c)[..., None], x, 0)


def _reflect_index(n_out: int, pad: int, n: jax.Array) -> jax.Array:
    """(B, n_out) source rows of torch 'reflect' padding by `pad` of lengths n (B,)."""
    p = jnp.abs(jnp.arange(n_out)[None, :] - pad)
    p = jnp.where(p >= n[:, None], 2 * (n[:, None] - 1) - p, p)
    return jnp.clip(p, 0, n[:, None] - 1)


def _correlate_fft(xp, kern, k):
    """'VALID' cross-correlation of (B, H', W', C) with (B, k, k) kernels via real FFTs."""
    _, hp, wp, _ = xp.shape
    kp = jnp.zeros((kern.shape[0], hp, wp), jnp.float32).at[:, :k, :k].set(kern[:, ::-1, ::-1])
    y = jnp.fft.irfft2(jnp.fft.rfft2(xp, axes=(1, 2)) * jnp.fft.rfft2(kp, axes=(1, 2))[..., None],
                       s=(hp, wp), axes=(1, 2))
    return y[:, k - 1:, k - 1:].astype(xp.dtype)


def default_conv_method() -> str:
    """'fft' on CPU (XLA's grouped conv there is ~10x slower), 'direct' on accelerators."""
    return "fft" if jax.default_backend() == "cpu" else "direct"


def filter2d(x: jax.Array, kernel: jax.Array, hw: jax.Array | None = None, method: str = "direct") -> jax.Array:
    """Reference `filter2D`: reflect pad k//2, cross-correlate with one kernel per image.

    x (B, H, W, C); kernel (1, k, k) or (B, k, k), k odd; hw (B, 2) valid sizes or None.
    method 'direct' (grouped conv, exact float32 sums) or 'fft' (same result to ~1e-6).
    """
    b, h, w, c = x.shape
    k = kernel.shape[-1]
    if k % 2 != 1 or kernel.shape[-2] != k:
        raise ValueError(f"filter2d: kernel must be (.., k, k) with k odd, got {kernel.shape}")
    hw = full_hw(x) if hw is None else hw
    pad = k // 2
    ih = _reflect_index(h + 2 * pad, pad, hw[:, 0])
    iw = _reflect_index(w + 2 * pad, pad, hw[:, 1])
    xp = jnp.take_along_axis(x, ih[:, :, None, None], axis=1)
    xp = jnp.take_along_axis(xp, iw[:, None, :, None], axis=2)
    kern = jnp.broadcast_to(kernel.astype(x.dtype), (b, k, k))
    if method == "fft":
        return mask_valid(_correlate_fft(xp, kern, k), hw)
    if method != "direct":
        raise ValueError(f"filter2d: method must be 'direct' or 'fft', got {method!r}")
    # depthwise: batch*channels as feature groups of one image
    lhs = xp.transpose(1, 2, 0, 3).reshape(1, h + 2 * pad, w + 2 * pad, b * c)
    rhs = jnp.repeat(kern, c, axis=0).transpose(1, 2, 0)[:, :, None, :]  # (k, k, 1, B*C)
    out = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID", feature_group_count=b * c,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HP)
    out = out.reshape(h, w, b, c).transpose(2, 0, 1, 3)
    return mask_valid(out, hw)


def gaussian_kernel_cv2(ksize: int, sigma: float = 0.0) -> np.ndarray:
    """cv2.getGaussianKernel for ksize > 7 (sigma <= 0 -> 0.3((ksize-1)/2 - 1) + 0.8), float64."""
    if sigma <= 0:
        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def usm_kernel(radius: int = 50, sigma: float = 0.0) -> np.ndarray:
    """(1, r, r) float32 kernel of the reference USMSharp (radius made odd)."""
    radius = radius + 1 if radius % 2 == 0 else radius
    g = gaussian_kernel_cv2(radius, sigma)
    return np.outer(g, g).astype(np.float32)[None]


def usm_sharp(x: jax.Array, weight: float = 0.5, threshold: float = 10, radius: int = 50,
              method: str = "direct") -> jax.Array:
    """Reference USMSharp: sharpen where |x - blur| * 255 > threshold, with a blurred mask."""
    kern = jnp.asarray(usm_kernel(radius))
    blur = filter2d(x, kern, method=method)
    residual = x - blur
    mask = (jnp.abs(residual) * 255 > threshold).astype(x.dtype)
    soft = filter2d(mask, kern, method=method)
    sharp = jnp.clip(x + weight * residual, 0, 1)
    return soft * sharp + (1 - soft) * x


# ----------------------------------------------------------------------------- resize
def _cubic_w(t):
    a = -0.75
    near = lambda s: ((a + 2) * s - (a + 3)) * s * s + 1  # noqa: E731
    far = lambda s: ((a * s - 5 * a) * s + 8 * a) * s - 4 * a  # noqa: E731
    return far(t + 1), near(t), near(1 - t), far(2 - t)


def resize_matrix(n_in, n_out, ratio, mode, in_max: int, out_max: int) -> jax.Array:
    """(out_max, in_max) matrix of torch interpolate along one axis for one sample.

    n_in, n_out int32 scalars (valid lengths), ratio float32 (torch's source/target scale:
    1/scale_factor when a scale factor is given, else n_in/n_out), mode int32 index of MODES.
    Rows >= n_out are zero. Weights follow torch's CPU kernels in float32.
    """
    o = jnp.arange(out_max)
    i = jnp.arange(in_max)[None, :]
    f32 = jnp.float32
    # area = adaptive average pooling over [floor(o*in/out), ceil((o+1)*in/out))
    start = (o * n_in) // n_out
    end = ((o + 1) * n_in + n_out - 1) // n_out
    area = ((i >= start[:, None]) & (i < end[:, None])).astype(f32) / jnp.maximum(end - start, 1)[:, None]
    src = ratio * (o.astype(f32) + 0.5) - 0.5
    # bilinear: source clamped at 0, right neighbour clamped at the edge
    sl = jnp.maximum(src, 0)
    i0 = jnp.floor(sl).astype(jnp.int32)
    i1 = i0 + (i0 < n_in - 1)
    l1 = sl - i0
    bil = (1 - l1)[:, None] * (i == i0[:, None]) + l1[:, None] * (i == i1[:, None])
    # bicubic: four taps clamped to [0, n_in - 1]
    base = jnp.floor(src)
    t = src - base
    base = base.astype(jnp.int32)
    cub = 0
    for kk, wk in enumerate(_cubic_w(t)):
        idx = jnp.clip(base - 1 + kk, 0, n_in - 1)
        cub = cub + wk[:, None] * (i == idx[:, None])
    m = jnp.select([mode == 0, mode == 1], [area, bil], cub)
    return jnp.where((o < n_out)[:, None], m, 0.0).astype(f32)


def resize(x: jax.Array, hw: jax.Array, out_hw: jax.Array, mode: jax.Array, out_canvas: tuple[int, int],
           ratio: jax.Array | None = None) -> jax.Array:
    """Per-sample torch interpolate of canvas `x` (valid `hw`) to `out_hw` on an `out_canvas`.

    mode (B,) int32 (MODES index); ratio (B, 2) float32 source/target scales, default in/out.
    """
    hw = hw.astype(jnp.int32)
    out_hw = out_hw.astype(jnp.int32)
    if ratio is None:
        ratio = hw.astype(jnp.float32) / out_hw.astype(jnp.float32)
    mk = jax.vmap(resize_matrix, in_axes=(0, 0, 0, 0, None, None))
    mh = mk(hw[:, 0], out_hw[:, 0], ratio[:, 0], mode, x.shape[1], out_canvas[0])
    mw = mk(hw[:, 1], out_hw[:, 1], ratio[:, 1], mode, x.shape[2], out_canvas[1])
    y = jnp.einsum("boh,bhwc->bowc", mh, x, precision=_HP)
    return jnp.einsum("bpw,bowc->bopc", mw, y, precision=_HP)


# ----------------------------------------------------------------------------- noise
def _gray(x):  # torchvision rgb_to_grayscale weights
    return (0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]


def _poisson_levels(q: jax.Array, hw: jax.Array) -> jax.Array:
    """2^ceil(log2(#distinct values)) of 8-bit-rounded images q (B, H, W, C) over valid pixels."""
    codes = jnp.round(q * 255).astype(jnp.int32)
    valid = mask_valid(jnp.ones(q.shape[:3] + (1,), jnp.int32), hw)
    valid = jnp.broadcast_to(valid, q.shape).reshape(q.shape[0], -1)
    hist = jax.vmap(lambda c, v: jnp.zeros(256, jnp.int32).at[c].add(v))(codes.reshape(q.shape[0], -1), valid)
    n = jnp.sum(hist > 0, axis=1).astype(jnp.float32)
    return (2.0 ** jnp.ceil(jnp.log2(n))).reshape(-1, 1, 1, 1)


def noise_uniforms(keys: jax.Array, hw: tuple[int, int], n: int) -> jax.Array:
    """(B, h, w, n) float32 uniforms in [0, 1), one threefry draw per example's own key.

    All noise of a stage comes from one such draw (slices of its last axis): one PRNG
    computation instead of one per noise kind, which keeps XLA compile times low."""
    bits = jax.vmap(lambda k: jax.random.bits(k, hw + (n,), jnp.uint32))(keys)
    return jax.lax.bitcast_convert_type((bits >> 9) | np.uint32(0x3F800000), jnp.float32) - 1.0


def _normal(u):
    """Standard normals from uniforms in [0, 1), as jax.random.normal (sqrt(2) erfinv on (-1, 1))."""
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    return np.float32(np.sqrt(2)) * jax.lax.erf_inv(jnp.maximum(lo, 2.0 * u - 1.0))


def add_gaussian_noise(x, hw, keys, sigma, gray, u=None):
    """x + N(0, sigma/255) noise, one gray plane shared by the channels where gray=1; clipped.

    keys: (B,) per-example PRNG keys; u: optional (B, H, W, >=4) uniforms to use instead
    (channels 0-2 colour, 3 gray)."""
    u = noise_uniforms(keys, x.shape[1:3], 4) if u is None else u
    s = sigma.reshape(-1, 1, 1, 1) / 255.0
    color = _normal(u[..., 0:3]) * s
    gplane = _normal(u[..., 3:4]) * s
    g = gray.reshape(-1, 1, 1, 1).astype(x.dtype)
    return mask_valid(jnp.clip(x + color * (1 - g) + gplane * g, 0, 1), hw)


_POISSON_K = 512  # counts 0..511: P(X > 511) < 1e-40 for the largest rate, 256


def _poisson_cdf(levels: jax.Array) -> jax.Array:
    """(B, 256, K) float32 CDFs of Poisson(code/255 * levels) for every 8-bit code."""
    lam = (jnp.arange(256, dtype=jnp.float32) / 255)[None, :, None] * levels.reshape(-1, 1, 1)
    k = jnp.arange(_POISSON_K, dtype=jnp.float32)
    logpmf = k * jnp.log(jnp.maximum(lam, 1e-30)) - lam - jax.lax.lgamma(k + 1)
    pmf = jnp.where(lam > 0, jnp.exp(logpmf), (k == 0).astype(jnp.float32))
    return jnp.cumsum(pmf, axis=-1)


def _poisson_from_u(u, codes, levels):
    """Poisson samples of rate codes/255*levels by inverting the CDF table at uniforms u.

    jax.random.poisson's rejection loops compile and run very slowly on CPU at image sizes;
    the rates here take at most 256 values per image, so a table is exact and cheap."""
    b = codes.shape[0]
    cdf = _poisson_cdf(levels).reshape(-1)  # flat: a plain 1-D gather is fast on every backend
    row = (codes + 256 * jnp.arange(b).reshape((b,) + (1,) * (codes.ndim - 1))) * _POISSON_K

    def step(_, lohi):  # binary search for the smallest n with cdf[n] > u
        lo, hi = lohi
        mid = (lo + hi) // 2
        above = jnp.take(cdf, row + mid, mode="clip") > u
        return jnp.where(above, lo, mid + 1), jnp.where(above, mid, hi)

    n_steps = int(np.ceil(np.log2(_POISSON_K)))
    lo, _ = jax.lax.fori_loop(0, n_steps, step, (jnp.zeros_like(codes), jnp.full_like(codes, _POISSON_K - 1)))
    return lo.reshape(codes.shape).astype(jnp.float32)


def add_poisson_noise(x, hw, keys, scale, gray, u=None):
    """Shot noise (Poisson on the 8-bit-rounded image with `levels` counts), times scale; clipped.

    keys: (B,) per-example PRNG keys; u: optional (B, H, W, >=4) uniforms to use instead
    (channels 0-2 colour, 3 gray)."""
    u = noise_uniforms(keys, x.shape[1:3], 4) if u is None else u
    q = jnp.clip(jnp.round(x * 255), 0, 255) / 255
    lv = _poisson_levels(q, hw)
    color = _poisson_from_u(u[..., 0:3], jnp.round(q * 255).astype(jnp.int32), lv) / lv - q
    qg = jnp.clip(jnp.round(_gray(x) * 255), 0, 255) / 255
    lvg = _poisson_levels(qg, hw)
    gplane = _poisson_from_u(u[..., 3:4], jnp.round(qg * 255).astype(jnp.int32), lvg) / lvg - qg
    g = gray.reshape(-1, 1, 1, 1).astype(x.dtype)
    noise = (color * (1 - g) + gplane * g) * scale.reshape(-1, 1, 1, 1)
    return mask_valid(jnp.clip(x + noise, 0, 1), hw)


def quantize_8bit(x: jax.Array) -> jax.Array:
    return jnp.clip(jnp.round(x * 255.0), 0, 255) / 255.0
