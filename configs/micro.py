"""Micro networks for CPU training smoke runs, tests and w_t studies: the tiny config shrunk
further (UNet 2 levels, 1 res block each, Swin depth 1) with 64x64 HR crops (16x16 latents), so
a train step compiles and runs in seconds on a CPU."""

from resshift_jax.config import load_config


def get_config():
    cfg = load_config("tiny")
    cfg.name = "micro"
    m = cfg.model
    m.image_size = 16
    m.lq_size = 16
    m.channel_mult = (1, 2)
    m.num_res_blocks = (1, 1)
    m.attention_resolutions = (16, 8)
    m.swin_depth = 1
    cfg.data.train.gt_size = 64
    cfg.degradation.gt_size = 64
    cfg.inference.padding_offset = 16
    cfg.inference.shape_buckets = ()  # the fixtures' networks: padded exactly as the reference
    t = cfg.train
    t.batch = (8, 2)  # [train, val]
    t.microbatch = 8
    t.iterations = 200
    t.warmup_iterations = 10
    t.lr = 1e-3
    t.lr_min = 1e-4
    t.log_freq = (1, 100, 1)
    return cfg
