"""The browser demo's engine (`app.py` is its Gradio page; this module does not import Gradio).

One request is one `infer.py` run on one uploaded file, through the same code: the upload is
copied under its own name into a fresh folder, the flags the page chose become an `infer.py`
argument list (shown on the page, so the result can be reproduced from the command line), and
`cli_infer.run` reads, tiles, super-resolves and writes it exactly as `infer.py` does (same
per-image key from the seed and the file name, same output bit depth and alpha). The pipelines
are `cli_infer`'s in-process ones, so a model is loaded once and a program compiled once per
model, sampler setting and tile shape, then reused by later requests.

Models: the two compact models bundled with the package always run; the official checkpoints
run when their files are present under the weights folder (the demo never downloads: `infer.py`
does that once on a machine with network). A model whose files are missing is listed with the
reason, not offered.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shlex
import shutil
import threading
import time
import uuid
from typing import Callable

import numpy as np
from PIL import Image

from resshift_jax import cli_infer, download, imageio, tiling
from resshift_jax.config import load_config

DEFAULT_MAX_PIXELS = 1024 * 1024  # LR pixels per upload (16 MP out): minutes on a laptop CPU
TILE_CHOICES = (0, 64, 128, 256, 512)  # LR tile size; 0 = the model's default
KEEP_REQUESTS = 32  # request folders (inputs, outputs, previews) kept in the work folder


class DemoError(Exception):
    """A request the demo refuses or could not complete; the message is shown on the page."""


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """A model the page lists: `infer.py --task <task> -v <version>`."""
    label: str
    task: str
    version: str
    available: bool = True
    reason: str = ""    # why it cannot run here (its missing files)
    steps: int = 0      # T, the chain's length (network calls of the full chain)
    default_steps: int = 0  # network calls by default (the config's inference.x0_after, else T)
    chop: int = 0       # the config's LR tile size
    missing: tuple[str, ...] = ()  # the names of its missing files


_CATALOGUE = (("compact realsr (bundled)", "realsr", "compact"),
              ("compact bicsr (bundled)", "bicsr", "compact"),
              ("official realsr v3", "realsr", "v3"),
              ("official realsr v2", "realsr", "v2"),
              ("official realsr v1", "realsr", "v1"),
              ("official bicsr", "bicsr", "v1"))


def model_choices(weights_dir="weights") -> list[ModelChoice]:
    """Every model the page lists, with whether its files are here (nothing is loaded)."""
    out = []
    for label, task, version in _CATALOGUE:
        if version == "compact":
            cfg = load_config(download.compact_config(task))
            missing = [p for p in (download.bundled_file(task),) if not p.is_file()]
        else:
            cfg = load_config(cli_infer.official_config_name(task, version))
            missing = [w.path for w in download.official_files(task, version, weights_dir).values()
                       if not pathlib.Path(w.path).is_file()]
        reason = ""
        if missing:
            where = "the package (it ships with the repository: restore it)" if version == "compact" else \
                f"{weights_dir} (infer.py downloads them once on a machine with network)"
            reason = f"missing {', '.join(pathlib.Path(p).name for p in missing)} in {where}"
        steps = int(cfg.diffusion.steps)
        k = int(cfg.inference.x0_after)
        out.append(ModelChoice(label, task, version, not missing, reason, steps, k if 0 < k < steps else steps,
                               int(cfg.inference.chop_size), tuple(pathlib.Path(p).name for p in missing)))
    return out


@dataclasses.dataclass
class Result:
    """One finished request: the file `infer.py` writes (`output`), 8-bit previews of the
    bicubic upsampling and of the result (same size, for the comparison), and what ran."""
    output: pathlib.Path
    bicubic_preview: pathlib.Path
    sr_preview: pathlib.Path
    lr_size: tuple[int, int]   # (w, h)
    sr_size: tuple[int, int]
    seconds: float
    compiled: bool             # the request compiled a new program (first of its model and shape)
    command: str               # the infer.py command that writes the same file
    model_line: str


def safe_name(name: str) -> str:
    """The upload's file name as a plain, non-hidden base name (the name also seeds the noise,
    as in infer.py, so it is kept as it is where possible)."""
    base = pathlib.PurePath(str(name).replace("\\", "/")).name.strip()
    base = re.sub(r"[\x00-\x1f/]", "_", base).lstrip(".") or "upload.png"
    return base


def check_upload(path: pathlib.Path, name: str, max_pixels: int) -> tuple[int, int]:
    """(w, h) of an upload whose header is readable; raises DemoError for an unsupported
    extension or an image over `max_pixels`. A corrupt file is left to `imageio.read_image`,
    which names the problem."""
    ext = pathlib.PurePath(name).suffix.lower()
    if ext not in imageio.IMAGE_EXTS:
        raise DemoError(f"{name}: unsupported format '{ext or 'no extension'}' "
                        f"(give one of {', '.join(e.lstrip('.') for e in imageio.IMAGE_EXTS)})")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - unreadable header: read_image says why
        return 0, 0
    if w * h > max_pixels:
        raise DemoError(f"{name}: {w} x {h} = {w * h / 1e6:.1f} MP is over this demo's limit of "
                        f"{max_pixels / 1e6:.1f} MP per image (start app.py with a larger --max_pixels, "
                        "or use infer.py, which tiles any size)")
    return w, h


def preview(rgb: np.ndarray, alpha: np.ndarray | None, path: pathlib.Path) -> pathlib.Path:
    """An 8-bit PNG for the browser of float RGB (h, w, 3) in [0, 1] (and alpha)."""
    q = imageio.to_uint(np.clip(rgb, 0.0, 1.0), 8)
    if alpha is not None:
        q = np.concatenate([q, imageio.to_uint(alpha[..., None], 8)], axis=-1)
    Image.fromarray(q).save(path, compress_level=1)
    return path


def bicubic(rgb: np.ndarray, sf: int) -> np.ndarray:
    """The bicubic x`sf` upsampling the model is conditioned on (`resize.bicubic_upsample`)."""
    from resshift_jax.resize import bicubic_upsample
    return np.asarray(bicubic_upsample(np.asarray(rgb, np.float32)[None], sf)[0])


class Demo:
    """Serves requests one at a time (a lock: one computation per device set, whatever the
    web server's threads do). `work_dir` receives one folder per request."""

    def __init__(self, work_dir, *, weights_dir="weights", max_pixels: int = DEFAULT_MAX_PIXELS,
                 dtype: str = "fp32"):
        self.work_dir = pathlib.Path(work_dir)
        self.weights_dir = str(weights_dir)
        self.max_pixels = int(max_pixels)
        self.dtype = dtype
        self._lock = threading.Lock()
        self._shapes_seen: set = set()

    def choices(self) -> list[ModelChoice]:
        return model_choices(self.weights_dir)

    def choice(self, label: str) -> ModelChoice:
        for c in self.choices():
            if c.label == label:
                if not c.available:
                    raise DemoError(f"{label}: {c.reason}")
                return c
        raise DemoError(f"unknown model {label!r}")

    def argv(self, c: ModelChoice, in_path, out_dir, *, steps: int, seed: int, tile: int) -> list[str]:
        """The infer.py arguments of a request (steps = network calls, 1..T; tile 0 = default)."""
        if not 1 <= int(steps) <= c.steps:
            raise DemoError(f"{c.label}: steps must be 1..{c.steps}, got {steps}")
        if int(tile) not in TILE_CHOICES:
            raise DemoError(f"tile size must be one of {TILE_CHOICES} (0 = the model's), got {tile}")
        argv = ["-i", str(in_path), "-o", str(out_dir), "--task", c.task, "-v", c.version,
                "--seed", str(int(seed)), "--x0_after", str(int(steps))]
        if self.dtype != "fp32":
            argv += ["--dtype", self.dtype]
        if c.version != "compact":
            argv += ["--weights_dir", self.weights_dir, "--no_download"]
        if int(tile):
            argv += ["--chop_size", str(int(tile))]
        return argv

    def run(self, upload, name: str | None, label: str, *, steps: int, seed: int, tile: int = 0,
            progress: Callable[[float, str], None] | None = None) -> Result:
        """Super-resolve one uploaded file (its path; `name` = its original file name)."""
        if upload is None:
            raise DemoError("no image: upload one (PNG, JPEG, WebP, ...) or click an example")
        src = pathlib.Path(upload)
        name = safe_name(name or src.name)
        if not src.is_file():
            raise DemoError(f"{name}: the upload is gone (upload it again)")
        check_upload(src, name, self.max_pixels)
        c = self.choice(label)
        req = self._new_request_dir()
        in_file = req / "in" / name
        shutil.copyfile(src, in_file)
        try:
            rgb, meta = imageio.read_image(in_file)
        except imageio.ImageReadError as e:
            raise DemoError(f"{name}: {e.problem}") from None
        h, w = rgb.shape[:2]
        if h * w > self.max_pixels:  # (a header that did not say)
            raise DemoError(f"{name}: {w} x {h} is over this demo's limit of {self.max_pixels / 1e6:.1f} MP")
        argv = self.argv(c, in_file, req / "out", steps=steps, seed=seed, tile=tile)
        args = cli_infer.build_parser().parse_args(argv + ["--overwrite", "--no_progress", "--io_threads", "0"])
        with self._lock:
            return self._run_locked(args, argv, c, rgb, meta, (w, h), name, req, progress)

    def _run_locked(self, args, argv, c, rgb, meta, lr_size, name, req, progress) -> Result:
        t0 = time.perf_counter()
        say = progress or (lambda frac, desc: None)
        say(0.0, f"loading {c.label}")
        try:
            pipe = cli_infer.get_pipeline(args)
            settings = cli_infer.resolve_settings(args, pipe.config)
        except SystemExit as e:  # the CLI's flag/model errors are one line each
            raise DemoError(str(e).removeprefix("error: ")) from None
        w, h = lr_size
        total = len(tiling.tile_boxes(h, w, settings["chop"], settings["stride"])) \
            if tiling.needs_chop(h, w, settings["chop"]) else 1
        calls = int(args.x0_after)
        per_tile = f"{calls} network call{'s' * (calls > 1)} per tile"
        say(0.0, f"tile 0/{total} ({per_tile})")
        files, root = imageio.list_images(req / "in" / name)
        todo, _ = cli_infer.plan_outputs(files, root, args)
        stats: dict = {}
        cli_infer.run(pipe, todo, root, args, settings, stats=stats,
                      on_tiles=lambda n: say(n / total, f"tile {n}/{total} ({per_tile})"))
        if stats.get("errors"):
            raise DemoError(stats["errors"][0].replace(str(req / "in") + "/", ""))
        out = todo[0][1]
        if not out.is_file():  # write_result may have changed the extension (never for PNG)
            found = sorted((req / "out").glob(out.stem + ".*"))
            if not found:
                raise DemoError(f"{name}: no output was written")
            out = found[0]
        seconds = time.perf_counter() - t0
        key = (id(pipe), repr(sorted(stats.get("shapes", {}).items())))
        compiled = key not in self._shapes_seen
        self._shapes_seen.add(key)
        sr, sr_meta = imageio.read_image(out)
        bic = bicubic(rgb, pipe.sf)
        alpha_up = None if meta.alpha is None else imageio.upscale_alpha(meta.alpha, sr.shape[:2])
        shown = shlex.join(["python", "infer.py"] + self._display_argv(argv, name))
        return Result(out, preview(bic, alpha_up, req / "bicubic_preview.png"),
                      preview(sr, sr_meta.alpha, req / "sr_preview.png"),
                      (w, h), (sr.shape[1], sr.shape[0]), seconds, compiled, shown, cli_infer.model_line(args))

    @staticmethod
    def _display_argv(argv: list[str], name: str) -> list[str]:
        """The request's argv as a user would type it: the upload by its name, output to results/."""
        out = list(argv)
        out[out.index("-i") + 1] = name
        out[out.index("-o") + 1] = "results"
        return out

    def _new_request_dir(self) -> pathlib.Path:
        """A fresh folder for a request; the oldest beyond the last KEEP_REQUESTS are removed."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        old = sorted((d for d in self.work_dir.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
        for d in old[:max(0, len(old) - KEEP_REQUESTS + 1)]:
            shutil.rmtree(d, ignore_errors=True)
        req = self.work_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        (req / "in").mkdir(parents=True)
        return req
