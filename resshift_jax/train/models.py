"""Build the networks the trainer needs: the UNet (trained), the VQ autoencoder and LPIPS (frozen).

`build_models(cfg, abstract=True)` builds them under `nnx.eval_shape`, so compile-only checks of
the full configs allocate nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import jax
import jax.numpy as jnp
from flax import nnx

from resshift_jax.train.state import split_params

log = logging.getLogger(__name__)


def compute_dtype(cfg):
    return jnp.bfloat16 if cfg.train.get("use_amp", False) else jnp.float32


def use_lpips(cfg) -> bool:
    coef = tuple(cfg.train.get("loss_coef", (1.0, 0.0)))
    return len(coef) > 1 and float(coef[1]) > 0


@dataclasses.dataclass
class Networks:
    unet_def: object
    unet_params: dict  # trainable (pure dict)
    unet_rest: dict  # non-parameter variables of the UNet (pure dict, frozen)
    vq_def: object
    vq_state: dict  # frozen
    lpips_def: object | None
    lpips_state: dict | None  # frozen

    @property
    def frozen(self) -> dict:
        return {"unet_rest": self.unet_rest, "vq": self.vq_state, "lpips": self.lpips_state or {}}


def _make(cfg, dtype, seed):
    from resshift_jax.models.unet import UNetModelSwin
    from resshift_jax.models.vqgan import VQModel
    rngs = nnx.Rngs(seed)
    unet = UNetModelSwin(cfg.model, dtype=dtype, rngs=rngs)
    vq = VQModel(cfg.autoencoder, dtype=dtype, rngs=nnx.Rngs(seed + 1))
    lp = None
    if use_lpips(cfg):
        from resshift_jax.models.lpips import LPIPS
        lp = LPIPS("vgg", dtype=dtype, rngs=nnx.Rngs(seed + 2))
    return unet, vq, lp


def _split(unet, vq, lp) -> Networks:
    unet_def, params, rest = split_params(unet)
    vq_def, vq_state = nnx.split(vq)
    lp_def, lp_state = nnx.split(lp) if lp is not None else (None, None)
    return Networks(unet_def, params, nnx.to_pure_dict(rest), vq_def, nnx.to_pure_dict(vq_state),
                    lp_def, nnx.to_pure_dict(lp_state) if lp_state is not None else None)


def _resolve(path: str) -> pathlib.Path:
    p = pathlib.Path(path)
    return p if p.is_absolute() or p.exists() else pathlib.Path(__file__).resolve().parents[2] / p


def load_frozen_weights(cfg, vq, lp, *, strict: bool = True):
    """VQ weights from `autoencoder.ckpt_path` (empty: keep random, tests only); LPIPS from
    `train.vgg_ckpt` (torchvision VGG16 features) + `train.lpips_ckpt` (lpips v0.1 heads).
    Returns (vq, lp)."""
    from resshift_jax import weights
    ck = cfg.autoencoder.get("ckpt_path", "")
    if ck:
        p = _resolve(ck)
        if not p.is_file():
            raise FileNotFoundError(f"autoencoder.ckpt_path {p} does not exist (the VQ autoencoder "
                                    "must be trained weights; set it to your autoencoder_vq_f4.pth)")
        weights.load_into(vq, str(p))
    else:
        log.warning("autoencoder.ckpt_path is empty: the frozen VQ autoencoder keeps random weights")
    if lp is not None:
        lp_ck, vgg_ck = cfg.train.get("lpips_ckpt", ""), cfg.train.get("vgg_ckpt", "")
        if lp_ck and vgg_ck and _resolve(lp_ck).is_file() and _resolve(vgg_ck).is_file():
            from resshift_jax.weights import load_lpips
            lp = load_lpips("vgg", str(_resolve(vgg_ck)), str(_resolve(lp_ck)),
                            dtype=compute_dtype(cfg))
        elif strict:
            raise FileNotFoundError(f"LPIPS weights not found: train.lpips_ckpt={lp_ck!r}, "
                                    f"train.vgg_ckpt={vgg_ck!r} (needed for loss_coef[1] > 0; "
                                    "--config.train.loss_coef='(1.0, 0.0)' turns the term off)")
        else:
            log.warning("LPIPS weights not found: the LPIPS term uses random weights")
    return vq, lp


def build_models(cfg, *, seed: int | None = None, abstract: bool = False, load_weights: bool = True,
                 strict_lpips: bool = True) -> Networks:
    """Networks with float32 parameters computing in the config's dtype (bf16 when use_amp)."""
    seed = int(cfg.train.seed if seed is None else seed)
    dtype = compute_dtype(cfg)
    if abstract:
        unet, vq, lp = nnx.eval_shape(lambda: _make(cfg, dtype, seed))
        return _split(unet, vq, lp)
    unet, vq, lp = _make(cfg, dtype, seed)
    if load_weights:
        vq, lp = load_frozen_weights(cfg, vq, lp, strict=strict_lpips)
    return _split(unet, vq, lp)


def tree_bytes(tree) -> int:
    return sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))
