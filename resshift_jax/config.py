"""Config builders shared by the files in `configs/`.

The key names follow the official ResShift YAML files (``model.*``, ``autoencoder.*``,
``diffusion.*``, ``degradation.*``, ``data.*``, ``train.*``), with the YAML's ``params``
level folded away (``diffusion.params.steps`` -> ``diffusion.steps``), so a user of the
official code finds every setting under the name they know.

Every key here is read by some code (tests/test_config.py checks both directions), and the
entry points lock the config, so an override of a key that is not declared fails with a message
(`check_overrides`) instead of doing nothing. Official keys that would change nothing here are
left out: the `target` names, `model.dims`/`use_fp16`/`ckpt_path` (2-D only; dtypes come from
`train.use_amp` and `--dtype`), `autoencoder.use_fp16`, `ddconfig.padding_mode` (zeros),
`degradation.resize_back`, `data.train.use_rot`, and the PyTorch-specific
`train.num_workers`/`prefetch_factor`/`compile`/`global_seeding`/`use_ema_val`/`val_*`
(validation always uses the EMA weights and PSNR on Y).
"""

from __future__ import annotations

import difflib
import importlib.util
import pathlib
import sys

import ml_collections
from absl import app

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
CONFIG_NAMES = ("realsr_v1", "realsr_v2", "realsr_v3", "bicsr", "tiny", "micro", "compact_bicsr", "compact_realsr",
                "distill_compact_bicsr")


def unet_config() -> ml_collections.ConfigDict:
    """`model.params` of the realsr/bicsr YAMLs (UNetModelSwin)."""
    return ml_collections.ConfigDict(dict(
        image_size=64,
        in_channels=3,
        model_channels=160,
        out_channels=3,
        attention_resolutions=(64, 32, 16, 8),
        dropout=0.0,
        channel_mult=(1, 2, 2, 4),
        num_res_blocks=(2, 2, 2, 2),
        conv_resample=True,
        num_head_channels=32,
        use_scale_shift_norm=True,
        resblock_updown=False,
        swin_depth=2,
        swin_embed_dim=192,
        window_size=8,
        mlp_ratio=4,
        cond_lq=True,
        cond_mask=False,
        lq_size=64,
    ))


def autoencoder_config() -> ml_collections.ConfigDict:
    """`autoencoder` section: VQModelTorch, f4, 8192 x 3 codebook."""
    return ml_collections.ConfigDict(dict(
        kind="vq",  # first stage (models/first_stage.py): "vq" (VQ-f4, ckpt_path) | "space_to_depth" (exact pixel-unshuffle by diffusion.sf, no weights)
        ckpt_path="weights/autoencoder_vq_f4.pth",
        embed_dim=3,
        n_embed=8192,
        ddconfig=dict(
            double_z=False,
            z_channels=3,
            resolution=256,
            in_channels=3,
            out_ch=3,
            ch=128,
            ch_mult=(1, 2, 4),
            num_res_blocks=2,
            attn_resolutions=(),
            dropout=0.0,
        ),
    ))


def diffusion_config(steps: int, min_noise_level: float) -> ml_collections.ConfigDict:
    """`diffusion.params` of create_gaussian_diffusion, plus the w_t scheme of this project."""
    return ml_collections.ConfigDict(dict(
        sf=4,
        schedule_name="exponential",
        schedule_kwargs=dict(power=0.3),
        etas_end=0.99,
        steps=steps,
        min_noise_level=min_noise_level,
        kappa=2.0,
        weighted_mse=False,
        predict_type="xstart",
        timestep_respacing=ml_collections.FieldReference(None, field_type=int),
        scale_factor=1.0,
        normalize_input=True,
        latent_flag=True,
        # resshift-jax: name of the w_t scheme (schedule.WEIGHT_SCHEMES). `weighted_mse=True`
        # in the official sense equals loss_weighting='kl'.
        loss_weighting="uniform",
        loss_weighting_kwargs={},  # e.g. {"max_ratio": 10.0} for kl_clipped, {"gamma": 5.0} for min_snr
        t_sampling="uniform",  # schedule.T_SAMPLERS; non-uniform t gets importance weights 1/(T p_t)
    ))


