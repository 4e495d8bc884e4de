"""Random-access sources of encoded HR images for grain: folders, text lists, array_record, TFDS.

Every source yields `(name, payload)` per index, where payload is the encoded file bytes
(PNG/JPEG/...) or, for TFDS, possibly an already-decoded uint8 array. Decoding happens in
the pipeline so that a corrupt record is logged, skipped and counted there, never fatal.

array_record records written by `pack.py` are `b"RSJ1" + len(name) (4 bytes LE) + name + bytes`;
plain records (just the image bytes) are read too.
"""

from __future__ import annotations

import io
import logging
import pathlib
import struct

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)
_MAGIC = b"RSJ1"


def read_txt_lists(txt_paths) -> list[str]:
    """One image path per line, blank lines skipped."""
    out = []
    for t in txt_paths:
        out.extend(line.strip() for line in pathlib.Path(t).read_text().splitlines() if line.strip())
    return out


class FileSource:
    """Image files by path; a file that cannot be opened yields empty bytes (counted later)."""

    def __init__(self, paths):
        self.paths = list(paths)
        if not self.paths:
            raise ValueError("FileSource: no image files (check dir_paths / im_exts / txt_file_path)")

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        p = self.paths[i]
        try:
            return p, pathlib.Path(p).read_bytes()
        except OSError as e:
            log.warning("cannot read %s: %s", p, e)
            return p, b""

    def __repr__(self):
        return f"FileSource({len(self.paths)} files)"


def encode_record(name: str, data: bytes) -> bytes:
    n = name.encode("utf-8")
    return _MAGIC + struct.pack("<I", len(n)) + n + data


def decode_record(rec: bytes, default_name: str) -> tuple[str, bytes]:
    if rec[:4] == _MAGIC:
        (n,) = struct.unpack("<I", rec[4:8])
        return rec[8:8 + n].decode("utf-8", "replace"), rec[8 + n:]
    return default_name, rec


def array_record_files(path) -> list[str]:
    p = pathlib.Path(path)
    files = sorted(str(f) for f in p.glob("*.array_record*")) if p.is_dir() else [str(p)]
    if not files:
        raise FileNotFoundError(f"no *.array_record files in {p}")
    return files


class ArrayRecordSource:
    """array_record shards (a folder or files) through grain's ArrayRecordDataSource."""

    def __init__(self, path_or_files):
        import grain

        files = array_record_files(path_or_files) if isinstance(path_or_files, (str, pathlib.Path)) \
            else list(path_or_files)
        self._src = grain.sources.ArrayRecordDataSource(files)

    def __len__(self):
        return len(self._src)

    def __getitem__(self, i):
        return decode_record(self._src[i], f"record {i}")

    def __repr__(self):
        return f"ArrayRecordSource({len(self)} records)"


class TfdsSource:
    """A TFDS dataset in array_record format, read without TensorFlow (tensorflow-datasets is
    imported only here). `name` is a registered/prepared dataset name (looked up in `data_dir`)
    or the path of a prepared dataset version folder (holding dataset_info.json).

    `tfds.features.Image` features are read undecoded (`tfds.decode.SkipDecoding`): the
    payload is the encoded PNG/JPEG bytes, decoded by the pipeline (corrupt ones are skipped
    and counted there). Any other image feature (e.g. a uint8 `Tensor`) arrives as an array.
    Writing such datasets without TensorFlow works when images are given as encoded bytes or
    paths (see pack.pack_tfds); encoding NumPy arrays into an `Image` feature needs TF.
    The underlying reader is opened lazily per process, so the source pickles for grain workers.
    """

    def __init__(self, name: str, data_dir: str | None = None, split: str = "train", image_key: str = "image"):
        self._args = (str(name), str(data_dir) if data_dir else None, split, image_key)
        self._src = None
        self._len = len(self._open())

    @staticmethod
    def _tfds():
        try:
            import tensorflow_datasets as tfds
        except ImportError as e:
            raise ImportError("TFDS sources need `pip install tensorflow-datasets` "
                              "(TensorFlow itself is not needed for array_record datasets)") from e
        return tfds

    def _open(self):
        if self._src is None:
            tfds = self._tfds()
            name, data_dir, split, key = self._args
            if (pathlib.Path(name) / "dataset_info.json").is_file():
                builder = tfds.builder_from_directory(name)
            else:
                builder = tfds.builder(name, data_dir=data_dir)
            feats = builder.info.features
            if key not in feats:
                raise KeyError(f"TFDS dataset {name}: no feature {key!r} (has {sorted(feats.keys())})")
            dec = {key: tfds.decode.SkipDecoding()} if isinstance(feats[key], tfds.features.Image) else None
            try:
                self._src = builder.as_data_source(split=split, decoders=dec)
            except Exception as e:  # noqa: BLE001 - name the dataset and the format requirement
                raise ValueError(f"TFDS dataset {name} ({builder.data_dir}): cannot open split {split!r} as a "
                                 f"data source (it must be prepared with file_format='array_record'): {e}") from e
        return self._src

    def __getstate__(self):
        return dict(self.__dict__, _src=None)

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        ex = self._open()[i]
        img = ex[self._args[3]] if isinstance(ex, dict) else ex
        return f"{self._args[0]}[{i}]", img if isinstance(img, (bytes, np.ndarray)) else np.asarray(img)

    def __repr__(self):
        return f"TfdsSource({self._args[0]!r}, split={self._args[2]!r}, {self._len} records)"


