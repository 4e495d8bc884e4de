"""Training data, host side (grain: decode, flip, crop/rescale, parameter draws) and the device
step's data function. `train/input.py` assembles them into the trainer's one dataset path
(`build_row_dataset`, `TrainInput`); tests, benchmarks and scripts use that path too.

Every element is (epoch, record index); all of its randomness comes from
`example_rng(seed, epoch, index)`, so the pair does not depend on the worker count, the batch
size, the process count or on where the iterator was restored. A record that cannot be
decoded is logged and replaced by the next record of the epoch order; the replacement is
counted in the batch field `n_corrupt`, which the training loop sums (workers cannot share a
counter).

Batches are dicts of NumPy arrays: `hr` (B, gt, gt, 3) float32 in [0, 1] (bicsr: with the
cubic overshoot, as the reference), `index`, `epoch`, `n_corrupt`, and every degradation
parameter of params.py stacked on axis 0. On device, `make_train_pairs_fn(cfg)` turns a batch
into (lq, gt) in [-1, 1] with the reference's NaN replacement and training-pair pool (state: a
checkpointable pytree).

Host cost per crop is dominated by decoding (0.15 MP: PNG ~4 ms with OpenCV, ~2.7 ms with
imagecodecs; JPEG ~1.5 ms), then INTER_AREA (~0.6 ms) and the parameter draws (~0.3 ms).
OpenCV is used for decoding and INTER_AREA when installed (sources.OPENCV), else Pillow and
NumPy; imagecodecs, when installed, decodes plain RGB PNGs (sources.decode_image). `LoadBatch`
writes each example into its slot of the batch (no per-example copies to stack).
"""

from __future__ import annotations

import fnmatch
import logging
import pathlib

import grain
import numpy as np

from resshift_jax.data import sources
from resshift_jax.data.params import DegradationSpec, draw_params, example_rng, stack_params
from resshift_jax.imageio import list_images
from resshift_jax.resize import bicubic_matrix

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- host transforms
def _area_taps(n_in: int, n_out: int):
    """Indices (n_out, J) and weights of exact pixel-area averaging (cv2.INTER_AREA, shrinking)."""
    r = n_in / n_out
    a = np.arange(n_out) * r
    j = int(np.ceil(r)) + 1
    i = np.floor(a).astype(np.int64)[:, None] + np.arange(j)[None, :]
    lo = np.maximum(a[:, None], i)
    hi = np.minimum(a[:, None] + r, i + 1)
    w = np.maximum(hi - lo, 0) / r
    return np.minimum(i, n_in - 1), w.astype(np.float32)


def _area_rows(x: np.ndarray, n_out: int) -> np.ndarray:
    idx, w = _area_taps(x.shape[0], n_out)
    y = x[idx[:, 0]].astype(np.float32) * w[:, 0, None, None]
    for t in range(1, idx.shape[1]):
        y += x[idx[:, t]] * w[:, t, None, None]  # whole-row gathers: contiguous and fast
    return y


def area_resize(img: np.ndarray, out_hw: tuple[int, int], use_cv2: bool = True,
                out: np.ndarray | None = None) -> np.ndarray:
    """cv2.INTER_AREA for shrinking on the float32 image (as the reference), float32 out
    (written into `out` when given: a C-contiguous float32 (*out_hw, c) array).
    OpenCV when installed (use_cv2), else exact area weights in NumPy (equal to ~1e-5 of 255)."""
    if use_cv2 and sources.OPENCV is not None:
        src = np.ascontiguousarray(img, dtype=np.float32)
        return sources.OPENCV.resize(src, (out_hw[1], out_hw[0]), dst=out, interpolation=sources.OPENCV.INTER_AREA)
    x = img if img.shape[0] == out_hw[0] else _area_rows(img, out_hw[0])
    if x.shape[1] != out_hw[1]:
        x = _area_rows(np.ascontiguousarray(x.transpose(1, 0, 2)), out_hw[1]).transpose(1, 0, 2)
    if out is None:
        return np.ascontiguousarray(x, dtype=np.float32)
    np.copyto(out, x)
    return out


