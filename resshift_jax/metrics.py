"""Full- and no-reference image metrics with the reference's conventions (spec §8).

PSNR / SSIM (reference `util_image.batch_PSNR` / `calculate_ssim` on Y):
    Y = (16 + 65.481 r + 128.553 g + 24.966 b) / 255 from RGB in [0, 1], computed in float32,
    clipped to [0, 1], then `img_as_ubyte` (x·255 in float32, round half to even, uint8).
    PSNR with peak 255 and no border shave; SSIM with an 11x11 Gaussian window (σ 1.5),
    C1 = (0.01·255)², C2 = (0.03·255)², statistics over the valid region, mean of the map.

NIQE (Mittal et al. 2013) as the SR literature reports it: MATLAB's algorithm and pristine model
(the parameters shipped in resshift_jax/assets/niqe_pris_params.npz, from BasicSR, Apache-2.0),
on BasicSR's rounded Y, in float64 (see `niqe`); values agree with BasicSR's calculate_niqe.

Everything here is numpy (float64 where it matters); `psnr_y_jax` is a jit-able batched PSNR
for validation inside JAX programs.
"""

from __future__ import annotations

import functools
import math
import pathlib
import warnings

import numpy as np

from resshift_jax.data.matlab_resize import imresize_matrix

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
NIQE_PARAMS_PATH = pathlib.Path(__file__).resolve().parent / "assets" / "niqe_pris_params.npz"
NIQE_BLOCK = 96  # MATLAB's (and BasicSR's) block size, the one the pristine model was fitted with
_NIQE_Y_COEF_BGR = np.array([24.966, 128.553, 65.481])  # float64, B, G, R order: see niqe_y
_NIQE_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # H, V and the two diagonal neighbours


def niqe_params_path() -> pathlib.Path:
    """Path of the pristine NIQE model shipped in this package (MATLAB's parameters, taken
    unchanged from BasicSR: see resshift_jax/assets/NOTICE)."""
    if not NIQE_PARAMS_PATH.is_file():
        raise FileNotFoundError(f"NIQE pristine model not found at {NIQE_PARAMS_PATH} (package data missing?)")
    return NIQE_PARAMS_PATH


@functools.lru_cache(maxsize=None)
def niqe_pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36), window (7, 7)) float64: the pristine multivariate Gaussian and the
    smoothing window it was fitted with; read-only (cached)."""
    with np.load(niqe_params_path()) as z:
        mu = np.ravel(z["mu_pris_param"]).astype(np.float64)
        cov = np.array(z["cov_pris_param"], np.float64)
        window = np.array(z["gaussian_window"], np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36) or window.shape != (7, 7):
        raise ValueError(f"NIQE pristine model has shapes {mu.shape}, {cov.shape}, {window.shape}; "
                         "expected (36,), (36, 36), (7, 7)")
    for a in (mu, cov, window):
        a.setflags(write=False)
    return mu, cov, window


def niqe_y(img) -> np.ndarray:
    """The image NIQE is computed on, float64 (H, W) holding integers in [16, 235]: BT.601 Y of
    an RGB image (uint8, or float in [0, 1]) as BasicSR's calculate_niqe makes it, so that values
    are comparable with the SR literature: RGB/255 in float32, Y = B·24.966 + G·128.553 + R·65.481
    + 16 in float64, /255 stored as float32, ×255 in float32, rounded half to even.
    (It differs from `y_uint8` by one grey level for a few dozen colours whose exact Y lies within
    float32 error of a .5 tie, e.g. RGB (2, 221, 108), Y 138.500012: the rounding paths differ,
    hence NIQE's own Y.)"""
    x = to_float01(img)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"niqe_y: expected an (H, W, 3) RGB image, got shape {x.shape}")
    y = np.dot(x[..., ::-1], _NIQE_Y_COEF_BGR) + 16.0
    y = (y / 255.0).astype(np.float32) * np.float32(255.0)
    return np.round(y).astype(np.float64)


