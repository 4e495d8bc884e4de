"""Write a PNG grid of HR crops (top) and their degraded LR images upscaled x4 nearest (bottom).

    python scripts/show_degradations.py --out degradations.png [--data DIR] [--n 6] [--seed 0]
"""

import argparse
import os

import numpy as np
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="degradations.png")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "train_hr"))
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="realsr_v3")
    a = ap.parse_args()
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    import jax

    from resshift_jax.config import load_config
    from resshift_jax.data.pipeline import make_train_pairs_fn
    from resshift_jax.train.input import HOST_ONLY, build_row_dataset, data_stream_keys
    cfg = load_config(a.config)
    cfg.data.train.dir_paths = (os.path.abspath(a.data),)
    # the trainer's data path: its host dataset and device step (without the pair pool), step 0
    batch = next(iter(build_row_dataset(cfg, a.n, slice(0, a.n), a.seed, num_workers=0)))
    step, _ = make_train_pairs_fn(cfg, use_pool=False)
    key = jax.random.fold_in(data_stream_keys(a.seed)["degradation"], 0)
    lq, gt, _, _ = step({k: v for k, v in batch.items() if k not in HOST_ONLY}, None, key)
    to8 = lambda x: np.clip(np.round((np.asarray(x) + 1) * 127.5), 0, 255).astype(np.uint8)  # noqa: E731
    lq, gt = to8(lq), to8(gt)
    f = gt.shape[1] // lq.shape[1]
    up = lq.repeat(f, 1).repeat(f, 2)
    grid = np.concatenate([np.concatenate(list(gt), 1), np.concatenate(list(up), 1)], 0)
    Image.fromarray(grid).save(a.out)
    print(f"wrote {a.out}: top HR {gt.shape[1:3]}, bottom LR {lq.shape[1:3]} upscaled x{f} (nearest)")


if __name__ == "__main__":
    main()
