"""Where model weights come from: the official release (safe download) and the bundled compact models.

URLs and local file names are those of the official `inference_resshift.py` (GitHub release
v2.0). A download goes to a temporary name in the destination folder, is verified by loading
it strictly (a callback), and only then renamed to its final name, so an interrupted or
truncated download is never used. `RESSHIFT_WEIGHTS_URL` overrides the release base URL (a
mirror).

The compact models trained by this project ship inside the package
(`resshift_jax/assets/compact/compact_<task>.safetensors`, EMA UNet weights in the official key
layout, configs `configs/compact_<task>.py`, parameter-free first stage): the offline default of
`infer.py` when the official files are neither present nor downloadable.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import socket
import urllib.error
import urllib.request
from typing import Callable

RELEASE_URL = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0"
VQGAN_FILE = "autoencoder_vq_f4.pth"
UNET_FILES = {  # (task, version) -> file name, as inference_resshift.py names them
    ("realsr", "v1"): "resshift_realsrx4_s15_v1.pth",
    ("realsr", "v2"): "resshift_realsrx4_s15_v2.pth",
    ("realsr", "v3"): "resshift_realsrx4_s4_v3.pth",
    ("bicsr", None): "resshift_bicsrx4_s4.pth",
}
CHUNK = 1 << 20
BUNDLED_DIR = pathlib.Path(__file__).resolve().parent / "assets" / "compact"
# task -> the compact model's config (a name, or a config file); its bundled UNet is <stem>.safetensors
COMPACT_CONFIGS = {"bicsr": "compact_bicsr", "realsr": "compact_realsr"}


class DownloadError(RuntimeError):
    """A download failed (network, truncation, or the file did not load)."""


class WeightsUnavailableError(RuntimeError):
    """Weights are missing and could not be downloaded; the message says what to put where.

    `missing` (the WeightFiles not obtained) and `errors` (one line per failed download) let a
    caller that falls back to another model say why in one line (`reason`)."""

    def __init__(self, message: str, missing=(), errors=()):
        super().__init__(message)
        self.missing, self.errors = list(missing), list(errors)

    @property
    def reason(self) -> str:
        """One line: which files are missing and the first download error."""
        what = ", ".join(str(w.path) for w in self.missing) + " missing"
        if not self.errors:
            return f"{what}; downloads off"
        more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return f"{what}; {self.errors[0]}{more}"


@dataclasses.dataclass(frozen=True)
class WeightFile:
    name: str        # what it is ("UNet v3", "autoencoder")
    path: pathlib.Path
    url: str


def release_url() -> str:
    return os.environ.get("RESSHIFT_WEIGHTS_URL", RELEASE_URL).rstrip("/")


def unet_file_name(task: str, version: str) -> str:
    key = (task, None if task == "bicsr" else version)
    if key not in UNET_FILES:
        raise ValueError(f"no released checkpoint for task={task!r} version={version!r}; "
                         f"known: realsr v1/v2/v3, bicsr")
    return UNET_FILES[key]


def official_files(task: str, version: str, weights_dir="weights") -> dict[str, WeightFile]:
    """{'unet': ..., 'vqgan': ...} with local paths under `weights_dir` and release URLs."""
    d, base = pathlib.Path(weights_dir), release_url()
    unet = unet_file_name(task, version)
    label = f"UNet {task}" + (f" {version}" if task == "realsr" else "")
    return dict(unet=WeightFile(label, d / unet, f"{base}/{unet}"),
                vqgan=WeightFile("autoencoder (VQ f4)", d / VQGAN_FILE, f"{base}/{VQGAN_FILE}"))


def compact_config(task: str) -> str:
    """The compact model's config (name or file, for `load_config`) for `task`."""
    if task not in COMPACT_CONFIGS:
        raise ValueError(f"no bundled compact model for task={task!r}; known: {sorted(COMPACT_CONFIGS)}")
    return COMPACT_CONFIGS[task]


