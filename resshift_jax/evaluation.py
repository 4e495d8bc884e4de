"""One evaluation path: paired loading, per-image noise keys, super-resolution and scoring.

The trainer's validation (train/validation.py), the w_t study (study/runner.py) and
`python -m resshift_jax.evaluate` all go through this module.

* Pairs (`Pair`: name, LQ, GT as float32 RGB). `folder_pairs`: LQ and GT files with the same
  relative path (real pairs; the reference's `base` validation data, realsr). `bicubic_pairs`:
  LQ = MATLAB bicubic x1/sf of each GT (antialiased, float, not re-quantised; the reference's
  `bicubic` validation data, bicsr). `val_pairs(cfg)` picks one by `data.val.type`.
  `paired_files`: predictions and GT paired by relative path without extension (a.png <-> a.jpg).
* Noise. Tile t of image `name` (its path relative to the LQ folder) with seed s draws from
  fold_in(fold_in(key(s), crc32(name)), t), infer.py's convention (cli_infer.image_key,
  tiling.tile_keys), and `super_resolve` chops and blends as infer.py does; so its result for an
  image equals what `infer.py --seed s` writes for it (before the 8-bit PNG rounding), whatever
  the other images and the batch size.
* Scores (`score`) on float RGB in [0, 1]: PSNR / SSIM on the uint8 Y channel (metrics.py, the
  reference's `batch_PSNR` / `calculate_ssim`); LPIPS v0.1 on [-1, 1] RGB without 8-bit rounding
  (the reference's validation: `lpips(sample, gt)` with the sample clamped to [-1, 1]); NIQE on
  RGB (no reference image). Means are over images, as the reference's validation.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import pathlib

import numpy as np
from flax import nnx
from PIL import Image

from resshift_jax import metrics as M
from resshift_jax import tiling
from resshift_jax.cli_infer import image_key
from resshift_jax.data.matlab_resize import imresize_np
from resshift_jax.imageio import list_images, read_image, to_uint
from resshift_jax.paths import resolve_project_path

log = logging.getLogger(__name__)

ALL_METRICS = ("psnr", "ssim", "lpips", "niqe")
FULL_REFERENCE = ("psnr", "ssim", "lpips")
DIRECTION = {"psnr": "higher", "ssim": "higher", "lpips": "lower", "niqe": "lower"}
CONVENTIONS = {
    "psnr": "Y (BT.601, float32, clipped) -> uint8 (round half to even); peak 255; no border shave",
    "ssim": "Y uint8; 11x11 Gaussian sigma 1.5; K1 0.01, K2 0.03; valid region (MATLAB style)",
    "lpips": "LPIPS v0.1 on [-1, 1] RGB",
    "niqe": "BasicSR Y rounded to [0, 255]; 96x96 blocks; MATLAB pristine model (niqe_pris_params.npz, via BasicSR)",
}
VAL_TYPES = ("base", "bicubic")


class EvaluationError(ValueError):
    """Bad inputs: missing folders/files, unpaired images, size mismatches, missing weights."""


def parse_metrics(spec) -> list[str]:
    """'psnr,ssim' or a sequence -> unique known metric names, in order."""
    names = [m.strip().lower() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    bad = [m for m in names if m not in ALL_METRICS]
    if bad or not names:
        raise EvaluationError(f"unknown metric(s) {bad or spec!r}; choose from {', '.join(ALL_METRICS)}")
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------------- pairs
@dataclasses.dataclass
class Pair:
    """One validation pair: `name` is the LQ's path relative to its folder (posix; the noise key's
    name), `lq` (h, w, 3) and `gt` (sf·h, sf·w, 3) float32 RGB in [0, 1] (a bicubic LQ may
    overshoot it slightly, as the reference's)."""
    name: str
    lq: np.ndarray
    gt: np.ndarray


def _images(folder, exts=None, include: str = "") -> list[pathlib.Path]:
    """The images of `folder` (recursive, sorted); with `include`, only names matching that glob."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"not a folder: {folder}")
    files, _ = list_images(folder, exts)
    if include:
        files = [f for f in files if fnmatch.fnmatch(f.name, include)]
    if not files:
        raise EvaluationError(f"no images in {folder}" + (f" matching {include!r}" if include else ""))
    return files


def _rel(f: pathlib.Path, root) -> str:
    return f.relative_to(root).as_posix()


def _center_crop(lq: np.ndarray, gt: np.ndarray, crop: int, sf: int, name: str):
    """The centred crop x crop of the LQ and the matching sf·crop region of the GT."""
    if min(lq.shape[:2]) < crop:
        raise EvaluationError(f"crop {crop} is larger than {name} ({lq.shape[1]}x{lq.shape[0]})")
    top, left = (lq.shape[0] - crop) // 2, (lq.shape[1] - crop) // 2
    return (np.ascontiguousarray(lq[top:top + crop, left:left + crop]),
            np.ascontiguousarray(gt[sf * top:sf * (top + crop), sf * left:sf * (left + crop)]))


def folder_pairs(lq_dir, gt_dir, *, sf: int, length: int = -1, crop: int = 0, exts=None,
                 include: str = "") -> list[Pair]:
    """Real pairs: each LQ image of `lq_dir` (sorted; the first `length` when > 0) with the GT of
    the same relative path in `gt_dir`, which must be sf x its size. `crop` > 0: centred crops."""
    lq_dir, gt_dir = pathlib.Path(lq_dir), pathlib.Path(gt_dir)
    files = _images(lq_dir, exts, include)
    files = files[:length] if length > 0 else files
    missing = [_rel(f, lq_dir) for f in files if not (gt_dir / _rel(f, lq_dir)).is_file()]
    if missing:
        raise EvaluationError(f"{gt_dir} lacks ground truth for {missing[:5]}")
    pairs = []
    for f in files:
        name = _rel(f, lq_dir)
        lq, gt = read_image(f)[0], read_image(gt_dir / name)[0]
        if gt.shape[:2] != (lq.shape[0] * sf, lq.shape[1] * sf):
            raise EvaluationError(f"{gt_dir / name} is {gt.shape[1]}x{gt.shape[0]}, expected sf={sf} x "
                                  f"the LQ {f} ({lq.shape[1]}x{lq.shape[0]})")
        if crop:
            lq, gt = _center_crop(lq, gt, crop, sf, str(f))
        pairs.append(Pair(name, lq, gt))
    return pairs


def bicubic_pairs(gt_dir, *, sf: int, length: int = -1, crop: int = 0, exts=None,
                  include: str = "") -> list[Pair]:
    """Bicubic pairs from GT images alone (the reference's bicsr validation): GT cut at the
    bottom/right to multiples of sf (centred sf·crop x sf·crop when `crop` > 0), LQ = MATLAB
    bicubic x1/sf with antialiasing, float, neither clipped nor re-quantised."""
    gt_dir = pathlib.Path(gt_dir)
    files = _images(gt_dir, exts, include)
    files = files[:length] if length > 0 else files
    pairs = []
    for f in files:
        gt = read_image(f)[0]
        h, w = gt.shape[0] // sf * sf, gt.shape[1] // sf * sf
        if crop:
            if min(h, w) < sf * crop:
                raise EvaluationError(f"crop {crop} x sf={sf} is larger than {f} ({gt.shape[1]}x{gt.shape[0]})")
            top, left = (h - sf * crop) // 2 // sf * sf, (w - sf * crop) // 2 // sf * sf
            gt = gt[top:top + sf * crop, left:left + sf * crop]
        else:
            gt = gt[:h, :w]
        gt = np.ascontiguousarray(gt)
        pairs.append(Pair(_rel(f, gt_dir), imresize_np(gt, 1.0 / sf).astype(np.float32), gt))
    return pairs


def _save_png8(path: pathlib.Path, rgb01: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint(rgb01, 8)).save(path)


def write_pairs(pairs, out_dir) -> tuple[pathlib.Path, pathlib.Path]:
    """Write `pairs` as OUT/lq and OUT/gt 8-bit RGB PNGs (same relative names, .png), the
    folders `python -m resshift_jax.evaluate --lq OUT/lq --gt OUT/gt` reads: test sets stored
    as files, as SR benchmarks distribute them (the LQ is rounded to 8 bits here)."""
    out = pathlib.Path(out_dir)
    for sub in ("lq", "gt"):
        for p in pairs:
            _save_png8((out / sub / p.name).with_suffix(".png"), getattr(p, sub))
    return out / "lq", out / "gt"


def bicubic_upsample(lq01: np.ndarray, sf: int) -> np.ndarray:
    """The bicubic-interpolation baseline of one image: MATLAB bicubic (`imresize`, the SR
    papers' baseline) x`sf` of float RGB in [0, 1], clipped to [0, 1]."""
    return np.clip(imresize_np(lq01, float(sf)), 0.0, 1.0)


def bicubic_upsample_folder(lq_dir, pred_dir, *, sf: int) -> pathlib.Path:
    """`bicubic_upsample` of every image of `lq_dir`, written as 8-bit PNG under the same
    relative name in `pred_dir`."""
    lq_dir, pred_dir = pathlib.Path(lq_dir), pathlib.Path(pred_dir)
    for f in _images(lq_dir):
        _save_png8((pred_dir / _rel(f, lq_dir)).with_suffix(".png"), bicubic_upsample(read_image(f)[0], sf))
    return pred_dir


def val_pairs(cfg, *, crop: int = 0) -> list[Pair]:
    """The validation pairs `cfg.data.val` names: type 'base' (LQ folder `dir_path` + GT folder
    `extra_dir_path`, as the reference's realsr configs) or 'bicubic' (GT folder `dir_path`, LQ
    made from it, as the reference's bicsr config). Paths resolve against the project root."""
    v = cfg.data.val
    kind = str(v.type)
    sf, length, exts = int(cfg.diffusion.sf), int(v.length), tuple(v.im_exts) or None
    include = str(v.include_glob)  # e.g. the held-out "mcmaster_*" files of the training folder
    if kind == "base":
        return folder_pairs(resolve_project_path(v.dir_path), resolve_project_path(v.extra_dir_path),
                            sf=sf, length=length, crop=crop, exts=exts, include=include)
    if kind == "bicubic":
        return bicubic_pairs(resolve_project_path(v.dir_path), sf=sf, length=length, crop=crop, exts=exts,
                             include=include)
    raise EvaluationError(f"data.val.type={kind!r}; choose one of {VAL_TYPES}")


def paired_files(pred_dir, gt_dir, *, allow_unpaired: bool = False) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
    """[(name, pred, gt)] sorted by name: files paired by relative path without extension
    (`a.png` <-> `a.jpg`); unpaired files are an error unless allowed."""
    pred, gt = by_stem(pred_dir), by_stem(gt_dir)
    no_gt, no_pred = sorted(set(pred) - set(gt)), sorted(set(gt) - set(pred))
    if (no_gt or no_pred) and not allow_unpaired:
        msg = []
        if no_gt:
            msg.append(f"{len(no_gt)} prediction(s) without ground truth in {gt_dir}: {', '.join(no_gt[:10])}")
        if no_pred:
            msg.append(f"{len(no_pred)} ground truth image(s) without prediction in {pred_dir}: {', '.join(no_pred[:10])}")
        raise EvaluationError("; ".join(msg) + " (pairing is by file stem; --allow_unpaired evaluates the common ones)")
    common = sorted(set(pred) & set(gt))
    if not common:
        raise EvaluationError(f"no file stems in common between {pred_dir} and {gt_dir}")
    return [(s, pred[s], gt[s]) for s in common]


def by_stem(folder) -> dict[str, pathlib.Path]:
    """{relative path without extension: file}; two files with one stem are an error."""
    folder = pathlib.Path(folder)
    out: dict[str, pathlib.Path] = {}
    for f in _images(folder):
        stem = f.relative_to(folder).with_suffix("").as_posix()
        if stem in out:
            raise EvaluationError(f"two images with stem {stem!r} in {folder}: {out[stem].name}, {f.name}")
        out[stem] = f
    return out


# ----------------------------------------------------------------------------- super-resolution
def tile_settings(cfg) -> dict:
    """infer.py's defaults for a config: chop size / stride (LR pixels) and blend."""
    return dict(chop_size=int(cfg.inference.chop_size), chop_stride=int(cfg.inference.chop_stride),
                blend=str(cfg.inference.blend))


def super_resolve(pipe, pairs, *, seed: int, chop_size: int, chop_stride: int, blend: str = "feather",
                  bs: int = 1) -> list[np.ndarray]:
    """SR of each pair's LQ with `pipe` (an SRPipeline), noise keyed by (seed, name) as infer.py
    (module docstring); images of one shape are batched up to `bs` tiles. -> float32 RGB in [0, 1]."""
    runner = tiling.TiledRunner(lambda lq, keys: pipe(lq, key=keys), sf=pipe.sf, chop_size=chop_size,
                                chop_stride=chop_stride, padding_offset=pipe.padding_offset, bs=bs,
                                blend=blend, batch_multiple=pipe.mesh.size)
    out: list[np.ndarray | None] = [None] * len(pairs)
    items = ((i, p.lq * 2.0 - 1.0, image_key(int(seed), p.name)) for i, p in enumerate(pairs))
    for i, sr in runner.run(items):
        out[i] = np.clip(sr * 0.5 + 0.5, 0.0, 1.0).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- scores
class LpipsScorer:
    """LPIPS of float RGB images in [0, 1] (mapped to [-1, 1]); one jitted call per image shape."""

    def __init__(self, model):
        self.model = model
        self.fn = nnx.jit(lambda m, a, b: m(a, b))

    def __call__(self, pred01, gt01) -> float:
        to = lambda a: (M.to_float01(a) * 2.0 - 1.0)[None]  # noqa: E731
        return float(self.fn(self.model, to(pred01), to(gt01))[0])


def lpips_weight_files(backbone, heads) -> tuple[pathlib.Path, pathlib.Path] | None:
    """The LPIPS weight files (torchvision backbone, lpips v0.1 heads) resolved against the project,
    or None when either is unset or not a file (callers decide whether that is an error)."""
    paths = [resolve_project_path(x) if x else None for x in (backbone, heads)]
    return None if any(p is None or not p.is_file() for p in paths) else (paths[0], paths[1])


def score(pred01, gt01, metrics, *, lpips: LpipsScorer | None = None, name: str = "") -> dict:
    """{metric: value} of one image; `gt01` None: no-reference metrics only. NIQE of an image too
    small for its 96-pixel patches is NaN (logged), so summaries exclude it."""
    row = {}
    if gt01 is not None:
        if pred01.shape != gt01.shape:
            raise EvaluationError(f"size mismatch for {name!r}: prediction is {pred01.shape[1]}x{pred01.shape[0]}, "
                                  f"ground truth is {gt01.shape[1]}x{gt01.shape[0]}")
        if "psnr" in metrics:
            row["psnr"] = M.psnr_y(pred01, gt01)
        if "ssim" in metrics:
            row["ssim"] = M.ssim_y(pred01, gt01)
        if "lpips" in metrics:
            if lpips is None:
                raise EvaluationError("lpips requested without an LPIPS model")
            row["lpips"] = lpips(pred01, gt01)
    if "niqe" in metrics:
        try:
            row["niqe"] = M.niqe_rgb(pred01)
        except ValueError as e:
            log.warning("NIQE skipped for %s: %s", name, e)
            row["niqe"] = float("nan")
    return row


def score_files(items, metrics, *, lpips: LpipsScorer | None = None, progress: bool = False) -> list[dict]:
    """Rows {name, height, width, metric...} of [(name, pred_path, gt_path or None)]."""
    if progress:
        from tqdm import tqdm  # optional progress bar, only when asked for
        items = tqdm(items, desc="evaluate", unit="img")
    rows = []
    for name, pred_path, gt_path in items:
        pred = read_image(pred_path)[0]
        gt = None if gt_path is None else read_image(gt_path)[0]
        rows.append({"name": name, "height": pred.shape[0], "width": pred.shape[1],
                     **score(pred, gt, metrics, lpips=lpips, name=name)})
    return rows


def score_pairs(srs, pairs, metrics, *, lpips: LpipsScorer | None = None) -> list[dict]:
    """Rows {name, metric...} of super-resolved images against their pairs' GT."""
    return [{"name": p.name, **score(sr, p.gt, metrics, lpips=lpips, name=p.name)} for sr, p in zip(srs, pairs)]


def summarize(rows, metrics) -> dict:
    """{metric: {mean, std, n, n_excluded}} over the finite values (NaN: excluded)."""
    out = {}
    for m in metrics:
        vals = np.array([r[m] for r in rows if m in r], np.float64)
        ok = vals[np.isfinite(vals)]
        out[m] = {"mean": float(ok.mean()) if ok.size else float("nan"),
                  "std": float(ok.std()) if ok.size else float("nan"),
                  "n": int(ok.size), "n_excluded": int(vals.size - ok.size)}
    return out