def degradation_config() -> ml_collections.ConfigDict:
    """`degradation` section (GPU side of the Real-ESRGAN pipeline, spec section 7)."""
    return ml_collections.ConfigDict(dict(
        sf=4,
        resize_prob=(0.2, 0.7, 0.1),  # up, down, keep
        resize_range=(0.15, 1.5),
        gaussian_noise_prob=0.5,
        noise_range=(1.0, 30.0),
        poisson_scale_range=(0.05, 3.0),
        gray_noise_prob=0.4,
        jpeg_range=(30.0, 95.0),
        second_order_prob=0.5,
        second_blur_prob=0.8,
        resize_prob2=(0.3, 0.4, 0.3),
        resize_range2=(0.3, 1.2),
        gaussian_noise_prob2=0.5,
        noise_range2=(1.0, 25.0),
        poisson_scale_range2=(0.05, 2.5),
        gray_noise_prob2=0.4,
        jpeg_range2=(30.0, 95.0),
        gt_size=256,
        use_sharp=False,
        use_queue=True,  # the reference's training-pair queue (batch pool) that mixes degradations
        queue_size=0,  # pairs in the queue; 0 = 10 x the micro-batch
    ))


KERNEL_LIST = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def realesrgan_data_config() -> ml_collections.ConfigDict:
    """`data` section: Real-ESRGAN HR dataset (CPU side) and the paired validation folder."""
    return ml_collections.ConfigDict(dict(
        train=dict(
            type="realesrgan",
            dir_paths=("../shared/data/train_hr",),
            txt_file_path=(),
            array_record_dir="",
            tfds_name="",
            tfds_data_dir="",
            tfds_split="train",
            tfds_image_key="image",
            im_exts=("png", "jpg", "jpeg", "JPEG", "bmp", "tif", "tiff", "webp"),
            exclude_glob=(),  # file-name patterns never trained on (held-out images), e.g. ("mcmaster_*",)
            blur_kernel_size=21,
            kernel_list=KERNEL_LIST,
            kernel_prob=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
            sinc_prob=0.1,
            blur_sigma=(0.2, 3.0),
            betag_range=(0.5, 4.0),
            betap_range=(1.0, 2.0),
            blur_kernel_size2=15,
            kernel_list2=KERNEL_LIST,
            kernel_prob2=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
            sinc_prob2=0.1,
            blur_sigma2=(0.2, 1.5),
            betag_range2=(0.5, 4.0),
            betap_range2=(1.0, 2.0),
            final_sinc_prob=0.8,
            gt_size=256,
            crop_pad_size=300,
            use_hflip=True,
            rescale_gt=True,  # crop the short-side square resized to gt_size (bicubic type: short side to gt_size); False: native-resolution crops
            num_workers=0,  # grain worker processes (0: in-process)
            # type="bicubic" (bicsr): LQ = MATLAB bicubic resize of the GT crop by `scale`
            degrade_kwargs=dict(scale=0.25),
        ),
        val=dict(
            type="base",  # base: LQ dir_path + GT extra_dir_path; bicubic: GT dir_path, LQ = MATLAB bicubic
            dir_path="../shared/data/Val_SR/lq",
            extra_dir_path="../shared/data/Val_SR/gt",
            im_exts=("png",),
            include_glob="",  # only the files whose name matches (e.g. "mcmaster_*"); "" = all
            length=-1,
        ),
    ))


