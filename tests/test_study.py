"""The w_t study runner: a micro study run twice through the CLI (identical results.csv), outputs,
skip-on-restart; plus the cheap pieces (specs, run configs, data order, tables) in-process.

The micro study is 1 scheme x 2 seeds x 3 steps (32x32 HR crops, 2 validation crops of 16x16 LQ);
the 2 x 2 version is marked slow (and bench/bench_study.py runs a few dozen steps)."""

import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np
import pytest

from resshift_jax import study
from resshift_jax.config import load_config
from resshift_jax.evaluation import val_pairs

ROOT = pathlib.Path(__file__).resolve().parent.parent
MICRO = ["--config.train.iterations=3", "--config.train.save_freq=100", "--config.data.train.gt_size=32",
         "--config.degradation.gt_size=32",
         "--config.data.val.length=2", "--config.study.val_crop=16", "--config.train.batch=(8,2)",
         "--config.study.seeds=(0,1)"]


def run_cli(workdir, cache, only, extra=()):
    """`python -m resshift_jax.study` in a fresh process (the compile cache must be set before the
    process's first compilation); returns (wall s, child CPU s)."""
    cmd = [sys.executable, "-m", "resshift_jax.study", "--config", "configs/study_wt.py", "--workdir", str(workdir),
           *MICRO, f"--config.study.only={only}", f"--config.study.compile_cache_dir={cache}", *extra]
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "--xla_force_host_platform_device_count=8"),
           "JAX_PLATFORMS": "cpu"}
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert r.returncode == 0, f"study failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return wall, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)


def twice_and_restart(tmp, only):
    cache = tmp / "jax_cache"  # shared: the 2nd study loads every program the 1st compiled
    a, b = tmp / "a", tmp / "b"
    times = {"first": run_cli(a, cache, only), "second": run_cli(b, cache, only)}
    before = (a / "results.csv").read_bytes()
    times["restart"] = run_cli(a, cache, only)
    print("\nstudy CLI wall/cpu s:", {k: (round(w, 1), round(c, 1)) for k, (w, c) in times.items()})
    return a, b, before, times


