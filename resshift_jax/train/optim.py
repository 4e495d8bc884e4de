"""AdamW (weight decay 0 in every official config) and the reference learning-rate schedule.

The reference (`TrainerDifIR.adjust_lr`) creates the optimizer with the base lr and sets the lr
*after* each iteration: after iteration k (1-based) with k <= warmup it sets lr·k/warmup, after
that it steps `CosineAnnealingLR(T_max = iterations − warmup, eta_min = lr_min)` ('cosin') or
leaves the lr constant. So the lr used by the update with 0-based index s (= s completed steps) is

    s = 0:               lr                      (the first update uses the full base lr)
    1 <= s <= warmup:    lr · s / warmup
    s > warmup:          lr_min + (lr − lr_min)·(1 + cos(π (s − warmup) / T_max)) / 2   ('cosin')
                         lr                                                             (otherwise)

`reference_lr(s)` reproduces exactly this (including the quirk at s = 0).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax

LR_SCHEDULES = ("", "none", "constant", "cosin", "cosine")


def reference_lr(step, *, lr: float, lr_min: float, warmup: int, iterations: int, schedule: str):
    """lr of the update at 0-based `step` (jnp scalar in, float32 scalar out)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"train.lr_schedule {schedule!r} not in {LR_SCHEDULES}")
    s = jnp.asarray(step, jnp.float32)
    warm = lr * s / max(warmup, 1)
    if schedule in ("cosin", "cosine"):
        t_max = max(iterations - warmup, 1)
        after = lr_min + (lr - lr_min) * 0.5 * (1 + jnp.cos(math.pi * (s - warmup) / t_max))
    else:
        after = jnp.asarray(lr, jnp.float32)
    out = jnp.where(s <= warmup, warm, after)
    return jnp.where(s == 0, jnp.asarray(lr, jnp.float32), out).astype(jnp.float32)


def lr_fn_from_config(train_cfg):
    t = train_cfg
    kw = dict(lr=float(t.lr), lr_min=float(t.lr_min), warmup=int(t.warmup_iterations),
              iterations=int(t.iterations), schedule=str(t.lr_schedule or ""))
    reference_lr(0, **kw)  # validate the schedule name early
    return lambda step: reference_lr(step, **kw)


def make_optimizer(train_cfg) -> optax.GradientTransformation:
    """Direction of AdamW without the lr (torch defaults betas (0.9, 0.999), eps 1e-8), with
    optional global-norm clipping. The caller multiplies by −lr(step), so the schedule follows
    the iteration counter (skipped NaN steps included, as the reference's scheduler does)."""
    parts = []
    clip = float(train_cfg.grad_clip or 0.0)
    if clip > 0:
        parts.append(optax.clip_by_global_norm(clip))
    parts.append(optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8))
    wd = float(train_cfg.weight_decay or 0.0)
    if wd > 0:
        parts.append(optax.add_decayed_weights(wd))  # decoupled, as torch AdamW: p -= lr·wd·p
    return optax.chain(*parts)
