"""The persistent compilation cache: its folder, on/off, and a second infer.py process that
loads its programs from it instead of compiling."""

import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resshift_jax import compile_cache

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def restore_cache():
    yield
    compile_cache.disable()  # the suite runs without a persistent cache (conftest)


def test_default_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.default_dir() is None
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "c"))
    assert compile_cache.default_dir() == tmp_path / "c"
    monkeypatch.delenv(compile_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_dir() == tmp_path / "xdg" / "resshift_jax" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compile_cache.default_dir() == tmp_path / "home" / ".cache" / "resshift_jax" / "xla"


def test_configure_writes_programs_and_turns_off(tmp_path, monkeypatch, restore_cache):
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.configure(None) is None  # the variable says off
    assert jax.config.jax_compilation_cache_dir is None
    d = compile_cache.configure(tmp_path / "cache")
    assert d == tmp_path / "cache" and jax.config.jax_compilation_cache_dir == str(d)
    before = compile_cache.counts()
    jax.jit(lambda x: jnp.sin(x) * 3.25 + 0.125)(np.arange(7.0, dtype=np.float32)).block_until_ready()  # one program
    assert compile_cache.counts()["misses"] == before["misses"] + 1
    assert any(d.iterdir())  # the program was written
    assert compile_cache.configure(tmp_path / "other", enabled=False) is None
    assert jax.config.jax_compilation_cache_dir is None and not (tmp_path / "other").exists()


def test_unusable_folder_warns_and_runs_without_cache(tmp_path, capsys, restore_cache):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert compile_cache.configure(blocker / "cache") is None
    assert "compilation cache off" in capsys.readouterr().out
    assert jax.config.jax_compilation_cache_dir is None


def test_second_infer_process_loads_its_programs_from_the_cache(tmp_path, fixtures_dir, data_dir):
    """Two infer.py processes, same model and shapes: the first compiles and fills the folder, the
    second compiles nothing (every program is a cache hit)."""
    lq = sorted((data_dir / "Val_SR" / "lq").glob("*.png"))[0]
    env = dict(os.environ, RESSHIFT_JAX_CACHE_DIR=str(tmp_path / "cache"), XLA_FLAGS="", JAX_PLATFORMS="cpu")
    lines = []
    for run in range(2):
        cmd = [sys.executable, str(ROOT / "infer.py"), "-i", str(lq), "-o", str(tmp_path / f"out{run}"),
               "--config", "tiny", "--unet_ckpt", str(fixtures_dir / "unet_tiny.pth"),
               "--vae_ckpt", str(fixtures_dir / "vq_tiny.pth"), "--no_progress", "--chop_size", "64"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        m = re.search(r"^compile cache: (.+) \((\d+) programs loaded, (\d+) compiled\)$", r.stdout, re.M)
        assert m, r.stdout
        lines.append(dict(dir=m[1], hits=int(m[2]), misses=int(m[3])))
    first, second = lines
    assert first["dir"] == second["dir"] == str(tmp_path / "cache")
    assert first["misses"] >= 1 and first["hits"] == 0
    assert second["misses"] == 0 and second["hits"] == first["misses"]
    assert (tmp_path / "out0" / lq.name).read_bytes() == (tmp_path / "out1" / lq.name).read_bytes()
