"""`Trainer`: the networks, the mesh and the jitted train step with the frozen networks bound.

`trainer.train_step(state, batch)` is the pure step of `train.step` under `jax.jit` with explicit
shardings (state donated); `init_state()` builds the sharded initial state; `lower()` compiles
for abstract inputs (compile-only checks, FLOP counts).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from resshift_jax import sharding as shd
from resshift_jax.train import state as state_lib
from resshift_jax.train.networks import build_models
from resshift_jax.train.step import check_train_sizes, jit_train_step, make_step_fn


def frozen_shardings(frozen: dict, mesh, min_size: int) -> dict:
    """The frozen networks replicated, except a distillation teacher: it has the student's
    parameter tree and is sharded by the same rules (under FSDP it would otherwise hold a full
    copy of the UNet on every chip)."""
    out = jax.tree.map(lambda _: shd.replicated(mesh), frozen)
    if frozen.get("teacher"):
        out["teacher"] = shd.tree_shardings(frozen["teacher"], mesh, min_size)
    return out


class Trainer:
    """Networks + mesh + jitted step: `trainer.train_step(state, batch)` is the pure step with
    the frozen networks bound; `init_state()` builds the sharded initial state."""

    def __init__(self, cfg, mesh, nets=None, *, accum_steps: int | None = None, donate: bool = True):
        check_train_sizes(cfg)
        self.cfg, self.mesh = cfg, mesh
        self.nets = nets if nets is not None else build_models(cfg)
        self.step_fn = make_step_fn(cfg, self.nets, mesh, accum_steps=accum_steps)
        self.tx = self.step_fn.tx
        self.accum_steps = self.step_fn.accum_steps
        min_size = int(cfg.sharding.min_fsdp_size)
        params_abs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), self.nets.unet_params)
        self.abstract_state = state_lib.abstract_train_state(params_abs, self.tx)
        self.state_shardings = state_lib.state_shardings(self.abstract_state, mesh, min_size)
        self.frozen_shardings = frozen_shardings(self.nets.frozen, mesh, min_size)
        self._jitted = jit_train_step(self.step_fn, self.state_shardings, self.frozen_shardings, mesh,
                                      donate=donate)
        self._frozen = None

    @property
    def term_names(self) -> tuple:
        """The names of the objective's extra terms in metrics["terms"] (distillation's)."""
        return self.step_fn.term_names

    @property
    def frozen(self):
        """The frozen networks' arrays on the mesh (`frozen_shardings`), put there on first use."""
        if self._frozen is None:
            self._frozen = jax.device_put(jax.tree.map(np.asarray, self.nets.frozen), self.frozen_shardings)
        return self._frozen

    def init_state(self, seed: int | None = None) -> state_lib.TrainState:
        seed = int(self.cfg.train.seed if seed is None else seed)
        init = jax.jit(lambda p: state_lib.create_train_state(p, self.tx, seed),
                       out_shardings=self.state_shardings)
        return init(jax.tree.map(np.asarray, self.nets.unet_params))  # host values: same on every process

    def train_step(self, state, batch):
        return self._jitted(state, self.frozen, batch)

    def lower(self, batch_abstract):
        abs_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                 self.abstract_state, self.state_shardings)
        abs_frozen = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  self.nets.frozen, self.frozen_shardings)
        return self._jitted.lower(abs_state, abs_frozen, batch_abstract)
