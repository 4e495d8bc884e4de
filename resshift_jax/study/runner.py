"""w_t study runner: one training run per (scheme, seed), evaluated on a paired validation set.

    python -m resshift_jax.study --config configs/study_wt.py --workdir DIR [--config.study.seeds='(0,1)']

WORKDIR/runs/<label>__seed<k>/ is an ordinary trainer workdir (metrics.jsonl, checkpoints/) plus
eval.csv (per image) and done.json (the run's results row; its presence = finished, skipped on
restart; a run without it resumes from its own checkpoints). The study writes results.csv (one row
per run, no timings: byte-identical when the study is repeated on the same machine), results.md
(mean ± sample std over seeds), loss_t.png, metrics.png, timings.json and study.log.

Seeds: `train.seed` <- each seed of `study.seeds` (UNet init, t and noise draws, and the VQ init when
`autoencoder.ckpt_path` is empty); `study.data_seed` (the same for every run) -> which image, crop
and flip each step sees; `study.eval_seed` (same for every run) -> the sampler noise of each
validation image, keyed by its name as infer.py does (resshift_jax.evaluation), in float32.

This module trains and evaluates (runner); report.py writes the tables and plots; specs.py
holds the arms and the per-run configs.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resshift_jax import compile_cache
from resshift_jax import evaluation as ev
from resshift_jax import sharding as shd
from resshift_jax import weights
from resshift_jax.checkpoint import Checkpointer
from resshift_jax.config import load_config
from resshift_jax.models.first_stage import kind_of
from resshift_jax.pipeline import SRPipeline
from resshift_jax.study import report
from resshift_jax.study.specs import run_config, run_name, scheme_specs
from resshift_jax.train.loop import train
from resshift_jax.train.trainer import Trainer
from resshift_jax.train.validation import float32_graphdefs

RESULT_METRICS = ev.ALL_METRICS


# ----------------------------------------------------------------------------- training
def train_run(rc, run_dir: pathlib.Path) -> None:
    """Train (or resume) one run through the project trainer."""
    train(rc, run_dir, progress=False, validate=False)  # rc.train.data_seed fixes the data order


# ----------------------------------------------------------------------------- evaluation
def eval_mesh(batch: int):
    """A 'data' mesh over the most devices that divide the eval batch (a replicated batch would be
    computed once per device)."""
    devs = jax.devices()
    d = max(k for k in range(1, min(len(devs), batch) + 1) if batch % k == 0)
    return jax.make_mesh((d,), ("data",), devices=devs[:d], axis_types=(jax.sharding.AxisType.Auto,))


def ema_networks(rc, run_dir: pathlib.Path, reuse: dict | None = None):
    """(UNet with the run's final EMA params, the frozen VQ the run trained with), both computing in
    float32 as the reference's validation.

    Fast path: the trainer's EMA export `ema/ema_model_<iterations>.safetensors` loaded into a
    UNet built once per study (`reuse`), and the VQ from `autoencoder.ckpt_path` (also once).
    Otherwise (no export, or a random VQ): the trainer's networks + its last Orbax checkpoint."""
    reuse = {} if reuse is None else reuse
    iters = int(rc.train.iterations)
    export = run_dir / "ema" / f"ema_model_{iters}.safetensors"
    vq_ckpt = str(rc.autoencoder.ckpt_path or "")
    if export.is_file() and (vq_ckpt or kind_of(rc) == "space_to_depth"):
        if "unet" not in reuse:
            reuse["unet"] = weights.load_unet(export, rc, dtype=jnp.float32)
        else:
            weights.load_into(reuse["unet"], export)
        if "vq" not in reuse:
            reuse["vq"] = weights.load_first_stage(rc, dtype=jnp.float32)  # VQ from ckpt_path, or space_to_depth
        return reuse["unet"], reuse["vq"]
    trainer = Trainer(rc, shd.mesh_from_config(rc))
    ckpt = Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        step = ckpt.latest_step()
        if step != iters:
            raise RuntimeError(f"{run_dir}: last checkpoint is step {step}, expected train.iterations={iters}")
        state, _, _ = ckpt.restore(trainer.abstract_state, trainer.state_shardings)
    finally:
        ckpt.close()
    host = lambda t: jax.tree.map(np.asarray, t)  # noqa: E731
    unet_def, vq_def = float32_graphdefs(rc)
    return (nnx.merge(unet_def, host(state.ema_params), host(trainer.nets.unet_rest)),
            nnx.merge(vq_def, host(trainer.nets.vq_state)))


class Evaluator:
    """Super-resolves the validation pairs (evaluation.val_pairs, `study.val_crop`) with the run's
    EMA networks and the study's seed, and scores them (evaluation.score_pairs)."""

    def __init__(self, study_cfg, rc):
        self.metrics = ev.parse_metrics(list(study_cfg.metrics))
        self.pairs = ev.val_pairs(rc, crop=int(study_cfg.val_crop or 0))
        self.batch = max(1, min(int(rc.train.batch[1]), len(self.pairs)))
        self.mesh = eval_mesh(self.batch)
        self.eval_seed = int(study_cfg.eval_seed)
        self.tiles = ev.tile_settings(rc)
        self.lpips = None
        self.reuse = {}  # modules built once per study (see ema_networks)
        if "lpips" in self.metrics:
            bb, heads = study_cfg.lpips_backbone, study_cfg.lpips_heads
            files = ev.lpips_weight_files(bb, heads)
            if files is None:
                raise FileNotFoundError(
                    f"study.metrics has 'lpips' but study.lpips_backbone={bb!r} / study.lpips_heads={heads!r} "
                    "are not files (torchvision backbone + lpips v0.1 heads); drop 'lpips' or set them")
            self.lpips = ev.LpipsScorer(weights.load_lpips(study_cfg.lpips_net, *map(str, files)))

    def __call__(self, rc, run_dir) -> tuple[dict, list[dict]]:
        unet, vq = ema_networks(rc, run_dir, self.reuse)
        pipe = SRPipeline(unet, vq, rc, mesh=self.mesh)
        srs = ev.super_resolve(pipe, self.pairs, seed=self.eval_seed, bs=self.batch, **self.tiles)
        rows = ev.score_pairs(srs, self.pairs, self.metrics, lpips=self.lpips)
        summary = {m: float(np.mean([r[m] for r in rows], dtype=np.float64)) for m in self.metrics}
        return summary, rows


# ----------------------------------------------------------------------------- the study
def run_study(cfg, workdir, *, log=print) -> list[dict]:
    """Train + evaluate every (scheme, seed) not finished yet, then write the tables and plots."""
    cfg = load_config(cfg)
    workdir = pathlib.Path(workdir).absolute()
    (workdir / "runs").mkdir(parents=True, exist_ok=True)
    cache = compile_cache.enable(cfg.study.compile_cache_dir or workdir / "jax_cache")
    logf = open(workdir / "study.log", "a")

    def say(msg):
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        logf.write(line + "\n")
        logf.flush()
        log(line)

    specs = scheme_specs(cfg)
    seeds = [int(k) for k in cfg.study.seeds]
    metrics = list(cfg.study.metrics)
    timings = {"runs": {}, "compile_cache_dir": str(cache)}
    counts0 = compile_cache.counts()
    t_study = time.perf_counter()
    evaluator, rows = None, []
    try:
        say(f"study: {len(specs)} schemes x {len(seeds)} seeds -> {workdir}")
        for spec in specs:
            for seed in seeds:
                name = run_name(spec["label"], seed)
                run_dir = workdir / "runs" / name
                done = run_dir / "done.json"
                if done.is_file():
                    rows.append(json.loads(done.read_text()))
                    timings["runs"][name] = {"skipped": True}
                    say(f"skip {name}: done.json present")
                    continue
                rc = run_config(cfg, spec, seed)
                say(f"train {name}")
                t0 = time.perf_counter()
                train_run(rc, run_dir)
                t1 = time.perf_counter()
                evaluator = evaluator or Evaluator(cfg.study, rc)
                summary, per_image = evaluator(rc, run_dir)
                t2 = time.perf_counter()
                report.write_results_csv(run_dir / "eval.csv", per_image)
                row = report.run_row(spec, seed, rc, run_dir, summary, cfg.study.loss_tail)
                row["n_val"] = len(per_image)
                (run_dir / "done.json").write_text(json.dumps(row, indent=1) + "\n")
                rows.append(row)
                timings["runs"][name] = {"skipped": False, "train_s": t1 - t0, "eval_s": t2 - t1}
                say(f"done {name}: " + ", ".join(f"{m}={row[m]:.4f}" for m in metrics) +
                    f" (train {t1 - t0:.1f} s, eval {t2 - t1:.1f} s)")
        report.write_results_csv(workdir / "results.csv", rows)
        report.write_results_md(workdir / "results.md", rows, specs, metrics, cfg)
        report.plot_loss_t(workdir / "loss_t.png", workdir, specs, seeds)
        report.plot_metrics(workdir / "metrics.png", rows, specs, metrics)
        timings["total_s"] = time.perf_counter() - t_study
        timings["compile_cache"] = {k: v - counts0[k] for k, v in compile_cache.counts().items()}
        (workdir / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
        say(f"wrote results.csv, results.md, loss_t.png, metrics.png ({timings['total_s']:.1f} s; "
            f"compile cache hits/misses {timings['compile_cache']['hits']}/{timings['compile_cache']['misses']})")
    finally:
        logf.close()
    return rows


def main(argv):
    del argv
    from absl import flags, logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every checkpoint at INFO
    run_study(flags.FLAGS.config, flags.FLAGS.workdir)