def train_config(*, lr_schedule: str, batch: int, microbatch: int, iterations: int,
                 loss_coef=(1.0, 0.0)) -> ml_collections.ConfigDict:
    """`train` section (trainer.py). `batch` is global, `microbatch` the accumulation chunk."""
    return ml_collections.ConfigDict(dict(
        lr=5e-5,
        lr_min=2e-5,
        lr_schedule=lr_schedule,  # "" (constant after warmup) | "cosin"
        warmup_iterations=5000,
        batch=(batch, 8),  # [train, val]
        microbatch=microbatch,
        accum_steps=0,  # micro-batches per step; 0 = batch / (microbatch x data-parallel size)
        weight_decay=0.0,
        ema_rate=0.999,
        iterations=iterations,
        save_freq=10000,
        val_freq=10000,
        log_freq=(200, 2000, 1),  # [training loss, training images, val images]
        loss_coef=tuple(loss_coef),  # [mse, lpips]
        use_amp=True,  # resshift-jax: bfloat16 compute when True (fp32 master weights)
        encoder_dtype="float32",  # frozen VQ encoder (z0, z_y): float32 | bfloat16 (bf16 error ~ κ²η₁ for v1)
        seed=123456,  # UNet initialisation, t and noise draws
        data_seed=123456,  # order, crops, flips and degradations of the training data
        # resshift-jax additions
        grad_clip=0.0,  # 0 = off (the reference does not clip)
        max_bad_steps=20,  # NaN/Inf updates skipped before stopping
        keep_checkpoints=3,
        objective="diffusion",  # "diffusion" (ResShift's) | "distill" (one-step student, see `distill`)
        lpips_ckpt="weights/lpips_vgg.pth",
        vgg_ckpt="weights/vgg16.pth",
    ))


def distill_config() -> ml_collections.ConfigDict:
    """`distill` section: one-step distillation of a teacher (`train.objective = "distill"`,
    `resshift_jax.train.distill`). Unused by the diffusion objective."""
    return ml_collections.ConfigDict(dict(
        teacher_ckpt="",  # the teacher UNet, same config: .pth, .safetensors or an Orbax export
        teacher_noise_scale=0.0,  # the teacher's sampler (inference.noise_scale): 0 = deterministic (SinSR)
        coef=(1.0, 1.0, 1.0),  # [distill, inverse, gt] (SinSR's configs/SinSR.yaml: all 1)
    ))


def sharding_config() -> ml_collections.ConfigDict:
    """Mesh ('data', 'fsdp'); -1 means "all remaining devices"."""
    return ml_collections.ConfigDict(dict(
        mesh_shape=(-1, 1),
        mesh_axes=("data", "fsdp"),
        min_fsdp_size=2 ** 14,  # parameters smaller than this stay replicated
    ))


def inference_config() -> ml_collections.ConfigDict:
    """Defaults of the official inference_resshift.py."""
    return ml_collections.ConfigDict(dict(
        padding_offset=64,  # = model.lq_size
        chop_size=512,
        chop_stride=448,
        blend="feather",
        # 0: the whole chain of diffusion.steps steps (the reference). k in 1..steps-1: stop after
        # k steps and output that step's x0 prediction (k network calls): a fidelity/speed knob,
        # k = 1 is the network's one-call estimate from y + prior noise
        x0_after=0,
        # the reverse step's noise scale s in [0, 1]: 1 the reference's stochastic chain, 0 the
        # deterministic sampler (SinSR's; x_0 a function of the prior draw and y), between them
        # a partial noise (`diffusion.generalized_step`)
        noise_scale=1.0,
        # LR tile sizes each tile side is reflect-padded up to (the smallest that holds it), so a
        # folder of mixed sizes compiles a few programs; () pads as the reference (to multiples
        # of padding_offset), one program per padded size. On RealSet65 with v3's tiling: 5
        # programs instead of 19 for 22% more pixels, and the outputs move less than a change of
        # seed does (PSNR 41.2 dB bucketed vs reference, 39.1 dB seed vs seed; bench_buckets.py).
        # 64 is a bucket so that the common 64x64 LR input is not padded to 4x its pixels
        shape_buckets=(64, 128, 256, 512),
    ))


