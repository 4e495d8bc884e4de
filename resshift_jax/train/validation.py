"""Validation during training: full sampling with the EMA parameters on the paired folder
`data.val` (lq dir, gt dir); PSNR on Y as the reference (uint8 Y, no border shave), plus a PNG
grid lq | SR | GT."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
from flax import nnx

from resshift_jax.imageio import list_images, read_image
from resshift_jax.paths import resolve_project_path


class Validator:
    """Full sampling with EMA params on the paired folder `data.val` (lq dir, gt dir); PSNR on Y
    as the reference (uint8 Y, no border shave), plus a PNG grid lq | SR | GT."""

    def __init__(self, trainer, cfg):
        v = cfg.data.val
        lq_files, _ = list_images(resolve_project_path(v.dir_path))
        n = int(v.get("length", -1))
        lq_files = lq_files[:n] if n > 0 else lq_files
        gt_dir = resolve_project_path(v.extra_dir_path)
        self.names = [f.name for f in lq_files]
        self.lq = [read_image(f)[0] for f in lq_files]
        self.gt = [read_image(gt_dir / f.name)[0] for f in lq_files]
        self.trainer, self.cfg = trainer, cfg
        self.batch = max(1, int(cfg.train.batch[1]))
        self.pipe = None

    def _pipeline(self, state):
        from resshift_jax.pipeline import SRPipeline
        nets = self.trainer.nets
        host = lambda t: jax.tree.map(np.asarray, t)  # noqa: E731
        unet = nnx.merge(nets.unet_def, host(state.ema_params), host(nets.unet_rest))
        vq = nnx.merge(nets.vq_def, host(nets.vq_state))
        if self.pipe is None:
            self.pipe = SRPipeline(unet, vq, self.cfg, mesh=self.trainer.mesh)
        else:  # same program, new weights (no recompilation)
            self.pipe.set_weights(unet_state=nnx.state(unet))
        return self.pipe

    def __call__(self, state, step: int, image_dir: pathlib.Path | None = None) -> dict:
        from resshift_jax.metrics import psnr_y
        pipe = self._pipeline(state)
        key = jax.random.key(int(self.cfg.train.seed) + 1)
        psnrs, grid = [], []
        for i in range(0, len(self.lq), self.batch):
            chunk = self.lq[i:i + self.batch]
            if len({x.shape for x in chunk}) > 1:  # mixed sizes: one by one
                outs = [np.asarray(pipe(x[None] * 2 - 1, key=jax.random.fold_in(key, i + j)))[0]
                        for j, x in enumerate(chunk)]
            else:
                outs = list(np.asarray(pipe(np.stack(chunk) * 2 - 1, key=jax.random.fold_in(key, i))))
            for j, sr in enumerate(outs):
                sr01 = np.clip(sr * 0.5 + 0.5, 0, 1)
                gt = self.gt[i + j]
                psnrs.append(psnr_y(sr01, gt[: sr01.shape[0], : sr01.shape[1]]))
                if len(grid) < 4:
                    up = np.repeat(np.repeat(self.lq[i + j], sr01.shape[0] // self.lq[i + j].shape[0], 0),
                                   sr01.shape[1] // self.lq[i + j].shape[1], 1)
                    grid.append(np.concatenate([up, sr01, gt], axis=1))
        if image_dir is not None and grid and jax.process_index() == 0:
            from PIL import Image
            image_dir.mkdir(parents=True, exist_ok=True)
            h = min(g.shape[0] for g in grid)
            img = np.concatenate([g[:h] for g in grid], axis=0)
            Image.fromarray(np.round(img * 255).astype(np.uint8)).save(image_dir / f"val_{step:07d}.png")
        return {"val_psnr_y": float(np.mean(psnrs)), "val_images": len(psnrs)}
