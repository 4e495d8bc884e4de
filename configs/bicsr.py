"""ResShift x4 bicubic SR: 4 steps, MSE + LPIPS, MATLAB-bicubic pairs (bicx4_swinunet_lpips.yaml)."""

from resshift_jax.config import base_config


def get_config():
    cfg = base_config(steps=4, min_noise_level=0.2, lr_schedule="cosin", batch=96, microbatch=12,
                      iterations=400000, loss_coef=(1.0, 1.0))
    cfg.name = "bicsr"
    cfg.unet_ckpt_name = "resshift_bicsrx4_s4.pth"
    cfg.autoencoder.ckpt_path = "weights/autoencoder_vq_f4.pth"
    cfg.train.log_freq = (1000, 2000, 1)
    cfg.train.compile.flag = True
    cfg.data.train.type = "bicubic"
    # bicsr pairs: GT short side resized to pch_size, random crop, MATLAB bicubic x0.25 (antialiased)
    cfg.data.train.degrade_kwargs = dict(scale=0.25, activate_matlab=True, resize_back=False,
                                         pch_size=256, pass_smallmaxresize=False,
                                         pass_aug=False, pass_crop=False)
    return cfg
