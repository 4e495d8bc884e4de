"""The sampler program (`condition_latent`, `super_resolve`) and SRPipeline against the reference
sampler runs (sampler_tiny_*.npz, vq_tiny_io.npz): tiny UNet + tiny VQ loaded from the
official-format .pth fixtures, every noise draw replayed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resshift_jax import SRPipeline, load_config, load_unet, load_vqgan
from resshift_jax.pipeline import condition_latent


def to_nhwc(a):
    a = np.asarray(a)
    return np.moveaxis(a, a.ndim - 3, -1)


def tiny_config(version):
    cfg = load_config("tiny")
    cfg.diffusion = load_config("realsr_v1" if version == "v1" else "realsr_v3").diffusion
    return cfg


@pytest.fixture(scope="module")
def models(fixtures_dir):
    cfg = load_config("tiny")
    return (load_unet(fixtures_dir / "unet_tiny.pth", cfg), load_vqgan(fixtures_dir / "vq_tiny.pth", cfg))


def test_condition_latent_is_encode_first_stage(models, fixtures_dir):
    """z_y = encode(bicubic_x4(y_lq)) * scale_factor, the reference's encode_first_stage(up_sample=True)
    (sampler_z_y of vq_tiny_io.npz); the training loss conditions through the same function."""
    io = np.load(fixtures_dir / "vq_tiny_io.npz")
    z_y = condition_latent(models[1], jnp.asarray(to_nhwc(io["sampler_y_lq"])), sf=4, scale_factor=1.0)
    assert z_y.dtype == jnp.float32
    # the fixture README's tolerance for vq_tiny_io's continuous outputs
    np.testing.assert_allclose(z_y, to_nhwc(io["sampler_z_y"]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["sampler_tiny_v1", "sampler_tiny_v3", "sampler_tiny_v3_padded"])
def test_pipeline_reproduces_reference_sampler(models, fixtures_dir, name):
    ref = dict(np.load(fixtures_dir / f"{name}.npz"))
    version = "v1" if name.endswith("v1") else "v3"
    pipe = SRPipeline(*models, tiny_config(version))
    assert pipe.padding_offset == 32
    T = pipe.schedule.num_timesteps
    lq = to_nhwc(ref["lq"])
    noise = to_nhwc(ref["noise"])
    assert noise.shape == (T + 1,) + pipe.latent_shape(lq.shape)
    out = pipe(lq, noise=noise, return_all=True)
    if "lq_padded" in ref:
        np.testing.assert_array_equal(out["lq_padded"], to_nhwc(ref["lq_padded"]))
    np.testing.assert_allclose(out["z_y"], to_nhwc(ref["z_y"]), atol=1e-4)
    for k in range(T + 1):
        np.testing.assert_allclose(out["x_t"][k], to_nhwc(ref["x_t"][k]), atol=5e-4, err_msg=f"x_t[{k}]")
    for k in range(T):
        np.testing.assert_allclose(out["pred_xstart"][k], to_nhwc(ref["net_out"][k]), atol=5e-4, err_msg=f"net_out[{k}]")
    vq = models[1]
    _, codes = vq.quantize(out["x_t"][-1])
    np.testing.assert_array_equal(np.asarray(codes), ref["z0_code_indices"])
    if "decoded" in ref:
        np.testing.assert_allclose(out["decoded"], to_nhwc(ref["decoded"]), atol=1e-3)
        np.testing.assert_allclose(out["image"], np.clip(to_nhwc(ref["decoded"]), -1, 1), atol=1e-3)
    if "output" in ref:
        assert out["image"].shape == to_nhwc(ref["output"]).shape
        np.testing.assert_allclose(out["image"], to_nhwc(ref["output"]), atol=1e-3)


def test_pipeline_deterministic_sampler_follows_the_config(models, fixtures_dir):
    """inference.noise_scale = 0 reaches the sampler inside the one program: on the fixture's
    v3 input the chain no longer depends on the step draws (only on the prior's), and it
    differs from the reference chain on the same draws (the fixture's output, which the parity
    test above reproduces within 1e-3; the two chains' outputs differ by up to 2.0, the whole
    range, here)."""
    ref = dict(np.load(fixtures_dir / "sampler_tiny_v3.npz"))
    lq, noise = to_nhwc(ref["lq"]), to_nhwc(ref["noise"]).astype(np.float32)
    cfg = tiny_config("v3")
    cfg.inference.noise_scale = 0.0
    pipe = SRPipeline(*models, cfg)
    out = np.asarray(pipe(lq, noise=noise))
    moved = noise.copy()
    moved[1:] = np.random.default_rng(9).normal(size=moved[1:].shape)
    np.testing.assert_array_equal(np.asarray(pipe(lq, noise=moved)), out)
    assert np.abs(np.clip(to_nhwc(ref["decoded"]), -1, 1) - out).max() > 1e-2


def test_pipeline_key_mode_is_per_image_and_reproducible(models):
    pipe = SRPipeline(*models, tiny_config("v3"))
    rng = np.random.default_rng(3)
    lq = rng.uniform(-1, 1, (2, 20, 28, 3)).astype(np.float32)
    key = jax.random.key(7)
    a = np.asarray(pipe(lq, key=key))
    assert a.shape == (2, 80, 112, 3) and a.min() >= -1 and a.max() <= 1
    np.testing.assert_array_equal(a, np.asarray(pipe(lq, key=key)))
    # image 1 alone with its own key gives the same result as inside the batch
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(2))
    solo = np.asarray(pipe(lq[1:], key=keys[1:]))
    np.testing.assert_allclose(solo[0], a[1], atol=1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        pipe(lq)
    with pytest.raises(ValueError, match=r"\(B, h, w, 3\)"):
        pipe(lq[0], key=key)


def test_key_mode_draws_only_the_noise_it_uses(models):
    """An early stop or the deterministic sampler reads only the first `used` of the T+1 draws;
    key mode generates just those (exactly the full draw's first ones: partitionable threefry)
    and gives the images of the full draw replayed. The noise values are equal bit for bit; the
    two programs may fuse the float32 sampler arithmetic differently (~1e-7 relative per
    operation through 4 steps and the decoder), so 1e-5 as the batch-vs-solo bound above."""
    import dataclasses

    from resshift_jax.pipeline import per_image_noise
    cfg = tiny_config("v3")
    cfg.inference.x0_after, used = 1, 2  # the prior and the first step's draw
    pipe = SRPipeline(*models, cfg)
    assert pipe.spec.draws_used == used
    assert dataclasses.replace(pipe.spec, x0_after=0).draws_used == 5  # the whole chain: T + 1
    assert dataclasses.replace(pipe.spec, x0_after=2, noise_scale=0.0).draws_used == 1  # deterministic
    lq = np.random.default_rng(4).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    keys = jax.random.split(jax.random.key(11), 2)
    shape = pipe.latent_shape(lq.shape)
    full = np.asarray(per_image_noise(keys, shape, 4))
    part = np.asarray(per_image_noise(keys, shape, 4, used=used))
    np.testing.assert_array_equal(part[:used], full[:used])
    assert part.shape == full.shape and not part[used:].any()
    np.testing.assert_allclose(np.asarray(pipe(lq, key=keys)), np.asarray(pipe(lq, noise=full)), rtol=0, atol=1e-5)
