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
    """Lower + compile the train step and the sampler for a 4-chip TPU v5e slice from this CPU.
    The FLOP cost (one more compile, of the unrolled sampler) is left out here: the next test
    runs that path of `check` on this CPU's devices. Measured on TPU v5e when it was in: the
    executable's FLOPs per image are 1.107x the model's for these narrow networks (the TPU
    compiler's layout choices, e.g. padded narrow channels; 1.004x on the CPU)."""
    pytest.importorskip("libtpu")
    rep = compile_check.check(get_config(), topology="v5e:2x2", mesh_shape=(2, 2), batch=8, with_cost=False)
    assert rep["devices"] == 4 and rep["mesh"] == {"data": 2, "fsdp": 2}
    for prog in ("train", "infer"):
        assert 0 < rep[prog]["peak_per_chip_gib"] < 16, rep  # v5e: 16 GiB HBM per chip
    assert "infer_cost" not in rep and "infer_unrolled_compile_s" not in rep


def test_check_reports_the_cost_of_every_step_per_chip():
    """`check` on this CPU's 8 devices (inference only): the unrolled sampler, sharded one image
    per device, does per image the FLOPs of the model's (unsharded, unoptimised) program: no
    padding, masking, recomputation or duplicated batch shard added by compilation or
    partitioning. XLA's CPU compile measured 1.0038x (fusion rewrites a few elementwise ops); 2%
    is far below a padded batch (+12.5% for 8 -> 9), a recomputed network call (+1/4 of the
    UNet) or a duplicated shard (2x). No roofline: the CPU's peak is not known."""
    rep = compile_check.check(get_config(), infer_only=True, infer_batch=8)
    assert rep["devices"] == 8 and "train" not in rep
    assert (rep["infer_batch"], rep["infer_batch_per_chip"]) == (8, 1)
    cost = rep["infer_cost"]
    assert cost["model_gflop"] > 2.0  # 8 images of 64x64 through 4 steps of the micro UNet + VQ
    assert cost["model_gflop_per_image"] == pytest.approx(cost["model_gflop"] / 8)
    assert 0.98 <= cost["compiled_over_model"] <= 1.02, cost
    assert rep["infer_roofline"] == {}


def test_roofline_takes_the_binding_limit():
    """v5e: 197 TFLOP/s and 819 GB/s per chip. 1.97 TFLOP and 8.19 GB for 4 images: 10 ms of
    compute, 10 ms of memory traffic -> 2.5 ms per image; twice the bytes make it memory-bound."""
    cost = {"compiled_gflop": 1970.0, "compiled_gbytes_accessed": 8.19}
    r = compile_check.roofline(cost, "TPU v5 lite", 4)
    assert r["compute_bound_ms"] == pytest.approx(10.0) and r["memory_bound_ms"] == pytest.approx(10.0)
    assert r["roofline_ms_per_image"] == pytest.approx(2.5)
    r = compile_check.roofline({**cost, "compiled_gbytes_accessed": 16.38}, "TPU v5 lite", 4)
    assert r["bound"] == "memory" and r["roofline_ms_per_image"] == pytest.approx(5.0)
    assert compile_check.roofline(cost, "cpu", 4) == {}  # no peak known: no estimate


def test_unrolled_cost_counts_every_sampler_step():
    """XLA's cost analysis counts a loop body once: the rolled sampler's FLOPs barely depend on
    how many steps run (only the extra noise draws outside the loop: 0.35 MFLOP here). Unrolled,
    they grow by one network step per step: with a, b, c the FLOPs of 1, 2 and 3 steps,
    b − a ≈ c − b > 0. Each step is the same UNet call and one noise draw; what differs is the
    sampler's elementwise bookkeeping on the 2x16x16x3 latent (measured: steps of 286.747 /
    286.756 MFLOP, ~1e4 FLOPs = a few per latent value apart), so 1e-3 relative; a loop body
    counted once would be off by a whole step (100%)."""
    cfg = get_config()
    nets = build_models(cfg, abstract=True)
    plain = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731
    args = (jax.tree.map(plain, nets.unet_params), jax.tree.map(plain, nets.frozen),
            jax.ShapeDtypeStruct((2, 16, 16, 3), np.float32), jax.ShapeDtypeStruct((2,), jax.random.key(0).dtype))

    def flops(k, unroll):
        c = cfg.copy_and_resolve_references()
        c.inference.x0_after = k
        ca = jax.jit(compile_check.inference_program(c, nets, unroll=unroll)).lower(*args).cost_analysis()
        return float((ca[0] if isinstance(ca, (list, tuple)) else ca)["flops"])  # lowered: no compile

    rolled = [flops(k, False) for k in (1, 4)]
    a, b, c = (flops(k, True) for k in (1, 2, 3))
    step = b - a
    assert step > 0.05 * a
    assert abs(rolled[1] - rolled[0]) < 0.01 * step  # why the unrolled program is needed
    assert a == pytest.approx(rolled[0], rel=1e-3)  # one step: the same operations rolled or not
    assert c - b == pytest.approx(step, rel=1e-3)
