#!/usr/bin/env python
"""Shape buckets on a folder of mixed sizes (RealSet65): how many programs `infer.py` compiles
and how long that takes, with the reference's padding (each tile to a multiple of the padding
offset) and with `--shape_buckets`, and how much the buckets change the output. One JSON line.

    python bench/bench_buckets.py --in ../shared/data/RealSet65 --model compact \
        --chop_size 512 --chop_stride 448 --buckets 64,128,256,512 --measure compile,psnr

`compile`: the tile shapes each mode gives (planned from the image sizes, as `TiledRunner`
cuts them), the compute they cost (padded LR pixels), and the time to compile each program
(lower + compile, a fresh pipeline per mode, no persistent cache).
`psnr`: the folder super-resolved three times through `cli_infer.run` (reference padding,
buckets, reference padding with a second seed); the change is the PSNR (RGB, 8-bit outputs,
from the MSE over all images) between the bucketed and the reference outputs with the same
seed, next to the PSNR between the two seeds: the sampler's own spread. Noise is drawn per
padded tile shape, so a bucketed tile also gets other noise; the seed pair shows that scale.
The compact model runs with v3's tiling (512/448; at its own 128/112 every RealSet65 tile is
already 128x128: one program either way).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--in", dest="in_path", default="../shared/data/RealSet65")
    p.add_argument("--model", default="compact", choices=["compact", "tiny", "v1", "v3"])
    p.add_argument("--chop_size", type=int, default=512)
    p.add_argument("--chop_stride", type=int, default=448)
    p.add_argument("--buckets", default="64,128,256,512")
    p.add_argument("--seeds", default="12345,1", help="the run seed, and the second seed of the spread")
    p.add_argument("--bs", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="psnr: only the first N images (sorted names); 0 = all")
    p.add_argument("--measure", default="compile,psnr")
    return p.parse_args(argv)


def tile_shapes(sizes, chop, stride, offset, buckets) -> collections.Counter:
    """Padded LR tile shapes (h, w) -> count, as infer.py's TiledRunner cuts and pads them."""
    from resshift_jax import tiling

    runner = tiling.TiledRunner(None, sf=4, chop_size=chop, chop_stride=stride, padding_offset=offset, buckets=buckets)
    return collections.Counter(s for h, w in sizes for s in runner.program_shapes(h, w))


def compile_times(model: str, shapes, bs: int) -> list[float]:
    """Seconds to lower + compile the sampler program for each shape, on a fresh pipeline."""
    import jax
    import jax.numpy as jnp

    from bench.bench_folder import build_pipeline

    pipe = build_pipeline(model, "fp32")
    fn = pipe._compiled(True, False)  # the key-mode program infer.py runs
    keys = jax.ShapeDtypeStruct((bs,), jax.random.key(0).dtype)
    out = []
    for h, w in shapes:
        t = time.perf_counter()
        fn.lower(pipe._states, jax.ShapeDtypeStruct((bs, h, w, 3), jnp.float32), keys).compile()
        out.append(time.perf_counter() - t)
    return out


def read8(path: Path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"), np.float64)


def main(argv=None):
    args = parse_args(argv)
    import jax
    from PIL import Image

    from bench.bench_folder import build_pipeline
    from resshift_jax import cli_infer, compile_cache, imageio

    compile_cache.disable()  # compile time is measured, not loaded
    measure = set(args.measure.split(","))
    files, root = imageio.list_images(args.in_path)
    cfg = build_pipeline(args.model, "fp32").config
    offset = int(cfg.inference.padding_offset)
    buckets = cli_infer.parse_buckets(args.buckets, cfg)
    result = dict(bench="buckets", model=args.model, folder=str(args.in_path), images=len(files),
                  chop=args.chop_size, stride=args.chop_stride, padding_offset=offset,
                  shape_buckets=list(buckets), x0_after=int(cfg.inference.x0_after),
                  device=jax.devices()[0].device_kind, cpus=os.cpu_count(), jax=jax.__version__)
    if "compile" in measure:
        sizes = [Image.open(f).size[::-1] for f in files]
        for mode, bk in (("reference", ()), ("buckets", buckets)):
            shapes = tile_shapes(sizes, args.chop_size, args.chop_stride, offset, bk)
            secs = compile_times(args.model, sorted(shapes), args.bs)
            result[mode] = dict(programs=len(shapes), tiles=sum(shapes.values()),
                                lr_pixels=sum(h * w * n for (h, w), n in shapes.items()),
                                compile_s=round(sum(secs), 2), compile_s_max=round(max(secs), 2))
        result["compute_ratio"] = round(result["buckets"]["lr_pixels"] / result["reference"]["lr_pixels"], 4)
    if "psnr" in measure:
        files = files[: args.limit] if args.limit > 0 else files
        seed, seed2 = (int(s) for s in args.seeds.split(","))
        pipe = build_pipeline(args.model, "fp32")
        with tempfile.TemporaryDirectory() as tmp:
            outs, walls = {}, {}
            for name, bk, s in (("reference", "off", seed), ("buckets", args.buckets, seed), ("seed2", "off", seed2)):
                argv = ["-i", str(root), "-o", str(Path(tmp) / name), "--bs", str(args.bs), "--no_progress",
                        "--chop_size", str(args.chop_size), "--chop_stride", str(args.chop_stride),
                        "--shape_buckets", bk, "--seed", str(s)]
                a = cli_infer.build_parser().parse_args(argv)
                todo, _ = cli_infer.plan_outputs(files, root, a)
                t = time.perf_counter()
                cli_infer.run(pipe, todo, root, a, cli_infer.resolve_settings(a, pipe.config))
                walls[name] = round(time.perf_counter() - t, 2)
                outs[name] = [o for _, o in todo]

            def psnr(x, y, only=None):
                se = [(read8(a) - read8(b)) ** 2 for a, b in zip(outs[x], outs[y])]
                keep = [i for i, e in enumerate(se) if only is None or i in only]
                mse = sum(se[i].sum() for i in keep) / sum(se[i].size for i in keep)
                value = round(10 * np.log10(255.0 ** 2 / mse), 3) if mse else float("inf")
                return value, {i for i, e in enumerate(se) if e.any()}

            result["psnr_images"] = len(files)
            result["psnr_buckets_vs_reference"], changed = psnr("buckets", "reference")
            result["images_changed_by_buckets"] = len(changed)
            # on the images the buckets changed (the others are identical, bit for bit)
            result["psnr_buckets_vs_reference_changed"], _ = psnr("buckets", "reference", changed)
            result["psnr_seed_vs_seed"], _ = psnr("seed2", "reference")
            result["psnr_seed_vs_seed_changed"], _ = psnr("seed2", "reference", changed)
            result["psnr_run_wall_s"] = walls
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
