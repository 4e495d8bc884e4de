"""The trainer's networks: frozen weights (VQ autoencoder, LPIPS VGG16) loaded from the files
users already have (.pth in torchvision / lpips / official layouts), and clear errors without them."""

import logging

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from _train_cfg import get_config
from resshift_jax.train.networks import build_models
from resshift_jax.weights import CheckpointMismatchError, module_state_dict, read_pth
from tests.test_lpips import reference_lpips, torch_backbone, torch_heads
from tests.test_torch_pickle import as_tensors, write_torch_zip


def lpips_files(tmp_path, seed=0):
    """Random VGG16 features + lpips v0.1 heads written as the users' .pth files (torch zip)."""
    rng = np.random.default_rng(seed)
    bb, hd = torch_backbone("vgg", rng), torch_heads("vgg", rng)
    vgg, heads = tmp_path / "vgg16-397923af.pth", tmp_path / "vgg.pth"
    write_torch_zip(vgg, as_tensors(bb))
    write_torch_zip(heads, as_tensors(hd))
    return bb, hd, vgg, heads


def lpips_config(fixtures_dir, vgg, heads, coef=1.0):
    cfg = get_config()
    cfg.train.loss_coef = (1.0, coef)
    cfg.train.vgg_ckpt, cfg.train.lpips_ckpt = str(vgg), str(heads)
    cfg.autoencoder.ckpt_path = str(fixtures_dir / "vq_tiny.pth")
    return cfg


def test_frozen_weights_from_user_files(fixtures_dir, tmp_path):
    bb, hd, vgg, heads = lpips_files(tmp_path)
    nets = build_models(lpips_config(fixtures_dir, vgg, heads))
    # the VQ autoencoder holds the official-layout checkpoint's values
    vq = nnx.merge(nets.vq_def, nets.vq_state)
    want = read_pth(fixtures_dir / "vq_tiny.pth")
    got = module_state_dict(vq)
    assert set(want) <= set(got)
    for k in ("encoder.conv_in.weight", "quantize.embedding.weight", "decoder.conv_out.bias"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # LPIPS computes the lpips package's distance with these weights (independent numpy forward).
    # float32 against float64: 13 convolutions with contractions of ≤ 4608 terms, ~sqrt(K)·u ≈ 70 u
    # each, compounding to ~sqrt(13)·70 u ≈ 1.5e-5 on the features; the distance is a mean of
    # squared differences of O(1) normalised features (x, y independent): ~3e-5 < rtol 1e-4.
    lp = nnx.merge(nets.lpips_def, nets.frozen["lpips"])
    rng = np.random.default_rng(3)
    x, y = (rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32) for _ in range(2))
    np.testing.assert_allclose(np.asarray(lp(jnp.asarray(x), jnp.asarray(y))).reshape(2),
                               reference_lpips(bb, hd, "vgg", x, y), rtol=1e-4)


def test_missing_weights_are_clear_errors(fixtures_dir, tmp_path, caplog):
    _, _, vgg, heads = lpips_files(tmp_path)
    cfg = lpips_config(fixtures_dir, tmp_path / "absent_vgg16.pth", heads)
    with pytest.raises(FileNotFoundError, match="LPIPS weights not found.*absent_vgg16.pth.*loss_coef"):
        build_models(cfg)
    with caplog.at_level(logging.WARNING):
        nets = build_models(cfg, strict_lpips=False)  # tests / smoke runs: random LPIPS, said so
    assert "random weights" in caplog.text and nets.lpips_def is not None
    cfg = lpips_config(fixtures_dir, vgg, heads)
    cfg.autoencoder.ckpt_path = str(tmp_path / "autoencoder_vq_f4.pth")
    with pytest.raises(FileNotFoundError, match="autoencoder_vq_f4.pth does not exist"):
        build_models(cfg)
    # a wrong file (here the autoencoder) is a strict mismatch naming the file
    cfg = lpips_config(fixtures_dir, fixtures_dir / "vq_tiny.pth", heads)
    with pytest.raises(CheckpointMismatchError, match=r"LPIPS-vgg weights \(.*vq_tiny.pth"):
        build_models(cfg)


def test_space_to_depth_first_stage_is_frozen_and_empty(fixtures_dir):
    """autoencoder.kind='space_to_depth': the frozen `vq` slot holds an empty state (nothing to
    load, shard or checkpoint), both graph definitions are the parameter-free module, and naming
    a checkpoint for it is an error rather than silently ignored."""
    from resshift_jax.config import load_config
    from resshift_jax.models.first_stage import SpaceToDepth

    cfg = load_config("compact_bicsr")
    nets = build_models(cfg, abstract=True)
    assert nets.vq_state == {} and nets.frozen["vq"] == {} and nets.lpips_def is None
    for graph in (nets.vq_def, nets.vq_encoder_def):
        assert isinstance(nnx.merge(graph, {}), SpaceToDepth)
    assert nnx.merge(nets.vq_def, {}).sf == 4
    cfg.autoencoder.ckpt_path = str(fixtures_dir / "vq_tiny.pth")
    with pytest.raises(ValueError, match="space_to_depth' is parameter-free.*ckpt_path"):
        build_models(cfg)
