"""Parity of the blur/sinc kernels, filter2D, USM, DiffJPEG and MATLAB imresize with degradations.npz."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from resshift_jax.data import kernels, ops
from resshift_jax.data.jpeg import diff_jpeg
from resshift_jax.data.matlab_resize import imresize, imresize_np


@pytest.fixture(scope="module")
def z(fixtures_dir):
    return np.load(fixtures_dir / "degradations.npz")


@pytest.fixture(scope="module")
def P(z):
    return json.loads(str(z["params_json"]))


def nhwc(a):
    return jnp.asarray(a.transpose(0, 2, 3, 1))


def nchw(a):
    return np.asarray(a).transpose(0, 3, 1, 2)


GEN = {"bivariate_Gaussian": kernels.bivariate_gaussian,
       "bivariate_generalized_Gaussian": kernels.bivariate_generalized_gaussian,
       "bivariate_plateau": kernels.bivariate_plateau}


@pytest.mark.parametrize("name", ["kernel_iso_gaussian", "kernel_iso_gaussian_k7", "kernel_aniso_gaussian",
                                  "kernel_generalized_iso", "kernel_generalized_aniso",
                                  "kernel_plateau_iso", "kernel_plateau_aniso"])
def test_bivariate_kernels(z, P, name):
    p = P[name]
    extra = {"beta": p["beta"]} if "beta" in p else {}
    k = GEN[p["function"]](p["kernel_size"], p["sig_x"], p["sig_y"], p["theta"], isotropic=p["isotropic"], **extra)
    assert k.dtype == np.float64 and k.shape == z[name].shape
    np.testing.assert_allclose(k, z[name], rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", ["kernel_sinc_k21", "kernel_sinc_k9_pad21", "kernel_sinc_k13_pad15"])
def test_sinc_kernels(z, P, name):
    p = P[name]
    k = kernels.circular_lowpass_kernel(p["cutoff"], p["kernel_size"], p["pad_to"])
    np.testing.assert_allclose(k, z[name], rtol=1e-10, atol=0)


def test_mahalanobis_closed_form_matches_inverse():
    rng = np.random.default_rng(0)
    for size in (3, 7, 21):
        for _ in range(20):
            sx, sy, th = rng.uniform(0.2, 3), rng.uniform(0.2, 3), rng.uniform(-np.pi, np.pi)
            u = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
            inv = np.linalg.inv(u @ np.diag([sx ** 2, sy ** 2]) @ u.T)
            g = kernels.mesh_grid(size)
            want = np.sum(np.dot(g, inv) * g, 2)
            np.testing.assert_allclose(kernels._mahalanobis(size, sx, sy, th, False), want, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(kernels._mahalanobis(size, sx, None, 0.0, True),
                                       np.sum(g * g, 2) / sx ** 2, rtol=1e-12)


def test_fast_draws_match_generator_choice():
    """draw_choice / draw_odd_size give rng.choice's values and leave the stream where it does."""
    probs = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    for seed in range(300):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        p = np.asarray(probs) / np.sum(probs)
        assert kernels.draw_choice(a, probs) == b.choice(len(probs), p=p)
        assert kernels.draw_odd_size(a, 21) == b.choice(np.arange(3, 21, 2))
        assert a.random() == b.random()
    with pytest.raises(ValueError, match="non-negative"):
        kernels.draw_choice(np.random.default_rng(0), (0.5, -0.1))


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("which", ["shared", "per_image"])
def test_filter2d(z, which, method):
    out = ops.filter2d(nhwc(z["image"]), jnp.asarray(z[f"filter2d_kernel_{which}"]), method=method)
    np.testing.assert_allclose(nchw(out), z[f"filter2d_out_{which}"], atol=1e-5, rtol=0)


def test_filter2d_on_canvas(z):
    """Valid region of a zero-padded canvas gives the same result; outside stays zero."""
    x = jnp.pad(nhwc(z["image"]), ((0, 0), (0, 9), (0, 5), (0, 0)))
    hw = jnp.array([[40, 44], [40, 44]], jnp.int32)
    out = ops.filter2d(x, jnp.asarray(z["filter2d_kernel_per_image"]), hw)
    np.testing.assert_allclose(nchw(out[:, :40, :44]), z["filter2d_out_per_image"], atol=1e-5, rtol=0)
    assert float(jnp.abs(out[:, 40:]).max()) == 0 and float(jnp.abs(out[:, :, 44:]).max()) == 0


def test_usm(z):
    np.testing.assert_allclose(ops.usm_kernel(50), z["usm_kernel"], rtol=1e-6, atol=1e-9)
    out = ops.usm_sharp(nhwc(z["image"]), weight=0.5, threshold=10, radius=50)
    np.testing.assert_allclose(nchw(out), z["usm_out"], atol=1e-5, rtol=0)


def test_diffjpeg_per_image_quality(z):
    out = diff_jpeg(nhwc(z["jpeg_in"]), jnp.asarray(z["jpeg_quality"]))
    np.testing.assert_allclose(nchw(out), z["jpeg_out"], atol=1e-5, rtol=0)


def test_diffjpeg_scalar_quality(z):
    out = diff_jpeg(nhwc(z["image"]), 70)
    np.testing.assert_allclose(nchw(out), z["jpeg_out_scalar_q70"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", [0.25, 0.5])
def test_matlab_imresize(z, scale):
    img = z["image"][0].transpose(1, 2, 0)
    out = np.asarray(imresize(jnp.asarray(img), scale)).transpose(2, 0, 1)
    np.testing.assert_allclose(out, z[f"imresize_x{scale}"], atol=1e-5, rtol=0)


def test_imresize_np_util_image(z):
    img = z["image"][0].transpose(1, 2, 0)
    out = imresize_np(img, 0.25).transpose(2, 0, 1)
    np.testing.assert_allclose(out, z["imresize_np_util_image_x0.25"], atol=1e-5, rtol=0)
