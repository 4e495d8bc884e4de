"""Evaluate super-resolved images against ground truth: PSNR / SSIM (Y, reference conventions),
LPIPS (VGG or AlexNet, v0.1) and NIQE (no-reference).

    python -m resshift_jax.evaluate --pred DIR --gt DIR --metrics psnr,ssim,lpips,niqe --out DIR \
        [--lpips_backbone vgg16-397923af.pth --lpips_heads vgg.pth --lpips_net vgg]

    # first super-resolve an LR folder into OUT/pred, then evaluate it:
    python -m resshift_jax.evaluate --lq DIR --config realsr_v3 --unet_ckpt P --vae_ckpt P \
        --gt DIR --metrics psnr,ssim,lpips --out DIR

    # the bicsr protocol on a GT folder (LQ = MATLAB bicubic x1/4, written to OUT/pairs), and
    # the bicubic-interpolation baseline instead of a model:
    python -m resshift_jax.evaluate --gt DIR --degrade bicubic [--include 'mcmaster_*'] \
        --config compact_bicsr --unet_ckpt P --metrics psnr,ssim --out DIR
    python -m resshift_jax.evaluate --lq DIR --gt DIR --baseline bicubic --metrics psnr,ssim --out DIR

Images are paired by file stem (`a.png` <-> `a.jpg`). Writes OUT/per_image.csv,
OUT/summary.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from resshift_jax import metrics as M
from resshift_jax.evaluation import (ALL_METRICS, CONVENTIONS, DIRECTION, FULL_REFERENCE, EvaluationError,
                                     LpipsScorer, bicubic_pairs, bicubic_upsample_folder, paired_files,
                                     parse_metrics, score_files, summarize, write_pairs)
from resshift_jax.imageio import list_images
from resshift_jax.weights import load_lpips


# ----------------------------------------------------------------------------- outputs
def write_outputs(out_dir, rows, metrics, summary, meta) -> dict[str, pathlib.Path]:
    import csv
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
    (imported lazily, so scoring folders alone does not build the models)."""
    from resshift_jax import cli_infer  # the models and JAX only when inference is asked for
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
    p.add_argument("--x0_after", type=int, default=None,
                   help="for --lq: infer.py's --x0_after (stop after K steps, output that step's x0 prediction)")
    p.add_argument("--noise_scale", type=float, default=None,
                   help="for --lq: infer.py's --noise_scale (1 the reference's chain, 0 the deterministic sampler)")
    p.add_argument("--baseline", choices=["bicubic"],
                   help="with --lq: score MATLAB-bicubic interpolation x--scale instead of a model")
    p.add_argument("--degrade", choices=["bicubic"],
                   help="make the LQ from --gt by MATLAB bicubic x1/--scale (the bicsr protocol): "
                        "GT cut to multiples of --scale and LQ rounded to 8 bits, written to OUT/pairs/{gt,lq}")
    p.add_argument("--include", default="", help="with --degrade: only GT files whose name matches this glob")
    p.add_argument("--scale", type=int, default=4, help="SR factor of --baseline and --degrade")
    p.add_argument("--cache_dir", default=None,
                   help="persistent XLA compilation cache folder (default: $RESSHIFT_JAX_CACHE_DIR or "
                        "~/.cache/resshift_jax/xla)")
    p.add_argument("--no_compile_cache", action="store_true", help="do not use the persistent compilation cache")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = parse_metrics(args.metrics)
        if args.lq or "lpips" in metrics or "niqe" in metrics:  # these compile programs
            from resshift_jax import compile_cache
            compile_cache.configure(args.cache_dir, enabled=not args.no_compile_cache)
        meta = {"pred": args.pred, "gt": args.gt}
        if args.degrade:
            if not args.gt or args.lq:
                raise EvaluationError("--degrade makes the LQ from --gt: give --gt and no --lq")
            pairs = bicubic_pairs(args.gt, sf=args.scale, include=args.include)
            lq_dir, gt_dir = write_pairs(pairs, pathlib.Path(args.out) / "pairs")
            meta.update(degrade=f"MATLAB bicubic x1/{args.scale} of {args.gt}", include=args.include)
            args.lq, args.gt = str(lq_dir), str(gt_dir)
        if args.baseline:
            if not args.lq:
                raise EvaluationError("--baseline needs --lq (or --degrade)")
            pred_dir = pathlib.Path(args.pred or pathlib.Path(args.out) / "pred")
            bicubic_upsample_folder(args.lq, pred_dir, sf=args.scale)
            args.pred = str(pred_dir)
            meta.update(pred=args.pred, lq=args.lq, baseline=f"MATLAB bicubic x{args.scale}")
        elif args.lq:
            if not args.config:
                raise EvaluationError("--lq needs --config (and usually --unet_ckpt / --vae_ckpt)")
            pred_dir = pathlib.Path(args.pred or pathlib.Path(args.out) / "pred")
            extra = [] if args.x0_after is None else ["--x0_after", str(args.x0_after)]
            extra += [] if args.noise_scale is None else ["--noise_scale", str(args.noise_scale)]
            extra += ["--no_compile_cache"] if args.no_compile_cache else []
            extra += ["--cache_dir", args.cache_dir] if args.cache_dir else []
            run_inference(args.lq, pred_dir, config=args.config, unet_ckpt=args.unet_ckpt,
                          vae_ckpt=args.vae_ckpt, seed=args.seed, extra_args=extra)
            args.pred = str(pred_dir)
            meta.update(pred=args.pred, lq=args.lq, config=args.config, unet_ckpt=args.unet_ckpt,
                        vae_ckpt=args.vae_ckpt, seed=args.seed, x0_after=args.x0_after,
                        noise_scale=args.noise_scale)
        if not args.pred:
            raise EvaluationError("--pred (or --lq) is required")
        needs_gt = [m for m in metrics if m in FULL_REFERENCE]
        if needs_gt and not args.gt:
            raise EvaluationError(f"{', '.join(needs_gt)} need --gt")
        if args.gt:
            items = paired_files(args.pred, args.gt, allow_unpaired=args.allow_unpaired)
        else:
            root = pathlib.Path(args.pred)
            items = [(f.relative_to(root).with_suffix("").as_posix(), f, None) for f in list_images(root)[0]]
        model = None
        if "lpips" in metrics:
            if not args.lpips_backbone:
                raise EvaluationError("lpips needs --lpips_backbone (torchvision weights) and --lpips_heads (lpips v0.1 weights)")
            for f in (args.lpips_backbone, args.lpips_heads):
                if f and not pathlib.Path(f).is_file():
                    raise EvaluationError(f"LPIPS weight file not found: {f}")
            model = LpipsScorer(load_lpips(args.lpips_net, args.lpips_backbone, args.lpips_heads))
            meta.update(lpips_net=args.lpips_net, lpips_backbone=args.lpips_backbone, lpips_heads=args.lpips_heads)
        if "niqe" in metrics:
            meta["niqe_model"] = str(M.niqe_params_path())
        rows = score_files(items, metrics, lpips=model, progress=not args.no_progress)
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
