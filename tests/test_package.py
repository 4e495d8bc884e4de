"""Package-level promises: fast import, no torch/tensorflow, configs load and lock."""

import pathlib
import subprocess
import sys

import pytest

from resshift_jax.config import CONFIG_NAMES, load_config

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_import_is_fast_and_pulls_no_torch_or_tensorflow():
    code = ("import sys, time; t = time.perf_counter(); import resshift_jax, resshift_jax.diffusion, "
            "resshift_jax.schedule; print(time.perf_counter() - t); "
            "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules), "
            "any(m == 'tensorflow' or m.startswith('tensorflow.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) < 3.0, f"import took {out[0]} s"
    assert out[1:] == ["False", "False"]


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_configs_load_with_official_keys(name):
    cfg = load_config(name)
    for key in ("model.image_size", "autoencoder.n_embed", "autoencoder.ddconfig.ch_mult", "diffusion.steps",
                "diffusion.kappa", "diffusion.min_noise_level", "train.lr", "train.iterations", "train.batch",
                "train.microbatch", "train.save_freq", "train.ema_rate", "degradation.resize_prob",
                "data.train.kernel_prob"):
        node = cfg
        for part in key.split("."):
            node = node[part]


def test_spec_training_settings():
    v1, v3 = load_config("realsr_v1"), load_config("realsr_v3")
    assert (v1.train.batch[0], v1.train.microbatch, v1.train.iterations, v1.train.lr_schedule) == (64, 8, 300000, "")
    assert (v3.train.batch[0], v3.train.microbatch, v3.train.iterations, v3.train.lr_schedule) == (96, 12, 400000, "cosin")
    assert tuple(v3.train.loss_coef) == (1.0, 1.0) and tuple(v1.train.loss_coef) == (1.0, 0.0)
    assert v3.diffusion.steps == 4 and v1.diffusion.steps == 15


def test_unknown_config_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown config name 'realsr_v9'"):
        load_config("realsr_v9")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.py")


def test_command_line_overrides_and_lock():
    """config_flags overrides with official key names, locked after load."""
    code = (
        "import sys\n"
        "from absl import flags\n"
        "from ml_collections import config_flags\n"
        "config_flags.DEFINE_config_file('config')\n"
        "flags.FLAGS(sys.argv)\n"
        "cfg = flags.FLAGS.config\n"
        "cfg.lock()\n"
        "print(cfg.diffusion.steps, cfg.train.lr)\n"
        "try:\n    cfg.new_key = 1\nexcept AttributeError:\n    print('locked')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, "--config=configs/realsr_v3.py",
                          "--config.diffusion.steps=8", "--config.train.lr=1e-4"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    assert out == ["8", "0.0001", "locked"]