# ----------------------------------------------------------------------------- compact models
# train_hr images the compact recipes never train on: the test split (the README's quality table,
# never used for any choice) and the validation split (training-time validation and the
# schedule sweep)
COMPACT_TEST = "mcmaster_*"
COMPACT_VAL = "kodak24_*"
COMPACT_HELD_OUT = (COMPACT_TEST, COMPACT_VAL)


def compact_config(base: str, *, gt_size: int, kappa: float, min_noise_level: float,
                   iterations: int) -> ml_collections.ConfigDict:
    """A compact recipe on top of the official config `base` (its data and degradation): the
    parameter-free space-to-depth first stage (48 channels at LR resolution, scale_factor 1: the
    latent is the [-1, 1] image rearranged), a small Swin-UNet, no LPIPS, float32, HR crops of
    `gt_size` at the images' own resolution from ../shared/data/train_hr less COMPACT_HELD_OUT
    (the test and validation splits)."""
    cfg = load_config(base)
    cfg.autoencoder.kind = "space_to_depth"
    cfg.autoencoder.ckpt_path = ""  # no weights
    lr_crop = gt_size // int(cfg.diffusion.sf)
    m = cfg.model
    m.image_size = m.lq_size = lr_crop  # the LR image is concatenated at latent (= LR) resolution
    m.in_channels = m.out_channels = 3 * int(cfg.diffusion.sf) ** 2
    # 4.8M parameters: a train step (16 crops of 128 px) ~1.0 s and a 128x128 -> 512x512 image
    # ~0.95 s on 2 cores; model_channels = swin_embed_dim = 32: 1.2M, 0.34 s and 0.35 s
    m.model_channels = 64  # GroupNorm has 32 groups: multiples of 32
    m.channel_mult = (1, 2, 2)
    m.num_res_blocks = (1, 1, 1)
    m.attention_resolutions = (lr_crop // 4,)  # Swin at the lowest level (and in the middle block)
    m.swin_depth = 2
    m.swin_embed_dim = 64
    m.num_head_channels = 16
    m.window_size = 8
    m.mlp_ratio = 2
    d = cfg.diffusion
    d.steps = 4
    d.kappa = kappa
    d.min_noise_level = min_noise_level
    d.schedule_kwargs.power = 0.3
    d.etas_end = 0.99
    d.scale_factor = 1.0
    # The UNet predicts the residual r = y - x0 and x0 = y - r (the reference's `residual` model
    # type, same x0-MSE objective): a zero output is bicubic interpolation. Predicting x0 itself
    # (the official configs' `xstart`) from scratch must first learn to copy y through the UNet:
    # after 300 steps (1.2M UNet) its 4-step samples were 22.1 dB on the validation split,
    # 4.7 dB under bicubic; `residual` started at bicubic's level (scripts/sweep_compact.py).
    d.predict_type = "residual"
    tr = cfg.data.train
    tr.dir_paths = ("../shared/data/train_hr",)
    tr.exclude_glob = COMPACT_HELD_OUT
    tr.gt_size = gt_size
    tr.rescale_gt = False
    tr.crop_pad_size = gt_size
    cfg.degradation.gt_size = gt_size
    cfg.inference.padding_offset = lr_crop  # = model.lq_size
    cfg.inference.chop_size = 128  # LR tiles: a 128x128 LR image is one tile
    cfg.inference.chop_stride = 112
    cfg.inference.shape_buckets = (64, 128)  # tiles <= 128: at most 4 programs (16 without)
    t = cfg.train
    t.lr = 5e-4
    t.lr_min = 5e-5
    t.lr_schedule = "cosin"
    t.warmup_iterations = 200
    t.batch = (16, 6)  # [train, val]
    t.microbatch = 16
    t.iterations = iterations
    t.ema_rate = 0.995  # a ~200-step average: the runs are a few thousand steps long
    t.use_amp = False  # bfloat16 is slower than float32 on a CPU
    t.loss_coef = (1.0, 0.0)  # no LPIPS
    t.save_freq = 500
    t.keep_checkpoints = 2
    t.val_freq = 500
    t.log_freq = (25, 500, 1)
    t.seed = 2026
    t.data_seed = 2026
    return cfg


def base_config(*, steps: int, min_noise_level: float, lr_schedule: str, batch: int,
                microbatch: int, iterations: int, loss_coef) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.model = unet_config()
    cfg.autoencoder = autoencoder_config()
    cfg.diffusion = diffusion_config(steps, min_noise_level)
    cfg.degradation = degradation_config()
    cfg.data = realesrgan_data_config()
    cfg.train = train_config(lr_schedule=lr_schedule, batch=batch, microbatch=microbatch,
                             iterations=iterations, loss_coef=loss_coef)
    cfg.sharding = sharding_config()
    cfg.inference = inference_config()
    cfg.distill = distill_config()
    cfg.name = ""
    return cfg


def load_config(config) -> ml_collections.ConfigDict:
    """A config name (``"realsr_v3"``), a path to a config file, or a ConfigDict -> ConfigDict."""
    if isinstance(config, ml_collections.ConfigDict):
        return config
    path = pathlib.Path(str(config))
    if not path.suffix:
        if str(config) not in CONFIG_NAMES:
            raise ValueError(f"unknown config name {config!r}; known: {', '.join(CONFIG_NAMES)} "
                             "(or give a path to a config file)")
        path = CONFIG_DIR / f"{config}.py"
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"resshift_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} has no get_config()")
    return module.get_config()


