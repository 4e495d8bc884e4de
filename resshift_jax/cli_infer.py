"""`infer.py`: super-resolve a file or a folder, compatible with the official inference_resshift.py.

    python infer.py -i testdata/RealSet65 -o results --task realsr -v v3 --bs 8

Official flags: -i/--in_path, -o/--out_path, --task, -v/--version, --scale, --seed, --bs,
--chop_size, --chop_stride. Additions: --unet_ckpt/--vae_ckpt (default: the official file
names under ./weights, downloaded from the official release when missing), --no_download,
--dtype, --blend, --ext, --suffix, --overwrite, --config, --x0_after, --noise_scale, --shape_buckets,
--io_threads, --png_level, --cache_dir, --no_compile_cache.

Which model runs (one `model: ...` line says it): `--config` with explicit checkpoints; else
`-v compact`, the compact model of --task bundled with the package
(resshift_jax/assets/compact/compact_<task>.safetensors, parameter-free first stage); else the
official checkpoint of --task/--version, and when its files are neither present nor
downloadable (and no --unet_ckpt/--vae_ckpt was given), the bundled compact model of --task,
so that a clone without network still super-resolves.

Differences from the reference, on purpose: each tile's noise comes from
fold_in(fold_in(key(seed), crc32(relative path)), tile index), so an image's result does not
depend on the other files in the folder or on --bs; folders keep their sub-folder structure
in the output; gray/16-bit/alpha inputs come back as gray/16-bit/alpha; existing outputs are
skipped unless --overwrite; a bad file is reported and the rest still processed (exit code 1).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import pathlib
import sys
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from resshift_jax import compile_cache, download, imageio, streaming, tiling
from resshift_jax.config import load_config
from resshift_jax.models import first_stage
from resshift_jax.pipeline import SRPipeline
from resshift_jax.weights import load_first_stage, load_unet

_DEFAULT_STRIDE = {512: 448, 256: 224, 64: 48}  # inference_resshift.py, scale 4
_CONFIG_OF = {("realsr", "v1"): "realsr_v1", ("realsr", "v2"): "realsr_v2", ("realsr", "v3"): "realsr_v3"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="ResShift x4 super-resolution (JAX).")
    p.add_argument("-i", "--in_path", required=True, help="input image or folder (searched recursively)")
    p.add_argument("-o", "--out_path", default="./results", help="output folder")
    p.add_argument("--task", default="realsr", choices=["realsr", "bicsr"])
    p.add_argument("-v", "--version", default="v1", choices=["v1", "v2", "v3", "compact"],
                   help="realsr checkpoint v1/v2/v3 (official), or compact: the bundled compact model of --task")
    p.add_argument("--scale", type=int, default=4, help="scale factor (only 4 is released)")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--bs", type=int, default=1, help="tiles/images per device batch (all devices together)")
    p.add_argument("--chop_size", type=int, default=None, help="LR tile size (default: 512, tiny config 64)")
    p.add_argument("--chop_stride", type=int, default=-1, help="LR tile stride (default: 448/224/48 as official)")
    p.add_argument("--unet_ckpt", default=None, help=".pth/.safetensors (default weights/<official name>)")
    p.add_argument("--vae_ckpt", default=None, help=".pth/.safetensors (default weights/autoencoder_vq_f4.pth)")
    p.add_argument("--weights_dir", default="weights", help="where official weights are looked for/downloaded")
    p.add_argument("--no_download", action="store_true",
                   help="never download: official weights only if present, else the bundled compact model")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="compute dtype")
    p.add_argument("--x0_after", type=int, default=None,
                   help="stop after K steps and output that step's x0 prediction (K network calls; "
                        "default: the config's inference.x0_after, 0 = every step as the reference)")
    p.add_argument("--noise_scale", type=float, default=None,
                   help="reverse-step noise scale in [0, 1] (default: the config's inference.noise_scale, 1 = the "
                        "reference's stochastic chain; 0 = the deterministic sampler, the output depends on the "
                        "seed only through the prior draw)")
    p.add_argument("--shape_buckets", default=None,
                   help="LR tile sizes tiles are padded up to, e.g. 128,256,512 (a few compiled programs for "
                        "a folder of mixed sizes), or off (pad as the reference; default: the config's)")
    p.add_argument("--blend", default=None, choices=list(tiling.BLENDS),
                   help="tile blending: official (uniform average) or feather (default)")
    p.add_argument("--ext", default="png", choices=["png", "auto"], help="png, or auto = the input's format")
    p.add_argument("--suffix", default="", help="appended to output file stems")
    p.add_argument("--overwrite", action="store_true", help="overwrite existing outputs (default: skip them)")
    p.add_argument("--config", default=None, help="config name or file overriding --task/--version (e.g. tiny)")
    p.add_argument("--cache_dir", default=None,
                   help="persistent XLA compilation cache folder (default: $RESSHIFT_JAX_CACHE_DIR or "
                        "~/.cache/resshift_jax/xla)")
    p.add_argument("--no_compile_cache", action="store_true", help="do not use the persistent compilation cache")
    p.add_argument("--io_threads", type=int, default=None,
                   help="host threads that decode ahead and (as many) that write behind while the device "
                        "computes (default: half the CPU cores, 1 to 8); 0 = read, run and write in turn")
    p.add_argument("--png_level", type=int, default=imageio.PNG_LEVEL, choices=range(10), metavar="0-9",
                   help=f"zlib level of PNG outputs (default {imageio.PNG_LEVEL}); the pixels do not depend on it, "
                        "and 1 writes about 4x faster for files about 15%% larger (for CPU-bound hosts)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def resolve_settings(args, cfg) -> dict:
    if args.scale != int(cfg.diffusion.sf):
        raise SystemExit(f"error: --scale {args.scale} is not supported by this config (sf={cfg.diffusion.sf}); "
                         "only x4 checkpoints are released")
    chop = args.chop_size if args.chop_size is not None else int(cfg.inference.chop_size)
    if args.chop_stride > 0:
        stride = args.chop_stride
    elif args.chop_size is None:
        stride = int(cfg.inference.chop_stride)
    else:
        stride = _DEFAULT_STRIDE.get(chop, chop - chop // 8)
    if chop <= 0 or not 0 < stride <= chop:
        raise SystemExit(f"error: need 0 < chop_stride ({stride}) <= chop_size ({chop})")
    if args.bs < 1:
        raise SystemExit("error: --bs must be >= 1")
    blend = args.blend or str(cfg.inference.blend)
    buckets = parse_buckets(args.shape_buckets, cfg)
    return dict(chop=chop, stride=stride, blend=blend, buckets=buckets)


def parse_buckets(flag: str | None, cfg) -> tuple[int, ...]:
    """--shape_buckets: None = the config's `inference.shape_buckets`, 'off' = none, else sizes."""
    offset = int(cfg.inference.padding_offset)
    if flag is None:
        buckets = tuple(int(b) for b in cfg.inference.shape_buckets)
    elif flag.strip().lower() in ("off", "none", ""):
        buckets = ()
    else:
        try:
            buckets = tuple(sorted({int(b) for b in flag.split(",")}))
        except ValueError:
            raise SystemExit(f"error: --shape_buckets {flag!r}: give sizes like 128,256,512 or off") from None
    bad = [b for b in buckets if b <= 0 or b % offset]
    if bad:
        raise SystemExit(f"error: shape buckets {bad} must be positive multiples of the padding offset {offset}")
    return buckets


