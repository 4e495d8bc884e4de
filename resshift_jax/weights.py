"""PyTorch state_dict <-> Flax NNX parameters, without PyTorch.

Convention (all our modules follow it): an NNX module's attribute path mirrors the PyTorch
state_dict key, with `nnx.List` for indexed containers (activation slots hold None), so the
mapping is a rename of the leaf plus a layout transpose:

    torch `<path>.weight` (Conv2d, O,I,kh,kw)  <->  nnx `<path>.kernel` (kh,kw,I,O)
    torch `<path>.weight` (Linear, out,in)     <->  nnx `<path>.kernel` (in,out)
    torch `<path>.weight` (GroupNorm)          <->  nnx `<path>.scale`
    torch `<path>.weight` (Embedding)          <->  nnx `<path>.embedding`
    anything else (`bias`, `relative_position_bias_table`, ...) keeps its name and layout.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def torch_key(path) -> str:
    """NNX state path (tuple of str/int) -> PyTorch state_dict key."""
    *head, leaf = (str(p) for p in path)
    return ".".join([*head, _LEAF_TO_TORCH.get(leaf, leaf)])


def to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4:
        return np.transpose(value, (3, 2, 0, 1))
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def from_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def module_state_dict(module: nnx.Module) -> dict[str, np.ndarray]:
    """Our parameters in the official key layout (float32 numpy, PyTorch layouts)."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        out[torch_key(path)] = np.asarray(to_torch_layout(str(path[-1]), np.asarray(var[...])))
    return out


class CheckpointMismatchError(ValueError):
    """A state_dict does not fit the model: missing, unexpected or mis-shaped keys."""


def _describe(keys, shapes, limit=20):
    items = [f"  {k}: {tuple(shapes[k]) if k in shapes else '?'}" for k in sorted(keys)[:limit]]
    more = len(keys) - limit
    return "\n".join(items + ([f"  ... and {more} more"] if more > 0 else []))


def load_state_dict_into(module: nnx.Module, state_dict: dict, *, ignore_suffixes=(), source="checkpoint") -> None:
    """Copy a (prefix-free) PyTorch state_dict into `module`'s parameters, strictly.

    Keys ending in one of `ignore_suffixes` (buffers we recompute) are skipped. A missing,
    unexpected or mis-shaped key raises CheckpointMismatchError listing them all.
    """
    state = nnx.state(module, nnx.Param)
    flat = nnx.to_flat_state(state)
    wanted = {torch_key(p): (p, v) for p, v in flat}
    given = {k: v for k, v in state_dict.items() if not k.endswith(tuple(ignore_suffixes))}
    missing = sorted(set(wanted) - set(given))
    unexpected = sorted(set(given) - set(wanted))
    bad_shape = []
    new_values = {}
    for key, (path, var) in wanted.items():
        if key not in given:
            continue
        value = from_torch_layout(str(path[-1]), np.asarray(given[key]))
        if tuple(value.shape) != tuple(var[...].shape):
            bad_shape.append(f"  {key}: expected {tuple(to_torch_layout(str(path[-1]), np.zeros(var[...].shape)).shape)}"
                             f", found {tuple(np.asarray(given[key]).shape)}")
            continue
        new_values[path] = value
    if missing or unexpected or bad_shape:
        parts = [f"{source} does not fit {type(module).__name__}:"]
        if missing:
            parts.append(f"{len(missing)} missing key(s):\n" + _describe(missing, {k: to_torch_layout(str(wanted[k][0][-1]), np.zeros(wanted[k][1][...].shape)).shape for k in missing}))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s):\n" + _describe(unexpected, {k: np.shape(given[k]) for k in unexpected}))
        if bad_shape:
            parts.append(f"{len(bad_shape)} mis-shaped key(s):\n" + "\n".join(bad_shape[:20]))
        raise CheckpointMismatchError("\n".join(parts))
    for path, var in flat:
        var[...] = np.asarray(new_values[path], dtype=np.asarray(var[...]).dtype)
    nnx.update(module, nnx.from_flat_state(flat))
