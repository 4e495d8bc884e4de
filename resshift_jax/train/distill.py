"""One-step distillation of a ResShift teacher, SinSR-style (Wang et al., CVPR 2024): the
objective of `train.objective = "distill"`, used by the same trainer (sharding, accumulation,
EMA, checkpoints, validation, export) through `step.make_loss_fn`.

The teacher (a frozen copy of the UNet's starting weights, `distill.teacher_ckpt`) runs the
deterministic sampler (`diffusion.sample(noise_scale=0)`) from x_T = y + κ√η_T ε to x̂0_teacher:
a fixed map (x_T, y) -> x̂0. The student (the trained UNet, initialised from the teacher) is one
network evaluation at the last timestep, f(x_T) = x̂0 at t = T−1, which is what
`inference.x0_after = 1` runs. Three per-sample MSE terms in the latent space, averaged over
H, W, C (SinSR's `training_losses_distill` with its configs/SinSR.yaml flags, all weights 1,
`distill.coef`):

    distill   ‖f(x_T) − x̂0_teacher‖²                        the student learns the teacher's map
    inverse   ‖g(x̂0_teacher) − x_T‖²                        the same network, asked for x_T back
    gt        ‖f(sg(g(z0))) − z0‖²                           consistency on the real HR latent z0

g is the student network called at network timestep 0 with its input normalised as at t = T−1
(SinSR's inverse: the same weights, the timestep embedding tells the two directions apart); sg
is stop-gradient, so the gt term trains only the forward call, on the x_T the student itself
assigns to the real image: the student is not bounded by the teacher's outputs.

Where this follows SinSR and where not:
- Same: the teacher's deterministic sampler and its coefficients (`diffusion.generalized_step`
  at s = 0), student and inverse as one network, the timesteps (T−1 forward, 0 inverse), the
  three terms and their weights, MSE in the latent space, no LPIPS, the student and its EMA
  starting from the teacher's weights.
- Different: the network outputs go through the config's prediction type (`predict_xstart`), so
  a residual-predicting compact model stays residual (its inverse predicts x_T as y − output;
  SinSR's networks predict x0 and x_T directly). The teacher's sampler can be given a noise
  scale above 0 (`distill.teacher_noise_scale`; SinSR: 0). The optimiser, schedule and EMA are
  the config's `train` section (SinSR: AdamW 5e-5 with 5000 warm-up steps, EMA 0.999).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from resshift_jax import diffusion
from resshift_jax.pipeline import training_latents

TERMS = ("distill", "inverse", "gt")


def _per_sample_mse(a, b):
    return jnp.mean(jnp.square(a - b), axis=tuple(range(1, a.ndim)))


def make_distill_loss_fn(cfg, nets, sched):
    """loss(params, frozen, hr, lq, key) -> (mean loss, aux) for one micro-batch; aux as the
    diffusion objective's (t = T−1 for every sample, mse = the distill term) plus `terms`, the
    batch means of TERMS. The teacher is `frozen["teacher"]`."""
    if sched.predict_type not in ("xstart", "residual"):
        raise ValueError(f"distillation needs a network predicting x0 or the residual, not {sched.predict_type!r}")
    sf = int(cfg.diffusion.sf)
    scale_factor = float(cfg.diffusion.scale_factor)
    coef = tuple(float(c) for c in cfg.distill.coef)
    if len(coef) != len(TERMS):
        raise ValueError(f"distill.coef needs {len(TERMS)} weights {TERMS}, got {coef}")
    teacher_scale = float(cfg.distill.teacher_noise_scale)
    T = sched.num_timesteps

    def loss_fn(params, frozen, hr, lq, key):
        student = nnx.merge(nets.unet_def, params, frozen["unet_rest"])
        teacher = nnx.merge(nets.unet_def, frozen["teacher"], frozen["unet_rest"])
        vq = nnx.merge(nets.vq_encoder_def, frozen["vq"])
        m = hr.shape[0]
        z0, z_y = training_latents(vq, hr, lq, sf=sf, scale_factor=scale_factor)
        k_prior, k_steps = jax.random.split(key)
        eps = jax.random.normal(k_prior, z_y.shape, jnp.float32)
        steps = (jax.random.normal(k_steps, (T,) + z_y.shape, jnp.float32) if teacher_scale > 0
                 else jnp.zeros((T,) + z_y.shape, jnp.float32))
        t_last = jnp.full((m,), T - 1, jnp.int32)
        x_T = diffusion.prior_sample(sched, z_y, eps)
        f_student = diffusion.float32_denoiser(student)

        z_teacher = jax.lax.stop_gradient(diffusion.sample(
            sched, diffusion.float32_denoiser(teacher), z_y, lq, noise=jnp.concatenate([eps[None], steps]),
            noise_scale=teacher_scale))

        def forward(x):  # x_T -> x̂0: one evaluation at t = T−1
            return diffusion.predict(sched, f_student, x, z_y, t_last, lq)

        def inverse(x0):  # x̂0 -> x̂_T: the same network at network timestep 0, input scaled as at T−1
            out = f_student(diffusion.scale_input(sched, x0, t_last), jnp.zeros((m,), jnp.int32), lq)
            return diffusion.predict_xstart(sched, out, x0, z_y, t_last)

        pred = forward(x_T)
        terms = (_per_sample_mse(pred, z_teacher),
                 _per_sample_mse(inverse(z_teacher), x_T),
                 _per_sample_mse(forward(jax.lax.stop_gradient(inverse(z0))), z0))
        per_sample = sum(c * v for c, v in zip(coef, terms))
        aux = dict(mse=terms[0], weighted=per_sample, lpips=jnp.zeros((m,), jnp.float32), t=t_last,
                   pred_zstart=pred, terms=jnp.stack([jnp.mean(v) for v in terms]))
        return jnp.mean(per_sample), aux

    loss_fn.term_names = TERMS
    return loss_fn
