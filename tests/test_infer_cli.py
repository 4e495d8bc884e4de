"""infer.py end to end with the tiny networks (official-layout .pth fixtures) on ../shared/data
images and synthetic gray / RGBA / 16-bit / palette / JPEG files, plus broken files."""

import shutil
import socket

import jax
import numpy as np
import pytest
from PIL import Image

from resshift_jax import cli_infer, imageio, tiling

pytest.importorskip("resshift_jax.models.unet", reason="needs the UNet (models/unet.py)")


def write_png16(path, arr):
    import png
    h, w, c = arr.shape
    png.Writer(w, h, greyscale=c in (1, 2), alpha=c in (2, 4), bitdepth=16).write(open(path, "wb"), arr.reshape(h, w * c))


@pytest.fixture(scope="module")
def tiny_ckpts(fixtures_dir):
    return fixtures_dir / "unet_tiny.pth", fixtures_dir / "vq_tiny.pth"


@pytest.fixture(scope="module")
def in_dir(tmp_path_factory, data_dir):
    d = tmp_path_factory.mktemp("inputs")
    lq = sorted((data_dir / "Val_SR" / "lq").glob("*.png"))[:2]  # 64x64 RGB photos
    shutil.copy(lq[0], d / lq[0].name)  # chopped into 9 overlapping 32x32 tiles
    rng = np.random.default_rng(0)
    sub = d / "sub"
    sub.mkdir()
    photo = np.asarray(Image.open(lq[0]))
    Image.fromarray(photo[:30, :28].mean(-1).astype(np.uint8)).save(sub / "gray.png")
    rgba = np.concatenate([photo[:32, :20], rng.integers(0, 256, (32, 20, 1), dtype=np.uint8)], -1)
    Image.fromarray(rgba).save(d / "rgba.png")
    write_png16(d / "rgb16.png", (photo[:24, :32].astype(np.uint16) * 257))
    Image.fromarray(photo[:32, :32]).convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(d / "pal.png")
    Image.fromarray(np.asarray(Image.open(lq[1]))[10:42, 5:37]).save(d / "photo.jpg", quality=95)
    (d / "zero.png").write_bytes(b"")
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    return d


EXPECTED = {  # output relative path -> (size (w, h), PIL mode); Val_SR photos: 256x256 RGB
    "sub/gray.png": ((28 * 4, 30 * 4), "L"),
    "rgba.png": ((20 * 4, 32 * 4), "RGBA"),
    "rgb16.png": ((32 * 4, 24 * 4), "PNG16"),
    "pal.png": ((32 * 4, 32 * 4), "RGB"),
    "photo.jpg": ((32 * 4, 32 * 4), "RGB"),
}


@pytest.fixture(scope="module")
def first_run(in_dir, tiny_ckpts, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    argv = ["-i", str(in_dir), "-o", str(out), "--config", "tiny", "--unet_ckpt", str(tiny_ckpts[0]),
            "--vae_ckpt", str(tiny_ckpts[1]), "--bs", "8", "--ext", "auto", "--no_progress", "--seed", "3",
            "--chop_size", "32", "--chop_stride", "24"]  # 64x64 photos -> 9 tiles; every tile pads to 32x32
    return out, argv, cli_infer.main(argv)


def test_cli_end_to_end(first_run, in_dir, capsys):
    out, _, rc = first_run
    assert rc == 1  # two broken inputs
    photos = sorted(p.name for p in in_dir.glob("ILSVRC*.png"))
    assert len(photos) == 1
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert got == sorted(photos + list(EXPECTED)), got
    for rel in got:
        src = in_dir / rel
        size, mode = EXPECTED.get(rel, ((256, 256), "RGB"))
        if mode == "PNG16":
            x, meta = imageio.read_image(out / rel)
            assert meta.bit_depth == 16 and meta.channels == 3 and x.shape[:2] == (size[1], size[0])
            continue
        im = Image.open(out / rel)
        assert (im.size, im.mode) == (size, mode), rel
        assert src.exists()  # inputs untouched


def test_cli_reports_bad_files_and_skips_existing(first_run, capsys):
    out, argv, _ = first_run
    rc = cli_infer.main(argv)  # everything good is done already: skipped, bad files fail again
    text = capsys.readouterr().out
    assert rc == 1
    assert "zero.png: empty file" in text and "corrupt.jpg: corrupt or truncated" in text
    assert text.count("skip ") == 6 and "Done: 0 image(s), failed: 2" in text


def test_cli_output_matches_an_untiled_pipeline_call(first_run, in_dir):
    """Tiled vs untiled on an image that fits one tile: the CLI output (through TiledRunner)
    equals a direct SRPipeline call with the same per-tile key, up to 8-bit rounding."""
    out, argv, _ = first_run
    args = cli_infer.build_parser().parse_args(argv)
    pipe = cli_infer.get_pipeline(args, None)  # the CLI's own (cached, already compiled) pipeline
    x, _ = imageio.read_image(in_dir / "pal.png")  # 32x32: one tile, no padding
    key = tiling.tile_keys(cli_infer.image_key(3, "pal.png"), 1)[0]
    batch = np.stack([x * 2 - 1] * 8)  # the compiled (8, 32, 32) program
    direct = np.asarray(pipe(batch, key=jax.numpy.stack([key] * 8)))[0]
    written, _ = imageio.read_image(out / "pal.png")
    assert written.shape == (128, 128, 3)
    np.testing.assert_allclose(written, np.clip(direct * 0.5 + 0.5, 0, 1), atol=0.5 / 255 + 1e-6)
    assert np.abs(direct).max() > 0.05  # a real image came out, not zeros


def test_cli_offline_message(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("RESSHIFT_WEIGHTS_URL", f"http://127.0.0.1:{s.getsockname()[1]}/v2.0")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    with pytest.raises(SystemExit) as err:
        cli_infer.main(["-i", str(img), "-o", str(tmp_path / "o"), "-v", "v3", "--weights_dir",
                        str(tmp_path / "w"), "--no_progress"])
    msg = str(err.value)
    assert str(tmp_path / "w" / "resshift_realsrx4_s4_v3.pth") in msg
    assert str(tmp_path / "w" / "autoencoder_vq_f4.pth") in msg and "cannot connect" in msg
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_cli_rejects_bad_flags(tmp_path):
    with pytest.raises(SystemExit, match="only x4"):
        cli_infer.main(["-i", str(tmp_path), "--scale", "2", "--config", "tiny"])
    with pytest.raises(SystemExit, match="chop_stride"):
        cli_infer.main(["-i", str(tmp_path), "--chop_size", "64", "--chop_stride", "80", "--config", "tiny"])
    with pytest.raises(SystemExit, match="does not exist"):
        cli_infer.main(["-i", str(tmp_path / "nope"), "--config", "tiny"])


def test_outputs_never_replace_inputs(tmp_path):
    for name in ["a.png", "a.jpg", "b.png"]:
        (tmp_path / name).write_bytes(b"x")
    files = sorted(tmp_path.iterdir())
    args = cli_infer.build_parser().parse_args(["-i", str(tmp_path), "-o", str(tmp_path)])
    todo, skipped = cli_infer.plan_outputs(files, tmp_path, args)
    outs = [o.name for _, o in todo]
    assert skipped == [] and len(set(outs)) == 3
    assert not set(outs) & {"a.png", "a.jpg", "b.png"}, outs
