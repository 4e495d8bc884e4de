"""One-step student of the official ResShift realsr v3 (SinSR-style distillation, issue 15).

The teacher is the official `weights/resshift_realsrx4_s4_v3.pth` run by the deterministic
sampler (4 steps, noise scale 0); the student, the same Swin-UNet initialised from it, is
trained with the three terms of `resshift_jax.train.distill` and served as one network
evaluation (`inference.x0_after = 1`). Data, degradation and schedule are v3's. As SinSR:
no LPIPS term (`train.loss_coef = (1, 0)`), global batch 64, Adam at 5e-5 (SinSR: AdamW with weight decay 0, the same) after a
linear warm-up, EMA 0.999; the warm-up is 1000 steps here (SinSR: 5000 of 500k, and it reports
convergence within a few thousand) and the schedule cosine over 30k steps.

Memory: two micro-batches of 32 (`train.accum_steps = 2`): a distillation micro-batch keeps the
activations of three student passes for the backward pass (see the README's compile-only table
for the per-chip peak on a TPU v5e-16 slice).

    python -m resshift_jax.train.compile_check --config configs/distill_realsr_v3.py --topology v5e:4x4
"""

import pathlib

from resshift_jax.config import load_config


def get_config():
    cfg = load_config(pathlib.Path(__file__).with_name("realsr_v3.py"))
    cfg.name = "distill_realsr_v3"
    t = cfg.train
    t.objective = "distill"
    t.loss_coef = (1.0, 0.0)  # SinSR trains without LPIPS
    t.batch = (64, 8)  # SinSR's [train, val]
    t.microbatch = 32
    t.accum_steps = 2
    t.lr = 5e-5
    t.lr_min = 5e-6
    t.warmup_iterations = 1000
    t.iterations = 30000
    t.ema_rate = 0.999
    t.save_freq = 2000
    t.val_freq = 2000
    d = cfg.distill
    d.teacher_ckpt = "weights/resshift_realsrx4_s4_v3.pth"
    d.teacher_noise_scale = 0.0
    d.coef = (1.0, 1.0, 1.0)
    cfg.inference.x0_after = 1
    cfg.inference.noise_scale = 0.0
    return cfg
