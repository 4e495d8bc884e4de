"""ResShift x4 bicubic SR: 4 steps, MSE + LPIPS, MATLAB-bicubic pairs (bicx4_swinunet_lpips.yaml)."""

from resshift_jax.config import base_config


def get_config():
    cfg = base_config(steps=4, min_noise_level=0.2, lr_schedule="cosin", batch=96, microbatch=12,
                      iterations=400000, loss_coef=(1.0, 1.0))
    cfg.name = "bicsr"
    cfg.autoencoder.ckpt_path = "weights/autoencoder_vq_f4.pth"
    cfg.train.log_freq = (1000, 2000, 1)
    cfg.data.train.type = "bicubic"
    # bicsr pairs: a gt_size crop of the GT, LQ = its MATLAB bicubic resize (antialiased) by
    # data.train.degrade_kwargs.scale (0.25). The reference's other degrade_kwargs are this
    # path's fixed behaviour: activate_matlab=True, resize_back=False, pch_size = gt_size.
    # validation as the reference's bicsr config: bicubic LQ made from GT images (evaluation.val_pairs)
    cfg.data.val.type = "bicubic"
    cfg.data.val.dir_path = "../shared/data/Val_SR/gt"
    return cfg
