"""Blur kernels of the Real-ESRGAN degradation (host side, float64 NumPy, as the reference).

Each generator returns a normalised (k, k) float64 kernel on the grid centred at zero
(x along columns, y along rows). `random_mixed_kernel` and `random_sinc_kernel` draw the
kernels of one training example from a `np.random.Generator` (spec §7).
"""

from __future__ import annotations

import bisect
import functools
import math

import numpy as np
from scipy import special

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


@functools.lru_cache(maxsize=64)
def mesh_grid(kernel_size: int) -> np.ndarray:
    """(k, k, 2) grid of (x, y) offsets from the centre (cached, read-only)."""
    ax = np.arange(-kernel_size // 2 + 1.0, kernel_size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    g = np.stack([xx, yy], axis=-1)
    g.flags.writeable = False
    return g


@functools.lru_cache(maxsize=64)
def _radius_grid(kernel_size: int) -> np.ndarray:
    c = (kernel_size - 1) / 2
    x, y = np.meshgrid(np.arange(kernel_size), np.arange(kernel_size), indexing="ij")
    r = np.sqrt((x - c) ** 2 + (y - c) ** 2)
    r.flags.writeable = False
    return r


@functools.lru_cache(maxsize=64)
def _quadratic_grids(kernel_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x², 2xy and y² on the kernel grid (cached, read-only)."""
    g = mesh_grid(kernel_size)
    out = (g[..., 0] ** 2, 2 * g[..., 0] * g[..., 1], g[..., 1] ** 2)
    for a in out:
        a.flags.writeable = False
    return out


def _mahalanobis(kernel_size, sig_x, sig_y, theta, isotropic):
    """pᵀ Σ⁻¹ p on the grid, Σ⁻¹ = U diag(sig_x⁻², sig_y⁻²) Uᵀ in closed form (a per-example
    hot path: ~5x cheaper than inverting Σ and contracting the (k, k, 2) grid)."""
    xx, xy2, yy = _quadratic_grids(kernel_size)
    if isotropic:
        return (xx + yy) * (1.0 / sig_x ** 2)
    c, s = math.cos(theta), math.sin(theta)
    ix, iy = 1.0 / sig_x ** 2, 1.0 / sig_y ** 2
    return (c * c * ix + s * s * iy) * xx + (c * s * (ix - iy)) * xy2 + (s * s * ix + c * c * iy) * yy


def _normalised(k: np.ndarray) -> np.ndarray:
    k /= k.sum()
    return k


def bivariate_gaussian(kernel_size, sig_x, sig_y=None, theta=0.0, isotropic=True) -> np.ndarray:
    q = _mahalanobis(kernel_size, sig_x, sig_y, theta, isotropic)
    return _normalised(np.exp(np.multiply(q, -0.5, out=q), out=q))


def bivariate_generalized_gaussian(kernel_size, sig_x, sig_y=None, theta=0.0, beta=1.0,
                                   isotropic=True) -> np.ndarray:
    q = np.power(_mahalanobis(kernel_size, sig_x, sig_y, theta, isotropic), beta)
    return _normalised(np.exp(np.multiply(q, -0.5, out=q), out=q))


def bivariate_plateau(kernel_size, sig_x, sig_y=None, theta=0.0, beta=1.0, isotropic=True) -> np.ndarray:
    q = np.power(_mahalanobis(kernel_size, sig_x, sig_y, theta, isotropic), beta)
    return _normalised(np.reciprocal(np.add(q, 1, out=q), out=q))


def circular_lowpass_kernel(cutoff: float, kernel_size: int, pad_to: int = 0) -> np.ndarray:
    """2-D sinc (jinc) low-pass filter, zero-padded to `pad_to` when that is larger."""
    if kernel_size % 2 != 1:
        raise ValueError(f"sinc kernel size must be odd, got {kernel_size}")
    r = _radius_grid(kernel_size)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    k[(kernel_size - 1) // 2, (kernel_size - 1) // 2] = cutoff ** 2 / (4 * np.pi)
    k = k / np.sum(k)
    return pad_kernel(k, pad_to) if pad_to > kernel_size else k


def pad_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a (k, k) kernel to (size, size), centred."""
    p = (size - kernel.shape[0]) // 2
    if p <= 0:
        return kernel
    out = np.zeros((size, size), kernel.dtype)
    out[p:p + kernel.shape[0], p:p + kernel.shape[1]] = kernel
    return out


@functools.lru_cache(maxsize=64)
def choice_cdf(probs: tuple) -> tuple:
    """The cumulative distribution `Generator.choice(n, p=probs / sum(probs))` searches (cached)."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 1 or p.size == 0 or (p < 0).any() or not p.sum() > 0:
        raise ValueError(f"probabilities must be non-negative with a positive sum, got {probs}")
    cdf = (p / p.sum()).cumsum()
    return tuple(cdf / cdf[-1])


def draw_choice(rng: np.random.Generator, probs) -> int:
    """Index i with probability probs[i]: the value and stream use of `rng.choice(len(probs),
    p=probs / sum(probs))`, without its per-call validation and array overhead."""
    return bisect.bisect_right(choice_cdf(tuple(probs)), rng.random())


def draw_odd_size(rng: np.random.Generator, stop: int) -> int:
    """A kernel size from range(3, stop, 2): the value and stream use of `rng.choice(np.arange(3, stop, 2))`."""
    return 3 + 2 * int(rng.integers(0, len(range(3, stop, 2))))


def _beta(rng: np.random.Generator, beta_range) -> float:
    # the reference draws beta below or above 1 with equal chance
    if rng.uniform() < 0.5:
        return rng.uniform(beta_range[0], 1)
    return rng.uniform(1, beta_range[1])


def random_mixed_kernel(rng: np.random.Generator, kernel_list, kernel_prob, kernel_size, sigma_range,
                        betag_range, betap_range, rotation_range=(-math.pi, math.pi)):
    """One random kernel of a type drawn from `kernel_list` with `kernel_prob` -> (kernel, type)."""
    if len(kernel_prob) != len(kernel_list):
        raise ValueError(f"kernel_prob {kernel_prob} does not match kernel_list {kernel_list}")
    ktype = kernel_list[draw_choice(rng, kernel_prob)]
    iso = not ktype.endswith("aniso")
    sig_x = rng.uniform(*sigma_range)
    if iso:
        sig_y, theta = sig_x, 0.0
    else:
        sig_y = rng.uniform(*sigma_range)
        theta = rng.uniform(*rotation_range)
    if ktype in ("iso", "aniso"):
        k = bivariate_gaussian(kernel_size, sig_x, sig_y, theta, isotropic=iso)
    elif ktype.startswith("generalized"):
        k = bivariate_generalized_gaussian(kernel_size, sig_x, sig_y, theta, _beta(rng, betag_range), iso)
    elif ktype.startswith("plateau"):
        k = bivariate_plateau(kernel_size, sig_x, sig_y, theta, _beta(rng, betap_range), iso)
    else:
        raise ValueError(f"unknown kernel type {ktype!r}; expected one of {KERNEL_TYPES}")
    return k, ktype


def random_blur_kernel(rng: np.random.Generator, *, max_size, kernel_list, kernel_prob, sigma_range,
                       betag_range, betap_range, sinc_prob) -> np.ndarray:
    """The dataset's kernel1/kernel2: size from range(3, max_size, 2), sinc with `sinc_prob`
    (cutoff U[π/3, π] for size < 13 else U[π/5, π]), else a mixed kernel; padded to max_size."""
    size = draw_odd_size(rng, max_size)
    if rng.uniform() < sinc_prob:
        lo = np.pi / 3 if size < 13 else np.pi / 5
        k = circular_lowpass_kernel(rng.uniform(lo, np.pi), size)
    else:
        k, _ = random_mixed_kernel(rng, kernel_list, kernel_prob, size, sigma_range, betag_range, betap_range)
    return pad_kernel(k, max_size)


def random_final_sinc(rng: np.random.Generator, *, size, final_sinc_prob) -> np.ndarray:
    """Final sinc kernel (size from range(3, size, 2), cutoff U[π/3, π], padded) or a pulse."""
    if rng.uniform() < final_sinc_prob:
        ks = draw_odd_size(rng, size)
        return circular_lowpass_kernel(rng.uniform(np.pi / 3, np.pi), ks, pad_to=size)
    pulse = np.zeros((size, size))
    pulse[size // 2, size // 2] = 1.0
    return pulse
