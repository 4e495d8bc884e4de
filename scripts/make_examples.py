"""Make the example LR inputs in examples/ from scikit-image's bundled public-domain/CC0 photos.

    python scripts/make_examples.py [--out examples]

Each image is a fixed crop of a scikit-image sample photo (licences in examples/README.md,
checked against the docstrings of `skimage.data`), shrunk x1/4 with MATLAB bicubic
(`resshift_jax.data.matlab_resize`, the bicsr degradation) and rounded to 8-bit PNG, so the
files look like the low-resolution inputs the x4 models expect. Deterministic: rerunning it
rewrites the same pixels. scikit-image comes with the `test` extra; run.sh itself only reads
the committed PNGs.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
from PIL import Image

from resshift_jax.data.matlab_resize import imresize_np

SCALE = 4
# name -> (skimage.data function, crop (top, left, height, width) of the HR photo); sizes below are H x W
EXAMPLES = {
    "astronaut": ("astronaut", (0, 0, 512, 512)),    # 512x512 -> 128x128
    "coffee": ("coffee", (8, 48, 384, 512)),          # 400x600 -> 96x128
    "rocket": ("rocket", (0, 128, 416, 384)),         # 427x640 -> 104x96
    "chelsea": ("chelsea", (0, 0, 300, 448)),         # 300x451 -> 75x112
}


def make_lr(hr: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 HR (H, W, 3) -> uint8 LR crop shrunk 1/SCALE with MATLAB bicubic (antialiased)."""
    top, left, h, w = crop
    patch = hr[top:top + h, left:left + w].astype(np.float32) / 255.0
    if patch.shape[:2] != (h, w):
        raise ValueError(f"crop {crop} outside the {hr.shape[:2]} image")
    lr = imresize_np(patch, 1.0 / SCALE)
    return np.clip(np.round(lr * 255.0), 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    import skimage.data  # lazy: a test-extra dependency, only needed to regenerate the files

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent.parent / "examples"))
    a = ap.parse_args(argv)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (fn, crop) in EXAMPLES.items():
        lr = make_lr(getattr(skimage.data, fn)(), crop)
        path = out / f"{name}.png"
        Image.fromarray(lr).save(path, optimize=True)
        print(f"{path}: {lr.shape[1]}x{lr.shape[0]} from skimage.data.{fn}() crop {crop}, {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
