"""weights.py: unwrapping, strict loading, formats, CLI (the torch-free .pth reader itself is
tested in test_torch_pickle.py, whose torch.save writer these tests use)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from resshift_jax import weights as W
from resshift_jax.config import load_config
from resshift_jax.weights import (CheckpointMismatchError, load_pth, load_vqgan, module_state_dict,
                                  read_checkpoint, read_pth, read_safetensors, save_checkpoint, save_orbax,
                                  unwrap_state_dict)
from tests.test_torch_pickle import as_tensors, assert_same_state, write_torch_zip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_UNET = importlib.util.find_spec("resshift_jax.models.unet") is not None
needs_unet = pytest.mark.skipif(not HAS_UNET, reason="resshift_jax.models.unet not written yet")

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def vq_weights(fixtures_dir):
    return dict(np.load(fixtures_dir / "vq_tiny_weights.npz"))


@pytest.fixture(scope="module")
def vq(fixtures_dir):
    return load_vqgan(fixtures_dir / "vq_tiny.pth", "tiny")


# ----------------------------------------------------------------------------- unwrapping


def test_unwrap_state_dict():
    a = np.zeros(2)
    sd = unwrap_state_dict({"state_dict": {"module._orig_mod.x.weight": a, "_orig_mod.module.y": a}, "iters_start": 5})
    assert set(sd) == {"x.weight", "y"}
    with pytest.raises(ValueError, match="collides"):
        unwrap_state_dict({"module.x": a, "x": a})
    with pytest.raises(ValueError, match="not a tensor"):
        unwrap_state_dict({"x": a, "iters": 3})


def test_nested_prefixed_checkpoint_loads_identically(tmp_path, fixtures_dir, vq_weights, vq):
    obj = {"iters_start": 5, "log_step": {"train": 200}, "name": "ema",
           "state_dict": as_tensors(vq_weights, prefix="module._orig_mod.")}
    path = write_torch_zip(tmp_path / "model_5.pth", obj)
    raw = load_pth(path)
    assert raw["iters_start"] == 5 and raw["name"] == "ema"
    assert_same_state(read_pth(path), vq_weights)
    assert_same_state(module_state_dict(load_vqgan(path, "tiny")), module_state_dict(vq))


# ----------------------------------------------------------------------------- strict loading


def test_wrong_model_error_names_file_keys_and_shapes(fixtures_dir):
    path = fixtures_dir / "unet_tiny.pth"
    with pytest.raises(CheckpointMismatchError) as err:
        load_vqgan(path, "tiny")
    msg = str(err.value)
    assert str(path) in msg and "VQModel" in msg
    assert "missing key(s)" in msg and "153 missing" in msg and "decoder.conv_in.weight: (64, 3, 3, 3)" in msg
    assert "538 unexpected key(s)" in msg and "input_blocks.0.0.weight: (32, 6, 3, 3)" in msg
    assert "load_unet" in msg


def test_mis_shaped_key_reported(tmp_path, vq_weights):
    cfg = load_config("tiny")
    cfg.autoencoder.n_embed = 32
    with pytest.raises(CheckpointMismatchError, match=r"quantize.embedding.weight: expected \(32, 3\), found \(64, 3\)"):
        load_vqgan(write_torch_zip(tmp_path / "vq.pth", as_tensors(vq_weights)), cfg)


@pytest.fixture(scope="module")
def unet(fixtures_dir):
    from resshift_jax.weights import load_unet

    return load_unet(fixtures_dir / "unet_tiny.pth", "tiny")


@needs_unet
def test_unet_loads_and_rejects_vq(fixtures_dir, unet):
    from resshift_jax.weights import load_unet

    ref = dict(np.load(fixtures_dir / "unet_tiny_weights.npz"))
    ref = {k: v for k, v in ref.items() if not k.endswith(W.RECOMPUTED_BUFFERS)}
    assert_same_state(module_state_dict(unet), ref)
    with pytest.raises(CheckpointMismatchError) as err:
        load_unet(fixtures_dir / "vq_tiny.pth", "tiny")
    msg = str(err.value)
    assert str(fixtures_dir / "vq_tiny.pth") in msg and "input_blocks.0.0.weight: (32, 6, 3, 3)" in msg and "load_vqgan" in msg


@needs_unet
def test_unet_nested_prefixed_checkpoint(tmp_path, fixtures_dir, unet):
    from resshift_jax.weights import load_unet

    ref = dict(np.load(fixtures_dir / "unet_tiny_weights.npz"))
    path = write_torch_zip(tmp_path / "ema.pth", {"state_dict": as_tensors(ref, prefix="module._orig_mod.")})
    assert_same_state(module_state_dict(load_unet(path, "tiny")), module_state_dict(unet))


# ----------------------------------------------------------------------------- formats and CLI


def test_safetensors_round_trip(tmp_path, vq, vq_weights):
    path = tmp_path / "vq.safetensors"
    save_checkpoint(vq, path)
    assert_same_state(read_safetensors(path), vq_weights)
    assert_same_state(module_state_dict(load_vqgan(path, "tiny")), vq_weights)
    with pytest.raises(ValueError, match="safetensors"):
        save_checkpoint(vq, tmp_path / "vq.pth")


def test_orbax_round_trip(tmp_path, vq, vq_weights):
    path = tmp_path / "vq_orbax"
    save_orbax(vq, path)
    assert_same_state(read_checkpoint(path), vq_weights)
    assert_same_state(module_state_dict(load_vqgan(path, "tiny")), vq_weights)
    with pytest.raises(FileExistsError):
        save_orbax(vq, path)


def test_read_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown checkpoint type"):
        read_checkpoint(tmp_path / "w.h5")


def _cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "resshift_jax.weights", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)


def test_convert_cli(tmp_path, fixtures_dir, vq_weights):
    out = tmp_path / "vq.safetensors"
    r = _cli("convert", fixtures_dir / "vq_tiny.pth", out, "--kind", "vqgan", "--config", "tiny")
    assert r.returncode == 0, r.stderr
    assert_same_state(read_safetensors(out), vq_weights)
    bad = _cli("convert", fixtures_dir / "unet_tiny.pth", tmp_path / "x.safetensors", "--kind", "vqgan",
               "--config", "tiny")
    assert bad.returncode == 2
    assert "does not fit VQModel" in bad.stderr and "unet_tiny.pth" in bad.stderr
    assert not (tmp_path / "x.safetensors").exists()
