"""The short schedule sweep behind the compact recipes: κ, min_noise_level (η_1) and p.

    python scripts/sweep_compact.py --workdir runs/sweep [--steps 300] [--only k0.25,k1]

Each arm trains `configs/compact_bicsr.py` with `train.py` (the project's trainer, nothing
else) for `--steps` steps at reduced size (model_channels = swin_embed_dim = 32: 1.2M
parameters, ~0.35 s a step on 2 cores), changed only in the arm's schedule keys, same seeds and
data order, and validates once at the end with the EMA weights on the validation split
(the first `--val_images` `kodak24_*` images, bicubic x4 pairs: never the test split
`mcmaster_*`). The table reports that validation PSNR(Y) of the 4-step sampler (fresh noise,
`val_seed`) next to bicubic interpolation on the same pairs. Finished arms (a `metrics.jsonl`
with a validation line) are read, not retrained, so an interrupted sweep continues.

Writes WORKDIR/sweep.json and WORKDIR/sweep.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys


ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "configs/compact_bicsr.py"
# label -> the arm's schedule keys (the rest is compact_bicsr's: κ 0.5, min_noise 0.05, p 0.3,
# √η_T 0.99, residual prediction)
ARMS = {
    "k0.25": {"diffusion.kappa": 0.25},
    "k0.5": {},
    "k1": {"diffusion.kappa": 1.0},
    "k2": {"diffusion.kappa": 2.0},
    "k0.5_n0.02": {"diffusion.min_noise_level": 0.02},
    "k0.5_n0.1": {"diffusion.min_noise_level": 0.1},
    "k0.5_p1": {"diffusion.schedule_kwargs.power": 1.0},
    "k0.5_xstart": {"diffusion.predict_type": "xstart"},  # the official configs' model output
}


def arm_args(overrides: dict, steps: int, val_images: int) -> list[str]:
    small = {
        "model.model_channels": 32, "model.swin_embed_dim": 32,
        "train.iterations": steps, "train.warmup_iterations": max(1, steps // 10),
        # a ~50-step average: 0.995 would still weigh the first, untrained third of a short run
        "train.ema_rate": 0.98,
        "train.val_freq": steps, "train.save_freq": steps, "train.keep_checkpoints": 1,
        "data.val.length": val_images,
    }
    return [f"--config.{k}={v}" for k, v in {**small, **overrides}.items()]


def last_validation(run_dir: pathlib.Path) -> dict | None:
    f = run_dir / "metrics.jsonl"
    if not f.is_file():
        return None
    vals = [json.loads(line) for line in f.read_text().splitlines() if '"val_psnr_y"' in line]
    return vals[-1] if vals else None


def bicubic_psnr(val_images: int) -> float:
    """PSNR(Y) of MATLAB-bicubic x4 upsampling on the sweep's validation pairs."""
    from resshift_jax.config import load_config
    from resshift_jax.evaluation import bicubic_upsample, score_pairs, summarize, val_pairs

    cfg = load_config(ROOT / CONFIG)
    cfg.data.val.length = val_images
    pairs = val_pairs(cfg)
    ups = [bicubic_upsample(p.lq, 4) for p in pairs]
    return summarize(score_pairs(ups, pairs, ("psnr",)), ("psnr",))["psnr"]["mean"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--val_images", type=int, default=8)
    p.add_argument("--only", default="", help="comma list of arm labels")
    args = p.parse_args(argv)
    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    only = [a for a in args.only.split(",") if a]
    unknown = sorted(set(only) - set(ARMS))
    if unknown:
        p.error(f"unknown arms {unknown}; arms: {', '.join(ARMS)}")
    rows = []
    for label, overrides in ARMS.items():
        if only and label not in only:
            continue
        run_dir = work / label
        val = last_validation(run_dir)
        if val is None or val["step"] < args.steps:
            cmd = [sys.executable, str(ROOT / "train.py"), f"--config={ROOT / CONFIG}", f"--workdir={run_dir}",
                   *arm_args(overrides, args.steps, args.val_images)]
            print("+", " ".join(cmd), flush=True)
            with open(work / f"{label}.log", "w") as log:
                rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            if rc != 0:
                print(f"{label}: train.py failed (exit code {rc}); see {work / f'{label}.log'}", file=sys.stderr)
                continue
            val = last_validation(run_dir)
        rows.append({"arm": label, **{k.split(".")[-1]: v for k, v in overrides.items()},
                     "val_psnr_y": val["val_psnr_y"], "val_images": val["val_images"], "step": val["step"]})
        print(f"{label}: PSNR(Y) {val['val_psnr_y']:.3f} dB", flush=True)
    bic = bicubic_psnr(args.val_images)
    out = {"config": CONFIG, "steps": args.steps, "bicubic_psnr_y": bic, "arms": rows}
    (work / "sweep.json").write_text(json.dumps(out, indent=1))
    lines = [f"| arm | κ | min_noise | p | prediction | PSNR(Y) dB | vs bicubic ({bic:.3f} dB) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r.get('kappa', 0.5)} | {r.get('min_noise_level', 0.05)} | {r.get('power', 0.3)} "
                     f"| {r.get('predict_type', 'residual')} "
                     f"| {r['val_psnr_y']:.3f} | {r['val_psnr_y'] - bic:+.3f} |")
    (work / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
