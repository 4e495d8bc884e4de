"""The reference's last two data steps on device: drop samples with NaN, training-pair pool.

`replace_nan(lq, gt)`: the reference (`replace_nan_in_batch`) drops every sample whose LQ
holds a NaN, which changes the batch size. Under jit shapes are fixed, so each such sample is
replaced by the next valid sample of the batch (cyclically); the count is returned. If no
sample is valid the batch is returned with NaNs zeroed and the count equals the batch size
(the reference asserts here; the caller should skip such a step).

`pool_step(state, lq, gt)`: Real-ESRGAN's `_dequeue_and_enqueue` pool of `size` pairs
(default 10 x batch, `degradation.queue_size`). While filling, the batch is written at `ptr`
and passed through unchanged; once full, the pool is permuted, its first B pairs are
returned and replaced by the incoming batch. The state is a plain dict pytree (arrays, the
fill pointer and the raw PRNG key of the permutations), so a checkpoint can save it and a
restored run continues bit-exactly. On a mesh (Auto axes, as sharding.make_mesh), put the
pool's pairs on the batch sharding with `place_pool`; results equal the single-device ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def replace_nan(lq: jax.Array, gt: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(lq, gt, n_nan): samples whose LQ has a NaN replaced by the next valid sample."""
    b = lq.shape[0]
    bad = jnp.isnan(lq.reshape(b, -1)).any(axis=1)
    n_bad = bad.sum().astype(jnp.int32)
    order = (jnp.arange(b)[:, None] + jnp.arange(b)[None, :]) % b  # row i: i, i+1, ... cyclically
    first_ok = jnp.argmax(~bad[order], axis=1)  # 0 when no valid sample: keep itself
    src = order[jnp.arange(b), first_ok]
    return jnp.nan_to_num(lq[src], nan=0.0), gt[src], n_bad


def pool_size(cfg, batch_size: int) -> int:
    size = int(cfg.degradation.queue_size or 10 * batch_size)
    if size % batch_size:
        raise ValueError(f"degradation.queue_size {size} must be divisible by the batch size {batch_size}")
    return size


def init_pool(size: int, lq_shape, gt_shape, seed: int = 0, dtype=jnp.float32, *, key=None) -> dict:
    """Empty pool state for pairs of per-sample shapes lq_shape / gt_shape (h, w, c); the
    permutations come from `key` (a typed PRNG key) when given, else from key(seed)."""
    key = jax.random.key(seed) if key is None else key
    return dict(lq=jnp.zeros((size, *lq_shape), dtype), gt=jnp.zeros((size, *gt_shape), dtype),
                ptr=jnp.zeros((), jnp.int32), key=jax.random.key_data(key))


def place_pool(state: dict, rows_sharding, replicated_sharding) -> dict:
    """Put the pool's pairs on the batch sharding (rows) and ptr/key replicated."""
    return dict(lq=jax.device_put(state["lq"], rows_sharding), gt=jax.device_put(state["gt"], rows_sharding),
                ptr=jax.device_put(state["ptr"], replicated_sharding),
                key=jax.device_put(state["key"], replicated_sharding))


def pool_step(state: dict, lq: jax.Array, gt: jax.Array) -> tuple[dict, jax.Array, jax.Array]:
    """One `_dequeue_and_enqueue`: (new state, lq out, gt out). Pure; jit it (donate `state`)."""
    size, b = state["lq"].shape[0], lq.shape[0]
    if size % b:
        raise ValueError(f"pool size {size} must be divisible by the batch size {b}")
    lq, gt = lq.astype(state["lq"].dtype), gt.astype(state["gt"].dtype)
    ptr = state["ptr"]

    def fill(_):
        put = lambda q, x: jax.lax.dynamic_update_slice_in_dim(q, x, ptr, axis=0)  # noqa: E731
        return dict(lq=put(state["lq"], lq), gt=put(state["gt"], gt), ptr=ptr + b, key=state["key"]), lq, gt

    def swap(_):
        key, sub = jax.random.split(jax.random.wrap_key_data(state["key"]))
        perm = jax.random.permutation(sub, size)
        ql, qg = state["lq"][perm], state["gt"][perm]
        new = dict(lq=ql.at[:b].set(lq), gt=qg.at[:b].set(gt), ptr=ptr, key=jax.random.key_data(key))
        return new, ql[:b], qg[:b]

    return jax.lax.cond(ptr >= size, swap, fill, None)
