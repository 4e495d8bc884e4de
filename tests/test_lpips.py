"""LPIPS (Flax) with random weights in the torchvision / lpips key layouts.

The reference forward here is an independent numpy re-statement of lpips.LPIPS (NCHW, torch
layouts read straight from the state dicts), so key mapping, layout transposes, padding,
pooling, the scaling layer and the channel normalisation are all checked.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from resshift_jax.models.lpips import LPIPS  # noqa: E402
from resshift_jax.weights import load_lpips, lpips_state_dict  # noqa: E402
from resshift_jax.weights import CheckpointMismatchError, module_state_dict  # noqa: E402

# torchvision vgg16().features / alexnet().features conv keys and shapes (O, I, kh, kw)
VGG_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
             14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512),
             26: (512, 512), 28: (512, 512)}
ALEX_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
LIN_CH = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}


def torch_backbone(net, rng):
    """Random state dict with the torchvision file's keys (features + a classifier to ignore)."""
    sd = {}
    convs = VGG_CONVS if net == "vgg" else ALEX_CONVS
    for i, spec in convs.items():
        o, c = spec[:2]
        k = 3 if net == "vgg" else spec[2]
        sd[f"features.{i}.weight"] = (rng.standard_normal((o, c, k, k)) * np.sqrt(2.0 / (c * k * k))).astype(np.float32)
        sd[f"features.{i}.bias"] = (0.01 * rng.standard_normal(o)).astype(np.float32)
    sd["classifier.0.weight"] = rng.standard_normal((4, 8)).astype(np.float32)
    return sd


def torch_heads(net, rng):
    return {f"lin{k}.model.1.weight": rng.uniform(0, 0.2, (1, c, 1, 1)).astype(np.float32)
            for k, c in enumerate(LIN_CH[net])}


# ---- independent numpy reference (NCHW, torch semantics)
def conv_nchw(x, w, b, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    o, c, kh, kw = w.shape
    n, _, h, wd = x.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    cols = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :ho, :wo]
    return np.einsum("nchwij,ocij->nohw", cols, w, optimize=True) + b[None, :, None, None]


def maxpool_nchw(x, k, s):
    v = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return v.max(axis=(-1, -2))


def reference_lpips(sd, heads, net, x, y):
    shift = np.array([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = np.array([0.458, 0.448, 0.450])[None, :, None, None]

    def feats(z):
        z = (z.transpose(0, 3, 1, 2).astype(np.float64) - shift) / scale
        out = []
        if net == "vgg":
            plan = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
            for s, convs in enumerate(plan):
                if s:
                    z = maxpool_nchw(z, 2, 2)
                for i in convs:
                    z = np.maximum(conv_nchw(z, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], 1, 1), 0)
                out.append(z)
        else:
            for i, (st, pd, pool) in zip([0, 3, 6, 8, 10], [(4, 2, 0), (1, 2, 1), (1, 1, 1), (1, 1, 0), (1, 1, 0)]):
                if pool:
                    z = maxpool_nchw(z, 3, 2)
                z = np.maximum(conv_nchw(z, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], st, pd), 0)
                out.append(z)
        return out

    total = 0.0
    for k, (a, b) in enumerate(zip(feats(x), feats(y))):
        na = a / (np.sqrt((a ** 2).sum(1, keepdims=True)) + 1e-10)
        nb = b / (np.sqrt((b ** 2).sum(1, keepdims=True)) + 1e-10)
        lin = np.einsum("nchw,c->nhw", (na - nb) ** 2, heads[f"lin{k}.model.1.weight"][0, :, 0, 0])
        total = total + lin.mean(axis=(1, 2))
    return total


@pytest.fixture(scope="module", params=["vgg", "alex"])
def loaded(request, tmp_path_factory):
    net = request.param
    rng = np.random.default_rng(0 if net == "vgg" else 1)
    bb, hd = torch_backbone(net, rng), torch_heads(net, rng)
    d = tmp_path_factory.mktemp(f"lpips_{net}")
    save_file(bb, str(d / "backbone.safetensors"))
    save_file(hd, str(d / "heads.safetensors"))
    model = load_lpips(net, backbone_path=d / "backbone.safetensors", heads_path=d / "heads.safetensors")
    return net, bb, hd, model


_FWD = nnx.jit(lambda m, a, b: m(a, b))
_GRAD = nnx.jit(lambda m, a, b: jax.grad(lambda z: m(z, b).sum())(a))


def _size(net):
    return 16 if net == "vgg" else 63  # smallest sizes reaching every tapped layer


def test_key_layout_matches_torchvision_and_lpips(loaded):
    net, bb, hd, model = loaded
    ours = module_state_dict(model)
    convs = VGG_CONVS if net == "vgg" else ALEX_CONVS
    expected = {f"features.{i}.{p}" for i in convs for p in ("weight", "bias")} | set(hd)
    assert set(ours) == expected
    for k, v in ours.items():
        src = bb.get(k, hd.get(k))
        assert v.shape == src.shape, k
        np.testing.assert_array_equal(v, src)  # exact round trip through the layout transposes


def test_matches_numpy_reference(loaded):
    net, bb, hd, model = loaded
    size = _size(net)  # batch 2 at this size: the same compiled program as the next test
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    y = np.clip(x + 0.3 * rng.standard_normal(x.shape), -1, 1).astype(np.float32)
    ours = np.asarray(_FWD(model, jnp.asarray(x), jnp.asarray(y)))
    ref = reference_lpips(bb, hd, net, x, y)
    assert ours.shape == (2,)
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=1e-6)


def test_identity_symmetry_and_gradient(loaded):
    net, _, _, model = loaded
    rng = np.random.default_rng(3)
    shape = (2, _size(net), _size(net), 3)
    x = jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32)
    y = jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32)
    dark = -jnp.ones_like(x)  # all-zero feature maps: the channel norm is 0 there
    assert float(jnp.abs(_FWD(model, x, x)).max()) < 1e-10  # zero up to rounding of batched convs
    dxy, dyx = np.asarray(_FWD(model, x, y)), np.asarray(_FWD(model, y, x))
    assert np.all(dxy > 0)
    np.testing.assert_allclose(dxy, dyx, rtol=1e-5)
    for a, b in ((x, y), (x, x), (dark, dark)):  # one compile, three points
        g = _GRAD(model, a, b)
        assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
    assert float(jnp.abs(_GRAD(model, x, y)).max()) > 0


def test_whole_lpips_state_dict_and_errors(loaded, tmp_path):
    net, bb, hd, _ = loaded
    # a saved lpips.LPIPS module: net.sliceK.N.* keep torchvision numbering, plus scaling buffers
    whole = {f"net.slice1.{k.split('.')[1]}.{k.split('.')[2]}": v for k, v in bb.items() if k.startswith("features.")}
    whole.update(hd)
    whole["scaling_layer.shift"] = np.zeros((1, 3, 1, 1), np.float32)
    assert set(lpips_state_dict(whole, None, net)) == set(lpips_state_dict(bb, hd, net))
    with pytest.raises(CheckpointMismatchError, match="lin4.model.1.weight"):
        load_lpips(net, backbone_path=bb, heads_path={k: v for k, v in hd.items() if k != "lin4.model.1.weight"})
    bad = dict(bb)
    bad["features.0.weight"] = bad["features.0.weight"][:, :2]
    with pytest.raises(CheckpointMismatchError, match="features.0.weight"):
        load_lpips(net, backbone_path=bad, heads_path=hd)
    with pytest.raises(ValueError, match="unknown net"):
        LPIPS("resnet")
