"""The pure train step: reference lr schedule, mesh independence of the losses, NaN guard, EMA, the
LPIPS term through the frozen decoder (the TPU compile-only check is in test_compile_check)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _train_cfg import ONE_STEP_RTOL, U32, get_config
from flax import nnx
from resshift_jax import schedule as schedule_lib
from resshift_jax import sharding as shd
from resshift_jax.train import optim
from resshift_jax.train.input import build_row_dataset
from resshift_jax.train.networks import build_models
from resshift_jax.train.step import accum_steps_for, area_downsample, check_train_sizes, make_loss_fn
from resshift_jax.train.trainer import Trainer
from tests.test_lpips import reference_lpips
from tests.test_train_networks import lpips_config, lpips_files

GB = 16  # global batch: 2 micro-batches of 8, so every mesh of 8 devices gets whole rows


def test_reference_lr_schedule():
    # The schedule is evaluated in float32: step counts < 2^24 are exact, each of the few
    # operations rounds by u, and near the end 1 + cos(φ) is ~0 with an absolute error ~u, which
    # (lr − lr_min)·u makes relative ~1e-7 of lr_min: rel 1e-6 (16 u) everywhere (approx's default).
    kw = dict(lr=5e-5, lr_min=2e-5, warmup=5000, iterations=400000)
    f = lambda s, sch: float(optim.reference_lr(s, schedule=sch, **kw))  # noqa: E731
    assert f(0, "cosin") == pytest.approx(5e-5)  # iteration 1 uses the full base lr (reference quirk)
    assert f(1, "cosin") == pytest.approx(5e-5 / 5000)
    assert f(2500, "cosin") == pytest.approx(2.5e-5)
    assert f(5000, "cosin") == pytest.approx(5e-5)
    t_max = 400000 - 5000
    want = 2e-5 + 3e-5 * 0.5 * (1 + math.cos(math.pi * 100000 / t_max))
    assert f(105000, "cosin") == pytest.approx(want)
    assert f(399999, "cosin") == pytest.approx(2e-5 + 3e-5 * 0.5 * (1 + math.cos(math.pi * 394999 / t_max)))
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
    # the same 8-bit quantisation of a 16-pixel mean in float32 and float64: k/255 both, up to
    # the float32 rounding of k/255 (≤ 6e-8); atol 1e-6 is far below one level (3.9e-3)
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


def _trainer(cfg, nets, shape):
    mesh = shd.make_mesh(shape, devices=jax.devices()[: shape[0] * shape[1]])
    return Trainer(cfg, mesh, nets, accum_steps=2)


def _step(tr, state, batch):
    """One step -> (state, [loss, grad norm], lr); every row of the global batch seen once."""
    state, m = tr.train_step(state, shd.global_batch_from_local(tr.mesh, batch, GB))
    assert bool(m["finite"]) and float(m["count_t"].sum()) == GB
    return state, np.array([float(m["loss"]), float(m["grad_norm"])]), float(m["lr"])


def _leaves64(tree):
    return [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)]


def adam_alignment(p0, p1, mu, lr: float) -> float:
    """−⟨θ1 − θ0, m⟩ / (lr·‖m‖₁) for the first Adam update, m = (1−β1)·g its first moment.
    Adam's first step is θ1 − θ0 = −lr·g/(|g| + ε) ≈ −lr·sign(g), so this is 1 − O(ε/|g|): it
    checks the update's size and direction, while a component whose |g| is at rounding level
    (whose sign, and so whose lr-sized update, depends on the reduction order) weighs |g| ≈ 0."""
    num = sum(float(np.dot(a1 - a0, m)) for a1, a0, m in zip(_leaves64(p1), _leaves64(p0), _leaves64(mu)))
    return -num / (lr * sum(float(np.abs(m).sum()) for m in _leaves64(mu)))


def test_meshes_agree_and_guard(setup):
    """Every mesh computes the reference mesh's step: step 1 from the initial state, step 2 from
    the reference's state after step 1 (resharded), each compared as one step. Parameters after a
    step are not compared elementwise (Adam's first update is ~lr·sign(g): rounding-level
    gradients give lr-sized differences), the update through `adam_alignment`."""
    cfg, nets, batches = setup
    host = lambda t: jax.tree.map(np.asarray, t)  # noqa: E731
    tr1 = _trainer(cfg, nets, (1, 1))
    s0 = tr1.init_state()
    p0 = host(s0.params)
    s1, ref1, lr = _step(tr1, s0, batches[0])
    s1_host = host(s1)
    mu_ref = optax.tree_utils.tree_get(s1_host.opt_state, "mu")  # scale_by_adam: (1 − β1)·g
    align_ref = adam_alignment(p0, s1_host.params, mu_ref, lr)
    # |g|/(|g| + ε) ≤ 1, and ≥ 0.99 unless most of ‖g‖₁ sits in components below ~100 ε
    assert 0.99 < align_ref <= 1 + 1e-6, align_ref
    s2, ref2, _ = _step(tr1, s1, batches[1])
    assert np.all(np.isfinite([ref1, ref2])) and ref1[0] > 0
    # θ1 − θ0 is read from float32 θ1 (rounded by ≤ u·|θ1|), so each mesh's alignment carries
    # ≤ u·max|θ1|/lr of rounding; the gradients' own spread (one-step bound) adds the rest.
    align_rtol = 2 * U32 * max(np.abs(x).max() for x in _leaves64(s1_host.params)) / lr + ONE_STEP_RTOL
    # both axes > 1, parameters sharded 4 ways: the gradient all-reduce over `data` and the FSDP
    # gathers and reduce-scatters over `fsdp` in one program. (Pure data parallelism, (8, 1), is
    # train.py's default layout: test_train_loop compares it across 1 and 2 processes; (8, 1) and
    # (4, 2) were left out here to keep the suite short, each ~50 s of compiling.)
    for shape in [(2, 4)]:
        tr = _trainer(cfg, nets, shape)
        s, got1, _ = _step(tr, tr.init_state(), batches[0])
        np.testing.assert_allclose(got1, ref1, rtol=ONE_STEP_RTOL, atol=0, err_msg=f"mesh {shape} step 1 (loss, grad norm)")
        np.testing.assert_allclose(adam_alignment(p0, host(s.params), mu_ref, lr), align_ref, rtol=align_rtol,
                                   atol=0, err_msg=f"mesh {shape}: first update")
        _, got2, _ = _step(tr, jax.device_put(s1_host, tr.state_shardings), batches[1])
        np.testing.assert_allclose(got2, ref2, rtol=ONE_STEP_RTOL, atol=0,
                                   err_msg=f"mesh {shape} step 2 from the reference's state (loss, grad norm)")
    assert int(s2.step) == 2
    # EMA: ema = 0.999 ema + 0.001 θ from the initial weights -> close to, but not at, θ
    leaf = lambda t: np.asarray(jax.tree.leaves(t)[0])  # noqa: E731
    assert 0 < np.abs(leaf(s2.ema_params) - leaf(s2.params)).max()
    # NaN/Inf guard on the same compiled step: the update is skipped and counted, and the EMA
    # still moves toward the unchanged parameters (the reference updates it every iteration)
    params, ema, opt = host((s2.params, s2.ema_params, s2.opt_state))
    bad = {"hr": np.full_like(batches[0]["hr"], np.nan)}
    s3, m = tr1.train_step(s2, shd.global_batch_from_local(tr1.mesh, bad, GB))
    assert not bool(m["finite"]) and int(s3.bad_steps) == 1 and int(s3.bad_streak) == 1 and int(s3.step) == 3
    after = host((s3.params, s3.opt_state))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves((params, opt)), jax.tree.leaves(after)))
    rate = float(cfg.train.ema_rate)
    moved = False
    for e, p, got in zip(_leaves64(ema), _leaves64(params), _leaves64(s3.ema_params)):
        a, b = rate * e, (1 - rate) * p
        # float32 rate·e + (1 − rate)·θ against float64: the two constants, two products and the
        # sum round by u each (an FMA only removes one): ≤ 4 u·(|rate·e| + |(1 − rate)·θ|)
        assert np.all(np.abs(got - (a + b)) <= 4 * U32 * (np.abs(a) + np.abs(b))), "EMA after a skipped step"
        moved |= bool(np.any(got != e))
    assert moved, "the EMA stayed frozen on a skipped step"
    s4, m = tr1.train_step(s3, shd.global_batch_from_local(tr1.mesh, batches[0], GB))
    assert bool(m["finite"]) and int(s4.bad_streak) == 0 and int(s4.bad_steps) == 1


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
    # x̂0 is the UNet's prediction of the encoded HR latent. The same float32 operations on the
    # same values, possibly fused in another order: a few u per element of z0, a 768-term mean of
    # squares of O(1) differences (z0 − x̂0 is not small at initialisation) -> ~20 u; rtol 1e-4
    # leaves a wide margin, while another target (z_y, an unscaled or unencoded HR) is off by O(1).
    np.testing.assert_allclose(aux["mse"], np.mean((np.asarray(z0) - np.asarray(aux["pred_zstart"])) ** 2,
                                                   axis=(1, 2, 3)), rtol=1e-4)
    # the LPIPS of its decoded, clamped image against HR, with the weights from the files. float32
    # VGG16 against the float64 NumPy forward: 13 convolutions with contractions of ≤ 4608 terms,
    # ~sqrt(K)·u ≈ 70 u each, compounding to ~sqrt(13)·70 u ≈ 1.5e-5 on the features; LPIPS is a
    # mean of squared differences of O(1) normalised features (x̂0 and HR differ): ~3e-5 < 1e-4.
    np.testing.assert_allclose(aux["lpips"], reference_lpips(bb, hd, "vgg", np.asarray(x_pred), np.asarray(hr)),
                               rtol=1e-4)
    assert float(aux["lpips"].min()) > 0
    # a mean of 2 per-sample sums of positive float32 terms, float32 vs float64: ≤ 3 u; rel 1e-6 = 16 u
    assert float(loss) == pytest.approx(float(np.mean(aux["weighted"] + 0.5 * aux["lpips"])), rel=1e-6)
    # the term's gradient reaches the UNet (the decoder is frozen, not a stop_gradient); at
    # initialisation the zero-initialised output layers pass it only to some leaves
    flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(g_lpips)}
    assert all(np.isfinite(v).all() for v in flat.values())
    nonzero = sorted(k for k, v in flat.items() if np.abs(v).max() > 0)
    assert "['input_blocks'][0][0]['kernel']" in nonzero and len(nonzero) > len(flat) / 2, nonzero


def _grad_alignment(g, g_ref) -> float:
    """⟨g, g_ref⟩ / ‖g_ref‖²: 1 when g = g_ref; float32 rounding of the entries (a few u of the
    terms summed into each) moves it by ~u, while a missing or extra term moves it by O(1)."""
    num = sum(float(np.dot(a, b)) for a, b in zip(_leaves64(g), _leaves64(g_ref)))
    return num / sum(float(np.dot(b, b)) for b in _leaves64(g_ref))


def test_nan_lpips_falls_back_to_mse(fixtures_dir, tmp_path):
    """A micro-batch whose LPIPS has a NaN trains on its MSE loss alone, as the reference: the
    loss and the gradient are finite and equal the MSE-only objective's (no 0·NaN reaches the
    gradient through the VGG backward pass)."""
    cfg = lpips_config(fixtures_dir, tmp_path / "absent_vgg16.pth", tmp_path / "absent_heads.pth", coef=0.5)
    nets = build_models(cfg, strict_lpips=False)  # random LPIPS weights, made NaN below
    nan_frozen = {**nets.frozen, "lpips": jax.tree.map(lambda x: np.full_like(x, np.nan), nets.frozen["lpips"])}
    mse_cfg = lpips_config(fixtures_dir, tmp_path / "absent_vgg16.pth", tmp_path / "absent_heads.pth", coef=0.0)
    mse_nets = build_models(mse_cfg)  # same seed: the same UNet and VQ
    sched = schedule_lib.from_config(cfg.diffusion)
    rng = np.random.default_rng(1)
    hr = jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
    lq, key = area_downsample(hr, 4), jax.random.key(7)
    with_lpips = jax.jit(jax.value_and_grad(make_loss_fn(cfg, nets, sched), has_aux=True))
    mse_only = jax.jit(jax.value_and_grad(make_loss_fn(mse_cfg, mse_nets, sched), has_aux=True))
    (loss_nan, aux_nan), g_nan = with_lpips(nets.unet_params, nan_frozen, hr, lq, key)
    (loss_mse, _), g_mse = mse_only(mse_nets.unet_params, mse_nets.frozen, hr, lq, key)
    (loss_lp, aux_lp), _ = with_lpips(nets.unet_params, nets.frozen, hr, lq, key)
    assert np.all(np.asarray(aux_nan["lpips"]) == 0) and float(np.min(aux_lp["lpips"])) > 0
    assert all(np.isfinite(x).all() for x in _leaves64(g_nan)), "NaN reached the gradient"
    # the same MSE objective in two programs: reduction order only (see _train_cfg.ONE_STEP_RTOL)
    np.testing.assert_allclose(float(loss_nan), float(loss_mse), rtol=ONE_STEP_RTOL)
    np.testing.assert_allclose(_grad_alignment(g_nan, g_mse), 1.0, rtol=ONE_STEP_RTOL)
    assert float(loss_lp) > float(loss_mse) * (1 + 1e-3)  # finite LPIPS: the term is there


def test_encoder_runs_in_float32_under_amp(fixtures_dir):
    """Under `train.use_amp` the UNet and the decoder compute in bfloat16 but the frozen encoder
    (regression target z0, conditioning z_y) in `train.encoder_dtype`, float32 by default."""
    cfg = get_config()
    cfg.train.use_amp = True
    cfg.autoencoder.ckpt_path = str(fixtures_dir / "vq_tiny.pth")
    nets = build_models(cfg)
    hr = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
    lq, key = area_downsample(hr, 4), jax.random.key(3)
    loss_fn = make_loss_fn(cfg, nets, schedule_lib.from_config(cfg.diffusion))

    @jax.jit
    def run(params, frozen):
        _, aux = loss_fn(params, frozen, hr, lq, key)
        z32 = nnx.merge(nets.vq_encoder_def, frozen["vq"]).encode(hr).astype(jnp.float32)
        z16 = nnx.merge(nets.vq_def, frozen["vq"]).encode(hr).astype(jnp.float32)
        mse = lambda z: jnp.mean((z - aux["pred_zstart"]) ** 2, axis=(1, 2, 3))  # noqa: E731
        return aux["mse"], mse(z32), mse(z16), jnp.sqrt(jnp.mean((z16 - z32) ** 2) / jnp.mean(z32 ** 2))

    got, want32, want16, rel16 = (np.asarray(x) for x in run(nets.unet_params, nets.frozen))
    assert rel16 > 1e-3  # bf16 rounds the latent at ~2^-9 relative: the two encodings differ
    # float32 target: the same float32 operations, fused perhaps in another order (a few u per
    # element, a 768-term mean): 128 u; a bfloat16 target would be off by ~rel16 (> 1e-3).
    np.testing.assert_allclose(got, want32, rtol=ONE_STEP_RTOL)
    assert np.all(np.abs(got - want16) > 10 * ONE_STEP_RTOL * np.abs(want32))
    dtype_of = lambda graphdef: nnx.merge(graphdef, nets.vq_state).dtype  # noqa: E731
    assert dtype_of(nets.vq_encoder_def) == jnp.float32 and dtype_of(nets.vq_def) == jnp.bfloat16
    cfg.train.encoder_dtype = "bfloat16"  # the config choice is honoured
    assert dtype_of(build_models(cfg, abstract=True).vq_encoder_def) == jnp.bfloat16
    cfg.train.encoder_dtype = "float16"
    with pytest.raises(ValueError, match="encoder_dtype"):
        build_models(cfg, abstract=True)
