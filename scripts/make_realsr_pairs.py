"""Freeze Real-ESRGAN-degraded validation pairs from held-out HR images (the compact realsr
model's validation split), so choices for that model are made on images that are neither
trained on nor the test set (`../shared/data/Val_SR`).

    python scripts/make_realsr_pairs.py --out runs/realsr_val [--include 'kodak24_*'] [--crop 256] [--seed 0]

Each matching image of `--data` gives one pair: a random `--crop`² HR crop and its LR image
(--crop/4) made by the trainer's own data path (host crop, then the device's second-order
degradation with `--config`'s settings, without the pair pool), seed `--seed`. Writes
OUT/gt/NAME.png and OUT/lq/NAME.png (8-bit), the folders `python -m resshift_jax.evaluate --lq
OUT/lq --gt OUT/gt` reads. Deterministic for a given seed and machine.
"""

import argparse
import fnmatch
import pathlib
import sys
import tempfile

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train_hr"))
    ap.add_argument("--include", default="kodak24_*")
    ap.add_argument("--crop", type=int, default=256, help="HR crop size (a multiple of 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="compact_realsr")
    a = ap.parse_args(argv)
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    import jax

    from resshift_jax.config import load_config
    from resshift_jax.data.pipeline import make_train_pairs_fn
    from resshift_jax.imageio import to_uint
    from resshift_jax.train.input import HOST_ONLY, build_row_dataset, data_stream_keys

    files = sorted(p for p in pathlib.Path(a.data).iterdir() if fnmatch.fnmatch(p.name, a.include))
    if not files:
        raise SystemExit(f"error: no file of {a.data} matches {a.include!r}")
    cfg = load_config(a.config)
    with tempfile.TemporaryDirectory() as tmp:  # the trainer's loader reads folders: link the chosen files
        for f in files:
            (pathlib.Path(tmp) / f.name).symlink_to(f.resolve())
        t = cfg.data.train
        t.dir_paths, t.exclude_glob = (tmp,), ()
        t.gt_size = t.crop_pad_size = cfg.degradation.gt_size = a.crop
        n = len(files)
        batch = next(iter(build_row_dataset(cfg, n, slice(0, n), a.seed, num_workers=0)))
        step, _ = make_train_pairs_fn(cfg, use_pool=False)
        key = jax.random.fold_in(data_stream_keys(a.seed)["degradation"], 0)
        lq, gt, _, _ = step({k: v for k, v in batch.items() if k not in HOST_ONLY}, None, key)
    names = [files[int(i)].stem for i in np.asarray(batch["index"]).reshape(-1)]  # one epoch: each file once
    assert sorted(names) == sorted(f.stem for f in files), names
    out = pathlib.Path(a.out)
    for sub, arr in (("lq", lq), ("gt", gt)):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for name, x in zip(names, np.asarray(arr)):
            Image.fromarray(to_uint(np.clip(x * 0.5 + 0.5, 0.0, 1.0), 8)).save(out / sub / f"{name}.png")
    print(f"wrote {len(names)} pairs ({a.crop}x{a.crop} HR, {lq.shape[1]}x{lq.shape[2]} LR) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
