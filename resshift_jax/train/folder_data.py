"""A small deterministic HR-folder loader used by the trainer until/unless the grain pipeline
(`resshift_jax.data`) is configured: real images, random `gt_size` crops, horizontal flips.

Sample g of the run (g = step·global_batch + row) depends only on (seed, g): the epoch's
permutation is drawn from (seed, epoch) and the crop/flip from (seed, g). Each process loads only
its own rows, so 1 process and N processes see the same global batch, and the iterator state is
just the next step (exact resume). LQ images are made on device by the train step (area ×sf
downscale, 8-bit quantised) when the batch has no 'lq'.
"""

from __future__ import annotations

import pathlib

import numpy as np

from resshift_jax.imageio import list_images, read_image


def resolve_dir(path: str) -> pathlib.Path:
    """A data path as given, else relative to the project root (configs say '../shared/...')."""
    p = pathlib.Path(path)
    if p.is_dir() or p.is_absolute():
        return p
    root = pathlib.Path(__file__).resolve().parents[2]
    return root / p


class FolderHRLoader:
    def __init__(self, dir_paths, gt_size: int, global_batch: int, seed: int, *,
                 rows: slice | None = None, hflip: bool = True, exts=None):
        files = []
        for d in dir_paths:
            found, _ = list_images(resolve_dir(d))
            if exts:
                found = [f for f in found if f.suffix.lower().lstrip(".") in {e.lower() for e in exts}]
            files.extend(found)
        if not files:
            raise FileNotFoundError(f"no training images found in {list(dir_paths)}")
        self.files = sorted(files)
        self.gt_size = int(gt_size)
        self.global_batch = int(global_batch)
        self.seed = int(seed)
        self.rows = rows if rows is not None else slice(0, global_batch)
        self.hflip = hflip
        self.step = 0
        self._cache: dict[int, np.ndarray] = {}

    # ---------------------------------------------------------------- iterator state
    def get_state(self) -> dict:
        return {"type": "folder_hr", "step": int(self.step), "seed": self.seed,
                "num_files": len(self.files)}

    def set_state(self, state: dict) -> None:
        if state.get("type") != "folder_hr":
            raise ValueError(f"data iterator state {state} is not from FolderHRLoader")
        self.step = int(state["step"])

    # ---------------------------------------------------------------- samples
    def _image(self, i: int) -> np.ndarray:
        if i not in self._cache:
            rgb, _ = read_image(self.files[i])
            self._cache[i] = np.asarray(np.round(rgb * 255), np.uint8)
        return self._cache[i]

    def sample(self, g: int) -> np.ndarray:
        """(gt, gt, 3) float32 in [-1, 1] for global sample index g."""
        n = len(self.files)
        epoch, pos = divmod(g, n)
        perm = np.random.default_rng([self.seed, 7, epoch]).permutation(n)
        img = self._image(int(perm[pos]))
        rng = np.random.default_rng([self.seed, 11, g])
        s = self.gt_size
        h, w = img.shape[:2]
        if h < s or w < s:  # reflect-101 pad, as the reference does for small images
            img = np.pad(img, ((0, max(s - h, 0)), (0, max(s - w, 0)), (0, 0)), mode="reflect")
            h, w = img.shape[:2]
        top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = img[top:top + s, left:left + s]
        if self.hflip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        return crop.astype(np.float32) / 127.5 - 1.0

    def batch_at(self, step: int) -> dict:
        base = step * self.global_batch
        rows = range(self.rows.start, self.rows.stop)
        return {"hr": np.stack([self.sample(base + r) for r in rows])}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        b = self.batch_at(self.step)
        self.step += 1
        return b