@dataclasses.dataclass
class Model:
    """The model that runs: its config, loaded UNet and first stage, and the `model: ...` line."""
    config: object
    unet: object
    first_stage: object
    line: str


def _dtype(args):
    return jnp.bfloat16 if args.dtype == "bf16" else jnp.float32


def official_config_name(task: str, version: str) -> str:
    return "bicsr" if task == "bicsr" else _CONFIG_OF[(task, version)]


def intended_config(args):
    """The config of the model the flags ask for (before any fallback): --config, the compact
    config of --task for `-v compact`, else the official one."""
    if args.config is not None:
        return load_config(args.config)
    if args.version == "compact":
        return load_config(download.compact_config(args.task))
    return load_config(official_config_name(args.task, args.version))


def _check_given(flag: str, path) -> pathlib.Path | None:
    if path is not None and not pathlib.Path(path).is_file():
        raise SystemExit(f"error: --{flag} {path} does not exist")
    return None if path is None else pathlib.Path(path)


def _load_first_stage(cfg, path, dtype):
    try:
        return load_first_stage(cfg, path, dtype=dtype)
    except ValueError as e:  # e.g. a --vae_ckpt for the parameter-free first stage
        raise SystemExit(f"error: {e}") from None


def load_explicit(args, cfg) -> Model:
    """--config: the UNet from --unet_ckpt, the first stage as the config says (VQ from --vae_ckpt)."""
    unet_path = _check_given("unet_ckpt", args.unet_ckpt)
    vae_path = _check_given("vae_ckpt", args.vae_ckpt)
    if unet_path is None:
        raise SystemExit("error: with --config give --unet_ckpt (and --vae_ckpt for a VQ first stage)")
    if vae_path is None and first_stage.kind_of(cfg) == "vq":
        raise SystemExit("error: with --config give --unet_ckpt and --vae_ckpt (vqgan missing)")
    dtype = _dtype(args)
    return Model(cfg, load_unet(unet_path, cfg, dtype=dtype), _load_first_stage(cfg, vae_path, dtype),
                 f"model: --config {args.config} (UNet {unet_path})")


