"""Image reading and writing for inference: what real photos need, with errors people can read.

`read_image` returns float32 RGB in [0, 1] (h, w, 3) plus an `ImageMeta` telling `write_image`
how to write the result back the way it came in:

* 8-bit and 16-bit PNG (16-bit in -> 16-bit out; Pillow only decodes 16-bit *gray*, so all
  16-bit PNGs go through pypng), JPEG, WebP, BMP, TIFF, GIF (first frame);
* grayscale (processed as 3 replicated channels, written as 1 channel, the mean of the three);
* alpha (RGBA, LA, palette with transparency): the alpha plane is kept apart, upscaled with
  bicubic resampling (`upscale_alpha`) and re-attached on writing;
* palette images are expanded; EXIF orientation is applied (the output is upright).

Anything unreadable (zero bytes, not an image, truncated, corrupt) raises `ImageReadError`
naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import pathlib
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PIL_FORMAT_OF_EXT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                      ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".gif": "PNG"}


class ImageReadError(Exception):
    """A file could not be read as an image; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclasses.dataclass
class ImageMeta:
    path: str
    format: str            # source format as Pillow names it ("PNG", "JPEG", ...)
    mode: str              # source mode ("RGB", "L", "I;16", "P", "RGBA", "PNG16-RGB", ...)
    bit_depth: int         # 8 or 16 (precision of the output file)
    channels: int          # colour channels of the source: 1 (gray) or 3
    alpha: np.ndarray | None = None   # float32 (h, w) in [0, 1], or None
    icc_profile: bytes | None = None


# ----------------------------------------------------------------------------- reading
def _png_ihdr(head: bytes):
    """(bit_depth, colour_type) from a PNG header, or None if `head` is not a PNG."""
    if len(head) < 33 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


_EXIF_ORIENTATION_OPS = {  # orientation tag -> numpy ops on (h, w, ...) that make it upright
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1], 8: lambda a: np.swapaxes(a, 0, 1)[::-1],
}


def _read_png16(path: pathlib.Path):
    """16-bit PNG via pypng -> (uint16 (h, w, planes), has_alpha, greyscale)."""
    import png  # lazy: only needed for 16-bit PNGs

    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        data = np.vstack([np.asarray(r, np.uint16) for r in rows])
    except (png.Error, zlib.error, ValueError, EOFError, struct.error) as e:
        raise ImageReadError(path, f"corrupt or truncated PNG ({e})") from None
    planes = info["planes"]
    if data.shape != (height, width * planes):
        raise ImageReadError(path, f"truncated PNG (got {data.shape[0]} of {height} rows)")
    return data.reshape(height, width, planes), info["alpha"], info["greyscale"]


def _exif_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # malformed EXIF must not make a good image unreadable
        return 1


def read_image(path) -> tuple[np.ndarray, ImageMeta]:
    """Read `path` -> (float32 RGB (h, w, 3) in [0, 1], ImageMeta). Raises ImageReadError."""
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise ImageReadError(path, f"cannot open ({e.strerror or e})") from None
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")

    ihdr = _png_ihdr(head)
    if ihdr is not None and ihdr[0] == 16:
        arr, has_alpha, grey = _read_png16(path)
        try:
            with Image.open(path) as im:
                orientation, icc = _exif_orientation(im), im.info.get("icc_profile")
        except Exception:
            orientation, icc = 1, None
        if orientation in _EXIF_ORIENTATION_OPS:
            arr = np.ascontiguousarray(_EXIF_ORIENTATION_OPS[orientation](arr))
        x = arr.astype(np.float32) / 65535.0
        colour, alpha = (x[..., :-1], x[..., -1]) if has_alpha else (x, None)
        mode = "PNG16-" + ("L" if grey else "RGB") + ("A" if has_alpha else "")
        meta = ImageMeta(str(path), "PNG", mode, 16, 1 if grey else 3, alpha, icc)
        return _to_rgb(colour), meta

    try:
        im = Image.open(path)
        fmt = im.format or "?"
        im.seek(0)
        im.load()
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        raise ImageReadError(path, f"corrupt or truncated image ({e})") from None
    try:
        src_mode = im.mode
        icc = im.info.get("icc_profile")
        im = ImageOps.exif_transpose(im) if _exif_orientation(im) != 1 else im
        colour, alpha, channels, depth = _split_pil(im, path)
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001 - every decoder failure becomes one clear line
        raise ImageReadError(path, f"cannot decode image ({type(e).__name__}: {e})") from None
    return _to_rgb(colour), ImageMeta(str(path), fmt, src_mode, depth, channels, alpha, icc)


