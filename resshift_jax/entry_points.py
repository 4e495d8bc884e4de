"""Console entry points (pyproject.toml `[project.scripts]`) for command-line modules whose CLI is
their `__main__` block: each runs the module exactly as `python -m MODULE` does, so the command
and the module cannot drift apart. (Modules with a `main(argv)` function are entry points
themselves.)"""

from __future__ import annotations

import runpy


def _run_as_main(module: str) -> None:
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def study() -> None:
    """`resshift-study` = `python -m resshift_jax.study`."""
    _run_as_main("resshift_jax.study")
