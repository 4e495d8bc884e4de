"""Package-level promises: fast import (no torch/tensorflow), importable and runnable from any
working directory once installed (`pip install -e .`), every console entry point answers --help,
configs load, and the training command line locks its config and refuses unknown keys."""

import importlib.metadata
import pathlib
import subprocess
import sys
import tomllib

import pytest

from resshift_jax.config import CONFIG_NAMES, UnknownConfigKeyError, load_config
from resshift_jax.train import cli as train_cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
BIN = pathlib.Path(sys.executable).parent
NOT_INSTALLED = "the package is not installed into this environment: run `bash scripts/setup_env.sh test`"


def test_import_is_fast_and_pulls_no_torch_or_tensorflow():
    code = ("import sys, time; t = time.perf_counter(); import resshift_jax, resshift_jax.diffusion, "
            "resshift_jax.schedule; print(time.perf_counter() - t); "
            "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules), "
            "any(m == 'tensorflow' or m.startswith('tensorflow.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) < 3.0, f"import took {out[0]} s"
    assert out[1:] == ["False", "False"]


def test_imports_from_another_directory(tmp_path):
    """Installed, not just a folder: the import and a config by name work from elsewhere."""
    code = "import resshift_jax as rs; print(rs.__file__); print(rs.load_config('tiny').name)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, f"{NOT_INSTALLED}\n{res.stderr[-2000:]}"
    where, name = res.stdout.split()
    assert pathlib.Path(where).resolve() == ROOT / "resshift_jax" / "__init__.py" and name == "tiny"


def test_installed_entry_points_match_pyproject():
    """A stale install (an entry point added or renamed since) fails here, not in a user's shell."""
    try:
        dist = importlib.metadata.distribution("resshift-jax")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(NOT_INSTALLED)
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert installed == SCRIPTS, NOT_INSTALLED


def test_every_console_entry_point_answers_help(tmp_path):
    """Each `resshift-*` command, run from another directory: --help exits 0 with its usage.
    Started together (each mostly imports modules) so the test takes one import's time."""
    missing = [name for name in SCRIPTS if not (BIN / name).is_file()]
    assert not missing, f"{missing}: {NOT_INSTALLED}"
    procs = {name: subprocess.Popen([str(BIN / name), "--help"], cwd=tmp_path, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for name in SCRIPTS}
    for name, proc in procs.items():
        out = proc.communicate(timeout=300)[0]
        absl_help = proc.returncode == 1 and "Try --helpfull" in out  # absl's --help exits 1 (resshift-study)
        assert proc.returncode == 0 or absl_help, f"{name} --help exited {proc.returncode}:\n{out[-3000:]}"
        assert "usage" in out.lower() or "flags:" in out.lower(), f"{name} --help printed no usage:\n{out[-3000:]}"


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


def _train_argv(*overrides):
    return ["train.py", f"--config={ROOT / 'configs/realsr_v3.py'}", "--workdir=unused", *overrides]


def test_train_command_line_overrides_and_locks_its_config():
    """train.py's own flag handling (train.cli.parse_flags, what its main runs): official key
    names override, the result is locked, an unknown key is refused with the key's name."""
    fv = train_cli.parse_flags(_train_argv("--config.diffusion.steps=8", "--config.train.lr=1e-4"))
    cfg = fv.config
    assert (cfg.diffusion.steps, cfg.train.lr, fv.workdir) == (8, 1e-4, "unused")
    with pytest.raises(AttributeError):
        cfg.new_key = 1  # locked
    with pytest.raises(UnknownConfigKeyError, match=r"no key 'train\.nope'.*train has: accum_steps"):
        train_cli.parse_flags(_train_argv("--config.train.nope=1"))


def test_train_flags_lock_the_config_even_without_the_check():
    """define_flags itself locks (lock_config=True): without check_overrides the override still
    fails (ml_collections' bare error), so the check is a better message, not the only guard."""
    from absl import flags

    argv = _train_argv("--config.train.nope=1")
    with pytest.raises(AttributeError, match="nope"):
        train_cli.define_flags(flags.FlagValues(), argv)(argv)


def test_train_py_refuses_an_unknown_key():
    """The real entry point, end to end up to flag parsing (no JAX work: fails before training)."""
    res = subprocess.run([sys.executable, "train.py", *_train_argv("--config.train.nope=1")[1:]],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 1
    assert "--config.train.nope" in res.stderr and "declares no key 'train.nope'" in res.stderr
    assert "Traceback" not in res.stderr