# Optional accelerators, public so the pipeline (INTER_AREA, flips) and benchmarks/tests (which
# set them to None to measure or test the fallbacks) use the same switch.
try:  # OpenCV: faster decoding and INTER_AREA; Pillow/NumPy otherwise
    import cv2 as OPENCV
except ImportError:  # pragma: no cover - e.g. the GPU machine has no opencv
    OPENCV = None

try:  # its libpng + zlib-ng decodes PNG ~1.5x faster than OpenCV's build
    import imagecodecs as IMAGECODECS
except ImportError:  # pragma: no cover
    IMAGECODECS = None

_PNG = b"\x89PNG\r\n\x1a\n"


def _complete(payload: bytes) -> bool:
    """True when a PNG/JPEG stream is not cut short (OpenCV decodes truncated files silently)."""
    if payload[:8] == _PNG:
        return b"IEND" in payload[-16:]
    if payload[:2] == b"\xff\xd8":
        return b"\xff\xd9" in payload[-64:]
    return False  # other formats: Pillow


def _decode_cv2(payload: bytes) -> np.ndarray | None:
    """8-bit RGB via cv2.imdecode(IMREAD_COLOR) as the reference (basicsr imfrombytes): gray
    replicated, alpha dropped, 16 bits shifted to 8, EXIF orientation applied. None if unusable."""
    if OPENCV is None or not _complete(payload):
        return None
    buf = np.frombuffer(payload, np.uint8)
    if hasattr(OPENCV, "IMREAD_COLOR_RGB"):  # OpenCV >= 4.10: decode straight to RGB
        return OPENCV.imdecode(buf, OPENCV.IMREAD_COLOR_RGB)
    a = OPENCV.imdecode(buf, OPENCV.IMREAD_COLOR)
    return None if a is None else OPENCV.cvtColor(a, OPENCV.COLOR_BGR2RGB)


def _png_chunk_types(payload: bytes):
    """The chunk types of a PNG stream, in order (headers only: a few µs)."""
    pos = 8
    while pos + 8 <= len(payload):
        yield payload[pos + 4:pos + 8]
        pos += 12 + int.from_bytes(payload[pos:pos + 4], "big")


def _plain_rgb_png(payload: bytes) -> bool:
    """An 8-bit RGB PNG without an eXIf chunk: nothing to convert (palette, gray, alpha, 16
    bits) and no orientation to apply, so any PNG decoder gives OpenCV's pixels."""
    return (payload[:8] == _PNG and payload[12:16] == b"IHDR" and payload[24:26] == b"\x08\x02"
            and b"eXIf" not in _png_chunk_types(payload))


def _decode_png_imagecodecs(payload: bytes) -> np.ndarray | None:
    """uint8 (h, w, 3) via imagecodecs for complete plain RGB PNGs, else None (OpenCV/Pillow
    decide, and name any error)."""
    if IMAGECODECS is None or not (_plain_rgb_png(payload) and _complete(payload)):
        return None
    try:
        a = IMAGECODECS.png_decode(payload)
    except Exception:  # noqa: BLE001 - left to the other decoders
        return None
    return a if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 else None  # (h, w, 4): tRNS


def decode_image(name: str, payload) -> np.ndarray:
    """Encoded bytes (or an array) -> uint8 RGB (h, w, 3). Raises ValueError naming the record.

    Complete plain RGB PNGs go through imagecodecs when it is installed, other complete
    PNG/JPEG files through OpenCV when it is installed (same pixels as Pillow for 8-bit
    files), anything else through Pillow."""
    if isinstance(payload, np.ndarray):
        a = payload
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
            raise ValueError(f"{name}: expected an (h, w, 1|3|4) image array, got {a.shape}")
        a = np.repeat(a, 3, -1) if a.shape[-1] == 1 else a[..., :3]
        return np.ascontiguousarray(a.astype(np.uint8) if a.dtype == np.uint8 else
                                    np.clip(np.round(a * (255.0 if a.dtype.kind == "f" else 1.0)), 0, 255)
                                    .astype(np.uint8))
    if not payload:
        raise ValueError(f"{name}: empty file (0 bytes)")
    a = _decode_png_imagecodecs(payload)
    if a is None:
        a = _decode_cv2(payload)
    if a is not None:
        return a
    try:
        with Image.open(io.BytesIO(payload)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit/float gray: scale to 8 bits
                a = np.asarray(im, np.float64)
                a = a / (65535.0 if a.max() > 255 else 255.0) * 255.0
                a = np.clip(np.round(a), 0, 255).astype(np.uint8)
                return np.repeat(a[..., None], 3, -1)
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - every decoder failure is one readable line
        raise ValueError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from None
