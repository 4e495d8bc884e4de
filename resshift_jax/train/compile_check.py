"""Compile-only check: lower + compile the train step (and the inference program) for a config,
mesh and batch on a target topology, and print per-chip memory, so an OOM shows before renting
the hardware.

    python -m resshift_jax.train.compile_check --config realsr_v3 --topology v5e:4x4 --batch 96
    python -m resshift_jax.train.compile_check --config realsr_v1 --topology v5p:4x4x4 --mesh=-1,1
    python -m resshift_jax.train.compile_check --config tiny          # local devices

TPU topologies need `libtpu` (pip install libtpu, the version jax[tpu] pins); nothing is allocated:
networks are built with `nnx.eval_shape`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
from flax import nnx

from resshift_jax import sharding as shd
from resshift_jax.config import load_config
from resshift_jax.pipeline import SamplerSpec, super_resolve
from resshift_jax.train.networks import build_models, compute_dtype, tree_bytes
from resshift_jax.train.trainer import Trainer

GiB = 2 ** 30


def topology_devices(topology: str | None, platform: str = "tpu"):
    if not topology:
        return jax.devices()
    # compile-only use: several processes may load libtpu at once (no chips are claimed)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies
    try:
        return topologies.get_topology_desc(platform=platform, topology_name=topology).devices
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"cannot describe topology {topology!r} ({type(e).__name__}: {e}); TPU "
                           "topologies need `pip install libtpu` matching your jax") from e


def memory_report(compiled) -> dict:
    ma = compiled.memory_analysis()
    if ma is None:
        return {}
    get = lambda n: int(getattr(ma, n, 0) or 0)  # noqa: E731
    arg, out, tmp, alias, code = (get("argument_size_in_bytes"), get("output_size_in_bytes"),
                                  get("temp_size_in_bytes"), get("alias_size_in_bytes"),
                                  get("generated_code_size_in_bytes"))
    return {"argument_gib": arg / GiB, "output_gib": out / GiB, "temp_gib": tmp / GiB,
            "alias_gib": alias / GiB, "code_gib": code / GiB,
            "peak_per_chip_gib": (arg + out + tmp - alias + code) / GiB}


# Per-chip peak dense bf16 FLOP/s and HBM bandwidth (bytes/s), from the vendors' spec sheets, for
# the roofline estimate of the inference program (`roofline`); keyed by jax's device_kind.
CHIP_PEAKS = {"TPU v5 lite": (197e12, 819e9), "TPU v5": (459e12, 2765e9), "TPU v4": (275e12, 1228e9),
              "TPU v6 lite": (918e12, 1640e9)}


def cost_report(lowered, compiled, model_images: int = 1, compiled_images: int = 1) -> dict:
    """XLA's cost analysis of a program: the FLOPs the model's operations ask for (`lowered`: the
    unoptimised HLO of `model_images` images, lowered for the local backend, since a compile-only
    TPU topology has no backend to analyse with), the FLOPs and bytes of the compiled executable
    (one device's share: `compiled_images` images), each also per image, and the ratio of the
    per-image FLOPs (> 1: compute added by padding, masks or recomputation). XLA counts a loop
    body once whatever its trip count: give programs without loops (`inference_program(...,
    unroll=True)`) for totals."""
    def first(ca):
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        return ca or {}
    lo, co = first(lowered.cost_analysis()), first(compiled.cost_analysis())
    out = {"model_gflop": float(lo.get("flops", 0.0)) / 1e9, "compiled_gflop": float(co.get("flops", 0.0)) / 1e9,
           "compiled_gbytes_accessed": float(co.get("bytes accessed", 0.0)) / 1e9}
    out["model_gflop_per_image"] = out["model_gflop"] / model_images
    out["compiled_gflop_per_image"] = out["compiled_gflop"] / compiled_images
    if out["model_gflop"]:
        out["compiled_over_model"] = out["compiled_gflop_per_image"] / out["model_gflop_per_image"]
    return out


def roofline(cost: dict, device_kind: str, images_per_chip: int) -> dict:
    """Time per image on one chip if the program ran at the chip's peak FLOP/s or HBM bandwidth,
    whichever binds: max(FLOPs / peak, bytes / bandwidth) / images. An estimate, not a measurement
    (XLA's byte count ignores what stays in on-chip memory; real programs rarely reach either peak)."""
    if device_kind not in CHIP_PEAKS:
        return {}
    flops, bw = CHIP_PEAKS[device_kind]
    t_c = cost["compiled_gflop"] * 1e9 / flops
    t_m = cost["compiled_gbytes_accessed"] * 1e9 / bw
    return {"peak_tflops": flops / 1e12, "hbm_gbps": bw / 1e9, "compute_bound_ms": t_c * 1e3,
            "memory_bound_ms": t_m * 1e3, "bound": "compute" if t_c >= t_m else "memory",
            "roofline_ms_per_image": max(t_c, t_m) * 1e3 / images_per_chip}


def inference_program(cfg, nets, *, unroll: bool = False):
    """`pipeline.super_resolve` on the EMA-shaped UNet parameters and the frozen state:
    run(params, frozen, lq (B, h, w, 3), keys (B,)) -> (B, sf·h, sf·w, 3), the program SRPipeline
    compiles in key mode (padding, conditioning, sampler, decode, crop and clamp included).
    `unroll`: the sampler's loop unrolled, the same computation, for `cost_report` (XLA's cost
    analysis counts a loop body once, so the rolled program's count holds one step)."""
    spec = dataclasses.replace(SamplerSpec.from_config(cfg), unroll=unroll)

    def run(params, frozen, lq, keys):
        unet = nnx.merge(nets.unet_def, params, frozen["unet_rest"])
        vq = nnx.merge(nets.vq_def, frozen["vq"])
        return super_resolve(spec, unet, vq, lq, keys=keys)
    return run


def check(config, *, topology: str | None = None, batch: int | None = None, mesh_shape=None,
          infer_batch: int | None = None, lq_size: int | None = None, accum_steps: int | None = None,
          infer_only: bool = False, with_cost: bool = True) -> dict:
    cfg = load_config(config)
    cfg.unlock() if hasattr(cfg, "unlock") else None
    if batch:
        cfg.train.batch = (int(batch), cfg.train.batch[1])
    if mesh_shape:
        cfg.sharding.mesh_shape = tuple(mesh_shape)
    devices = topology_devices(topology)
    mesh = shd.make_mesh(tuple(cfg.sharding.mesh_shape), devices=devices)
    nets = build_models(cfg, abstract=True)
    trainer = Trainer(cfg, mesh, nets, accum_steps=accum_steps)
    gb = int(cfg.train.batch[0])
    gt = int(cfg.data.train.gt_size)
    sf = int(cfg.diffusion.sf)
    bsh = shd.batch_sharding(mesh)
    batch_abs = {"hr": jax.ShapeDtypeStruct((gb, gt, gt, 3), jnp.float32, sharding=bsh),
                 "lq": jax.ShapeDtypeStruct((gb, gt // sf, gt // sf, 3), jnp.float32, sharding=bsh)}
    report = {"config": cfg.name, "topology": topology or str(devices[0].platform),
              "devices": len(devices), "device_kind": getattr(devices[0], "device_kind", "?"),
              "mesh": dict(mesh.shape), "global_batch": gb, "accum_steps": trainer.accum_steps,
              "micro_batch_per_device": gb // trainer.accum_steps // shd.batch_size_divisor(mesh),
              "compute_dtype": jnp.dtype(compute_dtype(cfg)).name,
              "unet_params_m": tree_bytes(nets.unet_params) / 4 / 1e6}
    if not infer_only:
        t0 = time.perf_counter()
        lowered = trainer.lower(batch_abs)
        compiled = lowered.compile()
        report["train_compile_s"] = time.perf_counter() - t0
        report["train"] = memory_report(compiled)

    ib = int(infer_batch or max(cfg.train.batch[1], shd.batch_size_divisor(mesh)))
    ib = -(-ib // shd.batch_size_divisor(mesh)) * shd.batch_size_divisor(mesh)
    lq = int(lq_size or cfg.model.lq_size)
    rep = shd.replicated(mesh)
    keys_sh = shd.batch_sharding(mesh, 1)
    abs_params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, jnp.float32, sharding=s),
                              nets.unet_params, trainer.state_shardings.ema_params)
    served = {k: v for k, v in nets.frozen.items() if k != "teacher"}  # a distillation teacher only trains
    abs_frozen = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), served)
    keys_abs = jax.ShapeDtypeStruct((ib,), jax.random.key(0).dtype, sharding=keys_sh)

    def compile_infer(unroll: bool):
        fn = jax.jit(inference_program(cfg, nets, unroll=unroll),
                     in_shardings=(trainer.state_shardings.ema_params, rep, bsh, keys_sh), out_shardings=bsh)
        return fn.lower(abs_params, abs_frozen, jax.ShapeDtypeStruct((ib, lq, lq, 3), jnp.float32, sharding=bsh),
                        keys_abs).compile()

    t0 = time.perf_counter()
    compiled_i = compile_infer(unroll=False)
    report["infer_compile_s"] = time.perf_counter() - t0
    report["infer_batch"], report["infer_lq"] = ib, lq
    report["infer_batch_per_chip"] = per_chip = ib // shd.batch_size_divisor(mesh)
    report["infer"] = memory_report(compiled_i)
    if not with_cost:
        return report
    # the cost of every sampler step: the unrolled program (the same computation), compiled for
    # the target once more, since XLA's cost analysis counts the rolled loop's body once
    t0 = time.perf_counter()
    unrolled = compile_infer(unroll=True)
    report["infer_unrolled_compile_s"] = time.perf_counter() - t0
    plain = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731 - no sharding: local backend
    model_lowered = jax.jit(inference_program(cfg, nets, unroll=True)).lower(
        jax.tree.map(plain, abs_params), jax.tree.map(plain, abs_frozen),
        jax.ShapeDtypeStruct((ib, lq, lq, 3), jnp.float32), jax.ShapeDtypeStruct((ib,), keys_abs.dtype))
    # the lowered program is the whole mesh's batch; the compiled one is one device's share
    report["infer_cost"] = cost = cost_report(model_lowered, unrolled, ib, per_chip)
    report["infer_roofline"] = roofline(cost, report["device_kind"], per_chip)
    return report


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m resshift_jax.train.compile_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="realsr_v3")
    p.add_argument("--topology", default=None, help="e.g. v5e:4x4, v5p:4x4x4 (default: local devices)")
    p.add_argument("--batch", type=int, default=None, help="global train batch (default: config)")
    p.add_argument("--mesh", default=None, help="mesh shape data,fsdp, e.g. -1,1 or 4,4")
    p.add_argument("--accum_steps", type=int, default=None)
    p.add_argument("--infer_batch", type=int, default=None)
    p.add_argument("--lq_size", type=int, default=None)
    p.add_argument("--infer_only", action="store_true", help="compile only the inference program (minutes, not an hour)")
    p.add_argument("--no_cost", action="store_true",
                   help="no FLOP/byte cost and roofline (they compile the unrolled inference program once more)")
    a = p.parse_args(argv)
    mesh = tuple(int(x) for x in a.mesh.split(",")) if a.mesh else None
    rep = check(a.config, topology=a.topology, batch=a.batch, mesh_shape=mesh, infer_batch=a.infer_batch,
                lq_size=a.lq_size, accum_steps=a.accum_steps, infer_only=a.infer_only, with_cost=not a.no_cost)
    print(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
