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


def list_image_files(dir_paths, exts) -> list[str]:
    """Recursive `**/*.ext` listing per folder and extension, each sorted (as the reference)."""
    out: list[str] = []
    for d in dir_paths:
        d = pathlib.Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"image folder not found: {d}")
        for ext in exts:
            out.extend(sorted(str(p) for p in d.glob(f"**/*.{ext}")))
    seen = set()
    return [p for p in out if not (p in seen or seen.add(p))]


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
    """A TFDS dataset in array_record format via `tfds.data_source` (no TensorFlow needed to
    read; tensorflow-datasets is imported only here). `image_key` names the image feature."""

    def __init__(self, name: str, data_dir: str | None = None, split: str = "train", image_key: str = "image"):
        try:
            import tensorflow_datasets as tfds
        except ImportError as e:
            raise ImportError("TFDS sources need `pip install tensorflow-datasets` "
                              "(TensorFlow itself is not needed for array_record datasets)") from e
        self._src = tfds.data_source(name, split=split, data_dir=data_dir or None)
        self._key = image_key
        self._name = name

    def __len__(self):
        return len(self._src)

    def __getitem__(self, i):
        ex = self._src[i]
        img = ex[self._key] if isinstance(ex, dict) else ex
        return f"{self._name}[{i}]", img if isinstance(img, (bytes, np.ndarray)) else np.asarray(img)


def decode_image(name: str, payload) -> np.ndarray:
    """Encoded bytes (or an array) -> uint8 RGB (h, w, 3). Raises ValueError naming the record."""
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
    try:
        with Image.open(io.BytesIO(payload)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit/float gray: scale to 8 bits
                a = np.asarray(im, np.float64)
                a = a / (65535.0 if a.max() > 255 else 255.0) * 255.0
                a = np.clip(np.round(a), 0, 255).astype(np.uint8)
                return np.repeat(a[..., None], 3, -1)
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - every decoder failure is one readable line
        raise ValueError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from None
