"""LPIPS v0.1 (Zhang et al. 2018) in Flax NNX: VGG16 or AlexNet features + learned linear heads.

Matches `lpips.LPIPS(net='vgg'|'alex', version='0.1')` with its defaults (no spatial output,
inputs in [-1, 1], i.e. normalize=False):

    x -> (x - shift) / scale                     (ScalingLayer)
    five ReLU feature maps of the backbone       (VGG16: relu1_2 .. relu5_3; AlexNet: relu1 .. relu5)
    f / (sqrt(sum_c f²) + 1e-10)                 (unit-normalised over channels)
    d = sum_l mean_hw( lin_l((f0_l - f1_l)²) )   (lin_l: 1x1 conv C_l -> 1, no bias)

Parameter paths mirror the PyTorch keys (loaded by resshift_jax.weights.load_lpips): the backbone's
`features.N.weight/bias` (torchvision numbering) and the heads' `linK.model.1.weight`
(index 0 of `model` is the Dropout slot). Weights come from the files users have:
torchvision `vgg16-397923af.pth` / `alexnet-owt-7be5be79.pth` and the lpips package's
`weights/v0.1/vgg.pth` / `alex.pth`; a whole saved `lpips.LPIPS` state_dict also works.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resshift_jax.models.layers import Conv2d

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# torchvision `features` layouts: ('conv', in, out, k, stride, pad) | ('relu',) | ('pool', k, s)
_VGG16 = []
for _cin, _cout, _n in ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)):
    for _i in range(_n):
        _VGG16 += [("conv", _cin if _i == 0 else _cout, _cout, 3, 1, 1), ("relu",)]
    _VGG16 += [("pool", 2, 2)]
_VGG16 = _VGG16[:-1]  # LPIPS stops at relu5_3 (index 29)
_ALEX = [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2),
         ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
         ("conv", 192, 384, 3, 1, 1), ("relu",),
         ("conv", 384, 256, 3, 1, 1), ("relu",),
         ("conv", 256, 256, 3, 1, 1), ("relu",)]

NETS = {
    # layers, indices of the feature slots that LPIPS taps (after these ReLUs), channels
    "vgg": (_VGG16, (3, 8, 15, 22, 29), (64, 128, 256, 512, 512)),
    "alex": (_ALEX, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256)),
}


class Conv1x1NoBias(nnx.Module):
    """nn.Conv2d(c_in, c_out, 1, bias=False): `kernel` (1, 1, c_in, c_out)."""

    def __init__(self, c_in: int, c_out: int = 1, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(jax.random.uniform(rngs.params(), (1, 1, c_in, c_out), jnp.float32, 0.0, 1.0 / c_in))

    def __call__(self, x):
        return jnp.einsum("bhwc,cd->bhwd", x, self.kernel[...][0, 0].astype(x.dtype))


class NetLinLayer(nnx.Module):
    """lpips NetLinLayer: model = Sequential(Dropout, Conv1x1(C, 1, bias=False)); dropout is
    inactive in eval mode, so slot 0 holds None."""

    def __init__(self, c_in: int, *, rngs: nnx.Rngs):
        self.model = nnx.List([None, Conv1x1NoBias(c_in, 1, rngs=rngs)])

    def __call__(self, x):
        return self.model[1](x)


def _max_pool(x, k, s):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), "VALID")


def normalize_tensor(x, eps=1e-10):
    """x / (||x||_c + eps); the norm is 0 with a 0 gradient (not NaN) where all channels are 0."""
    s = jnp.sum(x * x, axis=-1, keepdims=True)
    norm = jnp.where(s > 0, jnp.sqrt(jnp.where(s > 0, s, 1.0)), 0.0)
    return x / (norm + eps)


class LPIPS(nnx.Module):
    """`LPIPS(net)(x, y) -> (B,)` for NHWC images in [-1, 1]; differentiable in both inputs."""

    def __init__(self, net: str = "vgg", *, dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        if net not in NETS:
            raise ValueError(f"LPIPS: unknown net {net!r}, expected one of {sorted(NETS)}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        layers, self.taps, chans = NETS[net]
        self.net = net
        self.specs = tuple(layers)
        self.features = nnx.List([
            Conv2d(s[1], s[2], s[3], stride=s[4], padding=s[5], dtype=dtype, rngs=rngs) if s[0] == "conv" else None
            for s in layers])
        for k, c in enumerate(chans):
            setattr(self, f"lin{k}", NetLinLayer(c, rngs=rngs))

    def backbone(self, x):
        """The five tapped feature maps of (already scaled) x."""
        feats = []
        for i, spec in enumerate(self.specs):
            if spec[0] == "conv":
                x = self.features[i](x)
            elif spec[0] == "relu":
                x = jax.nn.relu(x)
            else:
                x = _max_pool(x, spec[1], spec[2])
            if i in self.taps:
                feats.append(x)
        return feats

    def __call__(self, x, y):
        if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"LPIPS: expected two (B, H, W, 3) images, got {x.shape} and {y.shape}")
        shift, scale = jnp.asarray(SHIFT, jnp.float32), jnp.asarray(SCALE, jnp.float32)
        b = x.shape[0]
        both = (jnp.concatenate([x, y], axis=0).astype(jnp.float32) - shift) / scale
        feats = self.backbone(both)
        total = jnp.zeros((b,), jnp.float32)
        for k, f in enumerate(feats):
            f = normalize_tensor(f.astype(jnp.float32))
            d = jnp.square(f[:b] - f[b:])
            total = total + jnp.mean(getattr(self, f"lin{k}")(d), axis=(1, 2, 3))
        return total


# ----------------------------------------------------------------------------- loading
def empty_lpips(net: str = "vgg", *, dtype=jnp.float32) -> LPIPS:
    """LPIPS with zero parameters, built without running the random initialisers (fast)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: LPIPS(net, dtype=dtype)))
    return nnx.merge(graphdef, jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), state))
