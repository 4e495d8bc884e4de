"""The study's report: training curves from each run's metrics.jsonl, results.csv, results.md
(mean ± sample std over seeds), loss_t.png and metrics.png."""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib

import numpy as np

from resshift_jax import schedule
from resshift_jax.evaluation import DIRECTION
from resshift_jax.study.specs import run_config, run_name


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
    groups = group_by_scheme(rows, specs)
    head = ["scheme", "w_t", "t sampling", "seeds"] + [f"{m.upper()} ({DIRECTION[m]})" for m in metrics] + \
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
    import matplotlib  # plotting only: the rest of the study does not need matplotlib
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
    import matplotlib  # plotting only: the rest of the study does not need matplotlib
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
        ax.set_title(f"{m.upper()} ({DIRECTION[m]} is better)" if m in DIRECTION else "train x0-MSE (lower is better)")
        lo = min(r[m] for _, rs in groups for r in rs)
        hi = max(r[m] for _, rs in groups for r in rs)
        pad = 0.15 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-6
        ax.set_ylim(lo - pad - max(b for _, b in stats), hi + pad + max(b for _, b in stats))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
