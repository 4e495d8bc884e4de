"""The trainer tests' config: configs/micro.py (UNet 2 levels, 1 res block, Swin depth 1, 64x64
HR crops, 16x16 latents) with frequent checkpoints and a small pair pool.
Also usable as a config file: `python train.py --config tests/_train_cfg.py ...`."""

from resshift_jax.config import load_config


def get_config():
    cfg = load_config("micro")
    cfg.degradation.queue_size = 16  # the training-pair pool fills in 2 steps, then swaps
    cfg.data.val.length = 2
    t = cfg.train
    t.save_freq = 3
    t.val_freq = 0
    return cfg
