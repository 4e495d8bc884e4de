"""The pure train step: reference lr schedule, mesh independence of the losses, NaN guard, EMA, the
LPIPS term through the frozen decoder, and the compile-only check for a small TPU slice."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _train_cfg import get_config
from flax import nnx
from resshift_jax import schedule as schedule_lib
from resshift_jax import sharding as shd
from resshift_jax.train import optim
from resshift_jax.train.input import build_row_dataset
from resshift_jax.train.models import build_models
from resshift_jax.train.step import Trainer, accum_steps_for, area_downsample, check_train_sizes, make_loss_fn
from tests.test_lpips import reference_lpips
from tests.test_train_models import lpips_config, lpips_files

GB = 16  # global batch: 2 micro-batches of 8, so every mesh of 8 devices gets whole rows


def test_reference_lr_schedule():
    kw = dict(lr=5e-5, lr_min=2e-5, warmup=5000, iterations=400000)
    f = lambda s, sch: float(optim.reference_lr(s, schedule=sch, **kw))  # noqa: E731
    assert f(0, "cosin") == pytest.approx(5e-5)  # iteration 1 uses the full base lr (reference quirk)
    assert f(1, "cosin") == pytest.approx(5e-5 / 5000)
    assert f(2500, "cosin") == pytest.approx(2.5e-5)
    assert f(5000, "cosin") == pytest.approx(5e-5)
    t_max = 400000 - 5000
    want = 2e-5 + 3e-5 * 0.5 * (1 + math.cos(math.pi * 100000 / t_max))
    assert f(105000, "cosin") == pytest.approx(want, rel=1e-5)
    assert f(399999, "cosin") == pytest.approx(2e-5, rel=1e-3)
    assert f(105000, "") == pytest.approx(5e-5)  # v1/v2: constant after warmup
    with pytest.raises(ValueError, match="lr_schedule"):
        optim.reference_lr(0, schedule="linear", **kw)


def test_accum_steps_and_sizes():
    cfg = get_config()
    cfg.train.batch, cfg.train.microbatch = (96, 8), 12
    assert accum_steps_for(cfg, 1) == 8 and accum_steps_for(cfg, 8) == 1 and accum_steps_for(cfg, 4) == 2
    cfg.train.batch = (64, 8)
    cfg.train.microbatch = 8
    assert accum_steps_for(cfg, 2) == 4
    check_train_sizes(get_config())
    bad = get_config()
    bad.data.train.gt_size = 48
    with pytest.raises(ValueError, match="gt_size=48"):
        check_train_sizes(bad)
    hr = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)), jnp.float32)
    lq = area_downsample(hr, 4)
    assert lq.shape == (2, 2, 2, 3)
    np.testing.assert_allclose(np.asarray(lq) * 0.5 + 0.5,
                               np.round((np.asarray(hr).reshape(2, 2, 4, 2, 4, 3).mean((2, 4)) * 0.5 + 0.5) * 255) / 255,
                               atol=1e-6)


@pytest.fixture(scope="module")
def setup():
    cfg = get_config()
    cfg.train.batch = (GB, 2)
    nets = build_models(cfg)
    it = iter(build_row_dataset(cfg, GB, slice(0, GB), seed=0))  # real crops; LQ: area x1/4 in the step
    return cfg, nets, [{"hr": next(it)["hr"] * 2 - 1} for _ in range(2)]


def _run(cfg, nets, batches, shape):
    mesh = shd.make_mesh(shape, devices=jax.devices()[: shape[0] * shape[1]])
    tr = Trainer(cfg, mesh, nets, accum_steps=2)
    state = tr.init_state()
    losses = []
    for b in batches:
        state, m = tr.train_step(state, shd.global_batch_from_local(mesh, b, GB))
        losses.append((float(m["loss"]), float(m["grad_norm"])))
        assert bool(m["finite"]) and float(m["count_t"].sum()) == GB
    return tr, state, np.array(losses)


def test_meshes_agree_and_guard(setup):
    cfg, nets, batches = setup
    tr1, s1, ref = _run(cfg, nets, batches, (1, 1))
    assert np.all(np.isfinite(ref)) and ref[0, 0] > 0
    # (params are not compared: Adam's first steps are ~lr·sign(g), so float-level differences
    # in near-zero gradients show up as lr-sized parameter differences)
    for shape in [(8, 1), (4, 2), (2, 4)]:
        _, s, losses = _run(cfg, nets, batches, shape)
        np.testing.assert_allclose(losses, ref, rtol=2e-5, atol=0, err_msg=f"mesh {shape} (loss, grad norm)")
    assert int(s1.step) == 2
    # EMA: ema = 0.999 ema + 0.001 θ from the initial weights -> close to, but not at, θ
    leaf = lambda t: np.asarray(jax.tree.leaves(t)[0])  # noqa: E731
    assert 0 < np.abs(leaf(s1.ema_params) - leaf(s1.params)).max()
    # NaN/Inf guard on the same compiled step: the update is skipped and counted
    before = jax.tree.map(np.asarray, (s1.params, s1.ema_params, s1.opt_state))
    bad = {"hr": np.full_like(batches[0]["hr"], np.nan)}
    s2, m = tr1.train_step(s1, shd.global_batch_from_local(tr1.mesh, bad, GB))
    assert not bool(m["finite"]) and int(s2.bad_steps) == 1 and int(s2.bad_streak) == 1 and int(s2.step) == 3
    after = jax.tree.map(np.asarray, (s2.params, s2.ema_params, s2.opt_state))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    s3, m = tr1.train_step(s2, shd.global_batch_from_local(tr1.mesh, batches[0], GB))
    assert bool(m["finite"]) and int(s3.bad_streak) == 0 and int(s3.bad_steps) == 1


def test_lpips_term_through_the_frozen_decoder(fixtures_dir, tmp_path):
    """v3/bicsr objective: c_mse·w_t·mse + c_lpips·LPIPS(clamp(decode(x̂0)), HR), with LPIPS
    weights from .pth files and its gradient reaching the UNet through the frozen decoder."""
    bb, hd, vgg, heads = lpips_files(tmp_path)
    cfg = lpips_config(fixtures_dir, vgg, heads, coef=0.5)
    nets = build_models(cfg)
    sched = schedule_lib.from_config(cfg.diffusion)
    loss_fn = make_loss_fn(cfg, nets, sched)
    rng = np.random.default_rng(0)
    hr = jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
    lq, key = area_downsample(hr, 4), jax.random.key(5)
    s = float(cfg.diffusion.scale_factor)

    @jax.jit
    def run(params, frozen, hr, lq, key):
        def lpips_part(p):  # the term alone, differentiated through decoder and quantiser
            loss, aux = loss_fn(p, frozen, hr, lq, key)
            return jnp.mean(aux["lpips"]), (loss, aux)
        g_lpips, (loss, aux) = jax.grad(lpips_part, has_aux=True)(params)
        vq = nnx.merge(nets.vq_def, frozen["vq"])
        z0 = vq.encode(hr) * s
        x_pred = jnp.clip(vq.decode(aux["pred_zstart"] / s, quantize=True), -1, 1)
        return loss, aux, g_lpips, z0, x_pred

    loss, aux, g_lpips, z0, x_pred = run(nets.unet_params, nets.frozen, hr, lq, key)
    # x̂0 is the UNet's prediction of the encoded HR latent
    np.testing.assert_allclose(aux["mse"], np.mean((np.asarray(z0) - np.asarray(aux["pred_zstart"])) ** 2,
                                                   axis=(1, 2, 3)), rtol=1e-4)
    # the LPIPS of its decoded, clamped image against HR, with the weights from the files
    np.testing.assert_allclose(aux["lpips"], reference_lpips(bb, hd, "vgg", np.asarray(x_pred), np.asarray(hr)),
                               rtol=1e-4)
    assert float(aux["lpips"].min()) > 0
    assert float(loss) == pytest.approx(float(np.mean(aux["weighted"] + 0.5 * aux["lpips"])), rel=1e-6)
    # the term's gradient reaches the UNet (the decoder is frozen, not a stop_gradient); at
    # initialisation the zero-initialised output layers pass it only to some leaves
    flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(g_lpips)}
    assert all(np.isfinite(v).all() for v in flat.values())
    nonzero = sorted(k for k, v in flat.items() if np.abs(v).max() > 0)
    assert "['input_blocks'][0][0]['kernel']" in nonzero and len(nonzero) > len(flat) / 2, nonzero


# ~75 s on 2 cores; skipped only where libtpu is absent (CI installs it: requirements-test.txt)
def test_tpu_compile_only_tiny():
    """Lower + compile the train step and the sampler for a 4-chip TPU v5e slice from this CPU."""
    pytest.importorskip("libtpu")
    from resshift_jax.train import compile_check
    rep = compile_check.check(get_config(), topology="v5e:2x2", mesh_shape=(2, 2), batch=8)
    assert rep["devices"] == 4 and rep["mesh"] == {"data": 2, "fsdp": 2}
    for prog in ("train", "infer"):
        assert 0 < rep[prog]["peak_per_chip_gib"] < 16, rep  # v5e: 16 GiB HBM per chip
