"""The training loop: data -> jitted step -> metrics (JSON lines + TensorBoard) -> checkpoints ->
EMA validation and export. Resumes automatically from WORKDIR/checkpoints.

WORKDIR layout: metrics.jsonl, tb/ (event files), checkpoints/<step>/ (Orbax),
ema/ema_model_<step>.safetensors (official key layout), images/val_<step>.png.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

import jax
import numpy as np
from flax import nnx

from resshift_jax import sharding as shd
from resshift_jax.checkpoint import Checkpointer
from resshift_jax.train.input import TrainInput
from resshift_jax.train.step import Trainer
from resshift_jax.train.validation import Validator

log = logging.getLogger(__name__)


class BadStepsError(RuntimeError):
    pass


# ------------------------------------------------------------------------------ logging
class MetricsWriter:
    """One JSON object per logged step in WORKDIR/metrics.jsonl, the same scalars to TensorBoard."""

    def __init__(self, workdir: pathlib.Path, *, enabled: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.path = workdir / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():  # drop lines the resumed run will write again
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        try:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(str(workdir / "tb"), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:
            log.warning("tensorboardX is not installed: no TensorBoard event files")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record["step"]
            for k, v in record.items():
                if k == "step" or v is None:
                    continue
                if isinstance(v, (list, tuple)):
                    for i, x in enumerate(v):
                        if x is not None:
                            self.tb.add_scalar(f"{k}/t{i}", x, step)
                elif isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ------------------------------------------------------------------------------ data
def make_loader(cfg, mesh) -> TrainInput:
    """The grain pipeline (this process's rows of each global batch) + device degradation."""
    return TrainInput(cfg, mesh)


# ------------------------------------------------------------------------------ EMA
def gather_to_host(tree):
    """Full numpy copies of (possibly cross-process sharded) arrays, on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(np.asarray, tree)


def ema_module(trainer: Trainer, ema_params):
    return nnx.merge(trainer.nets.unet_def, gather_to_host(ema_params),
                     jax.tree.map(np.asarray, trainer.nets.unet_rest))


def export_ema(trainer: Trainer, state, path) -> pathlib.Path | None:
    """EMA weights -> safetensors in the official key layout (loadable by infer.py)."""
    from resshift_jax import weights
    module = ema_module(trainer, state.ema_params)
    if jax.process_index() != 0:
        return None
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights.save_checkpoint(module, path)
    return path


# ------------------------------------------------------------------------------ loop
def _host(x):
    return np.asarray(jax.device_get(x))


def train(cfg, workdir, *, mesh=None, progress: bool = True, stop_at: int | None = None,
          validate: bool = True) -> dict:
    """Train until `train.iterations` (or `stop_at`); returns the last logged record."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lead = jax.process_index() == 0
    mesh = mesh or shd.mesh_from_config(cfg)
    tc = cfg.train
    trainer = Trainer(cfg, mesh)
    ckpt = Checkpointer(workdir / "checkpoints", save_interval_steps=int(tc.save_freq),
                        max_to_keep=int(tc.get("keep_checkpoints", 3)) or None, async_save=True)
    loader = make_loader(cfg, mesh)
    if ckpt.latest_step() is not None:
        state, data_state, _, pool = ckpt.restore(trainer.abstract_state, trainer.state_shardings,
                                                  abstract_pool=loader.abstract_pool,
                                                  pool_shardings=loader.pool_shardings)
        if loader.abstract_pool is not None and pool is None:
            raise ValueError(f"checkpoint {ckpt.directory}/{ckpt.latest_step()} has no training-pair pool")
        loader.set_state(data_state, pool)
        log.info("resumed from %s at step %d", ckpt.directory, int(state.step))
    else:
        state = trainer.init_state()
    start = int(_host(state.step))
    if lead:
        (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    writer = MetricsWriter(workdir, enabled=lead, resume_step=start)
    end = int(tc.iterations) if stop_at is None else min(int(stop_at), int(tc.iterations))
    log_every = max(1, int(tc.log_freq[0]))
    val_every = int(tc.get("val_freq", 0) or 0)
    gb = int(tc.batch[0])
    validator = None
    bar = None
    if progress and lead:
        from tqdm import tqdm
        bar = tqdm(total=end, initial=start, desc="train", dynamic_ncols=True)

    acc = None
    n_acc_steps, n_timed, t_last, compile_s, record = 0, 0, time.perf_counter(), None, {}
    for step in range(start, end):
        t0 = time.perf_counter()
        batch, n_nan = loader.next_batch(step)
        state, m = trainer.train_step(state, batch)
        timed = True
        if compile_s is None:  # first call: compile + one step, kept out of the step timing
            jax.block_until_ready(m["loss"])
            compile_s = time.perf_counter() - t0
            t_last, timed = time.perf_counter(), False
        keys = ("loss", "lpips", "grad_norm", "mse_sum_t", "count_t")
        m = {**m, "n_nan": n_nan}
        keys += ("n_nan",)
        acc = {k: m[k] for k in keys} if acc is None else {k: acc[k] + m[k] for k in keys}
        n_acc_steps += 1
        n_timed += int(timed)
        done = step + 1
        if done % log_every == 0 or done == end:
            h = {k: _host(v) for k, v in acc.items()}
            mh = {k: _host(m[k]) for k in ("lr", "bad_steps", "bad_streak")}
            now = time.perf_counter()
            dt = (now - t_last) / n_timed if n_timed else None
            loss_t = [float(s / c) if c > 0 else None for s, c in zip(h["mse_sum_t"], h["count_t"])]
            record = {"step": done, "loss": float(h["loss"] / n_acc_steps),
                      "loss_t": loss_t, "lr": float(mh["lr"]),
                      "grad_norm": float(h["grad_norm"] / n_acc_steps),
                      "samples_per_s": gb / dt if dt else None, "step_time": dt,
                      "bad_steps": int(mh["bad_steps"]), "nan_samples": int(h["n_nan"]),
                      "corrupt_records": int(loader.n_corrupt)}
            if float(tc.loss_coef[1] if len(tc.loss_coef) > 1 else 0) > 0:
                record["lpips"] = float(h["lpips"] / n_acc_steps)
            if done == log_every or (start and done - start <= log_every):
                record["compile_time"] = compile_s
            writer.write(record)
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.2e}")
            if int(mh["bad_streak"]) > int(tc.get("max_bad_steps", 20)):
                raise BadStepsError(
                    f"{int(mh['bad_streak'])} consecutive steps had NaN/Inf loss or gradients (limit "
                    f"train.max_bad_steps={tc.get('max_bad_steps', 20)}); stopping at step {done}. "
                    "Lower train.lr, turn on train.grad_clip, or check the data.")
            acc, n_acc_steps, n_timed = None, 0, 0
            t_last = time.perf_counter()
        if bar is not None:
            bar.update(1)
        if done % int(tc.save_freq) == 0:
            ckpt.save(done, state, data_state=loader.get_state(), config=cfg, pool=loader.pool)
        if validate and val_every and done % val_every == 0 and "val" in cfg.data:
            if jax.process_count() > 1:
                log.warning("validation runs in single-process training only; skipped")
            else:
                validator = validator or Validator(trainer, cfg)
                vrec = {"step": done, **validator(state, done, workdir / "images")}
                writer.write(vrec)
                export_ema(trainer, state, workdir / "ema" / f"ema_model_{done}.safetensors")
            t_last = time.perf_counter()
    if end > start and ckpt.latest_step() != end:
        ckpt.save(end, state, data_state=loader.get_state(), config=cfg, pool=loader.pool, force=True)
    if end > start and end == int(tc.iterations):
        export_ema(trainer, state, workdir / "ema" / f"ema_model_{end}.safetensors")
    ckpt.close()
    writer.close()
    if bar is not None:
        bar.close()
    return record
