"""Data throughput: HR crops/s through the grain host pipeline (0 and N workers) and degraded
pairs/s through the jitted device degradation; compile time reported apart. JSON lines.

    python bench/bench_data.py [--data DIR] [--batch 8] [--seconds 20] [--workers 2]
"""

import argparse
import json
import os
import time


def host_rate(cfg, batch, seconds, workers):
    import grain

    from resshift_jax.data.pipeline import build_dataset
    ds = build_dataset(cfg, batch_size=batch, seed=0, num_workers=workers,
                       shard_options=grain.sharding.ShardOptions(0, 1))
    it = iter(ds)
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch
    dt = time.perf_counter() - t0
    if hasattr(it, "close"):
        it.close()
    return dict(bench="host_crops", workers=workers, batch=batch, crops=n, seconds=round(dt, 2),
                crops_per_s=round(n / dt, 1), crops_per_s_per_core=round(n / dt / min(max(1, workers), os.cpu_count()), 1),
                first_batch_s=round(first, 2), cores=os.cpu_count())


def device_rate(cfg, batch, seconds):
    import jax
    import numpy as np

    from resshift_jax.data.params import DegradationSpec, draw_params, example_rng, stack_params
    from resshift_jax.data.pipeline import make_device_fn
    spec = DegradationSpec.from_config(cfg)
    fn = make_device_fn(cfg)
    g = spec.gt_size
    hr = np.random.default_rng(0).uniform(size=(batch, g, g, 3)).astype(np.float32)
    batches = [dict(hr=hr, **stack_params([draw_params(example_rng(0, e, i), spec) for i in range(batch)]))
               for e in range(3)]
    t0 = time.perf_counter()
    jax.block_until_ready(fn(batches[0]))
    compile_s = time.perf_counter() - t0
    n, k, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        jax.block_until_ready(fn(batches[k % 3]))
        n, k = n + batch, k + 1
    dt = time.perf_counter() - t0
    return dict(bench="device_pairs", backend=jax.default_backend(), batch=batch, gt_size=g, pairs=n,
                seconds=round(dt, 2), pairs_per_s=round(n / dt, 2), compile_plus_first_s=round(compile_s, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "train_hr"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip_device", action="store_true")
    a = ap.parse_args()
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    from resshift_jax.config import load_config
    cfg = load_config("realsr_v3")
    cfg.data.train.dir_paths = (os.path.abspath(a.data),)
    for w in (0, a.workers):
        print(json.dumps(host_rate(cfg, a.batch, a.seconds, w)), flush=True)
    if not a.skip_device:
        print(json.dumps(device_rate(cfg, a.batch, a.seconds)), flush=True)


if __name__ == "__main__":
    main()
