"""Residual-shifting diffusion, pure functions (NHWC, batch first, t = 0-based index (B,)).

    forward     x_t = x0 + η_t (y − x0) + κ √η_t ε
    posterior   q(x_{t−1} | x_t, x0) = N((η_{t−1}/η_t) x_t + (α_t/η_t) x0,  κ² (η_{t−1}/η_t) α_t)
    prior       x_T = y + κ √η_T ε
    loss        w_t ‖f_θ(x_t, y0, t) − x0‖²
    scaled step x_{t−1} = x0 + η_{t−1}(y − x0) + c_t (x_t − x0 − η_t (y − x0)) + σ_t z  (noise scale s;
                s = 1 is the posterior above, s = 0 SinSR's deterministic sampler: `generalized_step`)

Every coefficient is gathered from the float64 table and cast to float32, as the reference does.
A denoiser is any function `(x_in, t_net, lq) -> model_output`, where x_in is the normalised
x_t and t_net the original (un-respaced) integer timestep.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from resshift_jax.schedule import Schedule

Denoiser = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _at(table: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """table[t] for timesteps t (B,), shaped (B, 1, ..., 1) to broadcast against (B, ...) of rank ndim."""
    values = table[t]
    return values.reshape(values.shape + (1,) * (ndim - 1))


def extract(schedule: Schedule, name: str, t: jax.Array, ndim: int = 4) -> jax.Array:
    """Table `name` at timesteps t (B,), float32, shaped (B, 1, ..., 1) for broadcasting."""
    return _at(schedule.f32(name), t, ndim)


def float32_denoiser(unet):
    """The network as the sampler and the objectives call it, `(x_in, t, lq) -> output`, with the
    output in float32 whatever the compute dtype (bfloat16 under AMP)."""
    return lambda x_in, t, cond: unet(x_in, t, cond).astype(jnp.float32)


def q_mean_variance(s: Schedule, x0, y, t):
    """Mean, variance and log-variance of q(x_t | x0, y)."""
    eta = extract(s, "etas", t, x0.ndim)
    mean = eta * (y - x0) + x0
    variance = jnp.broadcast_to(eta * s.kappa ** 2, x0.shape)
    return mean, variance, jnp.log(variance)


def q_sample(s: Schedule, x0, y, t, noise):
    """x_t = x0 + η_t (y − x0) + κ √η_t ε."""
    return extract(s, "etas", t, x0.ndim) * (y - x0) + x0 + extract(s, "kappa_sqrt_etas", t, x0.ndim) * noise


def q_posterior_mean_variance(s: Schedule, x0, x_t, t):
    """Mean, variance and clipped log-variance of q(x_{t−1} | x_t, x0)."""
    mean = extract(s, "posterior_mean_coef1", t, x_t.ndim) * x_t + extract(s, "posterior_mean_coef2", t, x_t.ndim) * x0
    variance = jnp.broadcast_to(extract(s, "posterior_variance", t, x_t.ndim), x_t.shape)
    log_variance = jnp.broadcast_to(extract(s, "posterior_log_variance_clipped", t, x_t.ndim), x_t.shape)
    return mean, variance, log_variance


def scale_input_latent(s: Schedule, x_t, t):
    """x_t / sqrt(κ² η_t + 1): the latent variance grows to about κ²η_t + 1."""
    return x_t / jnp.sqrt(extract(s, "etas", t, x_t.ndim) * s.kappa ** 2 + 1)


def scale_input_pixel(s: Schedule, x_t, t):
    """x_t / (3 κ √η_t + 1): the pixel-space variant (not used by the SR configs)."""
    return x_t / (extract(s, "sqrt_etas", t, x_t.ndim) * s.kappa * 3 + 1)


def scale_input(s: Schedule, x_t, t):
    """The network input normalisation of the config (`normalize_input`, `latent_flag`)."""
    if not s.normalize_input:
        return x_t
    return scale_input_latent(s, x_t, t) if s.latent_flag else scale_input_pixel(s, x_t, t)


def predict_xstart(s: Schedule, model_output, x_t, y, t):
    """x̂0 from the network output for each prediction type of the reference."""
    nd = x_t.ndim
    if s.predict_type == "xstart":
        return model_output
    if s.predict_type == "residual":
        return y - model_output
    if s.predict_type == "epsilon":
        return ((x_t - extract(s, "sqrt_etas", t, nd) * s.kappa * model_output - extract(s, "etas", t, nd) * y)
                / extract(s, "one_minus_etas", t, nd))
    if s.predict_type == "epsilon_scale":
        return (x_t - model_output - extract(s, "etas", t, nd) * y) / extract(s, "one_minus_etas", t, nd)
    raise ValueError(f"unknown predict_type {s.predict_type!r}")


def network_timesteps(s: Schedule, t):
    """The original timestep the network sees (respacing's timestep_map), int32."""
    return jnp.asarray(s.timestep_map, jnp.int32)[t]


def predict(s: Schedule, denoiser: Denoiser, x_t, y, t, lq, clip_denoised: bool = False):
    """x̂0 = the denoiser's prediction of x0 from x_t (one call)."""
    model_output = denoiser(scale_input(s, x_t, t), network_timesteps(s, t), lq)
    pred_xstart = predict_xstart(s, model_output.astype(x_t.dtype), x_t, y, t)
    return jnp.clip(pred_xstart, -1, 1) if clip_denoised else pred_xstart


def p_mean_variance(s: Schedule, denoiser: Denoiser, x_t, y, t, lq, clip_denoised: bool = False):
    """Mean/variance of p(x_{t−1} | x_t) and x̂0; calls the denoiser once."""
    pred_xstart = predict(s, denoiser, x_t, y, t, lq, clip_denoised)
    mean, _, _ = q_posterior_mean_variance(s, pred_xstart, x_t, t)
    variance = jnp.broadcast_to(extract(s, "posterior_variance", t, x_t.ndim), x_t.shape)
    log_variance = jnp.broadcast_to(extract(s, "posterior_log_variance_clipped", t, x_t.ndim), x_t.shape)
    return dict(mean=mean, variance=variance, log_variance=log_variance, pred_xstart=pred_xstart)


def reverse_step(mean, log_variance, t, noise):
    """x_{t−1} = mean + 1[t≠0] exp(½ log σ²_t) z (no noise at t = 0)."""
    nonzero = (t != 0).astype(mean.dtype).reshape((-1,) + (1,) * (mean.ndim - 1))
    return mean + nonzero * jnp.exp(0.5 * log_variance) * noise


def p_sample(s: Schedule, denoiser: Denoiser, x_t, y, t, lq, noise, clip_denoised: bool = False):
    """One reverse step; returns dict(sample, pred_xstart, mean)."""
    out = p_mean_variance(s, denoiser, x_t, y, t, lq, clip_denoised)
    sample = reverse_step(out["mean"], out["log_variance"], t, noise)
    return dict(sample=sample, pred_xstart=out["pred_xstart"], mean=out["mean"])


def generalized_step(s: Schedule, pred_xstart, x_t, y, t, noise, noise_scale: float):
    """x_{t−1} from x_t and x̂0 with noise scale s in [0, 1] (SinSR's deterministic sampler at 0).

    Derivation (ResShift's notation: η_t, α_t = η_t − η_{t−1}, κ; the DDIM construction applied
    to the residual shift, as SinSR does). The marginals q(x_t | x0, y) = N(x0 + η_t(y −
    x0), κ²η_t I) of the forward chain are kept by any reverse kernel of the form
        x_{t−1} = x0 + η_{t−1}(y − x0) + √(κ²η_{t−1} − σ_t²) · ε_t + σ_t z,
        ε_t = (x_t − x0 − η_t(y − x0)) / (κ√η_t)   (the standardised noise of x_t),
    for every σ_t² ≤ κ²η_{t−1}: given x0, ε_t ~ N(0, I) under q(x_t | x0, y), and the two
    Gaussian terms add to variance κ²η_{t−1}, so x_{t−1} has the marginal of step t−1. ResShift's
    posterior q(x_{t−1} | x_t, x0) is the member σ_t² = κ² α_t η_{t−1}/η_t: then
    √(κ²η_{t−1} − σ_t²) = κ η_{t−1}/√η_t and the mean reduces to (η_{t−1}/η_t) x_t + (α_t/η_t) x0.
    The noise scale s sets σ_t = s · √(κ² α_t η_{t−1}/η_t): s = 1 is the ResShift chain, s = 0
    the deterministic step x_{t−1} = x0 + η_{t−1}(y − x0) + √(η_{t−1}/η_t)(x_t − x0 − η_t(y −
    x0)), i.e. SinSR's deterministic step (its `ddim_sample`) x_{t−1} = k_t x0 + m_t x_t + j_t y
    with m_t = √(η_{t−1}/η_t), j_t = η_{t−1} − √(η_{t−1}η_t), k_t = 1 − η_{t−1} + √(η_{t−1}η_t)
    − m_t (in the latent space, x̂0 unclipped, x_T = y + κ√η_T ε as here). With x0 replaced by the
    network's x̂0 the chain at s = 0 is a fixed map (x_T, y) -> x_0. At t = 0 (η_{t−1} = 0)
    every s gives x̂0 itself. Coefficients: `schedule.generalized_step_tables`."""
    tab = s.step_tables(noise_scale)
    nd = x_t.ndim

    def at(name):
        return _at(tab[name], t, nd)

    out = at("step_coef_x0") * pred_xstart + at("step_coef_y") * y + at("step_coef_xt") * x_t
    if float(noise_scale) == 0.0:
        return out
    nonzero = (t != 0).astype(x_t.dtype).reshape((-1,) + (1,) * (nd - 1))
    return out + nonzero * at("step_sigma") * noise


def prior_sample(s: Schedule, y, noise):
    """x_T = y + κ √η_T ε (the η_T x0 term is neglected, as in the reference)."""
    t = jnp.full((y.shape[0],), s.num_timesteps - 1, jnp.int32)
    return y + extract(s, "kappa_sqrt_etas", t, y.ndim) * noise


def loss_weight(s: Schedule, t, scheme: str | None = None):
    """w_t of a named scheme (default: the schedule's) times the importance weight of the
    schedule's t sampler (1 for uniform t), float32 (B,)."""
    w = s.loss_weights(scheme) * s.importance_weights()
    return jnp.asarray(w.astype("float32"))[t]


def sample_timesteps(s: Schedule, key, batch: int):
    """t ~ p_t of the schedule's t sampler (uniform in the reference), int32 (batch,)."""
    if s.t_sampling == "uniform":
        return jax.random.randint(key, (batch,), 0, s.num_timesteps, jnp.int32)
    logits = jnp.log(jnp.asarray(s.t_probabilities(), jnp.float32))
    return jax.random.categorical(key, logits, shape=(batch,)).astype(jnp.int32)


def training_losses(s: Schedule, denoiser: Denoiser, z_start, z_y, t, lq, noise, scheme: str | None = None):
    """Per-sample objective of the reference for latents z_start (HR) and z_y (encoded up(LR)).

    Returns dict(mse: unweighted per-sample mean over H,W,C; loss: w_t · mse; z_t; pred_zstart).
    For epsilon_scale the mse is divided by κ²η_t first, as the reference does.
    """
    z_t = q_sample(s, z_start, z_y, t, noise)
    model_output = denoiser(scale_input(s, z_t, t), network_timesteps(s, t), lq).astype(z_t.dtype)
    target = {
        "xstart": z_start,
        "residual": z_y - z_start,
        "epsilon": noise,
        "epsilon_scale": noise * s.kappa * extract(s, "sqrt_etas", t, noise.ndim),
    }[s.predict_type]
    mse = jnp.mean(jnp.square(target - model_output), axis=tuple(range(1, z_t.ndim)))
    if s.predict_type == "epsilon_scale":
        mse = mse / (s.kappa ** 2 * s.f32("etas")[t])
    loss = mse * loss_weight(s, t, scheme)
    return dict(mse=mse, loss=loss, z_t=z_t, pred_zstart=predict_xstart(s, model_output, z_t, z_y, t))


def steps_run(T: int, x0_after: int) -> int:
    """How many of the T reverse steps `sample` runs for `x0_after` (0 or T: all of them)."""
    k = int(x0_after)
    if not 0 <= k <= T:
        raise ValueError(f"sample: x0_after={k} must be in 0..T={T}")
    return T if k in (0, T) else k


def noise_draws_read(T: int, x0_after: int, noise_scale: float) -> int:
    """How many of the T+1 noise draws (prior first) `sample` reads: the prior, then one per step
    run, none at noise scale 0 (deterministic steps)."""
    return 1 + (steps_run(T, x0_after) if float(noise_scale) > 0 else 0)


def sample(s: Schedule, denoiser: Denoiser, z_y, lq, *, key: jax.Array | None = None,
           noise: jax.Array | None = None, clip_denoised: bool = False, return_trajectory: bool = False,
           x0_after: int = 0, noise_scale: float = 1.0, unroll: bool = False):
    """The reverse chain x_T -> x_0 as one `lax.scan` over the T steps.

    Noise comes either from `key` or from `noise` of shape (T+1, *z_y.shape) in the reference's
    draw order: noise[0] for the prior, noise[k] for the step at t = T−k (k = 1..T).
    Returns x_0, or (x_0, dict(x_t=(T+1, ...) states starting at x_T, pred_xstart=(T, ...))).

    `x0_after` = k in 1..T−1 stops the chain early: only the first k steps run (the same draws as
    the full chain's first k) and the result is the x0 prediction of the k-th step (k network
    calls; with k = 1 the prediction from the prior x_T). 0 or T: the whole chain (the reference).
    The trajectory then holds k+1 states and k predictions.

    `noise_scale` s in [0, 1] (a Python number, part of the program): 1 is the reference's
    stochastic chain (its code path, bit for bit); below 1 each step is `generalized_step`, and 0
    is the deterministic sampler: x_0 depends only on x_T (the prior draw) and y. The draws are
    the same for every s (the step draws are simply scaled, or unused at 0).

    `unroll`: the scan fully unrolled (the same values; a larger program). For XLA's cost
    analysis, which counts a loop body once whatever its trip count.
    """
    T = s.num_timesteps
    run = steps_run(T, x0_after)
    scale = float(noise_scale)
    if not 0.0 <= scale <= 1.0:
        raise ValueError(f"sample: noise_scale={noise_scale} must be in [0, 1]")
    if (key is None) == (noise is None):
        raise ValueError("sample: give exactly one of `key` or `noise`")
    if noise is not None:
        expected = (T + 1,) + tuple(z_y.shape)
        if tuple(noise.shape) != expected:
            raise ValueError(f"sample: noise must have shape {expected} (T+1, *latent), got {tuple(noise.shape)}")
        prior_noise, step_noise = noise[0], noise[1:]
        step_keys = None
    else:
        prior_key, steps_key = jax.random.split(key)
        prior_noise = jax.random.normal(prior_key, z_y.shape, z_y.dtype)
        step_keys = jax.random.split(steps_key, T)
        step_noise = None
    x_T = prior_sample(s, z_y, prior_noise)
    ts = jnp.arange(T - 1, -1, -1, dtype=jnp.int32)

    keep = return_trajectory or run < T  # an early stop returns the last step's prediction

    def body(x_t, xs):
        i, z = xs
        if z is None:
            z = jax.random.normal(step_keys[i], x_t.shape, x_t.dtype)
        t = jnp.full((x_t.shape[0],), ts[i], jnp.int32)
        if scale == 1.0:  # the reference's step
            out = p_sample(s, denoiser, x_t, z_y, t, lq, z, clip_denoised)
        else:
            x0 = predict(s, denoiser, x_t, z_y, t, lq, clip_denoised)
            out = dict(sample=generalized_step(s, x0, x_t, z_y, t, z, scale), pred_xstart=x0)
        return out["sample"], ((out["sample"], out["pred_xstart"]) if keep else None)

    x_last, traj = jax.lax.scan(body, x_T, (jnp.arange(run), None if step_noise is None else step_noise[:run]),
                                unroll=bool(unroll))
    x_0 = x_last if run == T else traj[1][-1]
    if not return_trajectory:
        return x_0
    states, preds = traj
    return x_0, dict(x_t=jnp.concatenate([x_T[None], states], axis=0), pred_xstart=preds)
