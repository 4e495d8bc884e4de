"""Orbax checkpoints: state + data iterator + config, keep-N, restore onto another mesh; EMA export."""

import jax
import numpy as np
import pytest

from _train_cfg import get_config
from resshift_jax import sharding as shd
from resshift_jax.checkpoint import Checkpointer
from resshift_jax.train.loop import export_ema
from resshift_jax.train.networks import build_models
from resshift_jax.train.trainer import Trainer


@pytest.fixture(scope="module")
def nets():
    return build_models(get_config())


def _perturbed(state, k):
    """A state whose every leaf differs from the initial one (as after training)."""
    return state.replace(
        params=jax.tree.map(lambda x: x + 0.01 * k, state.params),
        ema_params=jax.tree.map(lambda x: x - 0.02 * k, state.ema_params),
        opt_state=jax.tree.map(lambda x: x + k, state.opt_state),
        step=state.step + k)


def test_save_restore_other_mesh(tmp_path, nets):
    cfg = get_config()
    src = Trainer(cfg, shd.make_mesh((2, 4)), nets)
    ck = Checkpointer(tmp_path / "ckpt", save_interval_steps=2, max_to_keep=2, async_save=True)
    state = src.init_state()
    for k in (1, 2, 3, 4, 6):
        s = _perturbed(state, k)
        ck.save(k, s, data_state={"type": "folder_hr", "step": k}, config=cfg)
    ck.wait()
    assert ck.all_steps() == [4, 6]  # interval 2 (odd steps skipped), keep 2
    want = jax.tree.map(np.asarray, s)
    for shape in [(1, 1), (4, 2)]:
        dst = Trainer(cfg, shd.make_mesh(shape, devices=jax.devices()[: shape[0] * shape[1]]), nets)
        got, data_state, config = ck.restore(dst.abstract_state, dst.state_shardings)
        assert data_state == {"type": "folder_hr", "step": 6} and config["train"]["batch"] == [8, 2]
        assert int(got.step) == 6
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(a), b)
        for a, sh in zip(jax.tree.leaves(got), jax.tree.leaves(dst.state_shardings)):
            assert a.sharding.is_equivalent_to(sh, a.ndim)
    ck.close()


def test_ema_export_official_layout(tmp_path, nets):
    from resshift_jax import weights
    cfg = get_config()
    tr = Trainer(cfg, shd.make_mesh((4, 2)), nets)
    state = _perturbed(tr.init_state(), 1)
    path = export_ema(tr, state, tmp_path / "ema" / "ema_model_1.safetensors")
    sd = weights.read_checkpoint(path)
    assert "input_blocks.0.0.weight" in sd and sd["input_blocks.0.0.weight"].ndim == 4  # OIHW
    unet = weights.load_unet(path, cfg)  # strict load, as infer.py does
    got = weights.module_state_dict(unet)
    ema = jax.tree.map(np.asarray, state.ema_params)
    np.testing.assert_array_equal(got["input_blocks.0.0.weight"],
                                  ema["input_blocks"][0][0]["kernel"].transpose(3, 2, 0, 1))


def test_validation_swaps_ema_weights(tmp_path, nets):
    """The trainer's validation: EMA params into SRPipeline (set_weights, no recompile), PSNR-Y, PNG grid."""
    from resshift_jax.train.loop import Validator
    cfg = get_config()
    cfg.data.val.length = 1
    tr = Trainer(cfg, shd.make_mesh((8, 1)), nets)
    val = Validator(tr, cfg)
    state = tr.init_state()
    rec = val(state, 1, tmp_path / "images")
    assert rec["val_images"] == 1 and np.isfinite(rec["val_psnr_y"]) and rec["val_psnr_y"] > 0
    assert (tmp_path / "images" / "val_0000001.png").is_file()
    n_programs = len(val.pipe._fns)
    rec2 = val(_perturbed(state, 1), 2)
    assert len(val.pipe._fns) == n_programs and rec2["val_psnr_y"] != rec["val_psnr_y"]
    with pytest.raises(ValueError, match="structure"):
        val.pipe.set_weights(vq_state=nets.unet_params)
