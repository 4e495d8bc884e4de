"""A micro config for the trainer tests (the tiny networks, shrunk further so a CPU step compiles
and runs in seconds): UNet 2 levels, 1 res block, Swin depth 1, 64x64 HR crops (16x16 latents).
Also usable as a config file: `python train.py --config tests/_train_cfg.py ...`."""

from resshift_jax.config import load_config


def get_config():
    cfg = load_config("tiny")
    m = cfg.model
    m.image_size = 16
    m.lq_size = 16
    m.channel_mult = (1, 2)
    m.num_res_blocks = (1, 1)
    m.attention_resolutions = (16, 8)
    m.swin_depth = 1
    cfg.data.train.gt_size = 64
    cfg.degradation.gt_size = 64
    cfg.degradation.queue_size = 16  # the training-pair pool fills in 2 steps, then swaps
    cfg.data.val.length = 2
    cfg.inference.padding_offset = 16
    t = cfg.train
    t.batch = (8, 2)
    t.microbatch = 8
    t.iterations = 200
    t.warmup_iterations = 10
    t.lr = 1e-3
    t.lr_min = 1e-4
    t.save_freq = 3
    t.val_freq = 0
    t.log_freq = (1, 100, 1)
    return cfg
