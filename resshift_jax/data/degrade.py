"""The second-order Real-ESRGAN degradation (spec §7, `TrainerDifIR.prepare_data`) on device.

`realesrgan_degrade(hr, params, key)` turns a batch of HR images (B, H, W, 3) in [0, 1] and
the per-example parameters from `params.draw_params` (stacked) into (lq, gt) in [-1, 1],
lq of size (H/sf, W/sf). One jit per batch shape; no Python branching on data.

Fixed shapes (see ops.py): after the first resize each image sits top-left on a canvas of
side `spec.canvas1()` (384 for 256 crops: the largest first-stage output, a multiple of 16)
with its valid size carried along. The second stage resizes to a canvas of `canvas2()`
(80) and is pasted back top-left on the first canvas, so both the "second stage" and "no
second stage" samples continue from the same canvas; the per-sample choice is a select.
Both final orders are computed and selected per sample; Gaussian and Poisson noise likewise.
The final resize always lands on (H/sf, W/sf), so the output shape is fixed.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

from resshift_jax.data import ops
from resshift_jax.data.jpeg import diff_jpeg
from resshift_jax.data.matlab_resize import imresize
from resshift_jax.data.params import DegradationSpec


def _sel(flag, a, b):
    return jnp.where(flag.reshape((-1,) + (1,) * (a.ndim - 1)).astype(bool), a, b)


def _noise(x, hw, key, p, prefix):  # key: (B,) per-example keys
    """Gaussian or Poisson noise per sample (both computed, one selected), clipped to [0, 1].
    One uniform draw per example feeds both (disjoint channels), see ops.noise_uniforms."""
    u = ops.noise_uniforms(key, x.shape[1:3], 8)
    g = ops.add_gaussian_noise(x, hw, None, p[prefix + "sigma"], p[prefix + "gray"], u=u[..., :4])
    q = ops.add_poisson_noise(x, hw, None, p[prefix + "poisson"], p[prefix + "gray"], u=u[..., 4:])
    return _sel(p[prefix + "gaussian"], g, q)


def _jpeg(x, hw, quality):
    return ops.mask_valid(diff_jpeg(jnp.clip(x, 0, 1), quality), hw)


def _example_keys(key, seeds):
    """(B, 2) keys (stage 1, stage 2 noise), each a function of `key` and the example's seed."""
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(seeds)
    return jax.vmap(lambda k: jax.random.split(k, 2))(keys)


def realesrgan_degrade(hr: jax.Array, params: dict, key: jax.Array | None = None, *,
                       spec: DegradationSpec = DegradationSpec(),
                       conv_method: str | None = None) -> tuple[jax.Array, jax.Array]:
    """(lq, gt) in [-1, 1] from HR (B, H, W, 3) in [0, 1] (float, or uint8 scaled by 1/255).

    key: folded with each example's `noise_seed` (default key 0), so the noise of a pair
    depends on that example alone. With `spec.use_sharp` the GT is USM-sharpened first.
    conv_method: see ops.filter2d (default per backend).
    """
    cm = conv_method or ops.default_conv_method()
    filt = lambda *a: ops.filter2d(*a, method=cm)  # noqa: E731
    gt = hr.astype(jnp.float32) / 255.0 if hr.dtype == jnp.uint8 else hr.astype(jnp.float32)
    if spec.use_sharp:  # the reference sharpens the GT, which is then both target and source
        gt = ops.usm_sharp(gt, method=cm)
    b, h, w, _ = gt.shape
    key = jax.random.key(0) if key is None else key
    ks = _example_keys(key, params["noise_seed"].astype(jnp.uint32))
    c1, c2 = spec.canvas1(), spec.canvas2()
    out_hw = (h // spec.sf, w // spec.sf)
    if max(h, w) > spec.gt_size:
        raise ValueError(f"realesrgan_degrade: HR {h}x{w} larger than spec.gt_size {spec.gt_size}")

    # ---- first stage: blur, resize by scale factor, noise, JPEG
    x = filt(gt, params["kernel1"])
    hw1 = params["resize1_hw"].astype(jnp.int32)
    x = ops.resize(x, ops.full_hw(gt), hw1, params["resize1_mode"], (c1, c1), ratio=params["resize1_ratio"])
    x = _noise(x, hw1, ks[:, 0], params, "noise1_")
    x = _jpeg(x, hw1, params["jpeg1"])

    # ---- second stage (selected per sample): blur (or pulse), resize to a size, noise
    y = filt(x, params["kernel2"], hw1)
    hw2 = params["resize2_hw"].astype(jnp.int32)
    y = ops.resize(y, hw1, hw2, params["resize2_mode"], (c2, c2))
    y = _noise(y, hw2, ks[:, 1], params, "noise2_")
    y = jnp.pad(y, ((0, 0), (0, c1 - c2), (0, c1 - c2), (0, 0)))
    second = params["second"]
    x = _sel(second, y, x)
    hw = _sel(second, hw2, hw1)

    # ---- final stage, both orders, selected per sample
    ohw = jnp.broadcast_to(jnp.array(out_hw, jnp.int32), (b, 2))
    mode = params["final_mode"]
    a = ops.resize(x, hw, ohw, mode, out_hw)
    a = filt(a, params["sinc"])
    a = diff_jpeg(jnp.clip(a, 0, 1), params["jpeg2"])
    bb = _jpeg(x, hw, params["jpeg2"])
    bb = ops.resize(bb, hw, ohw, mode, out_hw)
    bb = filt(bb, params["sinc"])
    out = _sel(params["final_order"], a, bb)

    lq = ops.quantize_8bit(out)
    return lq * 2 - 1, gt * 2 - 1


def bicubic_degrade(hr: jax.Array, scale: float = 0.25) -> tuple[jax.Array, jax.Array]:
    """bicsr pairs: LQ = MATLAB bicubic (antialiased) of the GT, not re-quantised; both in [-1, 1]."""
    gt = hr.astype(jnp.float32) / 255.0 if hr.dtype == jnp.uint8 else hr.astype(jnp.float32)
    return imresize(gt, scale) * 2 - 1, gt * 2 - 1
