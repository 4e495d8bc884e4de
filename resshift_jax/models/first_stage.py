"""The first stage (the frozen autoencoder) of ResShift, selected by `autoencoder.kind`.

- ``"vq"``: the official VQ-f4 autoencoder (`models.vqgan.VQModel`, trained weights needed).
- ``"space_to_depth"``: an exact, parameter-free first stage. `encode` is pixel-unshuffle by
  the SR factor sf (`diffusion.sf`): an image (B, H, W, 3) in [-1, 1] becomes a "latent"
  (B, H/sf, W/sf, 3·sf²), so at x4 the UNet runs at LR resolution like with VQ-f4 but needs no
  pretrained weights; `decode` is the exact inverse (depth-to-space). The latent is the image
  itself, rearranged: `diffusion.scale_factor` stays 1.0 and nothing is lost (no quantisation;
  `decode`'s `quantize` argument is accepted for the shared call sites and ignored).

Channel order (PyTorch's `F.pixel_unshuffle` / `nn.PixelShuffle`, so a PyTorch port of a
compact model uses the same UNet weights): latent channel ``k = c·sf² + i·sf + j`` holds pixel
``x[sf·h + i, sf·w + j, c]`` of the image (c the RGB channel, 0 <= i, j < sf).

Both kinds share the interface the pipeline and the trainer use: `encode(img)`,
`decode(z, quantize=...)`, `factor` (spatial down-sampling of the latent) and, from the config,
`latent_factor(cfg)` / `latent_channels(cfg)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from resshift_jax.models.vqgan import VQModel

KINDS = ("vq", "space_to_depth")


def kind_of(cfg) -> str:
    """`autoencoder.kind` of a config (full config or its autoencoder section), checked."""
    ae_cfg = cfg.autoencoder if "autoencoder" in cfg else cfg
    kind = str(ae_cfg.kind)
    if kind not in KINDS:
        raise ValueError(f"autoencoder.kind={kind!r}; choose one of {KINDS}")
    return kind


def space_to_depth(x: jax.Array, sf: int) -> jax.Array:
    """(B, H, W, C) -> (B, H/sf, W/sf, C·sf²), channel k = c·sf² + i·sf + j (pixel-unshuffle)."""
    b, h, w, c = x.shape
    if h % sf or w % sf:
        raise ValueError(f"space_to_depth: the image size {h}x{w} is not a multiple of sf={sf}")
    x = x.reshape(b, h // sf, sf, w // sf, sf, c)  # (b, h', i, w', j, c)
    x = jnp.transpose(x, (0, 1, 3, 5, 2, 4))  # (b, h', w', c, i, j)
    return x.reshape(b, h // sf, w // sf, c * sf * sf)


def depth_to_space(z: jax.Array, sf: int) -> jax.Array:
    """The exact inverse of `space_to_depth`: (B, h, w, C·sf²) -> (B, sf·h, sf·w, C)."""
    b, h, w, k = z.shape
    if k % (sf * sf):
        raise ValueError(f"depth_to_space: {k} channels are not a multiple of sf²={sf * sf}")
    c = k // (sf * sf)
    z = z.reshape(b, h, w, c, sf, sf)  # (b, h, w, c, i, j)
    z = jnp.transpose(z, (0, 1, 4, 2, 5, 3))  # (b, h, i, w, j, c)
    return z.reshape(b, h * sf, w * sf, c)


class SpaceToDepth(nnx.Module):
    """Parameter-free first stage: pixel-unshuffle by `sf` (encode), pixel-shuffle (decode).

    Its state is empty, so the trainer's frozen `vq` slot holds `{}` and checkpoints carry
    nothing for it. The rearrangement is exact in any dtype: outputs keep the input's dtype
    (`dtype` is accepted for the shared constructor signature and recorded only)."""

    def __init__(self, sf: int, *, dtype=jnp.float32):
        if int(sf) < 1:
            raise ValueError(f"SpaceToDepth: sf must be >= 1, got {sf}")
        self.sf = int(sf)
        self.factor = int(sf)
        self.dtype = dtype

    def encode(self, x):
        """Image (B, H, W, 3) in [-1, 1] -> latent (B, H/sf, W/sf, 3·sf²); H, W multiples of sf."""
        return space_to_depth(x, self.sf)

    def decode(self, z, quantize: bool = True):
        """Latent -> image, exactly; `quantize` is ignored (there is no codebook)."""
        del quantize
        return depth_to_space(z, self.sf)

    def __call__(self, x, quantize: bool = True):
        return self.decode(self.encode(x), quantize=quantize)


def latent_factor(cfg) -> int:
    """Spatial down-sampling from image to latent: 2^(levels−1) for the VQ, sf for space_to_depth."""
    if kind_of(cfg) == "space_to_depth":
        return int(cfg.diffusion.sf)
    return 2 ** (len(cfg.autoencoder.ddconfig.ch_mult) - 1)


def latent_channels(cfg) -> int:
    """Channels of the latent: `autoencoder.embed_dim` for the VQ, 3·sf² for space_to_depth."""
    if kind_of(cfg) == "space_to_depth":
        return 3 * int(cfg.diffusion.sf) ** 2
    return int(cfg.autoencoder.embed_dim)


def build_first_stage(cfg, *, dtype=jnp.float32, rngs: nnx.Rngs | None = None, **vq_kwargs) -> nnx.Module:
    """The first-stage module of a full config: a VQModel (random weights; load them with
    `weights.load_first_stage` or `weights.load_into`) or a SpaceToDepth. `vq_kwargs` go to
    VQModel (e.g. attn_impl)."""
    if kind_of(cfg) == "space_to_depth":
        return SpaceToDepth(int(cfg.diffusion.sf), dtype=dtype)
    return VQModel(cfg.autoencoder, dtype=dtype, rngs=rngs if rngs is not None else nnx.Rngs(0), **vq_kwargs)
