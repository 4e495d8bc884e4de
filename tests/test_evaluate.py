"""The evaluate CLI: pairing by stem, outputs, errors, LPIPS through the loader, inference mode."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from resshift_jax import evaluate as E
from resshift_jax import evaluation as ev
from resshift_jax import metrics as M

NAMES = ["ILSVRC2012_val_00000067", "ILSVRC2012_val_00000073", "ILSVRC2012_val_00000079"]


@pytest.fixture(scope="module")
def folders(data_dir, tmp_path_factory):
    """pred = PIL-bicubic x4 of the LR images (PNG), gt = a copy of the matching GT images."""
    root = tmp_path_factory.mktemp("eval")
    pred, gt = root / "pred", root / "gt"
    pred.mkdir(), gt.mkdir()
    for n in NAMES:
        shutil.copy(data_dir / "Val_SR" / "gt" / f"{n}.png", gt / f"{n}.png")
        lq = Image.open(data_dir / "Val_SR" / "lq" / f"{n}.png").convert("RGB")
        lq.resize((256, 256), Image.Resampling.BICUBIC).save(pred / f"{n}.png")
    return root, pred, gt


def _rgb(p):
    return np.asarray(Image.open(p).convert("RGB"))


def test_cli_writes_csv_json_markdown(folders, tmp_path, capsys):
    root, pred, gt = folders
    out = tmp_path / "out"
    assert E.main(["--pred", str(pred), "--gt", str(gt), "--metrics", "psnr,ssim,niqe",
                   "--out", str(out), "--no_progress"]) == 0
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["name"] for r in rows] == NAMES
    want_p = [M.psnr_y(_rgb(pred / f"{n}.png"), _rgb(gt / f"{n}.png")) for n in NAMES]
    want_s = [M.ssim_y(_rgb(pred / f"{n}.png"), _rgb(gt / f"{n}.png")) for n in NAMES]
    np.testing.assert_allclose([float(r["psnr"]) for r in rows], want_p, atol=1e-6)
    np.testing.assert_allclose([float(r["ssim"]) for r in rows], want_s, atol=1e-6)
    assert all(float(r["niqe"]) > 0 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 3 and summary["metrics"]["psnr"]["n"] == 3
    assert summary["metrics"]["psnr"]["mean"] == pytest.approx(np.mean(want_p))
    assert summary["metrics"]["ssim"]["mean"] == pytest.approx(np.mean(want_s))
    assert "niqe_pris_params.npz" in summary["niqe_model"]
    md = (out / "results.md").read_text()
    assert md.startswith("| metric | mean |") and "| PSNR |" in md and "| NIQE |" in md
    assert "| PSNR |" in capsys.readouterr().out


def test_pairing_by_stem_and_errors(folders, tmp_path, capsys):
    root, pred, gt = folders
    # a JPEG prediction pairs with the PNG ground truth of the same stem
    pj = tmp_path / "pred_jpg"
    pj.mkdir()
    Image.open(pred / f"{NAMES[0]}.png").save(pj / f"{NAMES[0]}.jpg", quality=95)
    with pytest.raises(ev.EvaluationError, match="without prediction"):
        ev.paired_files(pj, gt)
    assert [s for s, _, _ in ev.paired_files(pj, gt, allow_unpaired=True)] == [NAMES[0]]
    # missing ground truth: clear message, exit code 2
    extra = tmp_path / "pred_extra"
    shutil.copytree(pred, extra)
    Image.new("RGB", (256, 256)).save(extra / "not_in_gt.png")
    assert E.main(["--pred", str(extra), "--gt", str(gt), "--metrics", "psnr", "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "without ground truth" in err and "not_in_gt" in err
    # size mismatch names the file and both sizes
    small = tmp_path / "pred_small"
    small.mkdir()
    for n in NAMES:
        Image.open(pred / f"{n}.png").resize((128, 128)).save(small / f"{n}.png")
    with pytest.raises(ev.EvaluationError, match=r"size mismatch .*128x128.*256x256"):
        ev.score_files(ev.paired_files(small, gt), ["psnr"])
    # other usage errors
    for argv, msg in [(["--pred", str(pred), "--metrics", "psnr"], "need --gt"),
                      (["--pred", str(pred), "--gt", str(gt), "--metrics", "psnr,fid"], "unknown metric"),
                      (["--pred", str(pred), "--gt", str(gt), "--metrics", "lpips"], "lpips_backbone"),
                      (["--pred", str(tmp_path / "nope"), "--gt", str(gt), "--metrics", "psnr"], "not a folder"),
                      (["--lq", str(pred), "--metrics", "psnr"], "--config")]:
        assert E.main(argv + ["--out", str(tmp_path / "o2")]) == 2
        assert msg in capsys.readouterr().err, msg
    # no-reference only: --gt not needed
    assert E.main(["--pred", str(pred), "--metrics", "niqe", "--out", str(tmp_path / "o3"), "--no_progress"]) == 0


def test_lpips_through_the_loader(folders, tmp_path):
    pytest.importorskip("jax")
    from safetensors.numpy import save_file

    from tests.test_lpips import reference_lpips, torch_backbone, torch_heads

    root, pred, gt = folders
    rng = np.random.default_rng(0)
    bb, hd = torch_backbone("alex", rng), torch_heads("alex", rng)
    save_file(bb, str(tmp_path / "alexnet.safetensors"))
    save_file(hd, str(tmp_path / "alex_heads.safetensors"))
    out = tmp_path / "out"
    assert E.main(["--pred", str(pred), "--gt", str(gt), "--metrics", "lpips", "--out", str(out), "--no_progress",
                   "--lpips_net", "alex", "--lpips_backbone", str(tmp_path / "alexnet.safetensors"),
                   "--lpips_heads", str(tmp_path / "alex_heads.safetensors")]) == 0
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    x = _rgb(pred / f"{NAMES[0]}.png").astype(np.float32)[None] / 127.5 - 1
    y = _rgb(gt / f"{NAMES[0]}.png").astype(np.float32)[None] / 127.5 - 1
    np.testing.assert_allclose(float(rows[0]["lpips"]), reference_lpips(bb, hd, "alex", x, y)[0], rtol=1e-4)


def test_inference_mode_wiring(folders, tmp_path, monkeypatch):
    """--lq runs the project's inference CLI into OUT/pred, then evaluates that folder."""
    cli_infer = pytest.importorskip("resshift_jax.cli_infer")
    root, pred, gt = folders
    seen = {}

    def fake_main(argv):  # stands in for the (slow) sampler; only the wiring is under test here
        seen["argv"] = argv
        out = argv[argv.index("-o") + 1]
        os.makedirs(out, exist_ok=True)
        for p in pred.iterdir():
            shutil.copy(p, out)
        return 0

    monkeypatch.setattr(cli_infer, "main", fake_main)
    out = tmp_path / "out"
    assert E.main(["--lq", str(root / "pred"), "--config", "tiny", "--unet_ckpt", "u.pth", "--vae_ckpt", "v.pth",
                   "--seed", "7", "--gt", str(gt), "--metrics", "psnr", "--out", str(out), "--no_progress"]) == 0
    a = seen["argv"]
    assert a[a.index("--config") + 1] == "tiny" and a[a.index("--seed") + 1] == "7"
    assert a[a.index("--unet_ckpt") + 1] == "u.pth" and a[a.index("--vae_ckpt") + 1] == "v.pth"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"] == "tiny" and summary["pred"] == str(out / "pred")
    assert len(list((out / "pred").iterdir())) == 3
    assert "--x0_after" not in a and "--noise_scale" not in a  # the config's defaults unless asked
    assert E.main(["--lq", str(root / "pred"), "--config", "tiny", "--unet_ckpt", "u.pth", "--x0_after", "1",
                   "--noise_scale", "0", "--gt", str(gt), "--metrics", "psnr", "--out", str(tmp_path / "o2"),
                   "--no_progress"]) == 0
    assert seen["argv"][seen["argv"].index("--x0_after") + 1] == "1"
    assert float(seen["argv"][seen["argv"].index("--noise_scale") + 1]) == 0.0
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["noise_scale"] == 0.0


