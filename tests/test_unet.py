"""models/unet.py against the reference: the tiny UNetModelSwin (unet_tiny_*) forward in float32,
a bfloat16-compute forward, and the full realsr layout (keys, shapes, parameter count)."""

import json

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resshift_jax.config import load_config
from resshift_jax.models.swin import SwinTransformerBlock
from resshift_jax.models.unet import UNetModelSwin, timestep_embedding
from resshift_jax.weights import load_state_dict_into, module_state_dict, torch_key

BUFFERS = ("relative_position_index", "attn_mask")
ATOL = 1e-4  # fixture README: float32 re-execution spread 3.1e-6


def nhwc(a):
    return jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))


def nchw(a):
    return np.asarray(a).transpose(0, 3, 1, 2)


def build_tiny(weights, dtype=jnp.float32):
    """Abstract construction (no random init), then the fixture weights."""
    model = nnx.eval_shape(lambda: UNetModelSwin(load_config("tiny").model, dtype=dtype, rngs=nnx.Rngs(0)))
    load_state_dict_into(model, weights, ignore_suffixes=BUFFERS, source="unet_tiny_weights.npz")
    return model


def make_forward(model):
    """One jitted forward per model; returns (out, middle_block_out, time_emb)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x, t, lq):
        m = nnx.merge(graphdef, state)
        out, middle = m(x, t, lq, return_middle=True)
        return out, middle, m.time_embedding(t)

    return lambda x, t, lq: forward(state, nhwc(x), jnp.asarray(t, jnp.int32), nhwc(lq))


def param_shapes_torch_layout(model):
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        shape = tuple(var.get_value().shape)
        if str(path[-1]) == "kernel":
            shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
        out[torch_key(path)] = shape
    return out


def swin_layout(model):
    return {".".join(map(str, path)): (blk.window_size, blk.shift_size)
            for path, blk in nnx.iter_graph(model) if isinstance(blk, SwinTransformerBlock)}


@pytest.fixture(scope="module")
def kwargs_json(fixtures_dir):
    return json.loads((fixtures_dir / "unet_tiny_kwargs.json").read_text())


@pytest.fixture(scope="module")
def weights(fixtures_dir):
    return dict(np.load(fixtures_dir / "unet_tiny_weights.npz"))


@pytest.fixture(scope="module")
def io(fixtures_dir):
    return dict(np.load(fixtures_dir / "unet_tiny_io.npz"))


@pytest.fixture(scope="module")
def tiny(fixtures_dir, weights):
    """The tiny UNet as users get it: the official-format .pth through our torch-free loader."""
    from resshift_jax import load_unet
    model = load_unet(fixtures_dir / "unet_tiny.pth", "tiny")
    np.testing.assert_array_equal(module_state_dict(model)["out.2.weight"], weights["out.2.weight"])
    return model


@pytest.fixture(scope="module")
def ref_forward(tiny, io):
    return make_forward(tiny)(io["x"], io["t"], io["lq"])


# ----------------------------------------------------------------------------- tiny, float32

def test_tiny_config_matches_fixture_kwargs(kwargs_json):
    cfg = load_config("tiny").model
    for key, value in kwargs_json["kwargs"].items():
        if key in ("dims", "use_fp16"):  # fixed here (2-D; dtype set by the caller): not config keys
            assert (key, value) in (("dims", 2), ("use_fp16", False))
            continue
        ours = cfg[key]
        assert (list(ours) if isinstance(ours, tuple) else ours) == value, key


def test_tiny_keys_shapes_and_swin_layout(tiny, weights, kwargs_json):
    expected = {e["key"]: tuple(e["shape"]) for e in kwargs_json["state_dict_keys"] if e["kind"] == "parameter"}
    got = param_shapes_torch_layout(tiny)
    assert got == expected
    assert {k: v.shape for k, v in weights.items() if not k.endswith(BUFFERS)} == expected
    assert sum(int(np.prod(s)) for s in got.values()) == kwargs_json["num_parameters"]
    exported = module_state_dict(tiny)  # round trip: the loaded values come back in torch layout
    assert set(exported) == set(expected)
    for key, value in exported.items():
        np.testing.assert_array_equal(value, weights[key], err_msg=key)
    layout = swin_layout(tiny)
    assert layout == {b["module"]: (b["window_size"], b["shift_size"]) for b in kwargs_json["swin_blocks"]}


def test_timestep_embedding_is_cos_then_sin():
    e = np.asarray(timestep_embedding(jnp.array([0, 3]), 8))
    np.testing.assert_allclose(e[0], [1, 1, 1, 1, 0, 0, 0, 0])
    f = np.exp(-np.log(10000.0) * np.arange(4) / 4)
    # float32 args t*f (|arg| <= 3, rounding 3 * 6e-8) and float32 cos/sin (1-2 ulp): absolute error
    # <= ~4e-7 on values in [-1, 1]; an absolute bound, as sin(3) ~ 0.14 makes relative ones fragile
    np.testing.assert_allclose(e[1], np.concatenate([np.cos(3 * f), np.sin(3 * f)]), rtol=0, atol=1e-6)


def test_time_emb_matches_reference(ref_forward, io):
    np.testing.assert_allclose(np.asarray(ref_forward[2]), io["time_emb"], atol=ATOL, rtol=0)


def test_middle_block_matches_reference(ref_forward, io):
    np.testing.assert_allclose(nchw(ref_forward[1]), io["middle_block_out"], atol=ATOL, rtol=0)


def test_output_matches_reference(ref_forward, io):
    out = ref_forward[0]
    assert out.dtype == jnp.float32 and out.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(nchw(out), io["out"], atol=ATOL, rtol=0)


def test_nonsquare_output_matches_reference(tiny, io):
    """64x32 input on a model built for 32x32: masks recomputed at run time, shifts kept."""
    out = make_forward(tiny)(io["x_nonsquare"], io["t_nonsquare"], io["lq_nonsquare"])[0]
    np.testing.assert_allclose(nchw(out), io["out_nonsquare"], atol=ATOL, rtol=0)


def test_bad_latent_size_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="multiple of its window"):
        jax.eval_shape(lambda x: tiny(x, jnp.zeros((1,), jnp.int32), x),
                       jax.ShapeDtypeStruct((1, 40, 32, 3), jnp.float32))


# ----------------------------------------------------------------------------- tiny, bfloat16 compute

def test_bfloat16_compute_close_to_float32(weights, io, ref_forward):
    model = build_tiny(weights, dtype=jnp.bfloat16)
    assert all(v.get_value().dtype == jnp.float32 for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    out = make_forward(model)(io["x"], io["t"], io["lq"])[0]
    assert out.dtype == jnp.float32
    ref = np.asarray(ref_forward[0])
    err = np.abs(np.asarray(out) - ref)
    scale = np.abs(ref).max()
    # bfloat16 rounds at ~2e-3 relative per op; through ~100 layers the error grows to a few
    # percent (measured: max 0.058 of max|ref| 2.5, mean 2.0% of mean|ref|); bounds leave ~2x room
    assert err.max() < 0.05 * scale, (err.max(), scale)
    assert err.mean() < 0.04 * np.abs(ref).mean(), (err.mean(), np.abs(ref).mean())


# ----------------------------------------------------------------------------- full size (abstract)

def test_full_size_realsr_layout(fixtures_dir):
    ref = json.loads((fixtures_dir / "full_size_state_dict_shapes.json").read_text())["unet_realsr"]
    model = nnx.eval_shape(lambda: UNetModelSwin(load_config("realsr_v3").model, rngs=nnx.Rngs(0)))
    got = param_shapes_torch_layout(model)
    expected = {e["key"]: tuple(e["shape"]) for e in ref["state_dict"] if e["kind"] == "parameter"}
    buffers = {e["key"] for e in ref["state_dict"] if e["kind"] == "buffer"}
    assert all(k.endswith(BUFFERS) for k in buffers) and len(expected) + len(buffers) == 564
    assert got == expected
    assert sum(int(np.prod(s)) for s in got.values()) == 118_593_583 == ref["num_parameters"]
    assert swin_layout(model) == {b["module"]: (b["window_size"], b["shift_size"]) for b in ref["swin_blocks"]}


def _variant(name, **overrides):
    cfg = ml_collections.ConfigDict(load_config(name).model.to_dict())
    cfg.update(overrides)
    return cfg


def test_lq_feature_extractor_variants():
    """Spec §4.1/§4.5 parameter counts for x2 SR, inpainting (lq + mask) and faceir layouts."""
    cases = [(dict(lq_size=128), 118_640_431, 1), (dict(lq_size=256, cond_mask=True), 118_714_399, 2),
             (dict(lq_size=512, in_channels=8, out_channels=8), 118_931_604, 3)]
    for overrides, n_params, n_stages in cases:
        model = nnx.eval_shape(lambda: UNetModelSwin(_variant("realsr_v3", **overrides), rngs=nnx.Rngs(0)))
        shapes = param_shapes_torch_layout(model)
        assert sum(int(np.prod(s)) for s in shapes.values()) == n_params, overrides
        fe = {k for k in shapes if k.startswith("feature_extractor.")}
        assert fe == {f"feature_extractor.{name}.{p}" for i in range(n_stages)
                      for name in (3 * i, f"{3 * i + 2}.op") for p in ("weight", "bias")}
        assert shapes["input_blocks.0.0.weight"][1] == overrides.get("in_channels", 3) + 16 * 2 ** n_stages


def test_inpainting_forward_shapes():
    """cond_mask: [lq, mask] (4 ch) -> 2 extractor stages -> concatenated after x; traced only."""
    graphdef, state = nnx.split(nnx.eval_shape(
        lambda: UNetModelSwin(_variant("tiny", lq_size=128, cond_mask=True), rngs=nnx.Rngs(0))))
    x = jax.ShapeDtypeStruct((1, 32, 64, 3), jnp.float32)
    lq = jax.ShapeDtypeStruct((1, 128, 256, 3), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.int32)
    out = jax.eval_shape(lambda s, *a: nnx.merge(graphdef, s)(*a), state, x, t, lq,
                         jax.ShapeDtypeStruct((1, 128, 256, 1), jnp.float32))
    assert (out.shape, out.dtype) == ((1, 32, 64, 3), jnp.float32)
    with pytest.raises(ValueError, match="needs a mask"):
        jax.eval_shape(lambda s, *a: nnx.merge(graphdef, s)(*a), state, x, t, lq)
