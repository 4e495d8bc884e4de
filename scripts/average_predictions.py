"""The per-pixel mean of several prediction folders (e.g. one model run with different seeds), so
that `python -m resshift_jax.evaluate --pred OUT --gt GT` can score it like any prediction.

    python scripts/average_predictions.py --pred eval/seed1/pred --pred eval/seed2/pred --out eval/seed_mean

What it measures: a ResShift output is a function of the LR image y and the noise ε of the prior
x_T = y + κ√η_T ε. Scoring the mean over seeds next to the single outputs tells how much of a
model's error depends on ε: the mean over draws is the best estimate that function can give of
E[x0 | y] (the minimum-MSE output), so its PSNR gain over one draw bounds what removing the
ε-dependence could gain.

Files are paired by relative path without extension (as `evaluate` pairs them); every folder must
hold the same images with the same sizes. The means are written as 16-bit PNGs (so the average
is not rounded to 8 bits first; `evaluate` quantises both sides the reference's way). Prints the
root-mean-square deviation of each folder's images from the mean, in 8-bit levels.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from resshift_jax.evaluation import EvaluationError, by_stem  # noqa: E402
from resshift_jax.imageio import ImageReadError, read_image, write_image  # noqa: E402


def average_folders(folders: list, out) -> dict:
    """Write the mean image of each stem under `out` (16-bit PNG); returns {"images": n,
    "rms_from_mean": [per folder, 8-bit levels]}."""
    if len(folders) < 2:
        raise ValueError(f"need at least two prediction folders, got {len(folders)}")
    first = folders[0]
    files_of = [by_stem(f) for f in folders]  # {stem: file} per folder, as `evaluate` pairs them
    stems = sorted(files_of[0])
    if not stems:
        raise EvaluationError(f"no images in {first}")
    for f, files in zip(folders[1:], files_of[1:]):
        missing, extra = sorted(set(stems) - set(files)), sorted(set(files) - set(stems))
        if missing or extra:
            raise EvaluationError(f"{f} does not hold the images of {first}: "
                                  + "; ".join(w for w in (missing and f"missing {', '.join(missing[:10])}",
                                                          extra and f"not in {first}: {', '.join(extra[:10])}") if w))
    out = pathlib.Path(out)
    sq = np.zeros(len(folders))
    n_px = 0
    for stem in stems:
        files = [fs[stem] for fs in files_of]
        imgs, metas = zip(*(read_image(f) for f in files))
        for f, im in zip(files[1:], imgs[1:]):
            if im.shape != imgs[0].shape:
                raise EvaluationError(f"{f}: size {im.shape[1]}x{im.shape[0]} differs from "
                                      f"{files[0]} ({imgs[0].shape[1]}x{imgs[0].shape[0]})")
        stack = np.stack(imgs).astype(np.float64)
        mean = stack.mean(0)
        sq += np.square(stack - mean).reshape(len(files), -1).sum(1)
        n_px += mean.size
        meta = dataclasses.replace(metas[0], bit_depth=16, path=str(files[0]))
        write_image(out / f"{stem}.png", mean, meta)
    return {"images": len(stems), "rms_from_mean": list(255.0 * np.sqrt(sq / n_px))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pred", action="append", required=True, help="a folder of predictions (repeat, 2 or more)")
    p.add_argument("--out", required=True, help="folder for the mean images (16-bit PNG)")
    a = p.parse_args(argv)
    try:
        r = average_folders(a.pred, a.out)
    except (EvaluationError, ImageReadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rms = ", ".join(f"{v:.3f}" for v in r["rms_from_mean"])
    print(f"{r['images']} image(s), mean of {len(a.pred)} folders -> {a.out}; "
          f"rms deviation from the mean (8-bit levels): {rms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
