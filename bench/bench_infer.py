#!/usr/bin/env python
"""Inference benchmark: the whole SRPipeline (pad -> bicubic -> encode -> T steps -> decode)
with random full-size weights (no checkpoint needed; the time does not depend on the values).
`compact` is compact_bicsr (space-to-depth first stage, no VQ). One JSON line per configuration.

    python bench/bench_infer.py --versions v3 --batches 1 --sizes 64 --dtypes fp32   # CPU
    python bench/bench_infer.py --versions v1,v3 --batches 1,16,64 --sizes 64,128 --dtypes fp32,bf16
    python bench/bench_infer.py --versions compact --batches 1 --sizes 128 --dtypes fp32  # 128 -> 512

Fields: first_call_s (trace + compile + one run), compile_s (first_call_s − steady run),
ms_per_batch (median of --iters steady runs), ms_per_image, images_per_s, cpu_s_per_batch (this
process's CPU seconds per steady run: on a shared machine it moves less than the wall time),
load_avg_1m, peak_bytes
(device.memory_stats()['peak_bytes_in_use'] where the backend reports it; with --isolate every
configuration runs in its own process so the peak is its own, otherwise the peak so far).
Imports only jax/flax/numpy/ml_collections-free modules of the package at run time except the
config (which needs ml_collections).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STEPS = {"v1": 15, "v3": 4, "compact": 4}
CONFIG = {"v1": "realsr_v1", "v3": "realsr_v3", "compact": "compact_bicsr"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--versions", default="v1,v3")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--sizes", default="64,128", help="LR sizes (square); HR = 4x")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--iters", type=int, default=5, help="steady-state runs (median reported)")
    p.add_argument("--config", default=None, help="override the model config (e.g. tiny, for a smoke run)")
    p.add_argument("--x0_after", type=int, default=None, help="inference.x0_after (default: the config's)")
    p.add_argument("--parts", action="store_true",
                   help="also time the program's parts apart: encode (bicubic + VQ), one UNet call, decode")
    p.add_argument("--trace", default=None,
                   help="write a jax.profiler trace of --iters steady runs of each case to this folder "
                        "(TensorBoard's profile plugin / xprof: time per fused op, e.g. attention, GroupNorm)")
    p.add_argument("--isolate", action="store_true", help="one process per configuration (own peak memory)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: a JSON case
    return p.parse_args(argv)


def random_fill(module, seed=0):
    """Give an abstract module (nnx.eval_shape) random float32 parameters drawn on the host:
    kernels N(0, 1/fan_in), norm scales 1, biases 0, the rest N(0, 0.02²). Eager or jitted
    random init of the full UNet takes minutes on a CPU; this takes about a second."""
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    rng = np.random.default_rng(seed)
    flat = nnx.to_flat_state(nnx.state(module, nnx.Param))
    for path, var in flat:
        leaf, shape = str(path[-1]), tuple(var.get_value().shape)
        if leaf == "kernel":
            value = rng.standard_normal(shape, np.float32) / np.sqrt(max(1, int(np.prod(shape[:-1]))))
        elif leaf == "scale":
            value = np.ones(shape, np.float32)
        elif leaf == "bias":
            value = np.zeros(shape, np.float32)
        else:
            value = 0.02 * rng.standard_normal(shape, np.float32)
        var.set_value(jnp.asarray(value))
    nnx.update(module, nnx.from_flat_state(flat))
    return module


def build_models(cfg, dtype, seed=0):
    from flax import nnx

    from resshift_jax.models.first_stage import build_first_stage
    from resshift_jax.models.unet import UNetModelSwin

    unet = nnx.eval_shape(lambda: UNetModelSwin(cfg.model, dtype=dtype, rngs=nnx.Rngs(seed)))
    vq = nnx.eval_shape(lambda: build_first_stage(cfg, dtype=dtype, rngs=nnx.Rngs(seed)))
    return random_fill(unet, seed), random_fill(vq, seed + 1)


def peak_bytes():
    import jax

    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends may not implement it
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def bench_case(case: dict, models_cache: dict, iters: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from resshift_jax.config import load_config
    from resshift_jax.pipeline import SRPipeline

    version, batch, size, dt = case["version"], case["batch"], case["size"], case["dtype"]
    cfg = load_config(case.get("config") or CONFIG[version])
    if case.get("config"):  # a small config with the version's schedule
        cfg.diffusion = load_config(CONFIG[version]).diffusion
    if case.get("x0_after") is not None:
        cfg.inference.x0_after = case["x0_after"]
    dtype = jnp.bfloat16 if dt == "bf16" else jnp.float32
    mkey = (case.get("config"), dt)
    t0 = time.perf_counter()
    if mkey not in models_cache:
        models_cache[mkey] = build_models(cfg, dtype)
    init_s = time.perf_counter() - t0
    pipe = SRPipeline(*models_cache[mkey], cfg)
    lq = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    key = jax.random.key(0)

    cpu_runs = []

    def once():
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(pipe(lq, key=key))
        cpu_runs.append(time.process_time() - c)
        return time.perf_counter() - t

    first = once()
    if case.get("trace"):
        with jax.profiler.trace(case["trace"]):
            for _ in range(iters):
                once()
    runs = [once() for _ in range(iters)]
    steady = statistics.median(runs)
    cpu_steady = statistics.median(cpu_runs[1:])
    parts = time_parts(pipe, *models_cache[mkey], lq, iters) if case.get("parts") else {}
    return dict(**parts, **dict(bench="infer", version=version, steps=STEPS[version], x0_after=int(cfg.inference.x0_after),
                batch=batch, lr=size, hr=size * pipe.sf,
                dtype=dt, config=cfg.get("name") or case.get("config"), device=jax.devices()[0].device_kind,
                platform=jax.devices()[0].platform, n_devices=jax.device_count(),
                init_s=round(init_s, 3), first_call_s=round(first, 3), compile_s=round(first - steady, 3),
                ms_per_batch=round(steady * 1e3, 2), ms_per_batch_min=round(min(runs) * 1e3, 2),
                ms_per_image=round(steady * 1e3 / batch, 3), images_per_s=round(batch / steady, 2),
                cpu_s_per_batch=round(cpu_steady, 2), load_avg_1m=round(os.getloadavg()[0], 2),
                iters=iters, peak_bytes=peak_bytes(), jax=jax.__version__))


def time_parts(pipe, unet, vq, lq, iters) -> dict:
    """Milliseconds of the sampler's parts, each its own jitted program on the same batch:
    `encode` (reflect pad, bicubic x sf, VQ encode), one `unet_call`, `decode` (VQ decode with
    quantisation); the whole program is about encode + steps x unet_call + decode."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from resshift_jax.pipeline import condition_latent, reflect_pad

    (ug, us), (vg, vs) = nnx.split(unet), nnx.split(vq)
    sf, scale, offset = pipe.sf, pipe.scale_factor, pipe.padding_offset
    enc = jax.jit(lambda s, x: condition_latent(nnx.merge(vg, s), reflect_pad(x, offset), sf=sf, scale_factor=scale))
    call = jax.jit(lambda s, z, t, y: nnx.merge(ug, s)(z, t, reflect_pad(y, offset)))
    dec = jax.jit(lambda s, z: nnx.merge(vg, s).decode(z / scale, quantize=True))
    x = jnp.asarray(lq)
    z = enc(vs, x)
    t = jnp.full((x.shape[0],), pipe.schedule.num_timesteps - 1, jnp.int32)

    def ms(fn, *a):
        jax.block_until_ready(fn(*a))  # compile
        runs = []
        for _ in range(max(3, iters)):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*a))
            runs.append(time.perf_counter() - t0)
        return round(statistics.median(runs) * 1e3, 3)

    return dict(encode_ms=ms(enc, vs, x), unet_call_ms=ms(call, us, z, t, x), decode_ms=ms(dec, vs, z))


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        case = json.loads(args.one)
        print(json.dumps(bench_case(case, {}, args.iters)), flush=True)
        return 0
    cases = [dict(version=v, batch=int(b), size=int(s), dtype=d, config=args.config, x0_after=args.x0_after,
                  parts=args.parts, trace=args.trace)
             for d, v, s, b in itertools.product(args.dtypes.split(","), args.versions.split(","),
                                                 args.sizes.split(","), args.batches.split(","))]
    cache, status = {}, 0
    for case in cases:
        if args.isolate:
            cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(case), "--iters", str(args.iters)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
            if r.returncode or not lines:
                status = 1
                print(json.dumps(dict(bench="infer", **case, error=(r.stderr or r.stdout)[-2000:])), flush=True)
            else:
                print(lines[-1], flush=True)
            continue
        try:
            print(json.dumps(bench_case(case, cache, args.iters)), flush=True)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: report and go on
            status = 1
            print(json.dumps(dict(bench="infer", **case, error=f"{type(e).__name__}: {str(e)[:2000]}")), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
