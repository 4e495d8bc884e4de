"""Orbax checkpoints of a training run: train state (params, opt state, EMA, step, rng), the data
iterator's state and the config (JSON), and the training-pair pool (a pytree, when there is one), every `save_freq` steps, keeping the last N, async.

Restoring goes through abstract `jax.ShapeDtypeStruct`s that carry the *target* shardings, so a
checkpoint written on one mesh / device count restores onto any other.
"""

from __future__ import annotations

import json
import logging
import pathlib

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def _to_jsonable(x):
    if hasattr(x, "to_dict"):
        x = x.to_dict()
    return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))


class Checkpointer:
    """`CheckpointManager` over WORKDIR/checkpoints with items state / data / config."""

    def __init__(self, directory, *, save_interval_steps: int = 10000, max_to_keep: int | None = 3,
                 async_save: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=int(save_interval_steps), max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "config", "pool"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self):
        return list(self.manager.all_steps())

    def save(self, step: int, state, *, data_state: dict | None = None, config=None,
             pool=None, force: bool = False) -> bool:
        """Save if `step` is on the interval (or `force`); returns whether a save started."""
        items = dict(state=ocp.args.StandardSave(state),
                     data=ocp.args.JsonSave(_to_jsonable(data_state or {})),
                     config=ocp.args.JsonSave(_to_jsonable(config or {})))
        if pool is not None:
            items["pool"] = ocp.args.StandardSave(pool)
        return self.manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state, shardings=None, step: int | None = None, *,
                abstract_pool=None, pool_shardings=None):
        """-> (state, data_state dict, config dict) at `step` (default: latest); with
        `abstract_pool` (and its shardings) -> (state, data_state, config, pool or None).

        `abstract_state`: pytree of ShapeDtypeStructs (or arrays); `shardings`: matching tree of
        target shardings (default: those carried by `abstract_state`)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if shardings is not None:
            target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  abstract_state, shardings)
        else:
            target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
                                  abstract_state)
        items = dict(state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
                     config=ocp.args.JsonRestore())
        has_pool = abstract_pool is not None and (self.directory / str(int(step)) / "pool").exists()
        if has_pool:
            items["pool"] = ocp.args.StandardRestore(jax.tree.map(
                lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_pool, pool_shardings))
        out = self.manager.restore(int(step), args=ocp.args.Composite(**items))
        res = out["state"], dict(out["data"] or {}), dict(out["config"] or {})
        if abstract_pool is None:
            return res
        return (*res, out["pool"] if has_pool else None)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