def load_compact(args, why: str = "") -> Model:
    """The compact model of --task: the bundled file (or --unet_ckpt), parameter-free first stage."""
    name = download.compact_name(args.task)
    cfg = load_config(download.compact_config(args.task))
    given = _check_given("unet_ckpt", args.unet_ckpt)
    path = given if given is not None else download.bundled_file(args.task)
    if not path.is_file():
        raise SystemExit(f"error: the bundled compact model {path} is missing (it ships with the repository; "
                         "restore it, or give --unet_ckpt)")
    dtype = _dtype(args)
    unet = load_unet(path, cfg, dtype=dtype)
    vq = _load_first_stage(cfg, _check_given("vae_ckpt", args.vae_ckpt), dtype)
    line = f"model: {'bundled ' if given is None else ''}{name} ({path})" + (f": {why}" if why else "")
    return Model(cfg, unet, vq, line)


def load_official(args) -> Model:
    """The official checkpoint of --task/--version (files under --weights_dir, downloaded when
    missing unless --no_download; --unet_ckpt/--vae_ckpt replace either). When they cannot be had
    and no path was given explicitly, the bundled compact model of --task runs instead."""
    cfg = load_config(official_config_name(args.task, args.version))
    dtype = _dtype(args)
    official = download.official_files(args.task, args.version, args.weights_dir)
    wanted = []
    for which, flag, load in (("unet", "unet_ckpt", lambda p: load_unet(p, cfg, dtype=dtype)),
                              ("vqgan", "vae_ckpt", lambda p: load_first_stage(cfg, p, dtype=dtype))):
        given = _check_given(flag, getattr(args, flag))
        wanted.append((download.WeightFile(which, given, "") if given is not None else official[which], load))
    try:
        unet, vq = download.ensure_and_load(wanted, allow_download=not args.no_download,
                                            progress=not args.no_progress)
    except download.WeightsUnavailableError as e:
        if args.unet_ckpt is not None or args.vae_ckpt is not None:  # explicit paths: no silent swap
            raise SystemExit(str(e)) from None
        bundled = download.bundled_file(args.task)
        if not bundled.is_file():
            raise SystemExit(download.no_model_message(e, bundled)) from None
        return load_compact(args, why=f"official weights not found and not downloadable ({e.reason})")
    label = f"{args.task} {args.version}" if args.task == "realsr" else args.task
    kind = "official ResShift" if args.unet_ckpt is None else "ResShift"  # else: its architecture, given weights
    return Model(cfg, unet, vq, f"model: {kind} {label} ({wanted[0][0].path})")


def load_model(args) -> Model:
    """The model the flags select: --config (explicit paths) > `-v compact` > official, else bundled."""
    if args.config is not None:
        return load_explicit(args, load_config(args.config))
    if args.version == "compact":
        return load_compact(args)
    return load_official(args)


_MODELS: dict = {}     # in-process reuse: a model is loaded once per model-selecting flags,
_PIPELINES: dict = {}  # and its pipeline (compiled programs) built once per sampler setting


def _loaded(args) -> tuple[SRPipeline, str]:
    which = (args.config, args.task, args.version, args.unet_ckpt, args.vae_ckpt, args.weights_dir, args.dtype,
             args.no_download)
    key = which + (args.x0_after, args.noise_scale)
    if key not in _PIPELINES:
        if which not in _MODELS:
            _MODELS[which] = load_model(args)
        m = _MODELS[which]
        cfg = copy.deepcopy(m.config)  # the sampler settings below are this pipeline's own
        if args.x0_after is not None:
            steps = int(cfg.diffusion.steps)
            if not 0 <= args.x0_after <= steps:
                raise SystemExit(f"error: --x0_after {args.x0_after} must be in 0..{steps} (the model's steps)")
            cfg.inference.x0_after = args.x0_after
        if args.noise_scale is not None:
            cfg.inference.noise_scale = args.noise_scale
        _PIPELINES[key] = (SRPipeline(m.unet, m.first_stage, cfg), m.line)
    return _PIPELINES[key]