def compact_name(task: str) -> str:
    """The compact model's name (`compact_realsr`): its config's stem, its bundled file's stem."""
    return pathlib.Path(compact_config(task)).stem


def bundled_file(task: str) -> pathlib.Path:
    """Path of the bundled compact UNet of `task` (BUNDLED_DIR and COMPACT_CONFIGS read at call time)."""
    return BUNDLED_DIR / f"{compact_name(task)}.safetensors"


def _temp_path(dest: pathlib.Path) -> pathlib.Path:
    # same folder (atomic rename), same extension (loaders dispatch on it), hidden, unique
    return dest.with_name(f".{dest.stem}.part{os.getpid()}{dest.suffix}")


def download(url: str, dest, *, verify: Callable[[pathlib.Path], object] | None = None,
             progress: bool = True, timeout: float = 60.0):
    """Download `url` to `dest` via a temporary file; `verify(tmp_path)` must load it (its
    return value is returned). The final name appears only after a complete, verified file."""
    from tqdm import tqdm  # lazy: only the CLI path downloads

    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(dest)
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                total = int(total) if total is not None else None
                got = 0
                with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                                desc=dest.name, disable=not progress, leave=False) as bar:
                    while chunk := resp.read(CHUNK):
                        f.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as e:
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(f"{url}: cannot connect ({reason})") from None
        except Exception as e:  # http.client.IncompleteRead and friends
            raise DownloadError(f"{url}: download interrupted ({type(e).__name__}: {e})") from None
        if total is not None and got != total:
            raise DownloadError(f"{url}: truncated download ({got} of {total} bytes)")
        result = None
        if verify is not None:
            try:
                result = verify(tmp)
            except Exception as e:
                raise DownloadError(f"{url}: the downloaded file does not load ({type(e).__name__}: {e})") from None
        os.replace(tmp, dest)
        return result
    finally:
        tmp.unlink(missing_ok=True)


def offline_message(missing: list[WeightFile], errors: list[str] | None = None) -> str:
    lines = ["Official ResShift weights are missing and could not be downloaded." if errors
             else "Official ResShift weights are missing (downloads off)."]
    if errors:
        lines += [f"  ({e})" for e in errors]
    lines.append("Download these files on a machine with internet access and place them here:")
    lines += [f"  {w.path}   <- {w.url}   [{w.name}]" for w in missing]
    lines.append("(or point --unet_ckpt / --vae_ckpt at copies elsewhere)")
    return "\n".join(lines)


def no_model_message(err: WeightsUnavailableError, bundled: pathlib.Path) -> str:
    """Neither the official weights nor the bundled compact model: how to get either."""
    return "\n".join([
        f"No model to run: the official weights are unavailable and the bundled compact model {bundled} "
        "is missing too.",
        str(err),
        f"Or restore the bundled compact model {bundled} (it is part of the repository: a fresh clone or "
        "`pip install` of the package has it); it runs when the official weights cannot be had, "
        "or explicitly with `-v compact`.",
    ])


def ensure_and_load(files: list[tuple[WeightFile, Callable[[pathlib.Path], object]]], *,
                    allow_download: bool = True, progress: bool = True) -> list:
    """Load each (file, loader); missing files are downloaded first (verified by the loader).

    If any file cannot be obtained, raises WeightsUnavailableError listing every missing file
    with where to put it and where it comes from.
    """
    results, missing, errors = [], [], []
    for wf, load in files:
        if wf.path.is_file():
            results.append(load(wf.path))
            continue
        if not allow_download:
            missing.append(wf)
            results.append(None)
            continue
        try:
            print(f"Downloading {wf.name} from {wf.url} to {wf.path}", flush=True)
            results.append(download(wf.url, wf.path, verify=load, progress=progress))
        except DownloadError as e:
            missing.append(wf)
            errors.append(str(e))
            results.append(None)
    if missing:
        raise WeightsUnavailableError(offline_message(missing, errors), missing, errors)
    return results