def _split_pil(im: Image.Image, path) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """Pillow image -> (colour float (h, w, c), alpha float or None, channels, bit depth)."""
    mode = im.mode
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    elif mode == "1":
        im, mode = im.convert("L"), "L"
    elif mode in ("RGBa", "La"):
        im = im.convert(mode[0:-1] + "A")
        mode = im.mode
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im, mode = im.convert("RGB"), "RGB"

    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise ImageReadError(path, f"unsupported {mode} image with values outside 0..65535")
        return (a / 65535.0).astype(np.float32)[..., None], None, 1, 16
    if mode == "F":
        raise ImageReadError(path, "unsupported 32-bit float image (mode F)")
    a = np.asarray(im).astype(np.float32) / 255.0
    if mode == "L":
        return a[..., None], None, 1, 8
    if mode == "LA":
        return a[..., :1], a[..., 1], 1, 8
    if mode == "RGB":
        return a, None, 3, 8
    if mode == "RGBA":
        return a[..., :3], a[..., 3], 3, 8
    raise ImageReadError(path, f"unsupported image mode {mode}")


def _to_rgb(colour: np.ndarray) -> np.ndarray:
    if colour.shape[-1] == 1:
        colour = np.repeat(colour, 3, axis=-1)
    return np.ascontiguousarray(colour, dtype=np.float32)


