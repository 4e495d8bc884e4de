"""train/compile_check.py: its inference program is SRPipeline's program (padding, conditioning,
sampler, decode, crop, clamp), and the train step and the sampler compile for a TPU slice."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from _train_cfg import get_config
from resshift_jax.pipeline import SRPipeline
from resshift_jax.train import compile_check
from resshift_jax.train.networks import build_models


def test_inference_program_is_the_pipelines_program():
    """The micro networks (random weights), an LR size that is not a multiple of the padding
    offset (16), one key per image: compile_check's program and SRPipeline agree."""
    cfg = get_config()
    nets = build_models(cfg, seed=0, load_weights=False)
    # the UNet's output layers start at zero; perturb every parameter so the network matters
    leaves, tree = jax.tree.flatten(nets.unet_params)
    noise = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, noise)])
    mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:2])
    unet = nnx.merge(nets.unet_def, params, nets.unet_rest)
    pipe = SRPipeline(unet, nnx.merge(nets.vq_def, nets.vq_state), cfg, mesh=mesh)
    lq = np.random.default_rng(0).uniform(-1, 1, (2, 12, 20, 3)).astype(np.float32)  # pads to 16x32
    keys = jax.random.split(jax.random.key(5), 2)
    want = np.asarray(pipe(lq, key=keys))

    data, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    run = jax.jit(compile_check.inference_program(cfg, nets), in_shardings=(rep, rep, data, data))
    got = np.asarray(run(params, nets.frozen, lq, keys))
    assert got.shape == want.shape == (2, 48, 80, 3)  # cropped to sf x the unpadded size
    assert got.min() >= -1 and got.max() <= 1
    assert np.abs(np.diff(want, axis=0)).max() > 1e-3  # the two images really differ
    # the same float32 operations on the same partitioning; only XLA's fusion choices can differ
    # between the two jits (reassociated float32 sums, ~1e-7 relative per reduction through 4
    # sampler steps and the decoder): the bound test_pipeline uses for a batch vs a solo image
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


# ~75 s on 2 cores; skipped only where libtpu is absent (CI installs it: requirements-test.txt)
def test_tpu_compile_only_tiny():
    """Lower + compile the train step and the sampler for a 4-chip TPU v5e slice from this CPU."""
    pytest.importorskip("libtpu")
    rep = compile_check.check(get_config(), topology="v5e:2x2", mesh_shape=(2, 2), batch=8)
    assert rep["devices"] == 4 and rep["mesh"] == {"data": 2, "fsdp": 2}
    for prog in ("train", "infer"):
        assert 0 < rep[prog]["peak_per_chip_gib"] < 16, rep  # v5e: 16 GiB HBM per chip
