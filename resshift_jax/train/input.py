"""The trainer's input: the grain pipeline of `resshift_jax.data` (host: decode, crop, flip,
degradation parameters) and its device side (Real-ESRGAN degradation or MATLAB bicubic, NaN
replacement, training-pair pool) -> a global batch {'hr': gt, 'lq': lq} in [-1, 1].

Sharding over processes is by *rows*: element k of the global stream (epoch k // n, the
(seed, epoch) permutation's entry) goes to row k % global_batch of step k // global_batch, and
each process decodes only the rows of the batch-sharded array it owns. So the global batch of a
step does not depend on the process count (N processes == 1 process), and every process reads
only its share. All randomness of an element comes from (seed, epoch, record index), so the
iterator state (grain's, JSON) plus the pool state (a pytree) make a resume exact.
"""

from __future__ import annotations


import grain
import jax
import jax.numpy as jnp
import numpy as np

from resshift_jax import sharding as shd
from resshift_jax.data import pipeline as dpipe
from resshift_jax.data.params import DegradationSpec
from resshift_jax.paths import resolve_project_path

HOST_ONLY = ("index", "epoch", "n_corrupt")


def _resolved_train_cfg(cfg_train):
    """An unlocked copy of `data.train` with folder/list paths resolved against the project root."""
    import ml_collections
    d = ml_collections.ConfigDict(cfg_train.to_dict())
    if d.dir_paths:
        d.dir_paths = tuple(str(resolve_project_path(p)) for p in d.dir_paths)
    if d.txt_file_path:
        d.txt_file_path = tuple(str(resolve_project_path(p)) for p in d.txt_file_path)
    return d


