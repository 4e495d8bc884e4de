#!/usr/bin/env python
"""Folder benchmark: `infer.py`'s own code path (`cli_infer.run`: decode ahead, tiles batched,
asynchronous dispatch, write behind) over N generated images, end to end, against the time of
the sampler program alone. One JSON line per I/O mode.

    python bench/bench_folder.py --model compact --n 32 --lr 128 --bs 1            # this CPU
    python bench/bench_folder.py --model v3 --n 1024 --lr 64 --bs 64 --dtype bf16  # a GPU

Models: `compact` (the bundled compact_bicsr weights), `v1`/`v3`/`tiny` (random weights of that
config: the time does not depend on the values). Inputs: N synthetic 8-bit RGB PNGs of lr x lr
(smooth gradients, edges and noise), one tile each. Their outputs are costlier to PNG-encode
than a photo's (116 vs 63 ms for 512x512 at zlib level 6 here), so the write side is not flattered.

Fields: compile_s (first call of the program, apart), program_s (median of --iters calls of the
compiled program on one batch, blocked until done), batches, program_sum_s (batches x
program_s), wall_s (the whole `cli_infer.run`: decode, compute, blend, write; the median of
--reps runs, overhead_each lists every run's overhead), images_per_s,
device_busy (program_sum_s / wall_s), overhead (wall_s / program_sum_s - 1), the host's decode
and write CPU milliseconds per image measured apart (one thread, on the model's real outputs),
program_cores (CPU time / wall time of the program alone), run_cpu_s (the process's CPU time
during the run), floor_s (on a CPU backend, where program and host share the cores: the larger
of program_sum_s and run_cpu_s / cores, the least wall time any overlap could reach; elsewhere
program_sum_s) and overhead_over_floor (wall_s / floor_s - 1).
Modes (--modes): `stream` (the default --io_threads), `serial` (--io_threads 0: read, run and
write in turn, the previous behaviour).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = {"v1": "realsr_v1", "v3": "realsr_v3", "tiny": "tiny"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="compact", choices=["compact", *CONFIGS])
    p.add_argument("--n", type=int, default=32, help="number of images")
    p.add_argument("--lr", type=int, default=128, help="LR side of the generated images")
    p.add_argument("--bs", type=int, default=1)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--iters", type=int, default=5, help="program-only timing calls (median)")
    p.add_argument("--modes", default="stream,serial")
    p.add_argument("--png_level", type=int, default=6, help="infer.py --png_level (6: its default)")
    p.add_argument("--reps", type=int, default=3, help="runs per mode; the median run is reported")
    p.add_argument("--io_threads", type=int, default=None, help="for the stream mode (default: infer.py's)")
    p.add_argument("--workdir", default=None, help="where images are generated (default: a temp folder)")
    return p.parse_args(argv)


def synthetic_image(rng, size: int):
    """An 8-bit RGB image with smooth areas, edges and texture."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * xx + rng.uniform(0, 6)), np.cos(5 * yy + rng.uniform(0, 6)),
                     np.sin(4 * (xx + yy) + rng.uniform(0, 6))], -1) * 0.3 + 0.5
    for _ in range(6):  # rectangles: edges
        y0, x0 = rng.integers(0, size, 2)
        base[y0:y0 + size // 4, x0:x0 + size // 5] = rng.uniform(0, 1, 3)
    base += rng.normal(0, 0.04, base.shape)  # texture / sensor noise
    return (np.clip(base, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_inputs(folder: Path, n: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(synthetic_image(rng, size)).save(folder / f"img{i:05d}.png")


def build_pipeline(model: str, dtype: str):
    import jax.numpy as jnp

    from resshift_jax import download
    from resshift_jax.config import load_config
    from resshift_jax.pipeline import SRPipeline

    jdt = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    if model == "compact":
        from resshift_jax.weights import load_first_stage, load_unet

        cfg = load_config(download.compact_config("bicsr"))
        unet = load_unet(download.bundled_file("bicsr"), cfg, dtype=jdt)
        return SRPipeline(unet, load_first_stage(cfg, None, dtype=jdt), cfg)  # parameter-free
    from bench.bench_infer import build_models

    cfg = load_config(CONFIGS[model])
    return SRPipeline(*build_models(cfg, jdt), cfg)


def time_program(pipe, bs: int, lr: int, iters: int) -> tuple[float, float, float]:
    """(compile_s, program_s, program_cores): the first call, the median of `iters` blocked calls,
    and the CPU time of those calls over their wall time (how many cores the program keeps busy:
    on a CPU backend what is left over is all the host threads get for free)."""
    import jax
    import numpy as np

    lq = np.random.default_rng(1).uniform(-1, 1, (bs, lr, lr, 3)).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), bs)
    t = time.perf_counter()
    jax.block_until_ready(pipe(lq, key=keys))
    first = time.perf_counter() - t
    runs = []
    cpu = time.process_time()
    for _ in range(iters):
        t = time.perf_counter()
        jax.block_until_ready(pipe(lq, key=keys))
        runs.append(time.perf_counter() - t)
    cores = (time.process_time() - cpu) / sum(runs)
    steady = statistics.median(runs)
    return first - steady, steady, cores


def host_costs(pipe, bs: int, in_dir: Path, out_dir: Path, png_level: int, k: int = 4) -> tuple[float, float]:
    """CPU seconds per image (this thread's) to decode an input and to write the model's output
    for it. The output is the real one (PNG coding costs what the content costs: a blocky or
    smooth stand-in compresses several times faster)."""
    import jax
    import numpy as np

    from resshift_jax import cli_infer, imageio

    files = sorted(in_dir.glob("*.png"))[:k]
    t = time.thread_time()
    decoded = [imageio.read_image(f) for f in files]
    dec = (time.thread_time() - t) / len(files)
    batch = np.stack([rgb * 2 - 1 for rgb, _ in decoded] * bs)[:bs]  # the timed program's shape
    outs = np.asarray(pipe(batch.astype(np.float32), key=jax.random.split(jax.random.key(0), bs)), np.float32)
    written = list(zip(outs, decoded, files))
    t = time.thread_time()
    for sr, (_, meta), f in written:
        cli_infer.write_result(sr, meta, out_dir / f.name, "png", set(), png_level=png_level)
    return dec, (time.thread_time() - t) / len(written)


def main(argv=None):
    args = parse_args(argv)
    import jax

    from resshift_jax import cli_infer, compile_cache

    compile_cache.disable()  # compile time is measured, not loaded
    pipe = build_pipeline(args.model, args.dtype)
    compile_s, program_s, program_cores = time_program(pipe, args.bs, args.lr, args.iters)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        in_dir = Path(tmp) / "in"
        make_inputs(in_dir, args.n, args.lr)
        decode_s, write_s = host_costs(pipe, args.bs, in_dir, Path(tmp) / "host", args.png_level)
        for mode in args.modes.split(","):
            threads = 0 if mode == "serial" else args.io_threads
            argv = ["-i", str(in_dir), "-o", str(Path(tmp) / f"out_{mode}_0"), "--bs", str(args.bs), "--no_progress",
                    "--png_level", str(args.png_level),
                    "--chop_size", str(max(args.lr, int(pipe.config.inference.chop_size)))]
            if threads is not None:
                argv += ["--io_threads", str(threads)]
            a = cli_infer.build_parser().parse_args(argv)
            settings = cli_infer.resolve_settings(a, pipe.config)
            todo, _ = cli_infer.plan_outputs(sorted(in_dir.glob("*.png")), in_dir, a)
            runs = []  # (wall_s, cpu_s, stats) of each repetition, each into a fresh folder
            for r in range(args.reps):
                a.out_path = str(Path(tmp) / f"out_{mode}_{r}")
                stats = {}
                cpu = time.process_time()
                rc = cli_infer.run(pipe, todo, in_dir, a, settings, stats=stats)
                runs.append((stats["wall_s"], time.process_time() - cpu, stats))
            walls = [w for w, _, _ in runs]
            _, cpu, stats = sorted(runs, key=lambda x: x[0])[len(runs) // 2]  # the median run
            program_sum = stats["batches"] * program_s
            on_cpu = jax.devices()[0].platform == "cpu"
            # On a CPU backend the program and the host share the cores: the run cannot take less
            # than its CPU time spread over all of them, however well it overlaps.
            floor = max(program_sum, cpu / (os.cpu_count() or 1)) if on_cpu else program_sum
            print(json.dumps(dict(
                bench="folder", model=args.model, mode=mode, io_threads=cli_infer.io_threads(a.io_threads),
                n=args.n, lr=args.lr, hr=args.lr * pipe.sf, bs=args.bs, dtype=args.dtype,
                x0_after=int(pipe.config.inference.x0_after), rc=rc, images=stats["images"],
                batches=stats["batches"], compile_s=round(compile_s, 3), program_s=round(program_s, 4),
                program_sum_s=round(program_sum, 3), wall_s=round(stats["wall_s"], 3),
                images_per_s=round(stats["images"] / stats["wall_s"], 3),
                device_busy=round(program_sum / stats["wall_s"], 4),
                overhead=round(stats["wall_s"] / program_sum - 1, 4), png_level=args.png_level,
                reps=args.reps, overhead_each=[round(w / program_sum - 1, 4) for w in walls],
                decode_ms_per_image=round(decode_s * 1e3, 2), write_ms_per_image=round(write_s * 1e3, 2),
                program_cores=round(program_cores, 2), run_cpu_s=round(cpu, 2), floor_s=round(floor, 3),
                overhead_over_floor=round(stats["wall_s"] / floor - 1, 4),
                device=jax.devices()[0].device_kind, n_devices=jax.device_count(), cpus=os.cpu_count(),
                load_avg_1m=round(os.getloadavg()[0], 2), jax=jax.__version__)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
