"""scripts/compact_report.py: the README's training-curve and comparison-grid figures are drawn
from train.py's metrics.jsonl and from evaluate's output folders (real files, opened back)."""

import json
import runpy

import numpy as np
import pytest
from PIL import Image

from resshift_jax import paths

report = runpy.run_path(str(paths.PROJECT_ROOT / "scripts" / "compact_report.py"))


def test_running_mean():
    np.testing.assert_allclose(report["running_mean"](np.array([1.0, 3.0, 5.0, 7.0]), 2), [1, 2, 4, 6])


def test_curves_from_metrics_jsonl(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": s, "loss": 1.0 / s, "lr": 1e-4} for s in range(10, 210, 10)]
    lines += [{"step": 100, "val_psnr_y": 25.0, "val_images": 3}, {"step": 200, "val_psnr_y": 26.0, "val_images": 3}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    out = report["curves"]([("a", str(run))], tmp_path / "fig" / "curves.png")
    with Image.open(out) as im:
        assert im.size[0] > 600 and im.size[1] > 200
    with pytest.raises(SystemExit, match="metrics.jsonl does not exist"):
        report["curves"]([("b", str(tmp_path / "nothing"))], tmp_path / "x.png")


def test_grid_crops_align_lr_and_hr(tmp_path):
    rng = np.random.default_rng(0)
    folders = {k: tmp_path / k for k in ("lq", "gt", "m")}
    for f in folders.values():
        f.mkdir()
    for n in ("a", "b"):
        gt = rng.integers(0, 256, (40, 48, 3), np.uint8)
        Image.fromarray(gt).save(folders["gt"] / f"{n}.png")
        Image.fromarray(gt[::4, ::4]).save(folders["lq"] / f"{n}.png")
        Image.fromarray(gt).save(folders["m"] / f"{n}.png")
    Image.fromarray(gt).save(folders["m"] / "only_here.png")  # not in every folder: left out
    out = report["grid"](folders["lq"], folders["gt"], [("model", folders["m"])], tmp_path / "g.png",
                         images=4, crop=32)
    with Image.open(out) as im:
        w, h = im.size
    assert w > h  # 2 rows (a, b) x 3 columns
    with pytest.raises(SystemExit, match="no image is present in every folder"):
        report["grid"](folders["lq"], folders["gt"], [("model", tmp_path)], tmp_path / "h.png")