def check_study(a, b, before, labels, seeds=(0, 1)):
    runs = [study.run_name(l, k) for l in labels for k in seeds]
    # identical numbers: the whole results.csv and every per-image evaluation
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()
    for r in runs:
        assert (a / "runs" / r / "eval.csv").read_bytes() == (b / "runs" / r / "eval.csv").read_bytes()
    # restart: every run skipped, results unchanged
    assert (a / "results.csv").read_bytes() == before
    t = json.loads((a / "timings.json").read_text())
    assert t["runs"] == {r: {"skipped": True} for r in runs}
    assert sum(f"skip {r}: done.json present" in ln for ln in (a / "study.log").read_text().splitlines()
               for r in runs) == len(runs)
    # the cache was used: the 2nd study compiled no training step / sampler anew
    tb = json.loads((b / "timings.json").read_text())
    assert tb["compile_cache"]["hits"] >= 2 * len(runs)
    # contents
    lines = (a / "results.csv").read_text().splitlines()
    head = lines[0].split(",")
    rows = [dict(zip(head, ln.split(","))) for ln in lines[1:]]
    assert [r["run"] for r in rows] == runs
    for col in ("psnr", "ssim", "train_mse", "train_mse_t0", "train_mse_t3", "train_loss_final", "steps",
                "data_seed"):
        assert col in head
    for r in rows:
        assert 5 < float(r["psnr"]) < 60 and -1 < float(r["ssim"]) <= 1 and np.isfinite(float(r["train_mse"]))
        assert r["steps"] == "3" and r["data_seed"] == "1234" and r["n_val"] == "2"
    # the seed changes the run (init/noise), so per-seed numbers differ
    assert rows[0]["psnr"] != rows[1]["psnr"]
    md = (a / "results.md").read_text()
    for l in labels:
        assert f"| {l} | " in md
    assert " ± " in md and "Effective per-t weight" in md
    for png in ("loss_t.png", "metrics.png"):
        assert (a / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (a / png).stat().st_size > 5000
    for r in runs:
        assert (a / "runs" / r / "done.json").is_file() and (a / "runs" / r / "metrics.jsonl").is_file()


def test_micro_study_twice_identical_and_restart_skips(tmp_path):
    a, b, before, _ = twice_and_restart(tmp_path, "uniform")
    check_study(a, b, before, ["uniform"])


@pytest.mark.slow
def test_tiny_study_2x2_twice_identical(tmp_path):
    a, b, before, _ = twice_and_restart(tmp_path, "uniform,kl")
    check_study(a, b, before, ["uniform", "kl"])


# ------------------------------------------------------------------------------ cheap pieces
def cfg():
    return load_config(str(ROOT / "configs" / "study_wt.py"))


def test_scheme_specs_and_run_config():
    c = cfg()
    specs = study.scheme_specs(c)
    assert [s["label"] for s in specs][:2] == ["uniform", "kl"]
    c.study.only = "kl_clipped10,min_snr5"
    specs = study.scheme_specs(c)
    assert specs == [dict(label="kl_clipped10", weighting="kl_clipped", kwargs={"max_ratio": 10.0}, t_sampling="uniform"),
                     dict(label="min_snr5", weighting="min_snr", kwargs={"gamma": 5.0}, t_sampling="uniform")]
    rc = study.run_config(c, specs[0], 7)
    assert "study" not in rc and "study" in c
    assert rc.diffusion.loss_weighting == "kl_clipped" and dict(rc.diffusion.loss_weighting_kwargs) == {"max_ratio": 10.0}
    assert rc.train.seed == 7 and rc.train.data_seed == c.study.data_seed and rc.train.val_freq == 0
    c.study.only = "nope"
    with pytest.raises(ValueError, match="unknown labels"):
        study.scheme_specs(c)
    c.study.only = ""
    c.study.schemes = [dict(label="x", weighting="no_such_scheme")]
    with pytest.raises(ValueError, match="unknown w_t scheme"):
        study.scheme_specs(c)
    c.study.schemes = [dict(label="x", weighting="kl", t_sampling="nope")]
    with pytest.raises(ValueError, match="t_sampling"):
        study.scheme_specs(c)
    c.study.schemes = [dict(label="x", weighting="kl_clipped", kwargs={"bad": 1})]
    with pytest.raises(TypeError):
        study.run_config(c, study.scheme_specs(c)[0], 0)


def test_data_order_is_the_data_seed_not_the_run_seed():
    from resshift_jax import sharding as shd
    from resshift_jax.train.input import TrainInput
    c = cfg()
    c.data.train.gt_size = c.degradation.gt_size = 32
    spec = study.scheme_specs(c)[0]
    r0, r1 = study.run_config(c, spec, 0), study.run_config(c, spec, 1)
    assert r0.train.seed != r1.train.seed and r0.train.data_seed == r1.train.data_seed
    mesh = shd.mesh_from_config(r0)
    b0 = TrainInput(r0, mesh, use_pool=False).host_batch()
    b1 = TrainInput(r1, mesh, use_pool=False).host_batch()
    np.testing.assert_array_equal(b0["hr"], b1["hr"])  # same images, crops and flips
    r1.train.data_seed = int(r0.train.data_seed) + 1
    b2 = TrainInput(r1, mesh, use_pool=False).host_batch()
    assert not np.array_equal(b0["hr"], b2["hr"])


def test_val_pairs_crop_and_tables(tmp_path):
    c = cfg()
    rc = study.run_config(c, study.scheme_specs(c)[0], 0)
    rc.data.val.length = 2
    crops, full = val_pairs(rc, crop=16), val_pairs(rc)  # the study's pairs: study.val_crop = 16
    names = [p.name for p in crops]
    assert len(names) == 2 and names == sorted(names) == [p.name for p in full]
    assert crops[0].lq.shape == (16, 16, 3) and crops[0].gt.shape == (64, 64, 3)
    np.testing.assert_array_equal(crops[0].lq, full[0].lq[24:40, 24:40])
    np.testing.assert_array_equal(crops[0].gt, full[0].gt[96:160, 96:160])
    # tables from synthetic rows: mean ± sample std over seeds
    specs = study.scheme_specs(c)[:2]
    rows = [dict(run=study.run_name(s["label"], k), scheme=s["label"], seed=k, psnr=20.0 + k + i, ssim=0.5,
                 train_mse=0.1, n_val=2) for i, s in enumerate(specs) for k in (0, 1)]
    study.write_results_csv(tmp_path / "r.csv", rows)
    assert (tmp_path / "r.csv").read_text().splitlines()[1] == "uniform__seed0,uniform,0,20.0,0.5,0.1,2"
    study.write_results_md(tmp_path / "r.md", rows, specs, ["psnr", "ssim"], c)
    md = (tmp_path / "r.md").read_text()
    assert "| uniform | uniform | uniform | 0,1 | 20.500 ± 0.707 | 0.5000 ± 0.0000 | 0.1000 ± 0.0000 |" in md
    assert "| kl | kl | uniform | 0,1 | 21.500 ± 0.707 |" in md
    study.plot_metrics(tmp_path / "m.png", rows, specs, ["psnr", "ssim"])
    assert (tmp_path / "m.png").stat().st_size > 5000
