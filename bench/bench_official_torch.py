#!/usr/bin/env python
"""The official PyTorch ResShift pipeline timed the way bench_infer.py times ours, so the two
can be compared on the same machine in the same session (random weights, float32).

Needs PyTorch and a clone of https://github.com/zsyOAOA/ResShift (with its requirements, e.g.
timm, omegaconf, einops); neither is a dependency of this project.

    python bench/bench_official_torch.py --repo ~/src/ResShift --threads 2 --size 64 --iters 3
    python bench/bench_infer.py --versions v3 --batches 1 --sizes 64 --dtypes fp32 --iters 3

One JSON line: per-image seconds of the full p_sample_loop (bicubic x4 -> encode -> steps ->
decode), its CPU seconds, and the parts (encode, one UNet call, decode) timed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

CONFIGS = {"v1": "configs/realsr_swinunet_realesrgan256.yaml",
           "v3": "configs/realsr_swinunet_realesrgan256_journal.yaml"}


def timed(fn, iters):
    walls, cpus = [], []
    for _ in range(iters):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return walls, cpus


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", required=True, help="a clone of zsyOAOA/ResShift")
    p.add_argument("--version", default="v3", choices=sorted(CONFIGS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=64, help="LR size (square)")
    p.add_argument("--iters", type=int, default=3)
    a = p.parse_args(argv)

    sys.path.insert(0, os.path.abspath(a.repo))
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf
    from utils import util_common  # the official repo's

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = OmegaConf.load(os.path.join(a.repo, CONFIGS[a.version]))
    model = util_common.instantiate_from_config(cfg.model).eval()
    vq = util_common.instantiate_from_config(cfg.autoencoder).eval()
    diffusion = util_common.instantiate_from_config(cfg.diffusion)
    y0 = torch.rand(1, 3, a.size, a.size) * 2 - 1
    with torch.no_grad():
        def pipeline():
            return diffusion.p_sample_loop(y=y0, model=model, first_stage_model=vq, noise=None,
                                           clip_denoised=False, denoised_fn=None,
                                           model_kwargs={"lq": y0}, progress=False)
        t0 = time.perf_counter()
        pipeline()  # warm-up
        first = time.perf_counter() - t0
        walls, cpus = timed(pipeline, a.iters)
        up = F.interpolate(y0, scale_factor=int(cfg.diffusion.params.sf), mode="bicubic")
        z = torch.randn(1, 3, a.size, a.size)
        t = torch.tensor([1])
        parts = {name: round(min(timed(fn, 2)[0]), 3) for name, fn in
                 (("encode_s", lambda: vq.encode(up)), ("unet_call_s", lambda: model(z, t, lq=y0)),
                  ("decode_s", lambda: vq.decode(z)))}
    print(json.dumps(dict(bench="official_torch", version=a.version, steps=int(cfg.diffusion.params.steps),
                          lr=a.size, threads=torch.get_num_threads(), torch=torch.__version__,
                          first_call_s=round(first, 3), s_per_image=round(statistics.median(walls), 3),
                          s_per_image_min=round(min(walls), 3), cpu_s_per_image=round(statistics.median(cpus), 2),
                          load_avg_1m=round(os.getloadavg()[0], 2), **parts)), flush=True)


if __name__ == "__main__":
    main()
