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
validation image (image i uses fold_in(key(eval_seed), i)).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import pathlib
import re
import time

import numpy as np

from resshift_jax.paths import resolve_project_path

RESULT_METRICS = ("psnr", "ssim", "lpips", "niqe")
_DIRECTION = {"psnr": "higher", "ssim": "higher", "lpips": "lower", "niqe": "lower"}


# ----------------------------------------------------------------------------- specs and configs
def scheme_specs(cfg) -> list[dict]:
    """The study's arms as plain dicts (label, weighting, kwargs, t_sampling), checked against the
    registries, filtered by `study.only`."""
    from resshift_jax import schedule
    out = []
    for i, s in enumerate(cfg.study.schemes):
        s = dict(s)
        if "weighting" not in s:
            raise ValueError(f"study.schemes[{i}] = {s} has no 'weighting' "
                             f"(one of {', '.join(sorted(schedule.WEIGHT_SCHEMES))})")
        kwargs = dict(s.get("kwargs") or {})
        label = s.get("label") or s["weighting"]
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", label):
            raise ValueError(f"study.schemes[{i}]: label {label!r} must be a plain folder name")
        spec = dict(label=label, weighting=s["weighting"], kwargs=kwargs,
                    t_sampling=s.get("t_sampling", "uniform"))
        schedule.weight_scheme(spec["weighting"])  # fail before any training on a typo
        if spec["t_sampling"] not in schedule.T_SAMPLERS:
            raise ValueError(f"study.schemes[{i}]: unknown t_sampling {spec['t_sampling']!r}; "
                             f"registered: {', '.join(sorted(schedule.T_SAMPLERS))}")
        out.append(spec)
    labels = [s["label"] for s in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"study.schemes: labels must be unique, got {labels}")
    only = [x.strip() for x in str(cfg.study.get("only", "") or "").split(",") if x.strip()]
    if only:
        missing = sorted(set(only) - set(labels))
        if missing:
            raise ValueError(f"study.only names unknown labels {missing}; labels: {labels}")
        out = [s for s in out if s["label"] in only]
    return out


def run_name(label: str, seed: int) -> str:
    return f"{label}__seed{int(seed)}"


def run_config(cfg, spec: dict, seed: int):
    """The training config of one run: the base config without `study`, the scheme, the seed."""
    from resshift_jax import schedule
    rc = copy.deepcopy(cfg)
    with rc.unlocked():
        if "study" in rc:
            del rc["study"]
        rc.diffusion.loss_weighting = spec["weighting"]
        rc.diffusion.loss_weighting_kwargs = dict(spec["kwargs"])
        rc.diffusion.t_sampling = spec["t_sampling"]
        rc.diffusion.weighted_mse = False  # the scheme decides (weighted_mse=True would mean 'kl')
        rc.train.seed = int(seed)
        rc.train.data_seed = int(cfg.study.data_seed)
        rc.train.val_freq = 0  # evaluation happens once, after training, with the study's own noise
    schedule.from_config(rc.diffusion)  # bad kwargs fail here, before training
    return rc


# ----------------------------------------------------------------------------- compile cache
_CACHE_EVENTS = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}
_cache_counts = {"hits": 0, "misses": 0}
_listener_on = False


def enable_compile_cache(path) -> pathlib.Path:
    """JAX's persistent compilation cache in `path`, for every compile (no size/time threshold), so
    runs whose programs are identical (same scheme, other seed; every evaluation) load the compiled
    executable instead of compiling again. Must run before the process's first compilation."""
    import jax
    global _listener_on
    path = pathlib.Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if not _listener_on:
        def on_event(name, **_):
            if name in _CACHE_EVENTS:
                _cache_counts[_CACHE_EVENTS[name]] += 1
        jax.monitoring.register_event_listener(on_event)
        _listener_on = True
    return path


# ----------------------------------------------------------------------------- training
def train_run(rc, run_dir: pathlib.Path) -> None:
    """Train (or resume) one run through the project trainer."""
    from resshift_jax.train.loop import train
    train(rc, run_dir, progress=False, validate=False)  # rc.train.data_seed fixes the data order


