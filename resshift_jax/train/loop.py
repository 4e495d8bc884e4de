"""The training loop: data -> jitted step -> metrics (JSON lines + TensorBoard) -> checkpoints ->
EMA validation and export. Resumes automatically from WORKDIR/checkpoints.

`train()` is the loop; its parts have names: `restore_or_init` (resume), `MetricsAccumulator`
(device-side sums between log steps, one fetch per log step), `BadStepGuard` (the NaN/Inf streak
limit, checked every step), `Schedule` (which step logs, saves, validates), `validate_and_export`
and `finish` (the last checkpoint and the export).

WORKDIR layout: metrics.jsonl, tb/ (event files), checkpoints/<step>/ (Orbax),
ema/ema_model_<step>.safetensors (official key layout), images/val_<step>.png.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from resshift_jax import sharding as shd
from resshift_jax.checkpoint import Checkpointer
from resshift_jax.train.input import TrainInput
from resshift_jax.train.networks import use_lpips
from resshift_jax.train.trainer import Trainer
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


# ------------------------------------------------------------------------------ loop parts
def _host(x):
    return np.asarray(jax.device_get(x))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Which completed step (`done`, 1-based) logs, saves and validates; the run ends at `end`."""
    start: int
    end: int
    log_every: int
    save_every: int
    val_every: int  # 0: never

    @classmethod
    def from_config(cls, tc, start: int, stop_at: int | None) -> "Schedule":
        end = int(tc.iterations) if stop_at is None else min(int(stop_at), int(tc.iterations))
        return cls(start, end, max(1, int(tc.log_freq[0])), int(tc.save_freq), int(tc.val_freq or 0))

    def log(self, done: int) -> bool:
        return done % self.log_every == 0 or done == self.end

    def save(self, done: int) -> bool:
        return done % self.save_every == 0

    def validate(self, done: int) -> bool:
        return bool(self.val_every) and done % self.val_every == 0


class MetricsAccumulator:
    """Sums the step metrics on the device between two log steps and fetches them once per log
    step; times the steps, keeping the first call (compile + one step) out of the step time."""
    SUMMED = ("loss", "lpips", "grad_norm", "mse_sum_t", "count_t", "n_nan", "terms")

    def __init__(self, global_batch: int, *, with_lpips: bool, term_names: tuple = ()):
        self.global_batch, self.with_lpips, self.term_names = global_batch, with_lpips, tuple(term_names)
        self.compile_s = None
        self.compile_logged = False
        self.sums, self.n, self.n_timed = None, 0, 0
        self.t_last = time.perf_counter()

    def restart_clock(self) -> None:
        """Leave the time spent since the last step (validation, export) out of the step time."""
        self.t_last = time.perf_counter()

    def add(self, m: dict) -> None:
        if self.compile_s is None:  # first call: compile + one step
            jax.block_until_ready(m["loss"])
            self.compile_s = time.perf_counter() - self.t_last
            self.restart_clock()
        else:
            self.n_timed += 1
        part = {k: m[k] for k in self.SUMMED}
        self.sums = part if self.sums is None else {k: self.sums[k] + part[k] for k in self.SUMMED}
        self.n += 1

    def record(self, done: int, m: dict, *, corrupt_records: int) -> dict:
        """The log record of the steps since the last one (`m`: this step's metrics), then reset."""
        h = {k: _host(v) for k, v in self.sums.items()}
        last = {k: _host(m[k]) for k in ("lr", "bad_steps")}
        dt = (time.perf_counter() - self.t_last) / self.n_timed if self.n_timed else None
        loss_t = [float(s / c) if c > 0 else None for s, c in zip(h["mse_sum_t"], h["count_t"])]
        rec = {"step": done, "loss": float(h["loss"] / self.n), "loss_t": loss_t, "lr": float(last["lr"]),
               "grad_norm": float(h["grad_norm"] / self.n),
               "samples_per_s": self.global_batch / dt if dt else None, "step_time": dt,
               "bad_steps": int(last["bad_steps"]), "nan_samples": int(h["n_nan"]),
               "corrupt_records": int(corrupt_records)}
        if self.with_lpips:
            rec["lpips"] = float(h["lpips"] / self.n)
        for name, v in zip(self.term_names, h["terms"]):  # the objective's named terms (distillation)
            rec[f"loss_{name}"] = float(v / self.n)
        if not self.compile_logged:  # the first record of this run (fresh or resumed)
            rec["compile_time"] = self.compile_s
            self.compile_logged = True
        self.sums, self.n, self.n_timed = None, 0, 0
        self.restart_clock()
        return rec


