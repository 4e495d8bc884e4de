"""resshift_jax.evaluation (the one evaluation path) and the trainer's validation through it."""


import numpy as np
import pytest

from resshift_jax import cli_infer
from resshift_jax import evaluation as ev
from resshift_jax.config import load_config
from resshift_jax.data.matlab_resize import imresize_np
from resshift_jax.imageio import read_image

NAME = "ILSVRC2012_val_00000067.png"


def test_super_resolve_equals_infer_py(fixtures_dir, data_dir, tmp_path):
    """Same image, same seed: evaluation.super_resolve gives what infer.py writes (noise keyed by
    the image's relative name, infer.py's tiling). The PNG rounds each value to the nearest of
    256 levels, so they agree to half a level (+ float32 slack on the 0..1 scale)."""
    lq_dir = tmp_path / "lq"
    lq_dir.mkdir()
    (lq_dir / NAME).write_bytes((data_dir / "Val_SR" / "lq" / NAME).read_bytes())
    argv = ["-i", str(lq_dir), "-o", str(tmp_path / "out"), "--config", "tiny", "--seed", "5", "--no_progress",
            "--unet_ckpt", str(fixtures_dir / "unet_tiny.pth"), "--vae_ckpt", str(fixtures_dir / "vq_tiny.pth")]
    assert cli_infer.main(argv) == 0
    written = read_image(tmp_path / "out" / NAME)[0]
    cfg = load_config("tiny")
    pipe = cli_infer.get_pipeline(cli_infer.build_parser().parse_args(argv))  # the same models
    pairs = ev.folder_pairs(lq_dir, data_dir / "Val_SR" / "gt", sf=4)
    sr = ev.super_resolve(pipe, pairs, seed=5, **ev.tile_settings(cfg))[0]
    assert sr.shape == written.shape == (256, 256, 3)
    np.testing.assert_allclose(sr, written, atol=0.5 / 255 + 1e-6)
    other = ev.super_resolve(pipe, pairs, seed=6, **ev.tile_settings(cfg))[0]
    assert np.abs(other - sr).max() > 10 / 255  # another seed: other noise


def test_bicubic_pairs_and_the_bicsr_default(data_dir):
    """bicsr validates as the reference's bicsr config: LQ = MATLAB bicubic x1/4 of the GT,
    float, neither clipped nor quantised; realsr validates on the real LQ/GT folders."""
    cfg = load_config("bicsr")
    assert cfg.data.val.type == "bicubic"
    cfg.data.val.length = 2
    pairs = ev.val_pairs(cfg)
    assert [p.name for p in pairs] == sorted(p.name for p in pairs) and len(pairs) == 2
    for p in pairs:
        assert p.gt.shape == (256, 256, 3) and p.lq.shape == (64, 64, 3)
        np.testing.assert_array_equal(p.lq, imresize_np(p.gt, 0.25))
    real = load_config("realsr_v3")
    assert real.data.val.type == "base"
    real.data.val.length = 1
    (pair,) = ev.val_pairs(real)
    np.testing.assert_array_equal(pair.lq, read_image(data_dir / "Val_SR" / "lq" / pair.name)[0])
    with pytest.raises(ev.EvaluationError, match="data.val.type"):
        real.data.val.type = "nope"
        ev.val_pairs(real)


def test_score_conventions():
    """PSNR on uint8 Y of float images; LPIPS input scaling checked by test_evaluate."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(size=(32, 32, 3)).astype(np.float32)
    pred = np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1).astype(np.float32)
    row = ev.score(pred, gt, ["psnr", "ssim"])
    from resshift_jax import metrics as M
    assert row["psnr"] == M.psnr(M.y_uint8(pred), M.y_uint8(gt))
    with pytest.raises(ev.EvaluationError, match="size mismatch"):
        ev.score(pred[:16], gt, ["psnr"])
    assert ev.summarize([{"psnr": 1.0}, {"psnr": float("nan")}, {"psnr": 3.0}], ["psnr"])["psnr"] == \
        {"mean": 2.0, "std": 1.0, "n": 2, "n_excluded": 1}


def test_validation_is_float32_with_fresh_noise(tmp_path):
    """The validator of a bf16 (use_amp) trainer gives exactly the numbers of an fp32 trainer with
    the same parameters (it computes in float32, as the reference), and other noise at another
    step; its seed is never the train state's. Through a persistent compilation cache: the fp32
    trainer's validator finds every program of the bf16 one's already compiled (the same
    float32 programs), which also spares the suite their second compilation."""
    from resshift_jax import compile_cache
    from resshift_jax import sharding as shd
    from resshift_jax.train.trainer import Trainer
    from resshift_jax.train.validation import Validator, val_seed

    out, new_programs = {}, {}
    compile_cache.enable(tmp_path / "xla")
    try:
        for amp in (True, False):
            cfg = load_config("tiny")
            cfg.train.use_amp = amp
            cfg.train.loss_coef = (1.0, 0.0)
            cfg.data.val.length = 1
            cfg.train.batch = (8, 1)
            trainer = Trainer(cfg, shd.mesh_from_config(cfg))
            state = trainer.init_state()
            v = Validator(trainer, cfg)
            before = compile_cache.counts()["misses"]
            out[amp] = (v(state, 10), v(state, 20))
            new_programs[amp] = compile_cache.counts()["misses"] - before
    finally:
        compile_cache.disable()
    assert new_programs[True] > 0 and new_programs[False] == 0, new_programs
    assert out[True] == out[False]  # exact: same float32 program on the same parameters
    a, b = out[True]
    assert a["val_seed"] == val_seed(cfg.train.seed, 10) != b["val_seed"] and cfg.train.seed not in (a["val_seed"], b["val_seed"])
    assert a["val_psnr_y"] != b["val_psnr_y"] and a["val_images"] == 1
