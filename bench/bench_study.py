"""The tiny w_t study of issue 7: 2 schemes x 2 seeds x a few dozen steps, run twice into two
workdirs (sharing one compilation cache), then restarted; checks results.csv is byte-identical and
the restart skips every run. Prints JSON lines (wall and CPU seconds per study, cache hits/misses)
and the results table.

    .venv/bin/python bench/bench_study.py [--steps 24] [--schemes uniform,kl] [--out /tmp/bench_study]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(workdir, cache, args) -> dict:
    cmd = [sys.executable, "-m", "resshift_jax.study", "--config", "configs/study_wt.py", "--workdir", str(workdir),
           f"--config.train.iterations={args.steps}", f"--config.train.save_freq={args.save_freq}",
           f"--config.study.only={args.schemes}", "--config.study.seeds=(0,1)",
           f"--config.data.val.length={args.val}", f"--config.study.val_crop={args.val_crop}",
           f"--config.train.batch=(8,{args.val_batch})", f"--config.study.compile_cache_dir={cache}"]
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "--xla_force_host_platform_device_count=8"),
           "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        sys.exit(f"study failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    t = json.loads((workdir / "timings.json").read_text())
    return {"workdir": str(workdir), "wall_s": round(wall, 1),
            "cpu_s": round(c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime, 1),
            "compile_cache": t["compile_cache"],
            "runs": {k: {kk: round(vv, 1) if isinstance(vv, float) else vv for kk, vv in v.items()}
                     for k, v in t["runs"].items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--save_freq", type=int, default=1000)
    p.add_argument("--schemes", default="uniform,kl")
    p.add_argument("--val", type=int, default=8, help="validation pairs (first N of Val_SR)")
    p.add_argument("--val_crop", type=int, default=32, help="LQ crop size (0 = whole 64x64 images)")
    p.add_argument("--val_batch", type=int, default=8)
    p.add_argument("--out", default="/tmp/bench_study")
    args = p.parse_args()
    out = pathlib.Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cache = out / "jax_cache"
    a, b = out / "a", out / "b"
    first = run(a, cache, args)
    print(json.dumps({"study": "first (fresh compile cache)", **first}), flush=True)
    second = run(b, cache, args)
    print(json.dumps({"study": "second (cache from the first)", **second}), flush=True)
    before = (a / "results.csv").read_bytes()
    restart = run(a, cache, args)
    print(json.dumps({"study": "restart of the first", **restart}), flush=True)
    identical = (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()
    skipped = all(v.get("skipped") for v in restart["runs"].values())
    print(json.dumps({"results_csv_identical": identical, "restart_unchanged": before == (a / "results.csv").read_bytes(),
                      "restart_skipped_all": skipped, "steps": args.steps, "schemes": args.schemes}), flush=True)
    print((a / "results.md").read_text())
    if not (identical and skipped):
        sys.exit(1)


if __name__ == "__main__":
    main()