# ----------------------------------------------------------------------------- command-line overrides
class UnknownConfigKeyError(KeyError):
    """A `--config.a.b=value` override names a key the config does not declare."""

    def __str__(self):  # KeyError would print the message in quotes
        return str(self.args[0])


def override_keys(argv, flag: str = "config") -> list[str]:
    """Dotted keys that `argv` overrides: `--config.train.lr=1e-4`, `--config.train.lr 1e-4`,
    `--noconfig.train.use_amp` (absl's boolean negation)."""
    keys = []
    for arg in argv:
        for prefix in (f"--{flag}.", f"--no{flag}."):
            if arg.startswith(prefix):
                keys.append(arg[len(prefix):].split("=", 1)[0])
    return keys


def config_file_arg(argv, flag: str = "config") -> str | None:
    """The value of `--config=X` / `--config X` in `argv` (None when absent)."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{flag}="):
            return arg.split("=", 1)[1]
        if arg == f"--{flag}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_overrides(argv, flag: str = "config") -> None:
    """Raise UnknownConfigKeyError for the first `--config.KEY` override in `argv` whose KEY the
    config file does not declare, naming the section's keys and the closest matches.

    ml_collections already refuses such an override on a locked config, but with a bare
    `AttributeError: 'key'` and a traceback; entry points call this first (absl flags_parser)."""
    source = config_file_arg(argv, flag)
    if source is None:
        return  # absl reports the missing required flag
    cfg = load_config(source)
    for key in override_keys(argv, flag):
        node, done = cfg, []
        for part in key.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                where = ".".join(done) or "the config"
                known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                close = difflib.get_close_matches(part, known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                listing = f" ({where} has: {', '.join(known)})" if known else f" ({where} is a value, not a section)"
                raise UnknownConfigKeyError(
                    f"--{flag}.{key}: {source} declares no key {key!r}{hint}{listing}. Every config key is "
                    "declared in resshift_jax/config.py; an undeclared key would be ignored, so it is refused.")
            node = node[part]
            done.append(part)


def absl_flags_parser(argv):
    """An `absl.app.run(main, flags_parser=...)` parser: `check_overrides`, then absl's parsing
    (which applies the overrides to the locked config). Exits with absl's usage message."""
    try:
        check_overrides(argv)
    except (UnknownConfigKeyError, ValueError, FileNotFoundError) as e:
        print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
        sys.exit(1)
    return app.parse_flags_with_usage(argv)
