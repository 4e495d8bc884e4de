"""ResShift realsr x4, NeurIPS v1: 15 steps, MSE only (realsr_swinunet_realesrgan256.yaml)."""

from resshift_jax.config import base_config


def get_config():
    cfg = base_config(steps=15, min_noise_level=0.04, lr_schedule="", batch=64, microbatch=8,
                      iterations=300000, loss_coef=(1.0, 0.0))
    cfg.name = "realsr_v1"
    return cfg