def niqe_window() -> np.ndarray:
    """MATLAB's fspecial('gaussian', 7, 7/6), float64 (7, 7), as stored with the pristine model
    (the window the model was fitted with; it equals the formula to 1e-16, and using the stored
    taps keeps the rounding of flat regions identical to BasicSR's, see `mscn`)."""
    return niqe_pristine_model()[2]


def mscn(img: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (NIQE eq. 1), float64 as MATLAB:
    (I - mu) / (sigma + 1) with mu, sigma from the 7x7 Gaussian window (σ 7/6), borders
    replicated (MATLAB imfilter 'replicate', scipy mode 'nearest'); sigma = sqrt|E[I²] - mu²|.

    The filter is the full 2-D 7x7 convolution (as BasicSR's), not two separable passes, on purpose: in flat
    regions I - mu is pure rounding noise whose signs feed the AGGD fits, so NIQE of images with
    flat areas depends on the summation order; the 2-D filter reproduces BasicSR's numbers there
    (separable passes, or the formula's taps, moved some RealSet65 images by up to 4 %)."""
    from scipy.ndimage import convolve  # scipy is imported only by the metric that needs it

    w = niqe_window()
    x = np.asarray(img, np.float64)
    mu = convolve(x, w, mode="nearest")
    sigma = np.sqrt(np.abs(convolve(x * x, w, mode="nearest") - mu * mu))
    return (x - mu) / (sigma + 1.0)


@functools.lru_cache(maxsize=None)
def _aggd_grid():
    """MATLAB's search grid alpha = 0.2:0.001:10 and rho(alpha) = Γ(2/α)² / (Γ(1/α) Γ(3/α))."""
    from scipy.special import gamma

    alphas = np.linspace(0.2, 10.0, 9801)
    return alphas, gamma(2.0 / alphas) ** 2 / (gamma(1.0 / alphas) * gamma(3.0 / alphas))


def _rms(v: np.ndarray) -> float:
    """Root mean square; NaN for an empty selection (MATLAB's mean of an empty vector)."""
    return float(np.sqrt(np.mean(v * v))) if v.size else float("nan")


def aggd_fit(x: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit by moment matching (MATLAB estimateaggdparam):
    (alpha, beta_left, beta_right). Left/right spreads use the strictly negative/positive values;
    alpha is the grid point nearest the normalised moment ratio. Degenerate input (no negative or
    no positive value, all zeros) gives NaN spreads and alpha = 0.2, as MATLAB's `min` over an
    all-NaN vector returns its first index."""
    from scipy.special import gamma

    x = np.ravel(np.asarray(x, np.float64))
    left, right = _rms(x[x < 0]), _rms(x[x > 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        g = left / right
        r = np.mean(np.abs(x)) ** 2 / np.mean(x * x)
        r_norm = r * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    alphas, rho = _aggd_grid()
    alpha = float(alphas[0] if np.isnan(r_norm) else alphas[np.argmin((rho - r_norm) ** 2)])
    scale = math.sqrt(gamma(1.0 / alpha) / gamma(3.0 / alpha))
    return alpha, left * scale, right * scale


def block_features(block: np.ndarray) -> np.ndarray:
    """The 18 NIQE features of one MSCN block, in the pristine model's order: the AGGD of the
    coefficients (alpha, (beta_l + beta_r)/2), then for each neighbour product (H, V, and the two
    diagonals, circular shifts of the block) (alpha, mean eta, beta_l, beta_r) with
    eta = (beta_r - beta_l) Γ(2/α) / Γ(1/α)."""
    from scipy.special import gamma

    alpha, bl, br = aggd_fit(block)
    feats = [alpha, (bl + br) / 2.0]
    for shift in _NIQE_SHIFTS:
        alpha, bl, br = aggd_fit(block * np.roll(block, shift, axis=(0, 1)))
        feats += [alpha, (br - bl) * gamma(2.0 / alpha) / gamma(1.0 / alpha), bl, br]
    return np.asarray(feats, np.float64)


def _blocks_features(m: np.ndarray, bs: int) -> np.ndarray:
    """(n_blocks, 18): features of the non-overlapping bs x bs blocks tiling `m` exactly."""
    h, w = m.shape
    return np.stack([block_features(m[i:i + bs, j:j + bs])
                     for i in range(0, h, bs) for j in range(0, w, bs)])


def _half_scale(img: np.ndarray) -> np.ndarray:
    """MATLAB imresize(img, 0.5): antialiased bicubic (a = -0.5), symmetric borders, float64."""
    h, w = img.shape
    return imresize_matrix(h, 0.5) @ img @ imresize_matrix(w, 0.5).T


def niqe_distance(feats: np.ndarray) -> float:
    """NIQE eq. 10 for per-block features (n, 36): sqrt(dᵀ pinv((cov_p + cov)/2) d), d = mu_p - mu,
    with MATLAB's NaN handling (nanmean over blocks; covariance over the blocks whose features are
    all finite, as nancov)."""
    mu_p, cov_p, _ = niqe_pristine_model()
    feats = np.asarray(feats, np.float64)
    complete = feats[~np.isnan(feats).any(axis=1)]
    if len(complete) < 2:
        raise ValueError(f"niqe: only {len(complete)} of {len(feats)} blocks have finite features "
                         "(flat blocks have none); the covariance needs at least 2")
    with warnings.catch_warnings():  # a feature NaN in every block stays NaN, as in MATLAB
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.nanmean(feats, axis=0)
    d = mu_p - mu
    cov = (cov_p + np.cov(complete, rowvar=False)) / 2.0
    return float(np.sqrt(d @ np.linalg.pinv(cov) @ d))


def niqe(y: np.ndarray, patch_size: int = NIQE_BLOCK) -> float:
    """NIQE (Mittal et al. 2013) of a luminance image (H, W) on [0, 255]; lower is more natural.

    MATLAB's algorithm and pristine model (as BasicSR/pyiqa reproduce it), in float64: crop to
    whole patch_size blocks (from the top-left), MSCN at full scale and at half scale (MATLAB
    imresize 0.5), 18 features per block at each scale (blocks of patch_size/2 at half scale,
    so 36 per block), then the distance of their Gaussian fit to the pristine one.
    Pass integer-valued Y (`niqe_y`, rounded as MATLAB's uint8 input) to compare with published
    numbers. Needs at least 2 whole blocks (an image of 96x192 or more with the default):
    with fewer the covariance is undefined (BasicSR fails there with a LinAlgError or, for no
    block at all, a ValueError), so this raises ValueError naming the size.
    """
    img = np.asarray(y)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 2:
        raise ValueError(f"niqe: expected a single-channel (H, W) image, got {img.shape}; use the Y channel")
    if patch_size < 2 or patch_size % 2:
        raise ValueError(f"niqe: patch_size must be even (halved at the second scale), got {patch_size}")
    h, w = img.shape
    nh, nw = h // patch_size, w // patch_size
    if nh * nw < 2:
        raise ValueError(f"niqe: image {h}x{w} too small: it holds {nh * nw} whole {patch_size}x{patch_size} "
                         f"block(s) and NIQE needs at least 2 (e.g. {patch_size}x{2 * patch_size})")
    img = img[: nh * patch_size, : nw * patch_size].astype(np.float64)
    f1 = _blocks_features(mscn(img), patch_size)
    f2 = _blocks_features(mscn(_half_scale(img)), patch_size // 2)
    return niqe_distance(np.hstack([f1, f2]))


def niqe_rgb(img) -> float:
    """NIQE of an RGB image (uint8, or float in [0, 1]) on its rounded Y (`niqe_y`), the
    convention of BasicSR's calculate_niqe(img, crop_border=0) and of published SR tables."""
    return niqe(niqe_y(img))
