"""Tiny networks with the realsr structure, for tests and smoke runs on a CPU.

The UNet matches the fixture `unet_tiny` (image_size 32, 32 channels, window 4) and the
autoencoder matches `vq_tiny` (ch 32, ch_mult [1,1,2], 64 codes). Diffusion: the v3 schedule.
"""

from resshift_jax.config import base_config


def get_config():
    cfg = base_config(steps=4, min_noise_level=0.2, lr_schedule="cosin", batch=8, microbatch=8,
                      iterations=200, loss_coef=(1.0, 0.0))
    cfg.name = "tiny"
    m = cfg.model
    m.image_size = 32
    m.model_channels = 32
    m.attention_resolutions = (32, 16, 8, 4)
    m.channel_mult = (1, 1, 1, 2)
    m.num_head_channels = 8
    m.swin_embed_dim = 32
    m.window_size = 4
    m.lq_size = 32
    a = cfg.autoencoder
    a.ckpt_path = ""
    a.n_embed = 64
    a.ddconfig.ch = 32
    a.ddconfig.ch_mult = (1, 1, 2)
    a.ddconfig.num_res_blocks = 1
    t = cfg.train
    t.lr = 2e-4
    t.lr_min = 2e-5
    t.warmup_iterations = 10
    t.save_freq = 50
    t.val_freq = 100
    t.log_freq = (10, 100, 1)
    t.use_amp = False
    t.seed = 123
    t.data_seed = 123
    cfg.degradation.gt_size = 128  # 32x32 latents: the tiny UNet needs multiples of 32
    cfg.data.train.gt_size = 128
    cfg.data.train.crop_pad_size = 128
    cfg.inference.padding_offset = 32
    cfg.inference.chop_size = 64
    cfg.inference.chop_stride = 48
    cfg.inference.shape_buckets = ()  # the fixtures' networks: padded exactly as the reference
    return cfg