def get_pipeline(args) -> SRPipeline:
    """The pipeline of the model the flags select (built once per model-selecting flags)."""
    return _loaded(args)[0]


def model_line(args) -> str:
    """The `model: ...` line of the model `get_pipeline(args)` runs."""
    return _loaded(args)[1]


def image_key(seed: int, rel_name: str):
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(rel_name.encode()) & 0x7FFFFFFF)


def plan_outputs(files, root, args) -> tuple[list, list]:
    """[(in_file, out_file)] to process and [(in_file, out_file)] skipped (exists). Two inputs
    that would share an output name (a.jpg, a.png) get their source extension in the name."""
    todo, skipped = [], []
    taken = {f.resolve() for f in files}  # an output never replaces any input
    for f in files:
        # the output format needs the image; '.png' unless --ext auto (then fixed up on write)
        ext = ".png" if args.ext == "png" else (f.suffix.lower() if f.suffix.lower() != ".gif" else ".png")
        out = imageio.output_path(f, args.out_path, rel_to=root, ext=ext, suffix=args.suffix)
        if out.resolve() in taken:
            out = out.with_name(f"{f.stem}_{f.suffix.lstrip('.').lower()}{args.suffix}{out.suffix}")
        if out.resolve() in taken:
            out = out.with_name(f"{out.stem}_sr{out.suffix}")
        taken.add(out.resolve())
        if out.exists() and not args.overwrite:
            skipped.append((f, out))
        else:
            todo.append((f, out))
    return todo, skipped


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    resolve_settings(args, intended_config(args))  # flag errors before any loading or download
    try:
        files, root = imageio.list_images(args.in_path)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    if args.io_threads is not None and args.io_threads < 0:
        raise SystemExit("error: --io_threads must be >= 0")
    if args.noise_scale is not None and not 0.0 <= args.noise_scale <= 1.0:
        raise SystemExit(f"error: --noise_scale {args.noise_scale} must be in [0, 1]")
    cache = compile_cache.configure(args.cache_dir, enabled=not args.no_compile_cache)

    todo, skipped = plan_outputs(files, root, args)
    for f, out in skipped:
        print(f"skip {f}: {out} exists (use --overwrite)")
    if not todo:
        print(f"Nothing to do: {len(files)} image(s) found, {len(skipped)} already done.")
        return 0

    pipe = get_pipeline(args)
    print(model_line(args), flush=True)
    cfg = pipe.config
    settings = resolve_settings(args, cfg)  # the model that runs may be the compact fallback
    k, scale = pipe.spec.x0_after, pipe.spec.noise_scale
    steps = f"{pipe.schedule.num_timesteps} steps" + (f", x0 after step {k}" if 0 < k < pipe.schedule.num_timesteps else "")
    steps += "" if scale == 1.0 else (", deterministic sampler" if scale == 0.0 else f", noise scale {scale:g}")
    print(f"{len(todo)} image(s); config {cfg.get('name') or args.config}, {steps}, "
          f"chop {settings['chop']}/{settings['stride']}, blend {settings['blend']}, bs {args.bs}, {args.dtype}, "
          f"shape buckets {','.join(map(str, settings['buckets'])) or 'off'}")
    counts0 = compile_cache.counts()
    rc = run(pipe, todo, root, args, settings)
    if cache is not None:
        c = compile_cache.counts()
        print(f"compile cache: {cache} ({c['hits'] - counts0['hits']} programs loaded, "
              f"{c['misses'] - counts0['misses']} compiled)")
    return rc


