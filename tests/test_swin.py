"""models/swin.py: the reference's quirky shifted-window masks and relative position indices
(swin_masks.npz, exact), window partitioning, and the construction-time shift decision."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resshift_jax.models import swin

MASK_KEY = re.compile(r"mask_H(\d+)_W(\d+)_ws(\d+)_shift(\d+)$")
MASK_CASES = [(8, 8, 4, 2), (16, 16, 4, 2), (32, 32, 4, 2), (64, 32, 4, 2), (16, 8, 4, 2), (16, 16, 8, 4),
              (32, 32, 8, 4), (64, 64, 8, 4), (64, 32, 8, 4), (128, 64, 8, 4)]


@pytest.fixture(scope="module")
def masks(fixtures_dir):
    return np.load(fixtures_dir / "swin_masks.npz")


def test_fixture_lists_every_mask_case(masks):
    cases = sorted(tuple(map(int, m.groups())) for m in map(MASK_KEY.match, masks.files) if m)
    assert cases == sorted(MASK_CASES)


@pytest.mark.parametrize("H,W,ws,shift", MASK_CASES)
def test_calculate_mask_equals_reference(masks, H, W, ws, shift):
    ref = masks[f"mask_H{H}_W{W}_ws{ws}_shift{shift}"]
    got = swin.calculate_mask(H, W, ws, shift)
    assert got.dtype == np.float32 and got.shape == ref.shape == ((H // ws) * (W // ws), ws * ws, ws * ws)
    np.testing.assert_array_equal(got, ref)


def test_mask_quirk_rule():
    """Only the last window row is masked, by local column (c < w - s vs c >= w - s)."""
    m = swin.calculate_mask(24, 16, 8, 4)  # 3 x 2 windows
    assert not m[:4].any()
    col = np.arange(64) % 8
    expected = np.where((col[:, None] < 4) != (col[None, :] < 4), -100.0, 0.0)
    for k in (4, 5):
        np.testing.assert_array_equal(m[k], expected)
    assert not swin.calculate_mask(16, 16, 8, 0).any()  # unshifted blocks: all-zero


@pytest.mark.parametrize("ws", [4, 8])
def test_relative_position_index_equals_reference(masks, ws):
    ref = masks[f"relative_position_index_ws{ws}"]
    got = swin.relative_position_index(ws)
    assert got.shape == ref.shape and got.dtype == np.int64
    np.testing.assert_array_equal(got, ref)


def test_window_partition_roundtrip_and_order():
    x = jnp.arange(2 * 8 * 12 * 3, dtype=jnp.float32).reshape(2, 8, 12, 3)
    w = swin.window_partition(x, 4)
    assert w.shape == (2 * 2 * 3, 16, 3)
    # window (b=1, row 1, col 2), token (r=3, c=1) is pixel (1, 4+3, 8+1)
    np.testing.assert_array_equal(w[1 * 6 + 1 * 3 + 2, 3 * 4 + 1], x[1, 7, 9])
    np.testing.assert_array_equal(swin.window_reverse(w, 4, 8, 12), x)


def test_shift_is_decided_at_construction():
    def build(res, ws, shift):
        return nnx.eval_shape(lambda: swin.SwinTransformerBlock(
            32, (res, res), 2, window_size=ws, shift_size=shift, rngs=nnx.Rngs(0)))

    b = build(16, 8, 4)
    assert (b.window_size, b.shift_size) == (8, 4)
    b = build(8, 8, 4)  # construction size <= window: window = size, never shifted
    assert (b.window_size, b.shift_size) == (8, 0)
    b = build(4, 8, 4)
    assert (b.window_size, b.shift_size) == (4, 0)
    assert b.attn.relative_position_bias_table.get_value().shape == (49, 2)


def test_window_attention_matches_plain_softmax():
    """W-MSA through jax.nn.dot_product_attention == explicit q k^T * scale + bias + mask, softmax."""
    blk = nnx.eval_shape(lambda: swin.WindowAttention(8, 4, 2, rngs=nnx.Rngs(1)))  # no eager init
    rng = np.random.default_rng(0)
    for _, var in nnx.to_flat_state(nnx.state(blk, nnx.Param)):
        var.set_value(jnp.asarray(rng.normal(size=var.get_value().shape), jnp.float32))
    nnx.update(blk, nnx.state(blk, nnx.Param))
    assert blk.relative_position_bias().shape == (2, 16, 16)
    x = jnp.asarray(rng.normal(size=(2 * 4, 16, 8)), jnp.float32)
    mask = jnp.asarray(swin.calculate_mask(8, 8, 4, 2))

    @nnx.jit  # one compile instead of many eager ops
    def both(blk, x, mask):
        got = blk(x, mask)
        qkv = blk.qkv(x).reshape(8, 16, 3, 2, 4).transpose(2, 0, 3, 1, 4)  # 3, B_, heads, N, hd
        q, k, v = qkv[0] * 4 ** -0.5, qkv[1], qkv[2]
        logits = q @ k.transpose(0, 1, 3, 2) + blk.relative_position_bias()[None]
        logits = (logits.reshape(2, 4, 2, 16, 16) + mask[None, :, None]).reshape(8, 2, 16, 16)
        ref = blk.proj((jax.nn.softmax(logits, -1) @ v).transpose(0, 2, 1, 3).reshape(8, 16, 8))
        return got, ref

    got, ref = both(blk, x, mask)
    # same float32 maths in another op order (fused attention vs explicit softmax): outputs of
    # order 1, 16-token softmax sums -> differences of a few ulp (~1e-7); 1e-5 bounds it with margin
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5)
