"""resize.py: torch-exact bicubic (F.interpolate(mode='bicubic'), align_corners=False) against the
reference's own upsamplings in the fixtures, and the interpolation matrix's invariants."""

import jax.numpy as jnp
import numpy as np
import pytest

from resshift_jax.resize import bicubic_matrix, bicubic_upsample


def nhwc(a):
    return jnp.asarray(np.moveaxis(a, 1, -1))


def nchw(a):
    return np.moveaxis(np.asarray(a), -1, 1)


def test_upsample_matches_torch_in_the_training_loss(fixtures_dir):
    """diffusion_ops.npz: the x4 upsampling of the loss's LR input (bicubic_up_y_lq)."""
    ops = np.load(fixtures_dir / "diffusion_ops.npz")
    ours = nchw(bicubic_upsample(nhwc(ops["train_y_lq"]), 4))
    # each output is 16 taps (4x4) with float64 weights rounded to float32 and HIGHEST-precision
    # matmuls: ~16 roundings of O(1) values (6e-8 each) -> ~1e-6 worst case; 1e-5 is 10x above
    np.testing.assert_allclose(ours, ops["bicubic_up_y_lq"], atol=1e-5, rtol=1e-5)


def test_upsample_matches_torch_in_the_sampler(fixtures_dir):
    """vq_tiny_io.npz: sampler_y_up, the encoder input of encode_first_stage(up_sample=True)."""
    io = np.load(fixtures_dir / "vq_tiny_io.npz")
    ours = nchw(bicubic_upsample(nhwc(io["sampler_y_lq"]), 4))
    assert ours.shape == io["sampler_y_up"].shape
    # the fixture README's tolerance for vq_tiny_io's continuous outputs (same 16-tap argument as
    # above gives ~1e-6; this fixture was recorded with the autoencoder's looser bound)
    np.testing.assert_allclose(ours, io["sampler_y_up"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("n_in,n_out,scale", [(8, 32, 4.0), (7, 9, None), (40, 23, None), (5, 5, None)])
def test_matrix_rows_are_a_partition_of_unity(n_in, n_out, scale):
    """Keys' weights sum to one for every fraction and clamped taps keep their weight, so a
    constant image stays constant (no brightness drift at the borders); size-preserving is identity."""
    m = bicubic_matrix(n_in, n_out, scale)
    assert m.shape == (n_out, n_in)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=0, atol=1e-12)  # float64 sums of 4 weights
    if n_in == n_out:
        np.testing.assert_array_equal(m, np.eye(n_in))  # frac 0: weights exactly (0, 1, 0, 0)
