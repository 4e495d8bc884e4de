#!/usr/bin/env python
"""The official PyTorch ResShift pipeline timed the way bench_infer.py times ours, so the two
can be compared on the same machine in the same session (random weights: the time does not
depend on the values).

Needs PyTorch and a clone of https://github.com/zsyOAOA/ResShift (with its requirements, e.g.
omegaconf, einops, timm); neither is a dependency of this project.

    python bench/bench_official_torch.py --repo ~/src/ResShift --threads 2 --size 64 --iters 3     # CPU
    python bench/bench_official_torch.py --repo RESSHIFT --device cuda --version v3 --batches 1,64 --dtype fp16
    python bench/bench_official_torch.py --repo RESSHIFT --device cuda --version v1 --batches 64 --compile

One JSON line per batch size: seconds per batch of the full p_sample_loop (bicubic x4 -> encode
-> steps -> decode; CUDA synchronised), ms per image, CPU seconds, peak CUDA memory, and the parts
(encode, one UNet call, decode) timed apart. `--dtype fp16` runs under torch.autocast(float16)
as the official inference does with `use_amp`; `--compile` wraps the UNet and the autoencoder's
encode/decode in torch.compile (its compile time is in first_call_s, apart).
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", required=True, help="a clone of zsyOAOA/ResShift")
    p.add_argument("--version", default="v3", choices=sorted(CONFIGS))
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--size", type=int, default=64, help="LR size (square)")
    p.add_argument("--batches", default="1", help="comma list of batch sizes")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the networks")
    p.add_argument("--iters", type=int, default=3)
    a = p.parse_args(argv)

    if not os.path.isfile(os.path.join(a.repo, CONFIGS[a.version])):
        raise SystemExit(f"error: {a.repo} is not a clone of zsyOAOA/ResShift ({CONFIGS[a.version]} missing)")
    sys.path.insert(0, os.path.abspath(a.repo))
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf
    from utils import util_common  # the official repo's

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = OmegaConf.load(os.path.join(a.repo, CONFIGS[a.version]))
    model = util_common.instantiate_from_config(cfg.model).eval().to(dev)
    vq = util_common.instantiate_from_config(cfg.autoencoder).eval().to(dev)
    diffusion = util_common.instantiate_from_config(cfg.diffusion)
    if a.compile:
        model = torch.compile(model)
        vq.encode = torch.compile(vq.encode)
        vq.decode = torch.compile(vq.decode)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(fn, iters):
        walls, cpus = [], []
        for _ in range(iters):
            sync()
            t, c = time.perf_counter(), time.process_time()
            fn()
            sync()
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        return walls, cpus

    for batch in (int(b) for b in a.batches.split(",")):
        y0 = torch.rand(batch, 3, a.size, a.size, device=dev) * 2 - 1
        amp = torch.autocast(dev.type, dtype=torch.float16, enabled=a.dtype == "fp16")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad(), amp:
            def pipeline():
                return diffusion.p_sample_loop(y=y0, model=model, first_stage_model=vq, noise=None,
                                               clip_denoised=False, denoised_fn=None,
                                               model_kwargs={"lq": y0}, progress=False)
            first = sum(timed(pipeline, 1)[0])  # warm-up (and torch.compile)
            walls, cpus = timed(pipeline, a.iters)
            up = F.interpolate(y0, scale_factor=int(cfg.diffusion.params.sf), mode="bicubic")
            z = torch.randn(batch, 3, a.size, a.size, device=dev)
            t = torch.full((batch,), 1, device=dev)
            parts = {name: round(min(timed(fn, 2)[0]), 4) for name, fn in
                     (("encode_s", lambda: vq.encode(up)), ("unet_call_s", lambda: model(z, t, lq=y0)),
                      ("decode_s", lambda: vq.decode(z)))}
        steady = statistics.median(walls)
        print(json.dumps(dict(
            bench="official_torch", version=a.version, steps=int(cfg.diffusion.params.steps), lr=a.size,
            batch=batch, dtype=a.dtype, compile=a.compile, device=torch.cuda.get_device_name() if cuda else "cpu",
            threads=torch.get_num_threads(), torch=torch.__version__, first_call_s=round(first, 3),
            s_per_batch=round(steady, 4), ms_per_image=round(steady * 1e3 / batch, 3),
            s_per_image=round(steady / batch, 4), s_per_batch_min=round(min(walls), 4),
            cpu_s_per_batch=round(statistics.median(cpus), 2),
            peak_bytes=torch.cuda.max_memory_allocated() if cuda else None,
            load_avg_1m=round(os.getloadavg()[0], 2), **parts)), flush=True)


if __name__ == "__main__":
    main()
