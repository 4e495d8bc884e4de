"""Data throughput of the trainer's data path: HR crops/s through its grain host pipeline
(train/input.build_row_dataset, 0 and N workers) and degraded pairs/s through its jitted device
step (data/pipeline.make_train_pairs_fn without the pool); compile time reported apart. JSON lines.

    python bench/bench_data.py [--data DIR] [--batch 8] [--seconds 20] [--workers 2]
                               [--formats png,jpeg] [--no_cv2] [--no_imagecodecs] [--skip_device]

With 0 workers `crops_per_cpu_s` counts crops per second of this process's CPU time, i.e. per
core, and does not depend on other load on the machine. `jpeg` re-encodes the same images as
JPEG (quality 95) in a temporary folder first. `opencv` / `imagecodecs` say which optional
decoders were used (imagecodecs: plain RGB PNGs only, see sources.decode_image).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def host_rate(cfg, batch, seconds, workers):
    from resshift_jax.train.input import build_row_dataset
    ds = build_row_dataset(cfg, batch, slice(0, batch), 0, num_workers=workers)
    it = iter(ds)
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if hasattr(it, "close"):
        it.close()
    out = dict(bench="host_crops", workers=workers, batch=batch, crops=n, seconds=round(dt, 2),
               crops_per_s=round(n / dt, 1), first_batch_s=round(first, 2), cores=os.cpu_count(),
               load_avg_1m=round(os.getloadavg()[0], 2))
    if workers == 0:
        out["crops_per_cpu_s"] = round(n / cpu, 1)
    else:
        out["crops_per_s_per_worker"] = round(n / dt / min(workers, os.cpu_count()), 1)
    return out


def as_jpeg(src, dst, quality=95):
    """The images of `src` re-encoded as JPEG files in `dst` (same pixels up to JPEG loss)."""
    from PIL import Image

    from resshift_jax.imageio import list_images
    os.makedirs(dst, exist_ok=True)
    for f in list_images(src)[0]:
        with Image.open(f) as im:
            im.convert("RGB").save(os.path.join(dst, os.path.splitext(os.path.basename(f))[0] + ".jpg"),
                                   quality=quality)
    return dst


def device_rate(cfg, batch, seconds):
    import jax
    import numpy as np

    from resshift_jax.data.params import DegradationSpec, draw_params, example_rng, stack_params
    from resshift_jax.data.pipeline import make_train_pairs_fn
    spec = DegradationSpec.from_config(cfg)
    step, _ = make_train_pairs_fn(cfg, use_pool=False)
    key = jax.random.key(0)
    fn = lambda b: step(b, None, key)[:2]  # noqa: E731
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
    ap.add_argument("--formats", default="png,jpeg", help="png = the files as they are; jpeg = re-encoded")
    ap.add_argument("--no_cv2", action="store_true", help="Pillow decoding and NumPy area resize only")
    ap.add_argument("--no_imagecodecs", action="store_true", help="no imagecodecs PNG decoding")
    a = ap.parse_args()
    import tempfile

    from absl import flags
    flags.FLAGS.mark_as_parsed()
    from resshift_jax.config import load_config
    from resshift_jax.data import sources
    if a.no_cv2:
        sources.OPENCV = None
    if a.no_imagecodecs:
        sources.IMAGECODECS = None
    cfg = load_config("realsr_v3")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in a.formats.split(","):
            d = os.path.abspath(a.data) if fmt == "png" else as_jpeg(a.data, os.path.join(tmp, "jpeg"))
            cfg.data.train.dir_paths = (d,)
            for w in sorted({0, a.workers}):
                r = dict(format=fmt, opencv=sources.OPENCV is not None, imagecodecs=sources.IMAGECODECS is not None,
                         **host_rate(cfg, a.batch, a.seconds, w))
                print(json.dumps(r), flush=True)
    if not a.skip_device:
        print(json.dumps(device_rate(cfg, a.batch, a.seconds)), flush=True)


if __name__ == "__main__":
    main()
