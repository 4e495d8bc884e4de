"""JAX's persistent compilation cache, on by default in `infer.py`, `evaluate` and `train.py`.

A second run of the same program loads the compiled executable from disk instead of compiling it
again (XLA compilation of the sampler takes seconds on a GPU and tens of seconds on a CPU). The
folder is, in order: the command's `--cache_dir`, `$RESSHIFT_JAX_CACHE_DIR`, or
`$XDG_CACHE_HOME/resshift_jax/xla` (default `~/.cache/resshift_jax/xla`). `--no_compile_cache`
(train.py: `--nocompile_cache`), or `RESSHIFT_JAX_CACHE_DIR=off`, disables it. Every program is
cached (no compile-time or size threshold), so nothing is compiled twice. Entries are keyed by
the program, the jax/XLA version and the device, so a stale entry is never used.
"""

from __future__ import annotations

import os
import pathlib

import jax

ENV = "RESSHIFT_JAX_CACHE_DIR"
_OFF = ("off", "none", "0", "false", "no")
_EVENTS = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}
_counts = {"hits": 0, "misses": 0}
_listener_on = False


def default_dir() -> pathlib.Path | None:
    """$RESSHIFT_JAX_CACHE_DIR, else $XDG_CACHE_HOME/resshift_jax/xla (~/.cache/...); None when the
    variable says off."""
    env = os.environ.get(ENV)
    if env is not None and env.strip().lower() in _OFF:
        return None
    if env:
        return pathlib.Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "resshift_jax" / "xla"


def _listen():
    global _listener_on
    if not _listener_on:
        def on_event(name, **_):
            if name in _EVENTS:
                _counts[_EVENTS[name]] += 1
        jax.monitoring.register_event_listener(on_event)
        _listener_on = True


def enable(path=None) -> pathlib.Path:
    """Cache every compiled program in `path` (default `default_dir()`); re-initialises JAX's cache
    when the folder changes, so this also works after earlier compilations in the process."""
    path = pathlib.Path(path if path is not None else (default_dir() or "")).expanduser().absolute()
    if str(path) in ("", "."):
        raise ValueError(f"no compilation cache folder ({ENV} is off)")
    path.mkdir(parents=True, exist_ok=True)
    from jax.experimental.compilation_cache import compilation_cache as cc

    if jax.config.jax_compilation_cache_dir != str(path):
        jax.config.update("jax_compilation_cache_dir", str(path))
        cc.reset_cache()
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _listen()
    return path


def disable() -> None:
    """No persistent cache for the rest of the process."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    if jax.config.jax_compilation_cache_dir is not None:
        jax.config.update("jax_compilation_cache_dir", None)
        cc.reset_cache()


def configure(cache_dir=None, enabled: bool = True) -> pathlib.Path | None:
    """What the command lines call: `--cache_dir` (or the default folder) unless disabled by
    the flag or by the environment variable. Returns the folder in use (None: off). A folder that
    cannot be created turns the cache off with a warning instead of stopping the run."""
    if not enabled or (cache_dir is None and default_dir() is None):
        disable()
        return None
    try:
        return enable(cache_dir)
    except OSError as e:
        print(f"warning: compilation cache off: cannot use {cache_dir or default_dir()} ({e})")
        disable()
        return None


def counts() -> dict:
    """Persistent-cache hits and misses seen by this process since the first `enable`."""
    return dict(_counts)
