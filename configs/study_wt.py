"""A w_t study: one training run per (scheme, seed) on the same data, evaluated on Val_SR.

    python -m resshift_jax.study --config configs/study_wt.py --workdir DIR [--config.train.iterations=400]

The base training config is a micro version of `tiny` (UNet 2 levels, 64x64 HR crops -> 16x16
latents, batch 8) so a study runs on a CPU; the frozen VQ is the fixture `vq_tiny.pth`, so every
run sees the same latent space. For a real study start from `realsr_v3` instead (set
`autoencoder.ckpt_path` to the official VQ-f4 weights) and keep the `study` section below.

`study.schemes`: one dict per arm: label (run-folder name), weighting (a name registered with
`schedule.register_weight_scheme`), kwargs (passed to it), t_sampling (a `schedule.T_SAMPLERS` name;
non-uniform sampling gets the importance weights 1/(T p_t)).
"""

import ml_collections

from resshift_jax.config import load_config


def scheme(label, weighting, t_sampling="uniform", **kwargs):
    return dict(label=label, weighting=weighting, kwargs=kwargs, t_sampling=t_sampling)


def get_config():
    cfg = load_config("micro")
    cfg.autoencoder.ckpt_path = "../shared/fixtures/resshift/vq_tiny.pth"
    cfg.data.train.dir_paths = ("../shared/data/train_hr",)
    cfg.data.val.dir_path = "../shared/data/Val_SR/lq"
    cfg.data.val.extra_dir_path = "../shared/data/Val_SR/gt"
    cfg.data.val.length = 8  # first 8 pairs (sorted names); -1 = all 32
    t = cfg.train
    t.batch = (8, 4)  # [train, val]
    t.ema_rate = 0.99  # short runs: a 0.999 EMA would barely leave the initial weights
    t.save_freq = 50  # checkpoints let a killed run resume
    t.keep_checkpoints = 1
    t.val_freq = 0  # the study evaluates once, after training

    s = ml_collections.ConfigDict()
    s.schemes = [
        scheme("uniform", "uniform"),
        scheme("kl", "kl"),
        scheme("kl_mean1", "kl_mean1"),
        scheme("kl_clipped10", "kl_clipped", max_ratio=10.0),
        scheme("snr", "snr"),
        scheme("min_snr5", "min_snr", gamma=5.0),
        scheme("uniform_teta", "uniform", t_sampling="eta"),
    ]
    s.only = ""  # comma-separated labels: run just these arms (e.g. --config.study.only=uniform,kl)
    s.seeds = (0, 1, 2)  # train.seed of each run: UNet init, t and noise draws
    s.data_seed = 1234  # crop/flip/order of the training images: the same for every run
    s.eval_seed = 12345  # sampler noise at evaluation: the same for every run
    s.val_crop = 0  # > 0: evaluate the centred val_crop x val_crop LQ crops (quick studies)
    s.metrics = ("psnr", "ssim")  # + "lpips" (needs study.lpips_* files), "niqe"
    s.lpips_net = "vgg"
    s.lpips_backbone = ""  # torchvision vgg16-397923af.pth / alexnet-owt-7be5be79.pth
    s.lpips_heads = ""  # lpips v0.1 vgg.pth / alex.pth
    s.loss_tail = 0.5  # train_mse_t* in results.csv: mean over the last half of the logged steps
    s.compile_cache_dir = ""  # "" = WORKDIR/jax_cache; shared by all runs of the study
    cfg.study = s
    return cfg
