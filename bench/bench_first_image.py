#!/usr/bin/env python
"""Time to the first output image of `infer.py`, cold (empty compilation cache) and warm (the
cache a previous run filled), each a fresh process, as a user sees it. One JSON line per run.

    python bench/bench_first_image.py --models compact,v3

`compact`: `infer.py -v compact --task bicsr` on 128x128 inputs (its bundled weights); `v3`:
`infer.py --config realsr_v3` with random weights of the full size written to safetensors (the
time does not depend on the values) on 64x64 inputs. Each run super-resolves --n generated
images into a new folder. Fields: first_image_s (process start to the first output file on
disk: imports, weights, compile or cache load, one batch, the write), ready_s (to infer.py's
plan line: imports and weights done, nothing compiled yet), per_image_s (between the first and
the second output: one image's compute and write with the program in hand), start_compute_s
(first_image_s - per_image_s: when the first image's computation began, i.e. the wait a user
has before the device works), total_s, programs_compiled and programs_loaded (the
`compile cache:` line infer.py prints).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="compact,v3")
    p.add_argument("--n", type=int, default=2, help="images per run")
    p.add_argument("--runs", default="cold,warm")
    return p.parse_args(argv)


def random_weights(folder: Path, config: str) -> tuple[Path, Path]:
    """Full-size random UNet and VQ weights of `config`, as safetensors files infer.py loads."""
    import jax.numpy as jnp

    from bench.bench_infer import build_models
    from resshift_jax.config import load_config
    from resshift_jax.weights import save_checkpoint

    unet, vq = build_models(load_config(config), jnp.float32)
    paths = folder / "unet.safetensors", folder / "vq.safetensors"
    save_checkpoint(unet, paths[0])
    save_checkpoint(vq, paths[1])
    return paths


def timed_run(cmd: list[str], out_dir: Path, env: dict) -> dict:
    """Run `cmd` (infer.py), noting when it prints its plan line (imports and weights done) and
    when each output file appears."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines, ready = [], []

    def read():  # stdout, timestamped (a thread: the loop below polls the folder meanwhile)
        for line in proc.stdout:
            lines.append(line)
            if not ready and re.match(r"^\d+ image\(s\); config ", line):
                ready.append(time.perf_counter() - t0)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: dict[str, float] = {}
    while proc.poll() is None:
        for f in out_dir.glob("*.png"):
            seen.setdefault(f.name, time.perf_counter() - t0)
        time.sleep(0.01)
    total = time.perf_counter() - t0
    reader.join()
    for f in out_dir.glob("*.png"):
        seen.setdefault(f.name, total)
    text = "".join(lines)
    times = sorted(seen.values())
    m = re.search(r"^compile cache: .+ \((\d+) programs loaded, (\d+) compiled\)$", text, re.M)
    rec = dict(rc=proc.returncode, ready_s=round(ready[0], 2) if ready else None,
               first_image_s=round(times[0], 2) if times else None, total_s=round(total, 2))
    if len(times) >= 2:  # the same shape again: one image's compute and write, no program to load
        per_image = times[1] - times[0]
        rec.update(per_image_s=round(per_image, 2), start_compute_s=round(times[0] - per_image, 2))
    rec.update(programs_loaded=int(m[1]) if m else None, programs_compiled=int(m[2]) if m else None)
    if proc.returncode:
        rec["output"] = text[-2000:]
    return rec


def main(argv=None):
    args = parse_args(argv)
    from bench.bench_folder import make_inputs

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model in args.models.split(","):
            lr = 128 if model == "compact" else 64
            in_dir = tmp / f"in_{model}"
            make_inputs(in_dir, args.n, lr)
            if model == "compact":
                flags = ["-v", "compact", "--task", "bicsr"]
            else:
                unet, vq = random_weights(tmp, f"realsr_{model}")
                flags = ["--config", f"realsr_{model}", "--unet_ckpt", str(unet), "--vae_ckpt", str(vq)]
            env = dict(os.environ, RESSHIFT_JAX_CACHE_DIR=str(tmp / f"cache_{model}"))
            for run in args.runs.split(","):
                out = tmp / f"out_{model}_{run}"
                cmd = [sys.executable, str(ROOT / "infer.py"), "-i", str(in_dir), "-o", str(out), "--no_progress",
                       "--bs", "1", *flags]
                rec = timed_run(cmd, out, env)
                print(json.dumps(dict(bench="first_image", model=model, run=run, n=args.n, lr=lr,
                                      cpus=os.cpu_count(), load_avg_1m=round(os.getloadavg()[0], 2), **rec)),
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