# ----------------------------------------------------------------------------- alpha
def upscale_alpha(alpha: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an alpha plane (float [0, 1]) to `out_hw`, clipped to [0, 1]."""
    im = Image.fromarray(np.ascontiguousarray(alpha, np.float32))  # mode F
    out = im.resize((out_hw[1], out_hw[0]), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


# ----------------------------------------------------------------------------- writing
def output_format(meta: ImageMeta, ext: str = "png") -> str:
    """File extension (with dot) for a result: '.png', or with ext='auto' the source's own
    extension when that format can hold the result (bit depth, alpha), else '.png'."""
    if ext != "auto":
        return "." + ext.lstrip(".").lower()
    src = pathlib.Path(meta.path).suffix.lower()
    if src not in _PIL_FORMAT_OF_EXT or src == ".gif":
        return ".png"
    if meta.bit_depth == 16:  # Pillow writes 16 bits only as gray TIFF; pypng writes PNG
        tiff_ok = src in (".tif", ".tiff") and meta.channels == 1 and meta.alpha is None
        return src if src == ".png" or tiff_ok else ".png"
    if meta.alpha is not None and src in (".jpg", ".jpeg"):
        return ".png"
    return src


def output_path(in_file, out_dir, *, rel_to=None, ext: str = ".png", suffix: str = "") -> pathlib.Path:
    """`out_dir/<relative dirs>/<stem><suffix><ext>`; never the input file itself (then '_sr'
    is added to the stem)."""
    in_file = pathlib.Path(in_file)
    rel = in_file.parent.relative_to(rel_to) if rel_to is not None else pathlib.Path()
    out = pathlib.Path(out_dir) / rel / f"{in_file.stem}{suffix}{ext}"
    if out.resolve() == in_file.resolve():
        out = out.with_name(f"{in_file.stem}{suffix}_sr{ext}")
    return out


def to_uint(x: np.ndarray, bit_depth: int) -> np.ndarray:
    """[0, 1] float -> uint8/uint16 by rounding (the reference rounds, ·255)."""
    peak = 65535.0 if bit_depth == 16 else 255.0
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    return np.clip(np.rint(np.asarray(x, np.float64) * peak), 0, peak).astype(dtype)


PNG_LEVEL = 6  # zlib level of PNG output (Pillow's and pypng's default)


def write_image(path, rgb: np.ndarray, meta: ImageMeta, alpha: np.ndarray | None = None,
                png_level: int = PNG_LEVEL) -> pathlib.Path:
    """Write float RGB (H, W, 3) in [0, 1] like the source was: channels, bit depth, alpha.

    `alpha` (H, W) in [0, 1] is attached when given. The format follows the extension of
    `path`; written through a temporary name and renamed, so a crash leaves no half file.
    `png_level` (zlib, 0-9) sets only how hard PNG output is compressed, never the pixels: 1
    encodes a 512x512 output about 5x faster than 6 for files about 15% larger.
    """
    if not 0 <= int(png_level) <= 9:
        raise ValueError(f"png_level must be 0 to 9, got {png_level}")
    path = pathlib.Path(path)
    if pathlib.Path(meta.path).resolve() == path.resolve():
        raise ValueError(f"refusing to overwrite the input image {meta.path}")
    rgb = np.asarray(rgb, np.float32)
    colour = rgb.mean(axis=-1, keepdims=True) if meta.channels == 1 else rgb
    planes = colour if alpha is None else np.concatenate([colour, np.asarray(alpha, np.float32)[..., None]], -1)
    fmt = _PIL_FORMAT_OF_EXT.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown output extension {path.suffix!r}")
    depth = meta.bit_depth if fmt in ("PNG", "TIFF") else 8
    q = to_uint(planes, depth)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    try:
        if depth == 16 and fmt == "PNG":
            import png  # lazy: only needed for 16-bit output
            h, w, c = q.shape
            writer = png.Writer(w, h, greyscale=c in (1, 2), alpha=c in (2, 4), bitdepth=16, compression=int(png_level))
            with open(tmp, "wb") as f:
                writer.write(f, q.reshape(h, w * c))
        else:
            im = _pil_image(q, depth, path)
            kwargs = dict(quality=95) if fmt in ("JPEG", "WEBP") else {}
            if fmt == "PNG":
                kwargs["compress_level"] = int(png_level)
            if meta.icc_profile and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
                kwargs["icc_profile"] = meta.icc_profile
            im.save(tmp, format=fmt, **kwargs)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _pil_image(q: np.ndarray, depth: int, path) -> Image.Image:
    c = q.shape[-1]
    if depth == 16:
        if c != 1:
            raise ValueError(f"{path}: 16-bit colour/alpha can only be written as PNG")
        return Image.fromarray(np.ascontiguousarray(q[..., 0], np.uint16))  # mode I;16
    return Image.fromarray(np.ascontiguousarray(q[..., 0] if c == 1 else q))  # L, LA, RGB, RGBA


def normalize_exts(exts=None) -> tuple[str, ...]:
    """Extensions as lower-case '.ext' (accepts 'png', '.PNG', 'JPEG'); None: IMAGE_EXTS."""
    if exts is None:
        return IMAGE_EXTS
    out = tuple(dict.fromkeys("." + str(e).lower().lstrip(".") for e in exts if str(e).strip()))
    if not out:
        raise ValueError("no image extensions given")
    return out


def list_images(in_path, exts=None) -> tuple[list[pathlib.Path], pathlib.Path]:
    """Image files under `in_path` (a file, or a folder searched recursively, sorted) and
    the root that output paths are made relative to. Hidden files are skipped. `exts`: the
    extensions to take (case-insensitive, e.g. a config's `im_exts`); default IMAGE_EXTS.
    The one image lister of the project: inference, evaluation, training folders and pack."""
    p = pathlib.Path(in_path)
    if p.is_file():
        return [p], p.parent
    if not p.is_dir():
        raise FileNotFoundError(f"input path {p} does not exist")
    want = normalize_exts(exts)
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in want
                   and not any(part.startswith(".") for part in f.relative_to(p).parts))
    return files, p
