"""VQ-f4 autoencoder parity against the reference (vq_tiny fixtures) and full-size structure."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from resshift_jax.config import load_config
from resshift_jax.models import vqgan
from resshift_jax.models.vqgan import VQModel, chunked_attention, dense_attention, nearest_code, num_params
from resshift_jax.weights import _torch_shape, load_vqgan, torch_key

ATOL = 1e-4  # fixture README: vq_tiny_io continuous outputs


def nhwc(a):
    return jnp.asarray(np.transpose(a, (0, 2, 3, 1)))


def nchw(a):
    a = np.asarray(a)
    return np.transpose(a, (0, 3, 1, 2)) if a.ndim == 4 else a


@pytest.fixture(scope="module")
def io(fixtures_dir):
    return dict(np.load(fixtures_dir / "vq_tiny_io.npz"))


@pytest.fixture(scope="module")
def vq(fixtures_dir):
    return load_vqgan(fixtures_dir / "vq_tiny.pth", load_config("tiny"))


@pytest.fixture(scope="module")
def outputs(vq, io):
    """Every fixture quantity from one jit of the loaded tiny model."""
    graphdef, state = nnx.split(vq)

    @jax.jit
    def run(state, x, z, z_in):
        m = nnx.merge(graphdef, state)
        out = {"encoder_out": m.encoder(x), "encode_out": m.encode(x)}
        out["quantized"], out["code_indices"] = m.quantize(z)
        out["quant_loss"] = m.quantize_loss(z)
        out["post_quant_conv_out"] = m.post_quant_conv(out["quantized"])
        out["decode_out"] = m.decode(z)
        out["decode_out_no_quantize"] = m.decode(z, quantize=False)
        out["sampler_z_quantized"], out["sampler_code_indices"] = m.quantize(z_in)
        out["sampler_decoded"] = m.decode(z_in)
        return out

    res = run(state, nhwc(io["x"]), nhwc(io["encode_out"]), nhwc(io["sampler_z_in"]))
    return {k: nchw(v) for k, v in res.items()}


def test_tiny_config_matches_fixture_kwargs(fixtures_dir):
    kw = json.loads((fixtures_dir / "vq_tiny_kwargs.json").read_text())["kwargs"]
    a = load_config("tiny").autoencoder
    assert (a.embed_dim, a.n_embed) == (kw["embed_dim"], kw["n_embed"])
    fixed = {"padding_mode": "zeros"}  # not a config key: the only padding the reference's VQ-f4 uses
    for key, value in kw["ddconfig"].items():
        got = fixed[key] if key in fixed else a.ddconfig[key]
        assert (list(got) if isinstance(got, tuple) else got) == value, key


CONTINUOUS = ["encoder_out", "encode_out", "quantized", "post_quant_conv_out", "decode_out",
              "decode_out_no_quantize", "sampler_z_quantized", "sampler_decoded"]


@pytest.mark.parametrize("key", CONTINUOUS)
def test_tiny_parity(outputs, io, key):
    assert outputs[key].shape == io[key].shape
    np.testing.assert_allclose(outputs[key], io[key], rtol=0, atol=ATOL)


@pytest.mark.parametrize("key", ["code_indices", "sampler_code_indices"])
def test_code_indices_exact(outputs, io, key):
    assert outputs[key].dtype == np.int32
    np.testing.assert_array_equal(outputs[key], io[key])


def test_quant_loss(outputs, io):
    # a mean of squared float32 differences over the latent: summation order changes only the last
    # bits (relative ~ log2(n) * 6e-8 ~ 1e-6 for pairwise sums); rtol 1e-5 is 10x that
    np.testing.assert_allclose(outputs["quant_loss"], io["quant_loss"], rtol=1e-5, atol=1e-7)


def test_straight_through_gradient(vq, io):
    z = nhwc(io["encode_out"])
    g = jax.grad(lambda z: jnp.sum(vq.quantize(z)[0] * 3.0))(z)
    np.testing.assert_allclose(np.asarray(g), 3.0)


def test_nearest_code_chunked_equals_unchunked(vq):
    z = jax.random.normal(jax.random.key(0), (1000, 3)) * 0.8
    book = vq.quantize.codebook
    full = nearest_code(z, book)
    np.testing.assert_array_equal(nearest_code(z, book, chunk_elements=64 * 7), full)  # 7 rows/block, remainder


def test_nearest_code_first_index_on_ties():
    book = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    z = jnp.asarray([[0.5, 0.5], [2.0, 0.0], [0.0, 3.0]])
    np.testing.assert_array_equal(nearest_code(z, book), [0, 0, 1])


def test_chunked_attention_equals_dense():
    kq, kk, kv = jax.random.split(jax.random.key(1), 3)
    shape = (2, 61, 64)  # 61 tokens: chunk sizes below do not divide it (padding is masked)
    q, k, v = (jax.random.normal(key, shape) * 2 for key in (kq, kk, kv))
    dense = dense_attention(q, k, v, 64 ** -0.5)
    # online softmax (running max and rescaled partial sums) vs one softmax: float32 sums over 61
    # keys of |v| ~ 2 values in another order, error ~ 61 * 6e-8 * 2 ~ 7e-6 at worst, ~1e-7 typical
    for qc, kc in [(16, 24), (61, 7)]:
        np.testing.assert_allclose(chunked_attention(q, k, v, 64 ** -0.5, q_chunk=qc, kv_chunk=kc), dense,
                                   rtol=0, atol=1e-5)


def test_attn_block_auto_switches_to_chunked(vq):
    x = jax.random.normal(jax.random.key(2), (1, 6, 10, 64))
    block = vq.encoder.mid.attn_1
    ref = block(x)  # chunked vs dense: same bound as test_chunked_attention_equals_dense
    vqgan.set_attn_impl(vq, "auto", chunk_threshold=16)  # 60 tokens > 16 -> chunked path
    block.q_chunk, block.kv_chunk = 16, 24
    try:
        np.testing.assert_allclose(block(x), ref, rtol=0, atol=1e-5)
        vqgan.set_attn_impl(vq, "chunked")
        np.testing.assert_allclose(block(x), ref, rtol=0, atol=1e-5)
    finally:
        vqgan.set_attn_impl(vq, "auto", chunk_threshold=vqgan.ATTN_CHUNK_THRESHOLD)
        block.q_chunk, block.kv_chunk = 1024, 4096
    with pytest.raises(ValueError, match="attn_impl"):
        vqgan.set_attn_impl(vq, "flash")


def test_bfloat16_compute_close(fixtures_dir, io):
    vq16 = load_vqgan(fixtures_dir / "vq_tiny.pth", "tiny", dtype=jnp.bfloat16)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(vq16, nnx.Param)))
    graphdef, state = nnx.split(vq16)
    z = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x))(state, nhwc(io["x"]))
    assert z.dtype == jnp.bfloat16
    err = np.abs(nchw(z.astype(jnp.float32)) - io["encode_out"]).max()
    assert err < 0.1 * np.abs(io["encode_out"]).max(), err


def _abstract_torch_shapes(model):
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {torch_key(p): _torch_shape(p, v) for p, v in flat}


def test_full_size_vq_f4_structure(fixtures_dir):
    ref = json.loads((fixtures_dir / "full_size_state_dict_shapes.json").read_text())["autoencoder_vq_f4"]
    model = nnx.eval_shape(lambda: VQModel(load_config("realsr_v3").autoencoder, rngs=nnx.Rngs(0)))
    assert num_params(model) == ref["num_parameters"] == 55_322_782
    ours = _abstract_torch_shapes(model)
    assert ours == {e["key"]: tuple(e["shape"]) for e in ref["state_dict"]}


def test_full_size_f8_face_variant_count():
    """faceir's ffhq512_vq_f8_dim8_face autoencoder: spec section 5 gives 77,009,115 parameters."""
    cfg = ml_collections.ConfigDict(dict(embed_dim=8, n_embed=4096, ddconfig=dict(
        double_z=False, z_channels=8, resolution=512, in_channels=3, out_ch=3, ch=64, ch_mult=(1, 2, 4, 8),
        num_res_blocks=(1, 2, 3, 4), attn_resolutions=(), dropout=0.0)))
    model = nnx.eval_shape(lambda: VQModel(cfg, rngs=nnx.Rngs(0)))
    assert num_params(model) == 77_009_115
    assert model.factor == 8 and len(model.decoder.up[3].block) == 5


def test_attn_resolutions_place_level_attention():
    cfg = ml_collections.ConfigDict(dict(embed_dim=3, n_embed=16, ddconfig=dict(
        z_channels=3, double_z=False, resolution=32, in_channels=3, out_ch=3, ch=32, ch_mult=(1, 2),
        num_res_blocks=2, attn_resolutions=(16,), dropout=0.0)))
    model = nnx.eval_shape(lambda: VQModel(cfg, rngs=nnx.Rngs(0)))
    assert [len(level.attn) for level in model.encoder.down] == [0, 2]
    assert [len(level.attn) for level in model.decoder.up] == [0, 3]
    assert "encoder.down.1.attn.1.proj_out.weight" in _abstract_torch_shapes(model)
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, jax.ShapeDtypeStruct((1, 16, 24, 3), jnp.float32))
    assert out.shape == (1, 16, 24, 3)
