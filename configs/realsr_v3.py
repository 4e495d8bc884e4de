"""ResShift realsr x4, journal v3: 4 steps, MSE + LPIPS (realsr_swinunet_realesrgan256_journal.yaml)."""

from resshift_jax.config import base_config


def get_config():
    cfg = base_config(steps=4, min_noise_level=0.2, lr_schedule="cosin", batch=96, microbatch=12,
                      iterations=400000, loss_coef=(1.0, 1.0))
    cfg.name = "realsr_v3"
    return cfg
