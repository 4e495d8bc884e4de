"""One-step student of the bundled compact bicsr model (SinSR-style distillation, issue 15).

The teacher is `resshift_jax/assets/compact/compact_bicsr.safetensors` run by the deterministic
sampler (all 4 steps, noise scale 0); the student, the same compact UNet initialised from it, is
trained with the three terms of `resshift_jax.train.distill` (distill, inverse, gt; SinSR's
weights, all 1) and is served as one network evaluation at t = T−1 (`inference.x0_after = 1`),
which is also what the validations during training run. Same data, splits (kodak24 validates,
mcmaster is the test split) and schedule as `compact_bicsr`, so the teacher's chain is the one
it was trained for.

Optimisation, scaled down from SinSR's (AdamW 5e-5, 5000 warm-up steps, batch 64, EMA 0.999,
"converges within a few thousand iterations") to a CPU budget of under two hours: batch 8 (a
distillation step costs about five diffusion steps: 4 teacher evaluations, 3 student forward
and backward passes, 1 forward without gradient), lr 1e-4 after 100 warm-up steps, cosine to
1e-5, EMA 0.99 (a ~100-step average, for a run of 1800 steps).
"""

import pathlib

from resshift_jax.config import load_config


def get_config():
    cfg = load_config(pathlib.Path(__file__).with_name("compact_bicsr.py"))
    cfg.name = "distill_compact_bicsr"
    t = cfg.train
    t.objective = "distill"
    t.batch = (8, 6)  # [train, val]
    t.microbatch = 8
    t.iterations = 1800
    t.lr = 1e-4
    t.lr_min = 1e-5
    t.warmup_iterations = 100
    t.ema_rate = 0.99
    t.save_freq = 450
    t.val_freq = 450
    t.log_freq = (25, 450, 1)
    d = cfg.distill
    d.teacher_ckpt = "resshift_jax/assets/compact/compact_bicsr.safetensors"
    d.teacher_noise_scale = 0.0  # SinSR: the deterministic sampler
    d.coef = (1.0, 1.0, 1.0)  # [distill, inverse, gt]
    cfg.inference.x0_after = 1  # the student: one evaluation at t = T-1
    cfg.inference.noise_scale = 0.0  # (no effect after one step; the student's training sampler)
    return cfg