class BadStepGuard:
    """Stops the run when more than `limit` consecutive steps had a NaN/Inf loss or gradient.
    Checked every step, one step behind: the streak after step k is fetched once step k+1 has
    been dispatched, so the host never waits for the step it just launched."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.pending = None

    def push(self, done: int, bad_streak) -> None:
        previous, self.pending = self.pending, (done, bad_streak)
        if previous is not None:
            self._check(*previous)

    def flush(self) -> None:
        if self.pending is not None:
            self._check(*self.pending)
            self.pending = None

    def _check(self, done: int, bad_streak) -> None:
        streak = int(_host(bad_streak))
        if streak > self.limit:
            raise BadStepsError(
                f"{streak} consecutive steps had NaN/Inf loss or gradients (limit "
                f"train.max_bad_steps={self.limit}); stopping at step {done}. "
                "Lower train.lr, turn on train.grad_clip, or check the data.")


class Progress:
    """A tqdm bar with the last logged loss and lr (lead process, when asked for); else nothing."""

    def __init__(self, enabled: bool, sched: Schedule):
        self.bar = tqdm(total=sched.end, initial=sched.start, desc="train", dynamic_ncols=True) if enabled else None

    def update(self, record: dict | None) -> None:
        if self.bar is None:
            return
        if record is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.2e}")
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def make_checkpointer(workdir: pathlib.Path, tc) -> Checkpointer:
    return Checkpointer(workdir / "checkpoints", save_interval_steps=int(tc.save_freq),
                        max_to_keep=int(tc.keep_checkpoints) or None, async_save=True)


def restore_or_init(trainer: Trainer, ckpt: Checkpointer, loader):
    """The latest checkpoint's train state (and the loader's iterator and pair pool), or a new
    initial state when there is none."""
    if ckpt.latest_step() is None:
        return trainer.init_state()
    state, data_state, _, pool = ckpt.restore(trainer.abstract_state, trainer.state_shardings,
                                              abstract_pool=loader.abstract_pool,
                                              pool_shardings=loader.pool_shardings)
    if loader.abstract_pool is not None and pool is None:
        raise ValueError(f"checkpoint {ckpt.directory}/{ckpt.latest_step()} has no training-pair pool")
    loader.set_state(data_state, pool)
    log.info("resumed from %s at step %d", ckpt.directory, int(_host(state.step)))
    return state


def save(ckpt: Checkpointer, done: int, state, loader, cfg, *, force: bool = False) -> None:
    ckpt.save(done, state, data_state=loader.get_state(), config=cfg, pool=loader.pool, force=force)


def validate_and_export(trainer: Trainer, cfg, state, done: int, workdir: pathlib.Path, writer,
                        validator):
    """EMA validation (single-process runs) + EMA export; returns the (lazily built) validator."""
    if jax.process_count() > 1:
        log.warning("validation runs in single-process training only; skipped")
        return validator
    validator = validator or Validator(trainer, cfg)
    writer.write({"step": done, **validator(state, done, workdir / "images")})
    export_ema(trainer, state, workdir / "ema" / f"ema_model_{done}.safetensors")
    return validator


def finish(trainer: Trainer, ckpt: Checkpointer, loader, cfg, state, sched: Schedule, workdir) -> None:
    """The last step's checkpoint (if not saved yet) and, at `train.iterations`, the EMA export."""
    if sched.end > sched.start and ckpt.latest_step() != sched.end:
        save(ckpt, sched.end, state, loader, cfg, force=True)
    if sched.end > sched.start and sched.end == int(cfg.train.iterations):
        export_ema(trainer, state, workdir / "ema" / f"ema_model_{sched.end}.safetensors")


# ------------------------------------------------------------------------------ loop
def train(cfg, workdir, *, mesh=None, progress: bool = True, stop_at: int | None = None,
          validate: bool = True, trainer: Trainer | None = None, loader=None) -> dict:
    """Train until `train.iterations` (or `stop_at`); returns the last logged record.
    `trainer`, `loader`: built from `cfg` when not given (tests pass their own)."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lead = jax.process_index() == 0
    tc = cfg.train
    mesh = mesh or (trainer.mesh if trainer is not None else shd.mesh_from_config(cfg))
    trainer = trainer or Trainer(cfg, mesh)
    loader = loader or make_loader(cfg, mesh)
    ckpt = make_checkpointer(workdir, tc)
    state = restore_or_init(trainer, ckpt, loader)
    sched = Schedule.from_config(tc, int(_host(state.step)), stop_at)
    if lead:
        (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    writer = MetricsWriter(workdir, enabled=lead, resume_step=sched.start)
    guard = BadStepGuard(int(tc.max_bad_steps))
    validator, record = None, {}
    bar = Progress(progress and lead, sched)
    acc = MetricsAccumulator(int(tc.batch[0]), with_lpips=use_lpips(cfg), term_names=trainer.term_names)
    try:
        for step in range(sched.start, sched.end):
            done = step + 1
            batch, n_nan = loader.next_batch(step)
            state, m = trainer.train_step(state, batch)
            acc.add({**m, "n_nan": n_nan})
            guard.push(done, m["bad_streak"])
            logged = None
            if sched.log(done):
                record = logged = acc.record(done, m, corrupt_records=loader.n_corrupt)
                writer.write(record)
            bar.update(logged)
            if sched.save(done):
                save(ckpt, done, state, loader, cfg)
            if validate and sched.validate(done) and "val" in cfg.data:
                validator = validate_and_export(trainer, cfg, state, done, workdir, writer, validator)
                acc.restart_clock()
        guard.flush()
        finish(trainer, ckpt, loader, cfg, state, sched, workdir)
    finally:  # also on BadStepsError: pending checkpoint writes end, event files are closed
        ckpt.close()
        writer.close()
        bar.close()
    return record
