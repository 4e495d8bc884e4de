"""Validation during training, as the reference trainer's `validation()`: full sampling with the
EMA parameters on `data.val`, PSNR on Y and LPIPS (vgg, [-1, 1]), means over the images.

Through the one evaluation path (resshift_jax.evaluation): the pairs of `data.val` (real pairs,
or bicubic LQ made from the GT for bicsr), infer.py's per-image noise keys and tiling, its scores.
Like the reference, it runs in float32 whatever `train.use_amp` (the EMA UNet and the VQ are
built in float32 for it) and draws fresh noise at every validation: validation at step s uses
seed `val_seed(train.seed, s)`, so `infer.py --seed <that seed>` with the exported EMA weights
of step s reproduces its images. Writes a PNG grid lq | SR | GT of the first four images.
"""

from __future__ import annotations

import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resshift_jax import evaluation as ev
from resshift_jax.models.unet import UNetModelSwin
from resshift_jax.models.first_stage import build_first_stage
from resshift_jax.pipeline import SRPipeline
from resshift_jax.train.state import split_params
from resshift_jax.weights import load_lpips

log = logging.getLogger(__name__)


def val_seed(train_seed: int, step: int) -> int:
    """The sampling seed of the validation at `step`: fresh noise every time (the reference
    samples with noise=None), never the train state's root seed."""
    return int(train_seed) + 1 + int(step)


def float32_graphdefs(cfg):
    """Graph definitions of the UNet (split as the trainer's params / rest) and of the VQ computing
    in float32, to merge with the trainer's float32 states whatever its compute dtype."""
    unet = nnx.eval_shape(lambda: UNetModelSwin(cfg.model, dtype=jnp.float32, rngs=nnx.Rngs(0)))
    vq = nnx.eval_shape(lambda: build_first_stage(cfg, dtype=jnp.float32, rngs=nnx.Rngs(1)))
    return split_params(unet)[0], nnx.split(vq)[0]


def _lpips_scorer(cfg) -> ev.LpipsScorer | None:
    """LPIPS (vgg) from `train.vgg_ckpt` + `train.lpips_ckpt` when both files exist, else None."""
    files = ev.lpips_weight_files(cfg.train.vgg_ckpt, cfg.train.lpips_ckpt)
    if files is None:
        log.warning("validation without LPIPS: train.vgg_ckpt / train.lpips_ckpt are not files")
        return None
    return ev.LpipsScorer(load_lpips("vgg", *map(str, files)))


class Validator:
    """`validator(state, step, image_dir)` -> {'val_psnr_y', 'val_lpips' (with LPIPS weights),
    'val_images', 'val_seed'}."""

    def __init__(self, trainer, cfg):
        self.pairs = ev.val_pairs(cfg)
        self.trainer, self.cfg = trainer, cfg
        self.bs = max(1, int(cfg.train.batch[1]))
        self.tiles = ev.tile_settings(cfg)
        self.lpips = _lpips_scorer(cfg)
        self.metrics = ["psnr"] + (["lpips"] if self.lpips is not None else [])
        self.unet_def, self.vq_def = float32_graphdefs(cfg)
        self.pipe = None

    def _pipeline(self, state) -> SRPipeline:
        nets = self.trainer.nets
        host = lambda t: jax.tree.map(np.asarray, t)  # noqa: E731 - validation is single-process
        unet = nnx.merge(self.unet_def, host(state.ema_params), host(nets.unet_rest))
        if self.pipe is None:
            vq = nnx.merge(self.vq_def, host(nets.vq_state))
            self.pipe = SRPipeline(unet, vq, self.cfg, mesh=self.trainer.mesh)
        else:  # same program, new weights (no recompilation)
            self.pipe.set_weights(unet_state=nnx.state(unet))
        return self.pipe

    def __call__(self, state, step: int, image_dir: pathlib.Path | None = None) -> dict:
        seed = val_seed(self.cfg.train.seed, step)
        srs = ev.super_resolve(self._pipeline(state), self.pairs, seed=seed, bs=self.bs, **self.tiles)
        rows = ev.score_pairs(srs, self.pairs, self.metrics, lpips=self.lpips)
        if image_dir is not None and jax.process_index() == 0:
            write_grid(image_dir / f"val_{step:07d}.png", self.pairs[:4], srs[:4])
        out = {"val_psnr_y": float(np.mean([r["psnr"] for r in rows])), "val_images": len(rows), "val_seed": seed}
        if self.lpips is not None:
            out["val_lpips"] = float(np.mean([r["lpips"] for r in rows]))
        return out


def write_grid(path: pathlib.Path, pairs, srs) -> None:
    """Rows lq (nearest x sf) | SR | GT, cut to the shortest row."""
    from PIL import Image  # only the grid needs Pillow's writer
    grid = []
    for p, sr in zip(pairs, srs):
        f = sr.shape[0] // p.lq.shape[0]
        up = np.clip(p.lq, 0, 1).repeat(f, 0).repeat(f, 1)
        grid.append(np.concatenate([up, sr, p.gt], axis=1))
    if not grid:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    h = min(g.shape[0] for g in grid)
    w = min(g.shape[1] for g in grid)
    img = np.concatenate([g[:h, :w] for g in grid], axis=0)
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path)