# ----------------------------------------------------------------------------- evaluation
def load_val_pairs(rc, crop: int = 0) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(names, lq, gt) of `data.val` (lq dir + gt dir with the same names), float32 [0, 1]; with
    `crop` > 0 the centred crop x crop of each LQ image and the matching sf·crop GT region."""
    from resshift_jax.imageio import list_images, read_image
    v = rc.data.val
    lq_files, _ = list_images(resolve_project_path(v.dir_path))
    lq_files = sorted(lq_files, key=lambda f: f.name)
    n = int(v.get("length", -1))
    lq_files = lq_files[:n] if n > 0 else lq_files
    if not lq_files:
        raise FileNotFoundError(f"no validation images in data.val.dir_path={v.dir_path}")
    gt_dir = resolve_project_path(v.extra_dir_path)
    missing = [f.name for f in lq_files if not (gt_dir / f.name).is_file()]
    if missing:
        raise FileNotFoundError(f"data.val.extra_dir_path={gt_dir} lacks ground truth for {missing[:5]}")
    sf = int(rc.diffusion.sf)
    names, lqs, gts = [], [], []
    for f in lq_files:
        lq, gt = read_image(f)[0], read_image(gt_dir / f.name)[0]
        if gt.shape[:2] != (lq.shape[0] * sf, lq.shape[1] * sf):
            raise ValueError(f"{gt_dir / f.name} is {gt.shape[1]}x{gt.shape[0]}, expected sf={sf} x "
                             f"the LQ {f} ({lq.shape[1]}x{lq.shape[0]})")
        if crop:
            if min(lq.shape[:2]) < crop:
                raise ValueError(f"study.val_crop={crop} is larger than {f} ({lq.shape[1]}x{lq.shape[0]})")
            top, left = (lq.shape[0] - crop) // 2, (lq.shape[1] - crop) // 2
            lq = lq[top:top + crop, left:left + crop]
            gt = gt[sf * top:sf * (top + crop), sf * left:sf * (left + crop)]
        names.append(f.name)
        lqs.append(np.ascontiguousarray(lq))
        gts.append(np.ascontiguousarray(gt))
    return names, lqs, gts


def eval_mesh(batch: int):
    """A 'data' mesh over the most devices that divide the eval batch (a replicated batch would be
    computed once per device)."""
    import jax
    devs = jax.devices()
    d = max(k for k in range(1, min(len(devs), batch) + 1) if batch % k == 0)
    return jax.make_mesh((d,), ("data",), devices=devs[:d], axis_types=(jax.sharding.AxisType.Auto,))


def ema_networks(rc, run_dir: pathlib.Path, reuse: dict | None = None):
    """(UNet with the run's final EMA params, the frozen VQ the run trained with).

    Fast path: the trainer's EMA export `ema/ema_model_<iterations>.safetensors` loaded into a
    UNet built once per study (`reuse`), and the VQ from `autoencoder.ckpt_path` (also once).
    Otherwise (no export, or a random VQ): the trainer's networks + its last Orbax checkpoint."""
    import jax
    from flax import nnx
    from resshift_jax import weights
    from resshift_jax.train.models import compute_dtype
    reuse = {} if reuse is None else reuse
    iters = int(rc.train.iterations)
    export = run_dir / "ema" / f"ema_model_{iters}.safetensors"
    vq_ckpt = str(rc.autoencoder.get("ckpt_path", "") or "")
    if export.is_file() and vq_ckpt:
        dtype = compute_dtype(rc)
        if "unet" not in reuse:
            reuse["unet"] = weights.load_unet(export, rc, dtype=dtype)
        else:
            weights.load_into(reuse["unet"], export)
        if "vq" not in reuse:
            reuse["vq"] = weights.load_vqgan(resolve_project_path(vq_ckpt), rc, dtype=dtype)
        return reuse["unet"], reuse["vq"]
    from resshift_jax import sharding as shd
    from resshift_jax.checkpoint import Checkpointer
    from resshift_jax.train.loop import ema_module
    from resshift_jax.train.step import Trainer
    trainer = Trainer(rc, shd.mesh_from_config(rc))
    ckpt = Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        step = ckpt.latest_step()
        if step != iters:
            raise RuntimeError(f"{run_dir}: last checkpoint is step {step}, expected train.iterations={iters}")
        state, _, _ = ckpt.restore(trainer.abstract_state, trainer.state_shardings)
    finally:
        ckpt.close()
    unet = ema_module(trainer, state.ema_params)
    vq = nnx.merge(trainer.nets.vq_def, jax.tree.map(np.asarray, trainer.nets.vq_state))
    return unet, vq


class Evaluator:
    """Super-resolves the validation set with SRPipeline (fixed noise per image) and scores it."""

    def __init__(self, study_cfg, rc):
        self.metrics = [m for m in study_cfg.metrics]
        bad = [m for m in self.metrics if m not in RESULT_METRICS]
        if bad:
            raise ValueError(f"study.metrics: unknown {bad}; choose from {RESULT_METRICS}")
        self.names, self.lq, self.gt = load_val_pairs(rc, int(study_cfg.get("val_crop", 0) or 0))
        self.batch = max(1, min(int(rc.train.batch[1]), len(self.lq)))
        self.mesh = eval_mesh(self.batch)
        self.eval_seed = int(study_cfg.eval_seed)
        self.lpips = None
        self.reuse = {}  # modules built once per study (see ema_networks)
        if "lpips" in self.metrics:
            bb, heads = study_cfg.get("lpips_backbone", ""), study_cfg.get("lpips_heads", "")
            bb, heads = (str(resolve_project_path(x)) if x else "" for x in (bb, heads))
            if not (bb and heads and pathlib.Path(bb).is_file() and pathlib.Path(heads).is_file()):
                raise FileNotFoundError(
                    f"study.metrics has 'lpips' but study.lpips_backbone={bb!r} / study.lpips_heads={heads!r} "
                    "are not files (torchvision backbone + lpips v0.1 heads); drop 'lpips' or set them")
            from resshift_jax.evaluate import _LpipsRunner
            from resshift_jax.weights import load_lpips
            self.lpips = _LpipsRunner(load_lpips(study_cfg.get("lpips_net", "vgg"), bb, heads))

    def super_resolve(self, pipe) -> list[np.ndarray]:
        import jax
        key = jax.random.key(self.eval_seed)
        out = []
        n = len(self.lq)
        for i in range(0, n, self.batch):
            idx = list(range(i, min(i + self.batch, n)))
            pad = idx + [idx[-1]] * (self.batch - len(idx))  # one batch shape: one compile
            shapes = {self.lq[j].shape for j in pad}
            if len(shapes) > 1:  # mixed sizes: one image at a time
                for j in idx:
                    k = jax.random.fold_in(key, j)[None]
                    out.append(np.asarray(pipe(self.lq[j][None] * 2 - 1, key=k))[0])
                continue
            keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(np.asarray(pad))
            sr = np.asarray(pipe(np.stack([self.lq[j] for j in pad]) * 2 - 1, key=keys))
            out.extend(sr[: len(idx)])
        return [np.clip(x * 0.5 + 0.5, 0.0, 1.0) for x in out]

    def __call__(self, rc, run_dir) -> tuple[dict, list[dict]]:
        from resshift_jax import metrics as M
        from resshift_jax.pipeline import SRPipeline
        unet, vq = ema_networks(rc, run_dir, self.reuse)
        srs = self.super_resolve(SRPipeline(unet, vq, rc, mesh=self.mesh))
        rows = []
        for name, sr, gt in zip(self.names, srs, self.gt):
            if sr.shape != gt.shape:
                raise ValueError(f"validation {name}: SR is {sr.shape}, ground truth {gt.shape} "
                                 f"(diffusion.sf={rc.diffusion.sf})")
            row = {"name": name}
            if "psnr" in self.metrics:
                row["psnr"] = M.psnr_y(sr, gt)
            if "ssim" in self.metrics:
                row["ssim"] = M.ssim_y(sr, gt)
            if self.lpips is not None:
                row["lpips"] = self.lpips(M.img_as_ubyte(sr), M.img_as_ubyte(gt))
            if "niqe" in self.metrics:
                row["niqe"] = M.niqe_rgb(sr)
            rows.append(row)
        summary = {m: float(np.mean([r[m] for r in rows], dtype=np.float64)) for m in self.metrics}
        return summary, rows


# ----------------------------------------------------------------------------- training curves
def read_loss_curves(run_dir: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, objective loss, x0-MSE per t (n, T) with NaN where t was not drawn) from metrics.jsonl."""
    steps, loss, loss_t = [], [], []
    for ln in (run_dir / "metrics.jsonl").read_text().splitlines():
        if not ln.strip():
            continue
        r = json.loads(ln)
        if "loss_t" not in r:
            continue
        steps.append(int(r["step"]))
        loss.append(float(r["loss"]))
        loss_t.append([np.nan if v is None else float(v) for v in r["loss_t"]])
    if not steps:
        raise RuntimeError(f"{run_dir}/metrics.jsonl has no training records")
    order = np.argsort(steps, kind="stable")
    return (np.asarray(steps)[order], np.asarray(loss, np.float64)[order],
            np.asarray(loss_t, np.float64)[order])


def _nanmean0(x) -> np.ndarray:
    """Mean over axis 0 ignoring NaN (t not drawn); NaN where every entry is NaN, without a warning."""
    x = np.asarray(x, np.float64)
    n = np.isfinite(x).sum(axis=0)
    s = np.where(np.isfinite(x), x, 0.0).sum(axis=0)
    return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def run_row(spec, seed, rc, run_dir, summary, tail: float) -> dict:
    steps, loss, loss_t = read_loss_curves(run_dir)
    k0 = min(len(steps) - 1, int(math.floor(len(steps) * (1.0 - float(tail)))))
    mse_t = _nanmean0(loss_t[k0:])
    row = {"run": run_name(spec["label"], seed), "scheme": spec["label"], "weighting": spec["weighting"],
           "kwargs": json.dumps(spec["kwargs"], sort_keys=True), "t_sampling": spec["t_sampling"],
           "seed": int(seed), "data_seed": int(rc.train.data_seed), "steps": int(steps[-1]),
           "train_loss_final": float(loss[-1]),
           "train_mse": float(np.nanmean(mse_t)) if np.isfinite(mse_t).any() else float("nan")}
    row.update({f"train_mse_t{t}": float(v) for t, v in enumerate(mse_t)})
    row.update({m: float(v) for m, v in summary.items()})
    return row


# ----------------------------------------------------------------------------- outputs
def _fmt(v) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def write_results_csv(path, rows: list[dict]) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_fmt(r[c]) if c in r else "" for c in cols])
    pathlib.Path(path).write_text(buf.getvalue())


def _mean_std(vals) -> tuple[float, float]:
    v = np.asarray(vals, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def group_by_scheme(rows, specs) -> list[tuple[dict, list[dict]]]:
    return [(s, [r for r in rows if r["scheme"] == s["label"]]) for s in specs]


def write_results_md(path, rows, specs, metrics, cfg) -> None:
    from resshift_jax import schedule
    groups = group_by_scheme(rows, specs)
    head = ["scheme", "w_t", "t sampling", "seeds"] + [f"{m.upper()} ({_DIRECTION[m]})" for m in metrics] + \
           ["train x0-MSE"]
    lines = [f"# w_t study: {len(rows)} runs, {int(cfg.train.iterations)} steps each", "",
             "Mean ± sample std (ddof=1) over seeds; validation: "
             f"`{cfg.data.val.dir_path}` ({rows[0].get('n_val', '?')} images), EMA weights. "
             "train x0-MSE: unweighted latent MSE averaged over t and the last "
             f"{int(round(100 * float(cfg.study.loss_tail)))}% of the logged steps (comparable across schemes).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (len(metrics) + 1)]
    for s, rs in groups:
        if not rs:
            continue
        kw = ", ".join(f"{k}={v}" for k, v in sorted(s["kwargs"].items()))
        cells = [s["label"], s["weighting"] + (f"({kw})" if kw else ""), s["t_sampling"],
                 ",".join(str(r["seed"]) for r in rs)]
        for m in list(metrics) + ["train_mse"]:
            mu, sd = _mean_std([r[m] for r in rs])
            d = 4 if m in ("ssim", "lpips", "train_mse") else 3
            cells.append(f"{mu:.{d}f} ± {sd:.{d}f}")
        lines.append("| " + " | ".join(cells) + " |")
    # the per-t weights the schemes put on the objective (w_t / (T p_t)), for reading the table
    T = None
    wlines = []
    for s, rs in groups:
        rc = run_config(cfg, s, 0)
        sch = schedule.from_config(rc.diffusion)
        T = sch.num_timesteps
        eff = sch.loss_weights() * sch.importance_weights()
        p = sch.t_probabilities()
        wlines.append(f"| {s['label']} | " + " | ".join(f"{w:.4g} (p={q:.3f})" for w, q in zip(eff, p)) + " |")
    if T:
        lines += ["", "Effective per-t weight w_t·1/(T p_t) and sampling probability p_t (t = 0 .. T−1):", "",
                  "| scheme | " + " | ".join(f"t={t}" for t in range(T)) + " |", "|---|" + "---:|" * T] + wlines
    pathlib.Path(path).write_text("\n".join(lines) + "\n")


def plot_loss_t(path, workdir, specs, seeds) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(specs)
    cols = min(n, 4)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4 * cols, 3.2 * rows_), squeeze=False, sharey=True)
    for ax, s in zip(axes.flat, specs):
        curves = [read_loss_curves(workdir / "runs" / run_name(s["label"], k)) for k in seeds]
        steps = curves[0][0]
        lt = np.stack([c[2][: len(steps)] for c in curves])  # (seeds, n, T)
        mean = _nanmean0(lt)
        for t in range(mean.shape[1]):
            ax.plot(steps, mean[:, t], label=f"t={t}", lw=1.2)
        ax.set_title(s["label"])
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes[0, 0].set_ylabel("x0-MSE per t (mean over seeds)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def plot_metrics(path, rows, specs, metrics) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = [(s, rs) for s, rs in group_by_scheme(rows, specs) if rs]
    ms = list(metrics) + ["train_mse"]
    fig, axes = plt.subplots(1, len(ms), figsize=(max(3.5, 0.8 * len(groups) + 1.5) * len(ms), 3.4), squeeze=False)
    for ax, m in zip(axes[0], ms):
        stats = [_mean_std([r[m] for r in rs]) for _, rs in groups]
        x = np.arange(len(groups))
        ax.bar(x, [a for a, _ in stats], yerr=[b for _, b in stats], capsize=4, color="tab:blue", alpha=0.8)
        for xi, (_, rs) in zip(x, groups):  # the individual seeds
            ax.plot([xi] * len(rs), [r[m] for r in rs], "k.", ms=4)
        ax.set_xticks(x, [s["label"] for s, _ in groups], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{m.upper()} ({_DIRECTION[m]} is better)" if m in _DIRECTION else "train x0-MSE (lower is better)")
        lo = min(r[m] for _, rs in groups for r in rs)
        hi = max(r[m] for _, rs in groups for r in rs)
        pad = 0.15 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-6
        ax.set_ylim(lo - pad - max(b for _, b in stats), hi + pad + max(b for _, b in stats))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


# ----------------------------------------------------------------------------- the study
def run_study(cfg, workdir, *, log=print) -> list[dict]:
    """Train + evaluate every (scheme, seed) not finished yet, then write the tables and plots."""
    from resshift_jax.config import load_config
    cfg = load_config(cfg)
    workdir = pathlib.Path(workdir).absolute()
    (workdir / "runs").mkdir(parents=True, exist_ok=True)
    cache = enable_compile_cache(cfg.study.get("compile_cache_dir", "") or workdir / "jax_cache")
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
    counts0 = dict(_cache_counts)
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
                write_results_csv(run_dir / "eval.csv", per_image)
                row = run_row(spec, seed, rc, run_dir, summary, cfg.study.loss_tail)
                row["n_val"] = len(per_image)
                (run_dir / "done.json").write_text(json.dumps(row, indent=1) + "\n")
                rows.append(row)
                timings["runs"][name] = {"skipped": False, "train_s": t1 - t0, "eval_s": t2 - t1}
                say(f"done {name}: " + ", ".join(f"{m}={row[m]:.4f}" for m in metrics) +
                    f" (train {t1 - t0:.1f} s, eval {t2 - t1:.1f} s)")
        write_results_csv(workdir / "results.csv", rows)
        write_results_md(workdir / "results.md", rows, specs, metrics, cfg)
        plot_loss_t(workdir / "loss_t.png", workdir, specs, seeds)
        plot_metrics(workdir / "metrics.png", rows, specs, metrics)
        timings["total_s"] = time.perf_counter() - t_study
        timings["compile_cache"] = {k: _cache_counts[k] - counts0[k] for k in _cache_counts}
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
    run_study(_CONFIG.value, flags.FLAGS.workdir)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags
    _CONFIG = config_flags.DEFINE_config_file("config", None, "study config (configs/study_wt.py)", lock_config=True)
    flags.DEFINE_string("workdir", None, "study folder (runs/, results.csv, results.md, *.png)")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
