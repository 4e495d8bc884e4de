"""The trainer tests' config: configs/micro.py (UNet 2 levels, 1 res block, Swin depth 1, 64x64
HR crops, 16x16 latents) with frequent checkpoints and a small pair pool, and the tolerance of
their one-step comparisons.
Also usable as a config file: `python train.py --config tests/_train_cfg.py ...`."""

from resshift_jax.config import load_config

U32 = 2.0 ** -24  # float32 unit roundoff (6e-8)
# One train step from the same state on the same global batch with the same keys, on two device
# layouts (meshes, device counts, processes): only the order of float32 reductions differs
# (per-device partial sums + the all-reduce; convolution blockings that depend on the per-device
# batch). The loss is a mean of B·16·16·3 non-negative terms, the gradient norm a sum of ~1e6
# squares: reordering a same-sign sum moves it by ~log2(n) <= 20 u for blocked/tree sums (+3
# levels for an all-reduce over 8); each activation of the ~30 layers of the micro UNet's forward
# and backward pass may move by a few u when a blocking changes, and squares double relative
# perturbations: 128 u ~ 7.6e-6 bounds these. Measured on an AMD EPYC (2, 4, 8 devices; meshes
# (1,1) to (1,8); --xla_cpu_use_thunk_runtime=false; --xla_cpu_max_isa=SSE4_2): at most ~2 u.
# A bug (a row lost or duplicated, micro-batch gradients not averaged, another key, another
# state) moves them by more than 1e-3. Later steps of two independent runs are never compared
# this way: Adam's first updates are ~lr·sign(g), so rounding-level gradients give lr-sized
# parameter differences that grow into ~1e-5 loss differences.
ONE_STEP_RTOL = 128 * U32


def get_config():
    cfg = load_config("micro")
    cfg.degradation.queue_size = 16  # the training-pair pool fills in 2 steps, then swaps
    cfg.data.val.length = 2
    t = cfg.train
    t.save_freq = 3
    t.val_freq = 0
    return cfg
