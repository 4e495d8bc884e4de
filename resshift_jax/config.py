"""Config builders shared by the files in `configs/`.

The key names follow the official ResShift YAML files (``model.*``, ``autoencoder.*``,
``diffusion.*``, ``degradation.*``, ``data.*``, ``train.*``), with the YAML's ``params``
level folded away (``diffusion.params.steps`` -> ``diffusion.steps``), so a user of the
official code finds every setting under the name they know.
"""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
CONFIG_NAMES = ("realsr_v1", "realsr_v2", "realsr_v3", "bicsr", "tiny", "micro")


def unet_config() -> ml_collections.ConfigDict:
    """`model.params` of the realsr/bicsr YAMLs (UNetModelSwin)."""
    return ml_collections.ConfigDict(dict(
        target="models.unet.UNetModelSwin",
        ckpt_path="",
        image_size=64,
        in_channels=3,
        model_channels=160,
        out_channels=3,
        attention_resolutions=(64, 32, 16, 8),
        dropout=0.0,
        channel_mult=(1, 2, 2, 4),
        num_res_blocks=(2, 2, 2, 2),
        conv_resample=True,
        dims=2,
        use_fp16=False,
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
        target="ldm.models.autoencoder.VQModelTorch",
        ckpt_path="weights/autoencoder_vq_f4.pth",
        use_fp16=True,  # read by no code in the reference; kept for familiarity
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
            padding_mode="zeros",
        ),
    ))


def diffusion_config(steps: int, min_noise_level: float) -> ml_collections.ConfigDict:
    """`diffusion.params` of create_gaussian_diffusion, plus the w_t scheme of this project."""
    return ml_collections.ConfigDict(dict(
        target="models.script_util.create_gaussian_diffusion",
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
        resize_back=False,
        use_sharp=False,
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
            im_exts=("png", "jpg", "jpeg", "JPEG", "bmp", "tif", "tiff", "webp"),
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
            use_rot=False,
            rescale_gt=True,
            num_workers=0,
            prefetch_buffer=2,
        ),
        val=dict(
            type="base",
            dir_path="../shared/data/Val_SR/lq",
            extra_dir_path="../shared/data/Val_SR/gt",
            im_exts=("png",),
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
        num_workers=6,
        prefetch_factor=2,
        weight_decay=0.0,
        ema_rate=0.999,
        iterations=iterations,
        save_freq=10000,
        val_freq=10000,
        log_freq=(200, 2000, 1),  # [training loss, training images, val images]
        loss_coef=tuple(loss_coef),  # [mse, lpips]
        use_ema_val=True,
        val_y_channel=True,
        val_resolution=64,
        val_padding_mode="reflect",
        use_amp=True,  # resshift-jax: bfloat16 compute when True (fp32 master weights)
        seed=123456,
        global_seeding=False,
        compile=dict(flag=False, mode="reduce-overhead"),
        # resshift-jax additions
        grad_clip=0.0,  # 0 = off (the reference does not clip)
        max_bad_steps=20,  # NaN/Inf updates skipped before stopping
        keep_checkpoints=3,
        lpips_ckpt="weights/lpips_vgg.pth",
        vgg_ckpt="weights/vgg16.pth",
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
        seed=12345,
        bs=1,
        dtype="fp32",
        blend="feather",
    ))


def base_config(*, steps: int, min_noise_level: float, lr_schedule: str, batch: int,
                microbatch: int, iterations: int, loss_coef) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.trainer = ml_collections.ConfigDict(dict(
        target="trainer.TrainerDifIRLPIPS" if loss_coef[1] > 0 else "trainer.TrainerDifIR"))
    cfg.model = unet_config()
    cfg.autoencoder = autoencoder_config()
    cfg.diffusion = diffusion_config(steps, min_noise_level)
    cfg.degradation = degradation_config()
    cfg.data = realesrgan_data_config()
    cfg.train = train_config(lr_schedule=lr_schedule, batch=batch, microbatch=microbatch,
                             iterations=iterations, loss_coef=loss_coef)
    cfg.sharding = sharding_config()
    cfg.inference = inference_config()
    cfg.name = ""
    cfg.unet_url = ""
    cfg.unet_ckpt_name = ""
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
