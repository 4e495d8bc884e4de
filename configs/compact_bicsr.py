"""Compact ResShift, bicubic x4 (MATLAB bicubic), trained from scratch on a CPU: no pretrained weights.

`config.compact_config` on top of `bicsr`: the exact, parameter-free space-to-depth first stage
(`autoencoder.kind`; the HR image in [-1, 1] pixel-unshuffled by 4, 48 channels at LR resolution
like the VQ-f4 latent, so `model.lq_size = model.image_size` = the LR crop and the LR image is
concatenated to the UNet input as in the official configs; `diffusion.scale_factor` = 1), a
small Swin-UNet and no LPIPS (`train.loss_coef = (1, 0)`): the x0-MSE in this latent is the
pixel MSE, the quantity PSNR measures.

Data: `../shared/data/train_hr` at its own resolution (gt_size crops, `rescale_gt=False`; the
reference's bicsr shrinks each image to a short side of gt_size first, which at 128 px would
train on 4x-shrunk photos), LQ = MATLAB bicubic x1/4 of the crop, as `bicsr`. Two splits
are held out of training (`data.train.exclude_glob`): the 24 `kodak24_*` images validate (bicubic
pairs made from their GT, `data.val.type="bicubic"`, `data.val.include_glob`; also the schedule
sweep's set) and the 18 `mcmaster_*` images are the test split of the README's quality table,
never used for a choice.

Schedule (4 steps), for fidelity (the target is PSNR over bicubic): a small κ keeps the prior
y + κ·√η_T·ε close to y and the injected noise small (the paper's ablation: PSNR falls as κ
grows); min_noise_level sets the noise std κ·√η_1 of x_1, from which the last step predicts
the output (0.5 · 0.05 = 0.025 ≈ 3/255 in [-1, 1]); p = 0.3 and √η_T = 0.99 as the reference.
These were fixed before the full run; scripts/sweep_compact.py measures each against its
neighbours on the validation split (the README's sweep table). The UNet predicts the residual
y - x0 (`diffusion.predict_type="residual"`, see `config.compact_config`).
"""

from resshift_jax.config import COMPACT_VAL, compact_config


def get_config():
    # 6000 steps (~1.0 s each on 2 cores, about 105 min with the validations); the first shipped
    # model trained 3000 and reached +0.93 dB on the test split, validation PSNR still rising
    cfg = compact_config("bicsr", gt_size=128, kappa=0.5, min_noise_level=0.05, iterations=6000)
    cfg.name = "compact_bicsr"
    v = cfg.data.val
    v.type = "bicubic"  # LQ = MATLAB bicubic x1/4 of the held-out GT
    v.dir_path = "../shared/data/train_hr"
    v.include_glob = COMPACT_VAL
    v.length = -1
    # The output step, chosen on the validation split with the shipped EMA weights (24 kodak24
    # images, 8-bit bicubic LQ; bicubic 26.896 dB PSNR(Y)): x0 after step 1 27.812 dB, after
    # step 2 27.637, all 4 steps 27.581. The highest PSNR: step 1 (one UNet call).
    cfg.inference.x0_after = 1
    return cfg