@pytest.mark.skipif(not os.environ.get("RESSHIFT_SLOW_TESTS"), reason="about a minute on 2 CPU cores; set RESSHIFT_SLOW_TESTS=1")
def test_inference_mode_real_tiny(fixtures_dir, data_dir, tmp_path):
    pytest.importorskip("resshift_jax.cli_infer")
    lq = tmp_path / "lq"
    lq.mkdir()
    shutil.copy(data_dir / "Val_SR" / "lq" / f"{NAMES[0]}.png", lq)
    out = tmp_path / "out"
    assert E.main(["--lq", str(lq), "--config", "tiny", "--unet_ckpt", str(fixtures_dir / "unet_tiny.pth"),
                   "--vae_ckpt", str(fixtures_dir / "vq_tiny.pth"), "--gt", str(data_dir / "Val_SR" / "gt"),
                   "--allow_unpaired", "--metrics", "psnr,ssim", "--out", str(out), "--no_progress"]) == 0
    assert _rgb(out / "pred" / f"{NAMES[0]}.png").shape == (256, 256, 3)
    assert json.loads((out / "summary.json").read_text())["metrics"]["psnr"]["n"] == 1


def test_bicsr_protocol_and_bicubic_baseline(data_dir, tmp_path):
    """--degrade bicubic writes the test pairs (GT cut to multiples of 4, LQ = MATLAB bicubic
    x1/4 rounded to 8 bits) and --baseline bicubic scores MATLAB-bicubic x4 of that LQ: the
    README's bicubic rows. Checked against the primitives (imresize_np, to_uint, psnr_y)."""
    from resshift_jax.data.matlab_resize import imresize_np
    from resshift_jax.imageio import read_image, to_uint

    src = tmp_path / "src"
    src.mkdir()
    for n in NAMES[:2]:  # 256x256 GT, plus a 250x250 cut (not a multiple of 4) and a decoy name
        shutil.copy(data_dir / "Val_SR" / "gt" / f"{n}.png", src / f"{n}.png")
    Image.open(src / f"{NAMES[0]}.png").crop((0, 0, 250, 250)).save(src / "cut_250.png")
    Image.open(src / f"{NAMES[1]}.png").save(src / "skip.png")
    out = tmp_path / "out"
    assert E.main(["--gt", str(src), "--include", "[Ic]*", "--degrade", "bicubic", "--baseline", "bicubic",
                   "--metrics", "psnr,ssim", "--out", str(out), "--no_progress"]) == 0
    rows = {r["name"]: r for r in csv.DictReader(open(out / "per_image.csv"))}
    assert sorted(rows) == sorted(["cut_250", *NAMES[:2]])  # "skip.png" does not match the glob
    for name, row in rows.items():
        gt8 = _rgb(out / "pairs" / "gt" / f"{name}.png")
        src_rgb = read_image(src / f"{name}.png")[0]
        h = src_rgb.shape[0] // 4 * 4  # 250 -> 248
        np.testing.assert_array_equal(gt8, to_uint(src_rgb[:h, :h], 8))
        lq = _rgb(out / "pairs" / "lq" / f"{name}.png")
        np.testing.assert_array_equal(lq, to_uint(imresize_np(src_rgb[:h, :h], 0.25), 8))
        up = to_uint(np.clip(imresize_np(lq.astype(np.float32) / 255.0, 4.0), 0, 1), 8)
        np.testing.assert_array_equal(_rgb(out / "pred" / f"{name}.png"), up)
        assert float(row["psnr"]) == pytest.approx(M.psnr_y(up, gt8), abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == "MATLAB bicubic x4" and "MATLAB bicubic x1/4" in summary["degrade"]
    assert E.main(["--gt", str(src), "--lq", str(src), "--degrade", "bicubic", "--out", str(out)]) == 2
    assert E.main(["--gt", str(src), "--baseline", "bicubic", "--out", str(out)]) == 2  # nothing to upsample
