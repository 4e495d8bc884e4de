"""The README's figures for the compact models: training curves and a comparison grid.

    # training loss and validation PSNR(Y) of train.py runs (their WORKDIR/metrics.jsonl)
    python scripts/compact_report.py curves --run compact_bicsr=runs/compact_bicsr \
        --run compact_realsr=runs/compact_realsr --out docs/compact_training.png

    # LR | bicubic | model | GT crops from `python -m resshift_jax.evaluate` output folders
    python scripts/compact_report.py grid --lq E/pairs/lq --gt E/pairs/gt \
        --col bicubic=B/pred --col compact_bicsr=E/pred --out docs/compact_bicsr_grid.png

Curves: the logged training loss (x0-MSE in the latent, = pixel MSE on [-1, 1] for the
space-to-depth first stage) smoothed by a running mean over 10 log points, and each
validation's PSNR(Y) (EMA weights, 4-step sampler). Grid: for each of `--images` images
(sorted by name, every k-th), the `--crop`² HR window at the centre; the LR column is the
matching LR window shown with nearest-neighbour pixels.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from resshift_jax.imageio import list_images, read_image  # noqa: E402


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, out, *, dpi: int) -> pathlib.Path:
    fig.tight_layout()
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def read_metrics(run_dir) -> tuple[list[dict], list[dict]]:
    """(training log lines, validation lines) of WORKDIR/metrics.jsonl."""
    f = pathlib.Path(run_dir) / "metrics.jsonl"
    if not f.is_file():
        raise SystemExit(f"error: {f} does not exist (is {run_dir} a train.py workdir?)")
    lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return [d for d in lines if "loss" in d], [d for d in lines if "val_psnr_y" in d]


def running_mean(x: np.ndarray, k: int) -> np.ndarray:
    c = np.cumsum(np.insert(np.asarray(x, np.float64), 0, 0.0))
    out = np.empty(len(x))
    for i in range(len(x)):
        lo = max(0, i - k + 1)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def curves(runs: list[tuple[str, str]], out) -> pathlib.Path:
    plt = _plt()
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(11, 4))
    for label, run_dir in runs:
        train, val = read_metrics(run_dir)
        steps = np.array([d["step"] for d in train])
        loss = np.array([d["loss"] for d in train])
        (line,) = ax_l.plot(steps, running_mean(loss, 10), label=label)
        ax_l.plot(steps, loss, color=line.get_color(), alpha=0.2, lw=0.8)
        if val:
            ax_v.plot([d["step"] for d in val], [d["val_psnr_y"] for d in val], "o-", color=line.get_color(),
                      label=f"{label} ({val[-1]['val_images']} images)")
    ax_l.set(xlabel="step", ylabel="training loss (x0-MSE)", yscale="log", title="training loss (faint: as logged)")
    ax_v.set(xlabel="step", ylabel="PSNR(Y) dB", title="validation, EMA weights, 4 steps")
    for ax in (ax_l, ax_v):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(plt, fig, out, dpi=90)


def _by_stem(folder) -> dict[str, pathlib.Path]:
    root = pathlib.Path(folder)
    return {f.relative_to(root).with_suffix("").as_posix(): f for f in list_images(root)[0]}


def grid(lq_dir, gt_dir, cols: list[tuple[str, str]], out, *, images: int = 4, crop: int = 128,
         sf: int = 4) -> pathlib.Path:
    lq, gt = _by_stem(lq_dir), _by_stem(gt_dir)
    preds = [(label, _by_stem(d)) for label, d in cols]
    names = sorted(n for n in gt if n in lq and all(n in p for _, p in preds))
    if not names:
        raise SystemExit("error: no image is present in every folder")
    names = names[:: max(1, len(names) // images)][:images]
    plt = _plt()
    ncol = 2 + len(preds)
    fig, axes = plt.subplots(len(names), ncol, figsize=(2.2 * ncol, 2.3 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        g = read_image(gt[name])[0]
        c = min(crop, g.shape[0], g.shape[1]) // sf * sf
        top, left = (g.shape[0] - c) // 2 // sf * sf, (g.shape[1] - c) // 2 // sf * sf
        win = (slice(top, top + c), slice(left, left + c))
        small = read_image(lq[name])[0][top // sf:(top + c) // sf, left // sf:(left + c) // sf]
        tiles = [("LR (nearest)", np.repeat(np.repeat(small, sf, 0), sf, 1))]
        tiles += [(label, read_image(p[name])[0][win]) for label, p in preds]
        tiles += [("ground truth", g[win])]
        for k, (label, img) in enumerate(tiles):
            ax = axes[r, k]
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=9)
            if k == 0:
                ax.set_ylabel(name, fontsize=8)
    return _save(plt, fig, out, dpi=80)


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for it in items:
        if "=" not in it:
            raise SystemExit(f"error: {flag} takes LABEL=PATH, got {it!r}")
        out.append(tuple(it.split("=", 1)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curves")
    c.add_argument("--run", action="append", required=True, help="LABEL=WORKDIR (repeatable)")
    c.add_argument("--out", required=True)
    g = sub.add_parser("grid")
    g.add_argument("--lq", required=True)
    g.add_argument("--gt", required=True)
    g.add_argument("--col", action="append", required=True, help="LABEL=FOLDER of predictions (repeatable)")
    g.add_argument("--images", type=int, default=4)
    g.add_argument("--crop", type=int, default=128, help="HR crop size")
    g.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.cmd == "curves":
        print(curves(_pairs(args.run, "--run"), args.out))
    else:
        print(grid(args.lq, args.gt, _pairs(args.col, "--col"), args.out, images=args.images, crop=args.crop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
