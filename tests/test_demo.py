"""resshift_jax.demo: the browser demo's engine, without a browser (tests/test_app.py drives the
page in Chromium). A request must write exactly the file `infer.py` writes for the same flags."""

import numpy as np
import pytest
from PIL import Image

from resshift_jax import cli_infer, demo, imageio
from resshift_jax.demo import Demo, DemoError


def _png16_gray_alpha(path, w=40, h=36, seed=0):
    """A 16-bit gray PNG with alpha: the demo must return 16-bit gray + alpha, as infer.py does."""
    rng = np.random.default_rng(seed)
    grey = np.clip(rng.normal(0.5, 0.2, (h, w, 1)), 0, 1).astype(np.float32)
    alpha = np.linspace(0.2, 1.0, w, dtype=np.float32)[None].repeat(h, 0)
    meta = imageio.ImageMeta("made-here", "PNG", "PNG16-LA", 16, 1, alpha)  # (path: not the file written)
    imageio.write_image(path, np.repeat(grey, 3, -1), meta, alpha=alpha)
    return path


def test_model_choices_follow_the_files_present(tmp_path):
    wd = tmp_path / "weights"
    wd.mkdir()
    by = {c.label: c for c in demo.model_choices(wd)}
    assert by["compact realsr (bundled)"].available and by["compact bicsr (bundled)"].available
    v3 = by["official realsr v3"]
    assert not v3.available
    assert "resshift_realsrx4_s4_v3.pth" in v3.reason and "autoencoder_vq_f4.pth" in v3.reason and str(wd) in v3.reason
    # steps offered: the chain's length; default: the config's x0_after (compact realsr: 2 of 4)
    assert (by["compact realsr (bundled)"].steps, by["compact realsr (bundled)"].default_steps) == (4, 2)
    assert (by["official realsr v1"].steps, by["official realsr v1"].default_steps) == (15, 15)
    for f in ("resshift_realsrx4_s4_v3.pth", "autoencoder_vq_f4.pth"):
        (wd / f).write_bytes(b"")  # presence is what the list checks; loading is the request's job
    by = {c.label: c for c in demo.model_choices(wd)}
    assert by["official realsr v3"].available and by["official realsr v3"].reason == ""
    assert not by["official realsr v1"].available
    assert by["official realsr v1"].reason.startswith("missing resshift_realsrx4_s15_v1.pth in ")
    with pytest.raises(DemoError, match="official realsr v1: missing"):
        Demo(tmp_path / "work", weights_dir=wd).choice("official realsr v1")


def test_upload_checks_name_the_file(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(big)
    assert demo.check_upload(big, "big.png", 1200) == (40, 30)
    with pytest.raises(DemoError, match=r"big\.png: 40 x 30 .* over this demo's limit"):
        demo.check_upload(big, "big.png", 1199)
    with pytest.raises(DemoError, match=r"notes\.txt: unsupported format '\.txt'"):
        demo.check_upload(big, "notes.txt", 10**6)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a jpeg")
    assert demo.check_upload(junk, "junk.jpg", 10**6) == (0, 0)  # left to read_image, which says why
    assert demo.safe_name("../../etc/.hidden.png") == "hidden.png"
    assert demo.safe_name(r"C:\Users\me\photo 1.JPG") == "photo 1.JPG"


def test_argv_is_infer_py_flags(tmp_path):
    d = Demo(tmp_path, weights_dir=tmp_path / "w")
    c = {x.label: x for x in d.choices()}
    argv = d.argv(c["compact bicsr (bundled)"], "in.png", "out", steps=3, seed=9, tile=64)
    args = cli_infer.build_parser().parse_args(argv)
    assert (args.task, args.version, args.seed, args.x0_after, args.chop_size) == ("bicsr", "compact", 9, 3, 64)
    off = d.argv(c["official realsr v1"], "in.png", "out", steps=15, seed=1, tile=0)
    assert "--no_download" in off and off[off.index("--weights_dir") + 1] == str(tmp_path / "w")
    with pytest.raises(DemoError, match=r"steps must be 1\.\.4, got 5"):
        d.argv(c["compact bicsr (bundled)"], "in.png", "out", steps=5, seed=1, tile=0)
    with pytest.raises(DemoError, match="tile size must be one of"):
        d.argv(c["compact bicsr (bundled)"], "in.png", "out", steps=1, seed=1, tile=100)


def test_request_writes_what_infer_py_writes(tmp_path):
    """16-bit gray + alpha in -> the same bytes as `infer.py` with the command the page shows;
    the second request reuses the compiled program; a corrupt upload is refused with its name
    and the next request still runs."""
    (tmp_path / "upload").mkdir()
    src = _png16_gray_alpha(tmp_path / "upload" / "wafer.png")
    d = Demo(tmp_path / "work")
    seen = []
    r = d.run(src, "wafer.png", "compact bicsr (bundled)", steps=1, seed=3,
              progress=lambda frac, desc: seen.append((frac, desc)))
    assert r.lr_size == (40, 36) and r.sr_size == (160, 144) and r.compiled
    assert seen[0] == (0.0, "loading compact bicsr (bundled)") and seen[-1][0] == 1.0 and "tile 1/1" in seen[-1][1]
    assert r.command == ("python infer.py -i wafer.png -o results --task bicsr -v compact --seed 3 --x0_after 1")
    out, meta = imageio.read_image(r.output)
    assert (meta.bit_depth, meta.channels, meta.alpha is not None) == (16, 1, True)
    for p in (r.bicubic_preview, r.sr_preview):  # the comparison pair: same size, 8-bit RGB with alpha
        with Image.open(p) as im:
            assert (im.size, im.mode) == ((160, 144), "RGBA")

    argv = r.command.split()[2:]
    argv[argv.index("-i") + 1] = str(src)
    argv[argv.index("-o") + 1] = str(tmp_path / "cli")
    assert cli_infer.main(argv + ["--no_progress"]) == 0
    assert (tmp_path / "cli" / "wafer.png").read_bytes() == r.output.read_bytes()

    bad = tmp_path / "upload" / "broken.png"
    bad.write_bytes(src.read_bytes()[:300])  # a PNG cut short
    with pytest.raises(DemoError, match=r"^broken\.png: corrupt or truncated PNG"):
        d.run(bad, "broken.png", "compact bicsr (bundled)", steps=1, seed=3)
    again = d.run(src, "wafer.png", "compact bicsr (bundled)", steps=1, seed=3)
    assert not again.compiled and again.output.read_bytes() == r.output.read_bytes()
    assert again.output.parent.parent != r.output.parent.parent  # one folder per request
