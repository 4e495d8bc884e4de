"""Build the networks the trainer needs: the UNet (trained), the first stage and LPIPS (frozen).

The first stage is the VQ autoencoder or the parameter-free space-to-depth, by
`autoencoder.kind` (models/first_stage.py); the trainer's frozen `vq` slot holds its state,
which is empty for space-to-depth. Below, "VQ" means whichever first stage the config selects.

`build_models(cfg, abstract=True)` builds them under `nnx.eval_shape`, so compile-only checks of
the full configs allocate nothing. The frozen VQ encoder gets its own graph definition in
`train.encoder_dtype` (float32 by default: its outputs are the regression target z0 and the
conditioning z_y), next to the compute-dtype one used to decode for the LPIPS term.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
from flax import nnx

from resshift_jax import weights
from resshift_jax.models.first_stage import build_first_stage, kind_of
from resshift_jax.models.lpips import LPIPS
from resshift_jax.models.unet import UNetModelSwin
from resshift_jax.paths import resolve_project_path
from resshift_jax.train.state import split_params

log = logging.getLogger(__name__)


ENCODER_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(cfg):
    """bfloat16 under `train.use_amp`, else float32 (parameters stay float32 either way)."""
    return jnp.bfloat16 if cfg.train.use_amp else jnp.float32


def encoder_dtype(cfg):
    """Compute dtype of the frozen VQ encoder (`train.encoder_dtype`, default float32)."""
    name = str(cfg.train.encoder_dtype)
    if name not in ENCODER_DTYPES:
        raise ValueError(f"train.encoder_dtype={name!r} not in {tuple(ENCODER_DTYPES)}")
    return ENCODER_DTYPES[name]


def lpips_coef(cfg) -> float:
    """The LPIPS weight `train.loss_coef[1]` (0 when absent)."""
    coef = tuple(cfg.train.loss_coef)
    return float(coef[1]) if len(coef) > 1 else 0.0


def use_lpips(cfg) -> bool:
    """The one place that decides whether the objective has the LPIPS term."""
    return lpips_coef(cfg) > 0


@dataclasses.dataclass
class Networks:
    """Graph definitions + pure-dict states: the UNet's trainable parameters and everything frozen."""
    unet_def: object
    unet_params: dict  # trainable (pure dict)
    unet_rest: dict  # non-parameter variables of the UNet (pure dict, frozen)
    vq_def: object  # compute dtype: decodes x̂0 for the LPIPS term
    vq_encoder_def: object  # train.encoder_dtype: encodes HR (z0) and LQ (z_y); same state as vq_def
    vq_state: dict  # frozen
    lpips_def: object | None
    lpips_state: dict | None  # frozen
    teacher_params: dict | None = None  # frozen: the distillation teacher's UNet parameters (unet_def)

    @property
    def frozen(self) -> dict:
        return {"unet_rest": self.unet_rest, "vq": self.vq_state, "lpips": self.lpips_state or {},
                "teacher": self.teacher_params or {}}


def _make(cfg, dtype, seed):
    rngs = nnx.Rngs(seed)
    unet = UNetModelSwin(cfg.model, dtype=dtype, rngs=rngs)
    vq = build_first_stage(cfg, dtype=dtype, rngs=nnx.Rngs(seed + 1))
    lp = LPIPS("vgg", dtype=dtype, rngs=nnx.Rngs(seed + 2)) if use_lpips(cfg) else None
    return unet, vq, lp


def _split(cfg, unet, vq, lp) -> Networks:
    unet_def, params, rest = split_params(unet)
    vq_def, vq_state = nnx.split(vq)
    lp_def, lp_state = nnx.split(lp) if lp is not None else (None, None)
    enc_def = nnx.split(nnx.eval_shape(lambda: build_first_stage(cfg, dtype=encoder_dtype(cfg),
                                                                 rngs=nnx.Rngs(0))))[0]
    return Networks(unet_def=unet_def, unet_params=params, unet_rest=nnx.to_pure_dict(rest), vq_def=vq_def,
                    vq_encoder_def=enc_def, vq_state=nnx.to_pure_dict(vq_state), lpips_def=lp_def,
                    lpips_state=nnx.to_pure_dict(lp_state) if lp_state is not None else None)


