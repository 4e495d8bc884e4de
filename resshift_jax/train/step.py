"""The pure train step: `train_step(state, batch) -> (state, metrics)`.

Objective of the reference (spec §3, §7): the frozen VQ encoder maps the HR image to x0 and the
bicubic-upsampled LR image to y inside the step; t ~ p_t (uniform officially); per-sample
x0-prediction MSE in latent space times w_t (`diffusion.loss_weighting`); optionally + LPIPS of
the decoded prediction (straight-through quantiser, clamp to [−1, 1]) against HR, weighted by
`train.loss_coef`; a micro-batch whose LPIPS has a NaN falls back to the MSE loss, as the
reference. The global batch is split into `accum_steps` micro-batches run by `lax.scan`
(gradients averaged, as the reference's loss/num_accumulate); a NaN/Inf gradient or loss skips
the update (params and moments unchanged, counted) while the EMA still moves toward the unchanged
parameters, as the reference's EMA after a step its AMP scaler skipped.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from flax import nnx

from resshift_jax import diffusion, schedule as schedule_lib, sharding as shd
from resshift_jax.models.first_stage import latent_factor
from resshift_jax.pipeline import training_latents
from resshift_jax.train import state as state_lib
from resshift_jax.train.distill import make_distill_loss_fn
from resshift_jax.train.networks import distilling, lpips_coef, use_lpips
from resshift_jax.train.optim import lr_fn_from_config, make_optimizer


def accum_steps_for(cfg, num_batch_shards: int) -> int:
    """Micro-batches per step. The reference splits the per-GPU batch (batch/num_gpus) into
    chunks of `microbatch`; here one micro-batch is spread over all batch shards, so
    accum = batch / (microbatch · shards), at least 1. `train.accum_steps` overrides it."""
    b = int(cfg.train.batch[0])
    if cfg.train.accum_steps:
        n = int(cfg.train.accum_steps)
    else:
        n = max(1, b // (int(cfg.train.microbatch) * num_batch_shards))
    while b % n or (b // n) % num_batch_shards:
        n -= 1  # the largest count that keeps micro-batches whole and evenly sharded
        if n < 1:
            raise ValueError(f"train.batch[0]={b} is not divisible by the {num_batch_shards} "
                             "batch shards of the mesh")
    return n


def check_train_sizes(cfg) -> None:
    """The HR crop must give a latent every UNet level of which is a multiple of the Swin window."""
    gt = int(cfg.data.train.gt_size)
    f = latent_factor(cfg)
    need = int(cfg.model.window_size) * 2 ** (len(cfg.model.channel_mult) - 1) * f
    sf = int(cfg.diffusion.sf)
    if gt % need or gt % sf:
        raise ValueError(f"data.train.gt_size={gt} must be a multiple of {need} (VQ factor {f} x Swin "
                         f"window {cfg.model.window_size} x 2^(UNet levels-1)) and of sf={sf}; "
                         f"e.g. {max(need, need * round(gt / need))}")


def area_downsample(hr, sf: int):
    """LQ = mean over sf×sf blocks (INTER_AREA for integer factors), quantised to 8 bits as the
    reference's degradation pipeline ends: clamp(round(x·255), 0, 255)/255 on [0, 1] images."""
    b, h, w, c = hr.shape
    lq = hr.reshape(b, h // sf, sf, w // sf, sf, c).mean(axis=(2, 4))
    lq01 = jnp.clip(jnp.round((lq * 0.5 + 0.5) * 255.0), 0, 255) / 255.0
    return lq01 * 2.0 - 1.0


def _split_micro(x, n: int):
    """(B, ...) -> (n, B/n, ...); micro-batch k holds rows k, k+n, ... so every device keeps its
    own rows (no data movement for a batch sharded over its leading dimension)."""
    m = x.shape[0] // n
    return jnp.swapaxes(x.reshape((m, n) + x.shape[1:]), 0, 1)


def lpips_dropping_nan(lpips_fn):
    """`x, aux -> lpips_fn(x, aux)` (per-sample values) for one micro-batch, except that a
    micro-batch with any NaN value gets 0 and an exactly-zero gradient, so its loss is the MSE
    term alone (the reference's fallback). A `where` on the value alone is not enough: its zero
    cotangent meets the NaN Jacobians of the VGG backward pass (0·NaN = NaN), so the cotangent
    of `x` is selected too. `aux` (frozen weights, HR) gets no gradient."""

    @jax.custom_vjp
    def f(x, aux):
        lp = lpips_fn(x, aux)
        return jnp.where(jnp.any(jnp.isnan(lp)), jnp.zeros_like(lp), lp)

    def fwd(x, aux):
        lp, vjp = jax.vjp(lambda x_: lpips_fn(x_, aux), x)
        nan = jnp.any(jnp.isnan(lp))
        return jnp.where(nan, jnp.zeros_like(lp), lp), (vjp, nan, aux)

    def bwd(res, ct):
        vjp, nan, aux = res
        (ct_x,) = vjp(jnp.where(nan, jnp.zeros_like(ct), ct))
        return jnp.where(nan, jnp.zeros_like(ct_x), ct_x), jax.tree.map(jnp.zeros_like, aux)

    f.defvjp(fwd, bwd)
    return f


def make_loss_fn(cfg, nets, sched):
    """loss(params, frozen, hr, lq, key) -> (mean loss, aux) for one micro-batch: ResShift's
    objective, or with `train.objective = "distill"` the one-step distillation
    (`train.distill`); a loss with named extra terms carries `term_names` and aux["terms"]."""
    if distilling(cfg):
        return make_distill_loss_fn(cfg, nets, sched)
    sf = int(cfg.diffusion.sf)
    scale_factor = float(cfg.diffusion.scale_factor)
    coef = tuple(float(c) for c in cfg.train.loss_coef)
    c_mse, c_lpips = coef[0], lpips_coef(cfg)
    with_lpips = use_lpips(cfg)

    def lpips_of(x_pred, aux):
        lp_state, hr = aux
        return nnx.merge(nets.lpips_def, lp_state)(x_pred, hr).astype(jnp.float32).reshape(hr.shape[0])

    lpips_term = lpips_dropping_nan(lpips_of)

    def loss_fn(params, frozen, hr, lq, key):
        unet = nnx.merge(nets.unet_def, params, frozen["unet_rest"])
        vq = nnx.merge(nets.vq_encoder_def, frozen["vq"])  # the frozen encoder, train.encoder_dtype
        k_t, k_noise = jax.random.split(key)
        m = hr.shape[0]
        z0, z_y = training_latents(vq, hr, lq, sf=sf, scale_factor=scale_factor)
        t = diffusion.sample_timesteps(sched, k_t, m)
        noise = jax.random.normal(k_noise, z0.shape, jnp.float32)
        out = diffusion.training_losses(sched, diffusion.float32_denoiser(unet), z0, z_y, t, lq, noise)
        per_sample = c_mse * out["loss"]
        lp = jnp.zeros((m,), jnp.float32)
        if with_lpips:
            decoder = nnx.merge(nets.vq_def, frozen["vq"])  # compute dtype, as the UNet
            x_pred = decoder.decode(out["pred_zstart"] / scale_factor, quantize=True).astype(jnp.float32)
            lp = lpips_term(jnp.clip(x_pred, -1.0, 1.0), (frozen["lpips"], hr))  # 0 if any NaN
            per_sample = per_sample + c_lpips * lp
        aux = dict(mse=out["mse"], weighted=out["loss"], lpips=lp, t=t, pred_zstart=out["pred_zstart"])
        return jnp.mean(per_sample), aux

    return loss_fn


@dataclasses.dataclass(frozen=True)
class StepFn:
    """The pure (un-jitted) step `fn(state, frozen, batch) -> (state, metrics)`, with the number
    of micro-batches it scans over, the optax transformation its state holds and the names of
    the objective's extra terms (metrics["terms"], in this order; none for ResShift's)."""
    fn: Callable
    accum_steps: int
    tx: optax.GradientTransformation
    term_names: tuple = ()

    def __call__(self, state, frozen, batch):
        return self.fn(state, frozen, batch)


def make_step_fn(cfg, nets, mesh, *, accum_steps: int | None = None, lr_fn=None, tx=None) -> StepFn:
    """The pure step of `cfg` on `mesh` (see `StepFn`)."""
    sched = schedule_lib.from_config(cfg.diffusion)
    T = sched.num_timesteps
    tx = tx or make_optimizer(cfg.train)
    lr_fn = lr_fn or lr_fn_from_config(cfg.train)
    n_acc = accum_steps or accum_steps_for(cfg, shd.batch_size_divisor(mesh))
    ema_rate = float(cfg.train.ema_rate)
    sf = int(cfg.diffusion.sf)
    loss_fn = make_loss_fn(cfg, nets, sched)
    n_terms = len(getattr(loss_fn, "term_names", ()))
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    micro_sharding = NamedSharding(mesh, P(None, tuple(a for a in shd.BATCH_AXES if a in mesh.axis_names)))

    def step_fn(state: state_lib.TrainState, frozen, batch):
        hr = batch["hr"].astype(jnp.float32)
        lq = batch["lq"].astype(jnp.float32) if "lq" in batch else area_downsample(hr, sf)
        hr_m = jax.lax.with_sharding_constraint(_split_micro(hr, n_acc), micro_sharding)
        lq_m = jax.lax.with_sharding_constraint(_split_micro(lq, n_acc), micro_sharding)
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        def micro(carry, xs):
            grads, loss_sum, sums, counts, lp_sum, terms = carry
            k, hr_k, lq_k = xs
            (loss, aux), g = grad_fn(state.params, frozen, hr_k, lq_k, jax.random.fold_in(key, k))
            grads = jax.tree.map(lambda a, b: a + b / n_acc, grads, g)
            sums = sums.at[aux["t"]].add(aux["mse"])
            counts = counts.at[aux["t"]].add(1.0)
            terms = terms + aux["terms"] / n_acc if n_terms else terms
            return (grads, loss_sum + loss / n_acc, sums, counts, lp_sum + jnp.mean(aux["lpips"]) / n_acc,
                    terms), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((T,), jnp.float32),
                jnp.zeros((T,), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((n_terms,), jnp.float32))
        if n_acc == 1:  # no loop: on XLA:CPU the convolutions of a while-loop body (scan, even
            # unrolled) ran 17x slower (compact UNet, 34 s vs 2 s per step; measured for issue 13)
            (grads, loss, mse_sum_t, count_t, lp, terms), _ = micro(init, (jnp.int32(0), hr_m[0], lq_m[0]))
        else:
            (grads, loss, mse_sum_t, count_t, lp, terms), _ = jax.lax.scan(
                micro, init, (jnp.arange(n_acc), hr_m, lq_m))

        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        lr = lr_fn(state.step)
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
        params = keep(jax.tree.map(lambda p, u: p - lr * u, state.params, updates), state.params)
        new_state = state.replace(
            params=params,
            opt_state=keep(new_opt, state.opt_state),
            # every iteration, skipped or not: toward the unchanged parameters after a skip
            ema_params=state_lib.ema_update(state.ema_params, params, ema_rate),
            step=state.step + 1,
            bad_steps=state.bad_steps + (~finite).astype(jnp.int32),
            bad_streak=jnp.where(finite, 0, state.bad_streak + 1).astype(jnp.int32),
        )
        metrics = dict(loss=loss, lpips=lp, grad_norm=grad_norm, lr=lr, finite=finite,
                       mse_sum_t=mse_sum_t, count_t=count_t, terms=terms,
                       bad_steps=new_state.bad_steps, bad_streak=new_state.bad_streak)
        return new_state, metrics

    return StepFn(step_fn, n_acc, tx, tuple(getattr(loss_fn, "term_names", ())))


def jit_train_step(step_fn, state_shardings, frozen_shardings, mesh, *, donate: bool = True):
    """jax.jit with explicit in/out shardings; the state is donated."""
    rep = shd.replicated(mesh)
    return jax.jit(step_fn,
                   in_shardings=(state_shardings, frozen_shardings, shd.batch_sharding(mesh, 1)),
                   out_shardings=(state_shardings, rep),
                   donate_argnums=(0,) if donate else ())
