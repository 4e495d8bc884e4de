"""The bundled compact models (resshift_jax/assets/compact, trained by this project's train.py):
they load strictly into their configs' UNets and super-resolve held-out images better than
bicubic interpolation. This fails if the shipped weights, the space-to-depth first stage, the
schedule or the sampler break: any of these turns the output into noise or blur."""

import jax
import numpy as np
import pytest

from resshift_jax import download, weights
from resshift_jax.config import COMPACT_TEST, load_config
from resshift_jax.evaluation import (bicubic_pairs, bicubic_upsample, folder_pairs, score_pairs, super_resolve,
                                     tile_settings)
from resshift_jax.pipeline import SRPipeline
from resshift_jax.weights import read_safetensors

# What the README's model card states about the files (a new training run must update both).
MAX_BYTES = 20 * 2 ** 20
# Held-out crops: 4 of the 18 test-split images (never trained on, never used for a choice),
# centred 64x64 LR crops (256x256 HR), one tile each; noise from the fixed seed below.
N_CROPS, CROP, SEED = 4, 64, 2026
# Bounds against bicubic interpolation on these crops, each half (or less) of what the shipped
# files measured, with the measurement beside it. CPU models change float32 rounding in the
# sampler by ~1e-6 relative, which moves a PSNR or NIQE by < 1e-3; broken weights, a wrong first
# stage or a wrong schedule cost several dB (a random UNet: ~12 dB) or leave noise or blur.
# bicsr (its default output, x0 after step 1): PSNR(Y) +1.644 dB on the 4 crops (23.326 / 30.183 /
# 30.479 / 24.860 vs bicubic 22.189 / 28.552 / 29.447 / 22.087); every crop gains >= 1.03 dB.
MIN_GAIN_BICSR_DB = 0.8
# realsr, default output (x0 after step 2): NIQE 5.836 against bicubic's 8.287 (-2.45; per crop
# 5.93 / 6.67 / 5.19 / 5.56 vs 7.48 / 9.79 / 8.38 / 7.50), PSNR(Y) -0.48 dB (22.030 vs 22.512):
# sharper than bicubic, a little below its PSNR on real degradations (README), so the PSNR
# bound only catches a broken model.
MAX_NIQE_DROP_REALSR = -1.2
MIN_GAIN_REALSR_DB = -1.0
# realsr, the whole chain (--x0_after 0): NIQE 5.367 (-2.92; per crop 5.60 / 4.44 / 5.53 / 5.91),
# PSNR -0.75 dB: sharp, not noise.
MAX_NIQE_DROP_REALSR_CHAIN = -1.45
MIN_GAIN_REALSR_CHAIN_DB = -1.5


def one_device_pipeline(task):
    cfg = load_config(download.compact_config(task))
    unet = weights.load_unet(download.bundled_file(task), cfg)  # strict: every key, every shape
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1], axis_types=(jax.sharding.AxisType.Auto,))
    return SRPipeline(unet, weights.load_first_stage(cfg), cfg, mesh=mesh), cfg



def held_out_pairs(task, data_dir):
    if task == "bicsr":  # the bicsr protocol: LQ = MATLAB bicubic x1/4 of the GT
        pairs = bicubic_pairs(data_dir / "train_hr", sf=4, crop=CROP, include=COMPACT_TEST)
        return pairs[:: len(pairs) // N_CROPS][:N_CROPS]
    pairs = folder_pairs(data_dir / "Val_SR" / "lq", data_dir / "Val_SR" / "gt", sf=4)  # 64x64 LR
    return pairs[:: len(pairs) // N_CROPS][:N_CROPS]


@pytest.mark.parametrize("task", ["bicsr", "realsr"])
def test_bundled_file_is_small_finite_and_official_layout(task):
    path = download.bundled_file(task)
    assert path.is_file(), f"{path} is missing: the bundled compact model ships with the repository"
    assert path.stat().st_size <= MAX_BYTES
    sd = read_safetensors(path)
    assert sd["out.2.weight"].shape == (48, 64, 3, 3)  # official key layout: 48 = 3·4² channels out
    assert all(v.dtype == np.float32 and np.all(np.isfinite(v)) for v in sd.values())


def scores(pipe, cfg, pairs, metrics):
    """Mean metrics of the pipeline's outputs and of bicubic interpolation on `pairs`."""
    srs = super_resolve(pipe, pairs, seed=SEED, bs=N_CROPS, **tile_settings(cfg))
    bic = [bicubic_upsample(p.lq, 4) for p in pairs]
    mean = lambda rows: {m: float(np.mean([r[m] for r in rows])) for m in metrics}  # noqa: E731
    return mean(score_pairs(srs, pairs, metrics)), mean(score_pairs(bic, pairs, metrics))


def test_bundled_bicsr_beats_bicubic_on_held_out_crops(data_dir):
    pipe, cfg = one_device_pipeline("bicsr")
    model, bic = scores(pipe, cfg, held_out_pairs("bicsr", data_dir), ["psnr"])
    assert model["psnr"] - bic["psnr"] >= MIN_GAIN_BICSR_DB, (model, bic)


def test_bundled_realsr_on_held_out_crops(data_dir):
    """Its default (x0 after step 2) and the whole chain are sharper than bicubic (NIQE) at
    about bicubic's PSNR."""
    pipe, cfg = one_device_pipeline("realsr")
    assert int(cfg.inference.x0_after) == 2
    pairs = held_out_pairs("realsr", data_dir)
    model, bic = scores(pipe, cfg, pairs, ["psnr", "niqe"])
    assert model["niqe"] - bic["niqe"] <= MAX_NIQE_DROP_REALSR, (model, bic)
    assert model["psnr"] - bic["psnr"] >= MIN_GAIN_REALSR_DB, (model, bic)
    cfg.inference.x0_after = 0
    unet = weights.load_unet(download.bundled_file("realsr"), cfg)
    chain = SRPipeline(unet, weights.load_first_stage(cfg), cfg, mesh=pipe.mesh)
    model, bic = scores(chain, cfg, pairs, ["psnr", "niqe"])
    assert model["niqe"] - bic["niqe"] <= MAX_NIQE_DROP_REALSR_CHAIN, (model, bic)
    assert model["psnr"] - bic["psnr"] >= MIN_GAIN_REALSR_CHAIN_DB, (model, bic)