def load_frozen_weights(cfg, vq, lp, *, strict: bool = True):
    """VQ weights from `autoencoder.ckpt_path` (empty: keep random, tests only; space_to_depth has
    none and must not name one); LPIPS from `train.vgg_ckpt` (torchvision VGG16 features) +
    `train.lpips_ckpt` (lpips v0.1 heads). Returns (vq, lp)."""
    ck = cfg.autoencoder.ckpt_path
    if kind_of(cfg) == "space_to_depth":
        if ck:
            raise ValueError(f"autoencoder.kind='space_to_depth' is parameter-free, but autoencoder.ckpt_path="
                             f"{ck!r}: set it to '' (or use autoencoder.kind='vq')")
    elif ck:
        p = resolve_project_path(ck)
        if not p.is_file():
            raise FileNotFoundError(f"autoencoder.ckpt_path {p} does not exist (the VQ autoencoder "
                                    "must be trained weights; set it to your autoencoder_vq_f4.pth)")
        weights.load_into(vq, str(p))
    else:
        log.warning("autoencoder.ckpt_path is empty: the frozen VQ autoencoder keeps random weights")
    if lp is not None:
        lp_ck, vgg_ck = cfg.train.lpips_ckpt, cfg.train.vgg_ckpt
        vgg_p, lp_p = resolve_project_path(vgg_ck), resolve_project_path(lp_ck)
        if lp_ck and vgg_ck and lp_p.is_file() and vgg_p.is_file():
            lp = weights.load_lpips("vgg", str(vgg_p), str(lp_p), dtype=compute_dtype(cfg))
        elif strict:
            raise FileNotFoundError(f"LPIPS weights not found: train.lpips_ckpt={lp_ck!r}, "
                                    f"train.vgg_ckpt={vgg_ck!r} (needed for loss_coef[1] > 0; "
                                    "--config.train.loss_coef='(1.0, 0.0)' turns the term off)")
        else:
            log.warning("LPIPS weights not found: the LPIPS term uses random weights")
    return vq, lp


def distilling(cfg) -> bool:
    """The one place that decides whether the objective is one-step distillation."""
    objective = str(cfg.train.objective)
    if objective not in ("diffusion", "distill"):
        raise ValueError(f"train.objective must be 'diffusion' or 'distill', got {objective!r}")
    return objective == "distill"


def load_teacher(cfg, unet) -> None:
    """The distillation teacher's weights (`distill.teacher_ckpt`, strict) into `unet`: the
    student starts from them (SinSR copies the teacher), and they stay frozen as the teacher."""
    ck = cfg.distill.teacher_ckpt
    if not ck:
        raise ValueError("train.objective='distill' needs distill.teacher_ckpt (the teacher UNet checkpoint)")
    p = resolve_project_path(ck)
    if not p.exists():
        raise FileNotFoundError(f"distill.teacher_ckpt {p} does not exist")
    weights.load_into(unet, str(p))


def build_models(cfg, *, seed: int | None = None, abstract: bool = False, load_weights: bool = True,
                 strict_lpips: bool = True) -> Networks:
    """Networks with float32 parameters computing in the config's dtype (bf16 when use_amp).
    With the distillation objective the UNet holds the teacher's weights (the student's start)
    and `teacher_params` a copy of them (frozen)."""
    seed = int(cfg.train.seed if seed is None else seed)
    dtype = compute_dtype(cfg)
    distill = distilling(cfg)
    if abstract:
        unet, vq, lp = nnx.eval_shape(lambda: _make(cfg, dtype, seed))
        nets = _split(cfg, unet, vq, lp)
    else:
        unet, vq, lp = _make(cfg, dtype, seed)
        if load_weights:
            vq, lp = load_frozen_weights(cfg, vq, lp, strict=strict_lpips)
            if distill:
                load_teacher(cfg, unet)
        nets = _split(cfg, unet, vq, lp)
    if distill:
        copy = (lambda a: a) if abstract else (lambda a: jnp.array(a, copy=True))
        nets.teacher_params = jax.tree.map(copy, nets.unet_params)
    return nets


def tree_bytes(tree) -> int:
    return sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))
