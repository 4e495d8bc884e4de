"""Train-step throughput (samples/s) for full configs on whatever device is present, and the
tiny-config loss drop on real images. JSON lines; compile time reported apart.

    python bench/bench_train.py --configs realsr_v1,realsr_v3 --batch 64 --steps 10
    python bench/bench_train.py --loss_drop --config tiny --steps 300
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time

import pathlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402


def bench_config(name: str, batch: int | None, amp: bool | None):
    """The named config with the global train batch and bf16 switch of the command line."""
    from resshift_jax.config import load_config
    cfg = load_config(name)
    if batch:
        cfg.train.batch = (batch, cfg.train.batch[1])
    if amp is not None:
        cfg.train.use_amp = amp
    return cfg


def throughput(name: str, batch: int | None, steps: int, accum: int | None, amp: bool | None) -> dict:
    from resshift_jax import sharding as shd
    from resshift_jax.train.networks import build_models, use_lpips
    from resshift_jax.train.trainer import Trainer
    cfg = bench_config(name, batch, amp)
    mesh = shd.make_mesh((-1, 1))
    nets = build_models(cfg, load_weights=False)  # random weights: speed only
    tr = Trainer(cfg, mesh, nets, accum_steps=accum)
    gb, gt, sf = int(cfg.train.batch[0]), int(cfg.data.train.gt_size), int(cfg.diffusion.sf)
    rng = np.random.default_rng(0)
    batch_np = {"hr": rng.uniform(-1, 1, (gb, gt, gt, 3)).astype(np.float32),
                "lq": rng.uniform(-1, 1, (gb, gt // sf, gt // sf, 3)).astype(np.float32)}
    b = shd.global_batch_from_local(mesh, batch_np, gb)
    state = tr.init_state()
    t0 = time.perf_counter()
    compiled = tr.lower(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), b)).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, tr.frozen, b)  # warm-up (first-call allocations)
    jax.block_until_ready(m["loss"])
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = compiled(state, tr.frozen, b)
    jax.block_until_ready(m["loss"])
    dt = (time.perf_counter() - t0) / steps
    flops = model_flops_per_sample(cfg, mesh, nets, gb // tr.accum_steps)
    return {"bench": "train_step", "config": name, "device": jax.devices()[0].device_kind,
            "n_devices": jax.device_count(), "global_batch": gb, "accum_steps": tr.accum_steps,
            "micro_batch": gb // tr.accum_steps,
            "dtype": "bf16" if cfg.train.use_amp else "fp32", "lpips": use_lpips(cfg),
            "compile_s": round(compile_s, 2), "step_s": round(dt, 4), "samples_per_s": round(gb / dt, 3),
            "gflop_per_sample": round(flops / 1e9, 1), "model_tflop_per_s": round(flops * gb / dt / 1e12, 1),
            "mfu": _mfu(flops * gb / dt, cfg.train.use_amp), "peak_gib": _peak_gib(), "loss": float(m["loss"])}


# Dense bf16 peak (FLOP/s) of the chips we report MFU for (H100 SXM and H200: 989 TFLOP/s).
BF16_PEAK = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12}


def _mfu(flop_per_s: float, bf16: bool) -> float | None:
    peak = BF16_PEAK.get(jax.devices()[0].device_kind)
    return round(flop_per_s / peak, 3) if peak and bf16 else None


def _flops_of(lowered) -> float:
    ca = lowered.cost_analysis()
    return float((ca[0] if isinstance(ca, (list, tuple)) else ca)["flops"])


def model_flops_per_sample(cfg, mesh, nets, micro: int) -> float:
    """FLOPs of one training sample, from XLA's cost analysis of the *lowered* (not compiled)
    step with one micro-batch: compiled GPU programs hide convolutions in cuDNN custom calls and
    count a scan body once, so their counts are not the model's."""
    from resshift_jax import sharding as shd
    from resshift_jax.train.trainer import Trainer
    c = copy.deepcopy(cfg)
    c.train.batch = (micro, c.train.batch[1])
    tr = Trainer(c, mesh, nets, accum_steps=1)
    gt, sf = int(c.data.train.gt_size), int(c.diffusion.sf)
    bs = shd.batch_sharding(mesh, 1)
    b = {"hr": jax.ShapeDtypeStruct((micro, gt, gt, 3), np.float32, sharding=bs),
         "lq": jax.ShapeDtypeStruct((micro, gt // sf, gt // sf, 3), np.float32, sharding=bs)}
    return _flops_of(tr.lower(b)) / micro


def _peak_gib() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    return round(stats["peak_bytes_in_use"] / 2 ** 30, 2) if "peak_bytes_in_use" in stats else None


def encode_cost(name: str, batch: int | None, steps: int, amp: bool | None) -> dict:
    """The frozen part of a step alone: the VQ encoder on the HR batch and on the bicubic-upsampled
    LR batch (what every train step spends before the UNet)."""
    from flax import nnx
    from resshift_jax.pipeline import condition_latent
    from resshift_jax.train.networks import build_models, encoder_dtype
    cfg = bench_config(name, batch, amp)
    nets = build_models(cfg, load_weights=False)
    sf, s = int(cfg.diffusion.sf), float(cfg.diffusion.scale_factor)
    enc_dtype = np.dtype(encoder_dtype(cfg)).name

    @jax.jit
    def enc(frozen_vq, hr, lq):
        vq = nnx.merge(nets.vq_encoder_def, frozen_vq)  # the step's encoder (train.encoder_dtype)
        return condition_latent(vq, lq, sf=sf, scale_factor=s), vq.encode(hr)

    gb, gt = int(cfg.train.batch[0]), int(cfg.data.train.gt_size)
    rng = np.random.default_rng(0)
    hr = jax.device_put(rng.uniform(-1, 1, (gb, gt, gt, 3)).astype(np.float32))
    lq = jax.device_put(rng.uniform(-1, 1, (gb, gt // sf, gt // sf, 3)).astype(np.float32))
    frozen = jax.device_put(jax.tree.map(np.asarray, nets.frozen["vq"]))
    t0 = time.perf_counter()
    compiled = enc.lower(frozen, hr, lq).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(frozen, hr, lq))
    t0 = time.perf_counter()
    for _ in range(steps):
        out = compiled(frozen, hr, lq)
    jax.block_until_ready(out)
    dt = (time.perf_counter() - t0) / steps
    flops = _flops_of(enc.lower(frozen, hr, lq)) / gb
    return {"bench": "encode_part", "config": name, "device": jax.devices()[0].device_kind,
            "batch": gb, "dtype": enc_dtype, "compile_s": round(compile_s, 2),
            "step_s": round(dt, 4), "gflop_per_sample": round(flops / 1e9, 1),
            "model_tflop_per_s": round(flops * gb / dt / 1e12, 1), "mfu": _mfu(flops * gb / dt, enc_dtype == "bfloat16")}


def loss_drop(name: str, steps: int, window: int) -> dict:
    from resshift_jax.config import load_config
    from resshift_jax.train.loop import train
    cfg = load_config(name)  # a name or a config file path (e.g. tests/_train_cfg.py)
    if name == "tiny":
        cfg.data.train.gt_size = 128  # the tiny UNet needs 32x32 latents (lq_size 32)
    cfg.train.iterations = steps
    cfg.train.log_freq = (1, 10 ** 9, 1)
    cfg.train.save_freq = 10 ** 9
    cfg.train.val_freq = 0
    with tempfile.TemporaryDirectory() as wd:
        t0 = time.perf_counter()
        train(cfg, wd, progress=False, validate=False)
        wall = time.perf_counter() - t0
        recs = [json.loads(x) for x in open(f"{wd}/metrics.jsonl") if '"loss"' in x]
    losses = np.array([r["loss"] for r in recs])
    first, last = losses[:window].mean(), losses[-window:].mean()
    return {"bench": "loss_drop", "config": name, "steps": steps, "window": window,
            "first_mean": float(first), "last_mean": float(last), "drop": float(1 - last / first),
            "wall_s": round(wall, 1), "losses_every_25": [round(float(x), 5) for x in losses[::25]]}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--configs", default="realsr_v1,realsr_v3")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--accum", type=int, default=None)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--amp", choices=("on", "off", "config"), default="config")
    p.add_argument("--loss_drop", action="store_true")
    p.add_argument("--encode_part", action="store_true", help="time the frozen VQ encodes of a step alone")
    p.add_argument("--config", default="tiny")
    p.add_argument("--window", type=int, default=20)
    a = p.parse_args(argv)
    if a.loss_drop:
        print(json.dumps(loss_drop(a.config, a.steps, a.window)), flush=True)
        return
    amp = None if a.amp == "config" else a.amp == "on"
    if a.encode_part:
        for name in a.configs.split(","):
            print(json.dumps(encode_cost(name, a.batch, a.steps, amp)), flush=True)
        return
    for name in a.configs.split(","):
        print(json.dumps(throughput(name, a.batch, a.steps, a.accum, amp)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
