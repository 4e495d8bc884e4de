"""The train state: one pytree of arrays (params, opt_state, ema_params, step, rng, bad counters).

Params are the UNet's `nnx.Param` values as a plain nested dict (`nnx.to_pure_dict`), float32
master weights; `nnx.merge(graphdef, params)` rebuilds the module inside jitted code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from resshift_jax import sharding as shd


@struct.dataclass
class TrainState:
    params: dict  # float32 master weights (pure dict)
    opt_state: object  # optax state over params
    ema_params: dict  # EMA (rate 0.999) of params, float32, sharded like params
    step: jax.Array  # int32: completed iterations
    rng: jax.Array  # uint32[2] raw key; per-step keys are fold_in(rng, step)
    bad_steps: jax.Array  # int32: total iterations skipped for NaN/Inf
    bad_streak: jax.Array  # int32: consecutive skipped iterations (the loop stops above a limit)


def split_params(module: nnx.Module):
    """(graphdef, params pure dict, rest State) — rest holds non-parameter variables (buffers)."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), rest


def create_train_state(params: dict, tx, seed: int) -> TrainState:
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    return TrainState(
        params=params,
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params),  # EMA starts from the initial weights
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(jax.random.key(seed)).astype(jnp.uint32),
        bad_steps=jnp.zeros((), jnp.int32),
        bad_streak=jnp.zeros((), jnp.int32),
    )


def abstract_train_state(params_abstract: dict, tx, seed: int = 0) -> TrainState:
    """ShapeDtypeStructs of the train state (nothing allocated)."""
    return jax.eval_shape(lambda p: create_train_state(p, tx, seed), params_abstract)


def state_shardings(abstract_state: TrainState, mesh, min_size: int = 2 ** 14) -> TrainState:
    """Params, optimizer moments and EMA by the rules table; scalars replicated."""
    rep = shd.replicated(mesh)
    return TrainState(
        params=shd.tree_shardings(abstract_state.params, mesh, min_size),
        opt_state=shd.tree_shardings(abstract_state.opt_state, mesh, min_size),
        ema_params=shd.tree_shardings(abstract_state.ema_params, mesh, min_size),
        step=rep, rng=rep, bad_steps=rep, bad_streak=rep,
    )


def ema_update(ema, params, rate: float):
    """ema = rate·ema + (1 − rate)·θ (the reference's update, every iteration)."""
    return jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p.astype(e.dtype), ema, params)
