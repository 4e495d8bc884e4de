"""Blur kernels of the Real-ESRGAN degradation (host side, float64 NumPy, as the reference).

Each generator returns a normalised (k, k) float64 kernel on the grid centred at zero
(x along columns, y along rows). `random_mixed_kernel` and `random_sinc_kernel` draw the
kernels of one training example from a `np.random.Generator` (spec §7).
"""

from __future__ import annotations

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


def sigma_matrix2(sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    """Covariance U diag(sig_x², sig_y²) Uᵀ, U the rotation by theta."""
    d = np.array([[sig_x ** 2, 0.0], [0.0, sig_y ** 2]])
    u = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return u @ d @ u.T


def _mahalanobis(kernel_size, sig_x, sig_y, theta, isotropic):
    grid = mesh_grid(kernel_size)
    if isotropic:
        sigma = np.array([[sig_x ** 2, 0.0], [0.0, sig_x ** 2]])
    else:
        sigma = sigma_matrix2(sig_x, sig_y, theta)
    inv = np.linalg.inv(sigma)
    return np.sum(np.dot(grid, inv) * grid, 2)


def bivariate_gaussian(kernel_size, sig_x, sig_y=None, theta=0.0, isotropic=True) -> np.ndarray:
    k = np.exp(-0.5 * _mahalanobis(kernel_size, sig_x, sig_y, theta, isotropic))
    return k / np.sum(k)


def bivariate_generalized_gaussian(kernel_size, sig_x, sig_y=None, theta=0.0, beta=1.0,
                                   isotropic=True) -> np.ndarray:
    k = np.exp(-0.5 * np.power(_mahalanobis(kernel_size, sig_x, sig_y, theta, isotropic), beta))
    return k / np.sum(k)


def bivariate_plateau(kernel_size, sig_x, sig_y=None, theta=0.0, beta=1.0, isotropic=True) -> np.ndarray:
    k = np.reciprocal(np.power(_mahalanobis(kernel_size, sig_x, sig_y, theta, isotropic), beta) + 1)
    return k / np.sum(k)


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


def _beta(rng: np.random.Generator, beta_range) -> float:
    # the reference draws beta below or above 1 with equal chance
    if rng.uniform() < 0.5:
        return rng.uniform(beta_range[0], 1)
    return rng.uniform(1, beta_range[1])


def random_mixed_kernel(rng: np.random.Generator, kernel_list, kernel_prob, kernel_size, sigma_range,
                        betag_range, betap_range, rotation_range=(-math.pi, math.pi)):
    """One random kernel of a type drawn from `kernel_list` with `kernel_prob` -> (kernel, type)."""
    p = np.asarray(kernel_prob, np.float64)
    ktype = kernel_list[int(rng.choice(len(kernel_list), p=p / p.sum()))]
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
    size = int(rng.choice(np.arange(3, max_size, 2)))
    if rng.uniform() < sinc_prob:
        lo = np.pi / 3 if size < 13 else np.pi / 5
        k = circular_lowpass_kernel(rng.uniform(lo, np.pi), size)
    else:
        k, _ = random_mixed_kernel(rng, kernel_list, kernel_prob, size, sigma_range, betag_range, betap_range)
    return pad_kernel(k, max_size)


def random_final_sinc(rng: np.random.Generator, *, size, final_sinc_prob) -> np.ndarray:
    """Final sinc kernel (size from range(3, size, 2), cutoff U[π/3, π], padded) or a pulse."""
    if rng.uniform() < final_sinc_prob:
        ks = int(rng.choice(np.arange(3, size, 2)))
        return circular_lowpass_kernel(rng.uniform(np.pi / 3, np.pi), ks, pad_to=size)
    pulse = np.zeros((size, size))
    pulse[size // 2, size // 2] = 1.0
    return pulse
