"""Training data: grain host pipeline (decode, flip, crop/rescale, parameter draws) + device step.

Order of elements: the records of this host's shard (`ShardOptions`: records
shard_index::shard_count, `ShardByJaxProcess` by default) are shuffled per epoch by
(seed, epoch) and repeated. Element k of the stream is (epoch, record index); all of its
randomness comes from `example_rng(seed, epoch, index)`, so the pair does not depend on the
worker count or on where the iterator was restored. A record that cannot be decoded is
logged and replaced by the next record of the epoch order; the replacement is counted in
the batch field `n_corrupt`, which the training loop sums (workers cannot share a counter).

Batches are dicts of NumPy arrays: `hr` (B, gt, gt, 3) float32 in [0, 1], `index`, `epoch`,
`n_corrupt`, and every degradation parameter of params.py stacked on axis 0. On device,
`make_device_fn(cfg)` turns a batch into (lq, gt) in [-1, 1].
"""

from __future__ import annotations

import logging

import grain
import numpy as np

from resshift_jax.data import sources
from resshift_jax.data.params import DegradationSpec, draw_params, example_rng
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


def area_resize(img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """cv2.INTER_AREA for shrinking (exact area weights, a few taps per output), float32 out."""
    x = img if img.shape[0] == out_hw[0] else _area_rows(img, out_hw[0])
    if x.shape[1] != out_hw[1]:
        x = _area_rows(np.ascontiguousarray(x.transpose(1, 0, 2)), out_hw[1]).transpose(1, 0, 2)
    return np.ascontiguousarray(x, dtype=np.float32)


def rescale_crop(img: np.ndarray, rng: np.random.Generator, gt_size: int, rescale_gt: bool = True,
                 crop_pad_size: int = 300) -> np.ndarray:
    """The reference's training crop: reflect-101 pad to >= S, random S x S crop, INTER_AREA to
    gt_size when S differs (S = max(min(h, w), gt_size) with rescale_gt). float32 [0, 1]."""
    h, w = img.shape[:2]
    s = max(min(h, w), gt_size) if rescale_gt else crop_pad_size
    while h < s or w < s:
        ph, pw = min(max(0, s - h), h), min(max(0, s - w), w)
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        h, w = img.shape[:2]
    top = int(rng.integers(0, h - s + 1))
    left = int(rng.integers(0, w - s + 1))
    img = img[top:top + s, left:left + s]
    if rescale_gt and s != gt_size:
        return np.clip(area_resize(img, (gt_size, gt_size)) / 255.0, 0, 1)  # weights sum to 1 +- ulp
    if not rescale_gt and s != gt_size:  # reference crops gt_size inside the padded crop on device
        img = img[:gt_size, :gt_size]
    return img.astype(np.float32) / 255.0


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


class LoadExample:
    """(epoch, index, local position) -> one example dict; corrupt records replaced + counted."""

    def __init__(self, source, local_indices, cfg_train, spec: DegradationSpec, seed: int):
        self.source, self.local, self.spec, self.seed = source, np.asarray(local_indices), spec, int(seed)
        self.kind = str(cfg_train.get("type", "realesrgan"))
        self.use_hflip = bool(cfg_train.get("use_hflip", True))
        self.rescale_gt = bool(cfg_train.get("rescale_gt", True))
        self.crop_pad_size = int(cfg_train.get("crop_pad_size", 300))
        self.gt_size = int(cfg_train.get("gt_size", spec.gt_size))

    def _hr(self, img, rng):
        if self.kind == "bicubic":
            img = bicubic_short_side(img, self.gt_size)
            top = int(rng.integers(0, img.shape[0] - self.gt_size + 1))
            left = int(rng.integers(0, img.shape[1] - self.gt_size + 1))
            img = img[top:top + self.gt_size, left:left + self.gt_size] / 255.0
            return np.clip(dihedral(img, int(rng.integers(8))), 0, 1).astype(np.float32)
        if self.use_hflip and rng.uniform() < 0.5:
            img = img[:, ::-1]
        return rescale_crop(img, rng, self.gt_size, self.rescale_gt, self.crop_pad_size)

    def __call__(self, elem):
        epoch, pos = int(elem[0]), int(elem[1])
        index = int(self.local[pos])
        n_bad = 0
        for step in range(len(self.local)):
            rec = int(self.local[(pos + step) % len(self.local)])
            name, payload = self.source[rec]
            try:
                img = sources.decode_image(name, payload)
                break
            except ValueError as e:
                n_bad += 1
                log.warning("skipping corrupt record: %s", e)
        else:
            raise RuntimeError(f"no readable image among the {len(self.local)} records of this shard")
        rng = example_rng(self.seed, epoch, index)
        out = dict(hr=self._hr(img, rng), index=np.int64(index), epoch=np.int32(epoch),
                   n_corrupt=np.int32(n_bad))
        if self.kind != "bicubic":
            out.update(draw_params(rng, self.spec))
        return out


# ----------------------------------------------------------------------------- dataset
def make_source(cfg_train):
    """The source named by the config: array_record_dir, tfds_name, or dir_paths + txt_file_path."""
    if cfg_train.get("array_record_dir", ""):
        return sources.ArrayRecordSource(cfg_train.array_record_dir)
    if cfg_train.get("tfds_name", ""):
        return sources.TfdsSource(cfg_train.tfds_name, cfg_train.get("tfds_data_dir", "") or None)
    paths = []
    if cfg_train.get("dir_paths", ()):
        paths += sources.list_image_files(cfg_train.dir_paths, cfg_train.get("im_exts", ("png", "jpg")))
    if cfg_train.get("txt_file_path", ()):
        paths += sources.read_txt_lists(cfg_train.txt_file_path)
    return sources.FileSource(paths)


def build_dataset(cfg, *, batch_size: int, seed: int = 0, source=None, shard_options=None,
                  num_epochs: int | None = None, num_workers: int | None = None,
                  drop_remainder: bool = True) -> grain.IterDataset:
    """The training IterDataset of batches; `iter(ds)` is checkpointable (get_state/set_state)."""
    train = cfg.data.train
    spec = DegradationSpec.from_config(cfg)
    source = make_source(train) if source is None else source
    shard = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
    n = len(source)
    local = np.arange(shard.shard_index, n, shard.shard_count)
    if shard.drop_remainder:  # equal shard sizes keep hosts in step
        local = local[: n // shard.shard_count]
    if len(local) == 0:
        raise ValueError(f"shard {shard.shard_index}/{shard.shard_count} of {n} records is empty")
    m = len(local)
    ds = grain.MapDataset.range(m).shuffle(seed=seed).repeat(num_epochs)
    ds = ds.map_with_index(lambda k, pos: (k // m, pos))
    ds = ds.map(LoadExample(source, local, train, spec, seed))
    # batch before the workers split the stream: batch composition does not depend on them
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    workers = int(train.get("num_workers", 0)) if num_workers is None else num_workers
    if workers > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return ds


def make_device_fn(cfg, conv_method: str | None = None):
    """jit(batch dict -> (lq, gt) in [-1, 1]); realesrgan or bicubic per `data.train.type`."""
    import functools

    import jax

    from resshift_jax.data import degrade

    if str(cfg.data.train.get("type", "realesrgan")) == "bicubic":
        scale = float(cfg.data.train.degrade_kwargs.get("scale", 0.25))
        return jax.jit(lambda batch: degrade.bicubic_degrade(batch["hr"], scale))
    spec = DegradationSpec.from_config(cfg)
    names = tuple(k for k in draw_params(example_rng(0, 0, 0), spec))

    @functools.partial(jax.jit)
    def fn(batch, key=None):
        return degrade.realesrgan_degrade(batch["hr"], {k: batch[k] for k in names}, key,
                                          spec=spec, conv_method=conv_method)
    return fn
