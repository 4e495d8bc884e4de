"""The one rule for paths given in configs and on command lines.

Configs name data and weights relative to the repository root ('../shared/data/...',
'weights/...'), while a user may pass a path relative to the working directory. A path that is
absolute or exists as given is used as is; any other is taken relative to the repository root.
"""

from __future__ import annotations

import os
import pathlib

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def resolve_project_path(path: str | os.PathLike) -> pathlib.Path:
    """`path` as given if it is absolute or exists, else `PROJECT_ROOT / path`."""
    p = pathlib.Path(path)
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p