def io_threads(flag: int | None) -> int:
    """--io_threads, or by default half the CPU cores, 1 to 8: PNG encoding (zlib) is the host's
    largest cost, and on a GPU host a batch of 64 outputs takes several cores to keep up with the
    device; on a CPU-only machine the cores left to XLA matter more."""
    if flag is not None:
        return max(0, int(flag))
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def write_result(sr: np.ndarray, meta, out: pathlib.Path, ext_flag: str, inputs: set,
                 png_level: int = imageio.PNG_LEVEL) -> pathlib.Path:
    """Write one super-resolved image (float (H, W, 3) in [-1, 1]) as its input was (channels,
    bit depth, alpha, format with --ext auto); returns the path written."""
    img = np.clip(sr * 0.5 + 0.5, 0.0, 1.0)
    alpha = None if meta.alpha is None else imageio.upscale_alpha(meta.alpha, img.shape[:2])
    ext = imageio.output_format(meta, ext_flag)
    if ext != out.suffix:  # --ext auto fell back to PNG (bit depth / alpha)
        out = out.with_suffix(ext)
        if out.resolve() in inputs:
            out = out.with_name(f"{out.stem}_sr{ext}")
    return imageio.write_image(out, img, meta, alpha=alpha, png_level=png_level)


def run(pipe, todo, root, args, settings, *, stats: dict | None = None, on_tiles=None) -> int:
    """Super-resolve `todo` [(in_file, out_file)] and write the results, streaming: images are
    decoded ahead and written behind on `args.io_threads` host threads each while the device
    computes (bounded: a few batches of images on the host at any time); 0 threads runs
    everything in this thread. The bytes written do not depend on it. `stats` (a dict) receives
    the counts and timings of the run and, under "errors", one message per failed file.
    `on_tiles(n)` is called with the number of tiles computed so far after each device batch."""
    failed, done, errors = [], 0, []
    bar = tqdm(total=len(todo), unit="img", disable=args.no_progress, dynamic_ncols=True)
    tiles_done = [0]

    def on_batch(n):
        tiles_done[0] += n
        bar.set_postfix(tiles=tiles_done[0], refresh=False)
        if on_tiles is not None:
            on_tiles(tiles_done[0])

    threads = io_threads(getattr(args, "io_threads", None))
    runner = tiling.TiledRunner(lambda lq, keys: pipe(lq, key=keys), sf=pipe.sf,
                                chop_size=settings["chop"], chop_stride=settings["stride"],
                                padding_offset=pipe.padding_offset, bs=args.bs,
                                blend=settings["blend"], batch_multiple=pipe.mesh.size, on_batch=on_batch,
                                inflight=1 if threads else 0, buckets=settings["buckets"])
    if runner.bs != args.bs:
        print(f"note: --bs {args.bs} rounded up to {runner.bs}, a multiple of the {pipe.mesh.size} devices")
    metas = {}
    inputs = {f.resolve() for f, _ in todo}
    queue = 2 * runner.bs + 2  # images waiting on the host, each side of the device

    def decode(job):
        f, out = job
        try:
            rgb, meta = imageio.read_image(f)
        except imageio.ImageReadError as e:
            return f, out, None, None, e
        return f, out, rgb * 2.0 - 1.0, meta, None

    def items():
        for f, out, lq, meta, err in streaming.prefetch_map(decode, todo, workers=threads, ahead=queue):
            if err is not None:
                failed.append(str(f))
                errors.append(str(err))
                bar.write(f"FAILED {err}")
                bar.update(1)
                continue
            metas[str(f)] = (meta, out)
            yield str(f), lq, image_key(args.seed, f.relative_to(root).as_posix())

    def report(finished):
        nonlocal done
        for (tag, out), err in finished:
            if err is None:
                done += 1
            else:
                failed.append(tag)
                errors.append(f"{tag}: cannot write {out} ({type(err).__name__}: {err})")
                bar.write(f"FAILED {errors[-1]}")
            bar.update(1)

    t0 = time.perf_counter()
    with streaming.WriteBehind(workers=threads, max_pending=queue) as writer:
        for tag, sr in runner.run(items()):
            meta, out = metas.pop(tag)
            report(writer.submit((tag, out), write_result, sr, meta, out, args.ext, inputs,
                                 args.png_level))
        report(writer.drain())
    bar.close()
    secs = time.perf_counter() - t0
    if stats is not None:
        stats.update(images=done, failed=len(failed), errors=errors, wall_s=secs, batches=runner.batches_run,
                     tiles=tiles_done[0], shapes={str(k): sorted(v) for k, v in runner.batch_sizes_run.items()})
    print(f"Done: {done} image(s), failed: {len(failed)}, {secs:.1f} s, {done / max(secs, 1e-9):.2f} images/s "
          f"-> {args.out_path}")
    if failed:
        print("Failed files:\n  " + "\n  ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