def rescale_crop(img: np.ndarray, rng: np.random.Generator, gt_size: int, rescale_gt: bool = True,
                 crop_pad_size: int = 300, hflip: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """The reference's training crop: reflect-101 pad to >= S, random S x S crop, INTER_AREA to
    gt_size when S differs (S = max(min(h, w), gt_size) with rescale_gt). float32 [0, 1].
    hflip: the image is flipped horizontally first (done on the crop: same pixels, cheaper).
    out: a C-contiguous float32 (gt_size, gt_size, 3) array to write into (a batch slot)."""
    h, w = img.shape[:2]
    s = max(min(h, w), gt_size) if rescale_gt else crop_pad_size
    if h < s or w < s:  # small image: flip, then pad as the reference
        img = img[:, ::-1] if hflip else img
        hflip = False
        while h < s or w < s:
            ph, pw = min(max(0, s - h), h), min(max(0, s - w), w)
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
            h, w = img.shape[:2]
    top = int(rng.integers(0, h - s + 1))
    left = int(rng.integers(0, w - s + 1))
    if hflip:  # crop [left, left+s) of the flipped image = mirrored columns of the original
        left = w - left - s
    img = img[top:top + s, left:left + s]
    if not rescale_gt and s != gt_size:  # reference crops gt_size inside the padded crop on device
        img = img[:, s - gt_size:] if hflip else img
        img = img[:gt_size, :gt_size]
    if hflip:  # flip the uint8 crop (resizing a freshly flipped float32 copy was ~4x slower)
        img = sources.OPENCV.flip(np.ascontiguousarray(img), 1) if sources.OPENCV is not None else img[:, ::-1]
    if out is None:
        out = np.empty((gt_size, gt_size, 3), np.float32)
    if rescale_gt and s != gt_size:
        area_resize(img.astype(np.float32), (gt_size, gt_size), out=out)
        np.divide(out, 255.0, out=out)
        return np.minimum(out, 1, out=out)  # area weights sum to 1 +- ulp; all terms are >= 0
    return np.divide(img, np.float32(255), out=out, dtype=np.float32)


def bicubic_short_side(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the short side is `size` with cubic a=-0.75 (cv2.INTER_CUBIC on float)."""
    h, w = img.shape[:2]
    r = size / min(h, w)
    oh, ow = (size, max(size, round(w * r))) if h <= w else (max(size, round(h * r)), size)
    x = img.astype(np.float32)
    x = np.einsum("oh,hwc->owc", bicubic_matrix(h, oh).astype(np.float32), x)
    return np.einsum("pw,owc->opc", bicubic_matrix(w, ow).astype(np.float32), x)


def dihedral(img: np.ndarray, mode: int) -> np.ndarray:
    img = np.rot90(img, mode % 4)
    return np.ascontiguousarray(img[:, ::-1] if mode >= 4 else img)


class LoadBatch:
    """A batch of elements (epochs, local positions) -> the batch dict of the module docstring.

    Each example is written straight into its slot of the batch arrays (no per-example arrays
    to stack); a corrupt record is replaced by the next readable one and counted."""

    def __init__(self, source, local_indices, cfg_train, spec: DegradationSpec, seed: int):
        self.source, self.local, self.spec, self.seed = source, np.asarray(local_indices), spec, int(seed)
        self.kind = str(cfg_train.type)
        self.use_hflip = bool(cfg_train.use_hflip)
        self.rescale_gt = bool(cfg_train.rescale_gt)
        self.crop_pad_size = int(cfg_train.crop_pad_size)
        self.gt_size = int(cfg_train.gt_size)

    def __setstate__(self, state):  # unpickled in a grain worker: workers are the parallelism
        self.__dict__.update(state)
        if sources.OPENCV is not None:
            sources.OPENCV.setNumThreads(1)

    def _decode(self, pos: int) -> tuple[np.ndarray, int]:
        """The image at local position `pos`, or of the first readable record after it, and the
        number of records skipped."""
        n = len(self.local)
        for step in range(n):
            name, payload = self.source[int(self.local[(pos + step) % n])]
            try:
                return sources.decode_image(name, payload), step
            except ValueError as e:
                log.warning("skipping corrupt record: %s", e)
        raise RuntimeError(f"no readable image among the {n} records of this shard")

    def _hr(self, img, rng, out):
        if self.kind == "bicubic":
            if self.rescale_gt:  # the reference (BicubicFromSource): short side to gt_size, crop
                img = bicubic_short_side(img, self.gt_size)
                top = int(rng.integers(0, img.shape[0] - self.gt_size + 1))
                left = int(rng.integers(0, img.shape[1] - self.gt_size + 1))
                img = img[top:top + self.gt_size, left:left + self.gt_size] / 255.0
                # not clipped: the reference keeps the cubic overshoot in the GT
            else:  # a gt_size crop at the image's own resolution (reflect-padded when smaller)
                img = rescale_crop(img, rng, self.gt_size, False, self.gt_size)
            out[...] = dihedral(img, int(rng.integers(8)))
            return
        flip = bool(self.use_hflip and rng.uniform() < 0.5)
        rescale_crop(img, rng, self.gt_size, self.rescale_gt, self.crop_pad_size, hflip=flip, out=out)

    def __call__(self, elems):
        epochs, positions = (np.asarray(a) for a in elems)
        b, g = len(positions), self.gt_size
        hr = np.empty((b, g, g, 3), np.float32)
        index = self.local[positions].astype(np.int64)
        n_bad = np.zeros(b, np.int32)
        params = []
        for i in range(b):
            img, n_bad[i] = self._decode(int(positions[i]))
            rng = example_rng(self.seed, int(epochs[i]), int(index[i]))
            self._hr(img, rng, hr[i])
            if self.kind != "bicubic":
                params.append(draw_params(rng, self.spec))
        out = dict(hr=hr, index=index, epoch=epochs.astype(np.int32), n_corrupt=n_bad)
        if params:
            out.update(stack_params(params))
        return out


# ----------------------------------------------------------------------------- dataset
def _folder(d) -> str:
    if not pathlib.Path(d).is_dir():
        raise FileNotFoundError(f"image folder not found: {d}")
    return d


def make_source(cfg_train):
    """The source named by the config: array_record_dir, tfds_name, or dir_paths + txt_file_path
    less the files whose name matches a pattern of `exclude_glob` (held-out images)."""
    if cfg_train.array_record_dir:
        return sources.ArrayRecordSource(cfg_train.array_record_dir)
    if cfg_train.tfds_name:
        return sources.TfdsSource(cfg_train.tfds_name, cfg_train.tfds_data_dir or None,
                                  split=cfg_train.tfds_split,
                                  image_key=cfg_train.tfds_image_key)
    paths = []
    if cfg_train.dir_paths:
        exts = tuple(cfg_train.im_exts) or None
        paths += [str(f) for d in cfg_train.dir_paths for f in list_images(_folder(d), exts)[0]]
    if cfg_train.txt_file_path:
        paths += sources.read_txt_lists(cfg_train.txt_file_path)
    held_out = tuple(cfg_train.exclude_glob)
    paths = [p for p in paths if not any(fnmatch.fnmatch(pathlib.Path(p).name, g) for g in held_out)]
    return sources.FileSource(paths)


def to_iter_dataset(ds, train, num_workers: int | None = None):
    """Batched MapDataset -> iterator dataset, with `data.train.num_workers` grain worker
    processes (0: in-process) unless `num_workers` overrides it."""
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    workers = int(train.num_workers) if num_workers is None else num_workers
    if workers > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return ds


def make_train_pairs_fn(cfg, conv_method: str | None = None, *, use_pool: bool = True, nan_check: bool = True):
    """The whole device side of a training step's data, as the reference's `prepare_data`:
    degradation (USM of the GT first when `degradation.use_sharp`), samples with NaN replaced
    (pool.replace_nan), then the training-pair pool (pool.pool_step), both realesrgan only.

    Returns (fn, init_pool): `fn(batch, pool_state, key=None) -> (lq, gt, pool_state, n_nan)`,
    jitted with `pool_state` donated; `init_pool(batch_size, seed=0, key=None)` -> the initial pool state
    (a dict pytree to checkpoint alongside the iterator state), None when there is no pool.
    """
    import jax

    from resshift_jax.data import degrade, pool

    train = cfg.data.train
    realesrgan = str(train.type) != "bicubic"
    spec = DegradationSpec.from_config(cfg)
    names = tuple(draw_params(example_rng(0, 0, 0), spec))
    scale = float(train.degrade_kwargs.scale) if not realesrgan else None

    def step(batch, state, key=None):
        if not realesrgan:
            lq, gt = degrade.bicubic_degrade(batch["hr"], scale)
            return lq, gt, state, jax.numpy.int32(0)
        lq, gt = degrade.realesrgan_degrade(batch["hr"], {k: batch[k] for k in names}, key,
                                            spec=spec, conv_method=conv_method)
        n_nan = jax.numpy.int32(0)
        if nan_check:
            lq, gt, n_nan = pool.replace_nan(lq, gt)
        if use_pool and state is not None:
            state, lq, gt = pool.pool_step(state, lq, gt)
        return lq, gt, state, n_nan

    def init_pool(batch_size: int, seed: int = 0, key=None):
        if not (realesrgan and use_pool):
            return None
        g = spec.gt_size
        return pool.init_pool(pool.pool_size(cfg, batch_size), (g // spec.sf, g // spec.sf, 3), (g, g, 3), seed,
                              key=key)

    return jax.jit(step, donate_argnums=1), init_pool