class _StreamIndex:
    """Local element i -> global stream position of this process's row."""

    def __init__(self, global_batch: int, start: int, local_batch: int):
        self.gb, self.start, self.lb = global_batch, start, local_batch

    def __call__(self, i):
        return (i // self.lb) * self.gb + self.start + i % self.lb


class _EpochPos:
    def __init__(self, n: int):
        self.n = n

    def __call__(self, k, pos):
        return (k // self.n, pos)


class _Lookup:
    def __init__(self, ds):
        self.ds = ds

    def __call__(self, k):
        return self.ds[int(k)]


def build_row_dataset(cfg, global_batch: int, rows: slice, seed: int, *, num_workers: int | None = None,
                      source=None):
    """grain IterDataset of this process's rows of each global batch (host dicts of NumPy);
    checkpointable (`get_state`/`set_state` of its iterator). `source`: the records (default:
    the one `data.train` names, see data.pipeline.make_source)."""
    train = _resolved_train_cfg(cfg.data.train)
    source = dpipe.make_source(train) if source is None else source
    n = len(source)
    if n == 0:
        raise FileNotFoundError(f"no training images in data.train ({train.get('dir_paths', ())} "
                                f"{train.get('txt_file_path', ())} {train.get('array_record_dir', '')} "
                                f"{train.get('tfds_name', '')})")
    stream = grain.MapDataset.range(n).shuffle(seed=seed).repeat(None).map_with_index(_EpochPos(n))
    lb = rows.stop - rows.start
    ds = grain.MapDataset.range(2 ** 62).map(_StreamIndex(global_batch, rows.start, lb)).map(_Lookup(stream))
    ds = ds.batch(lb, drop_remainder=True).map(
        dpipe.LoadBatch(source, np.arange(n), train, DegradationSpec.from_config(cfg), seed))
    return dpipe.to_iter_dataset(ds, train, num_workers)


# Device-side data streams: key(data_seed) folded with a tag. The tags are >= 2**31, so that no
# data key can equal a train-state step key fold_in(key(train.seed), step) (steps < 2**31; in
# jax's partitionable threefry split(k)[i] == fold_in(k, i), so the pool's first permutation key
# split(key(seed))[1] was step 1's noise key when data_seed == train.seed, the default).
STREAM_TAGS = {"pool": 0x8000_0001, "degradation": 0x8000_0002}


def data_stream_keys(seed: int) -> dict:
    """{'pool': the training-pair pool's permutation key, 'degradation': the root of the
    per-step degradation noise (folded with the step)}, both apart from the train state's keys."""
    root = jax.random.key(int(seed))
    return {name: jax.random.fold_in(root, tag) for name, tag in STREAM_TAGS.items()}


class TrainInput:
    """`next_batch(step)` -> global {'hr', 'lq'} arrays on the mesh; `get_state`/`set_state` for the
    grain iterator; `pool` (pytree or None) checkpointed with the train state."""

    def __init__(self, cfg, mesh, *, use_pool: bool | None = None):
        self.cfg, self.mesh = cfg, mesh
        gt_data, gt_deg = int(cfg.data.train.gt_size), int(cfg.degradation.gt_size)
        if gt_data != gt_deg:
            raise ValueError(f"data.train.gt_size={gt_data} but degradation.gt_size={gt_deg}: the device "
                             "degradation works on the HR crops the loader makes; set both to the same size")
        self.gb = int(cfg.train.batch[0])
        # data order, crops, flips and degradations; defaults to train.seed (studies pin it apart)
        self.seed = int(cfg.train.data_seed)
        self.rows = shd.local_batch_slice(mesh, self.gb)
        self.ds = build_row_dataset(cfg, self.gb, self.rows, self.seed)
        self.it = iter(self.ds)
        use_pool = bool(cfg.degradation.use_queue) if use_pool is None else use_pool
        inner, init_pool = dpipe.make_train_pairs_fn(cfg, use_pool=use_pool)
        bs4, rep = shd.batch_sharding(mesh, 4), shd.replicated(mesh)
        keys = data_stream_keys(self.seed)
        pool_abs = jax.eval_shape(lambda: init_pool(self.gb, key=keys["pool"]))
        self.pool_shardings = None if pool_abs is None else dict(lq=bs4, gt=bs4, ptr=rep, key=rep)
        self.abstract_pool = pool_abs
        self.pool = None if pool_abs is None else jax.jit(
            lambda: init_pool(self.gb, key=keys["pool"]), out_shardings=self.pool_shardings)()

        def pairs(batch, pool, step):
            key = jax.random.fold_in(keys["degradation"], step)
            lq, gt, pool, n_nan = inner(batch, pool, key)
            return {"hr": gt, "lq": lq}, pool, n_nan

        self._pairs = jax.jit(pairs, in_shardings=(None, self.pool_shardings, rep),
                              out_shardings=({"hr": bs4, "lq": bs4}, self.pool_shardings, rep),
                              donate_argnums=(1,))
        self.n_corrupt = 0

    # ---------------------------------------------------------------- state
    def get_state(self) -> dict:
        return {"type": "grain_rows", "seed": self.seed, "rows": [self.rows.start, self.rows.stop],
                "iterator": self.it.get_state(), "n_corrupt": int(self.n_corrupt)}

    def set_state(self, state: dict, pool=None) -> None:
        if state.get("type") != "grain_rows":
            raise ValueError(f"data iterator state {state} was not written by this trainer's input")
        self.it.set_state(state["iterator"])
        self.n_corrupt = int(state.get("n_corrupt", 0))
        if pool is not None:
            self.pool = pool

    # ---------------------------------------------------------------- batches
    def host_batch(self) -> dict:
        b = next(self.it)
        self.n_corrupt += int(np.sum(b["n_corrupt"]))
        return {k: v for k, v in b.items() if k not in HOST_ONLY}

    def next_batch(self, step: int):
        """-> ({'hr', 'lq'} global arrays, n_nan device scalar)."""
        batch = shd.global_batch_from_local(self.mesh, self.host_batch(), self.gb)
        out, self.pool, n_nan = self._pairs(batch, self.pool, jnp.uint32(step))
        return out, n_nan
