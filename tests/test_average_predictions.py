"""scripts/average_predictions.py: the per-pixel mean of prediction folders, written at 16 bits."""

import importlib.util
import pathlib

import numpy as np
import pytest
from PIL import Image

from resshift_jax import metrics
from resshift_jax.imageio import read_image

ROOT = pathlib.Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("average_predictions", ROOT / "scripts" / "average_predictions.py")
ap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ap)


def _png(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path)


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    gt = {n: rng.integers(10, 240, (20 + 4 * i, 24, 3)) for i, n in enumerate(["a", "sub/b"])}
    # two "seeds": gt + 5 and gt - 3 levels, so the mean is gt + 1 and each is 4 levels from it
    for n, g in gt.items():
        _png(tmp_path / "gt" / f"{n}.png", g)
        _png(tmp_path / "s1" / f"{n}.png", g + 5)
        _png(tmp_path / "s2" / f"{n}.png", g - 3)
    return tmp_path, gt


def test_mean_is_written_at_16_bits_and_deviation_reported(folders, capsys):
    tmp, gt = folders
    assert ap.main(["--pred", str(tmp / "s1"), "--pred", str(tmp / "s2"), "--out", str(tmp / "mean")]) == 0
    out = capsys.readouterr().out
    assert "2 image(s)" in out and "4.000, 4.000" in out  # exact: integer levels, float64 sums
    for n, g in gt.items():
        m, meta = read_image(tmp / "mean" / f"{n}.png")
        assert meta.bit_depth == 16 and m.shape == g.shape
        # (g + 1) / 255 written as uint16: (g + 1) * 257 exactly, read back as that / 65535
        np.testing.assert_array_equal(np.rint(m * 65535.0), (g + 1) * 257)
        assert metrics.psnr_y(m, (g + 1) / 255.0) == float("inf")


def test_missing_or_different_images_are_named(folders, capsys):
    tmp, gt = folders
    (tmp / "s2" / "a.png").unlink()
    assert ap.main(["--pred", str(tmp / "s1"), "--pred", str(tmp / "s2"), "--out", str(tmp / "mean")]) == 2
    assert f"{tmp / 's2'} does not hold the images of {tmp / 's1'}: missing a" in capsys.readouterr().err
    _png(tmp / "s2" / "a.png", gt["a"][:-2])
    assert ap.main(["--pred", str(tmp / "s1"), "--pred", str(tmp / "s2"), "--out", str(tmp / "mean")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp / 's2' / 'a.png'}: size 24x18 differs from" in err
    assert ap.main(["--pred", str(tmp / "s1"), "--out", str(tmp / "mean")]) == 2
    assert "need at least two prediction folders" in capsys.readouterr().err
