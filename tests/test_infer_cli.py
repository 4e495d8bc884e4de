"""infer.py end to end with the tiny networks (official-layout .pth fixtures) on ../shared/data
images and synthetic gray / RGBA / 16-bit / palette / JPEG files, plus broken files; which model
runs (`-v compact`, official weights present / downloadable, the bundled compact fallback, neither);
run.sh's default command and the example inputs it reads."""

import functools
import http.server
import pathlib
import re
import shlex
import shutil
import socket
import threading

import jax
import numpy as np
import pytest
from PIL import Image

from resshift_jax import cli_infer, download, imageio, tiling

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
            "--chop_size", "32", "--chop_stride", "24",  # 64x64 photos -> 9 tiles; every tile pads to 32x32
            "--io_threads", "3"]  # streamed: 3 decode + 3 write threads, one batch in flight
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


def test_streaming_writes_the_bytes_of_the_serial_run(first_run, tmp_path, capsys):
    """The first run streamed (3 decode + 3 write threads, one batch in flight); one thread doing
    read, run and write in turn writes the same files, byte for byte, and fails the same files."""
    out, argv, _ = first_run
    serial = tmp_path / "serial"
    i = argv.index("-o")
    rc = cli_infer.main(argv[:i + 1] + [str(serial)] + argv[i + 2:] + ["--io_threads", "0"])
    assert rc == 1 and "failed: 2" in capsys.readouterr().out
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(serial).as_posix() for p in serial.rglob("*") if p.is_file())
    for f in files:
        assert (out / f).read_bytes() == (serial / f).read_bytes(), f


def test_png_level_changes_the_files_not_the_pixels(first_run, tmp_path, capsys):
    """--png_level 1 (fast zlib) writes the same images: every pixel (16-bit and alpha too) as
    the default level's run; the PNG files differ in size, the JPEG output (--ext auto) not at all."""
    out, argv, _ = first_run
    fast = tmp_path / "fast"
    i = argv.index("-o")
    assert cli_infer.main(argv[:i + 1] + [str(fast)] + argv[i + 2:] + ["--png_level", "1"]) == 1
    capsys.readouterr()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(fast).as_posix() for p in fast.rglob("*") if p.is_file())
    for f in files:
        a, meta_a = imageio.read_image(out / f)
        b, meta_b = imageio.read_image(fast / f)
        np.testing.assert_array_equal(a, b, err_msg=f)
        np.testing.assert_array_equal(meta_a.alpha, meta_b.alpha, err_msg=f)
        assert ((out / f).read_bytes() == (fast / f).read_bytes()) == f.endswith(".jpg"), f


def test_cli_output_matches_an_untiled_pipeline_call(first_run, in_dir):
    """Tiled vs untiled on an image that fits one tile: the CLI output (through TiledRunner)
    equals a direct SRPipeline call with the same per-tile key, up to 8-bit rounding."""
    out, argv, _ = first_run
    args = cli_infer.build_parser().parse_args(argv)
    pipe = cli_infer.get_pipeline(args)  # the CLI's own (cached, already compiled) pipeline
    x, _ = imageio.read_image(in_dir / "pal.png")  # 32x32: one tile, no padding
    key = tiling.tile_keys(cli_infer.image_key(3, "pal.png"), 1)[0]
    batch = np.stack([x * 2 - 1] * 8)  # the compiled (8, 32, 32) program
    direct = np.asarray(pipe(batch, key=jax.numpy.stack([key] * 8)))[0]
    written, _ = imageio.read_image(out / "pal.png")
    assert written.shape == (128, 128, 3)
    np.testing.assert_allclose(written, np.clip(direct * 0.5 + 0.5, 0, 1), atol=0.5 / 255 + 1e-6)
    assert np.abs(direct).max() > 0.05  # a real image came out, not zeros


def dead_url():
    """A 127.0.0.1 URL where nothing listens: connection refused at once, like a machine offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v2.0"


def test_cli_offline_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESSHIFT_WEIGHTS_URL", dead_url())
    monkeypatch.setattr(download, "BUNDLED_DIR", tmp_path / "no_bundle")  # no fallback either
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
    with pytest.raises(SystemExit, match="multiples of the padding offset 64"):
        cli_infer.main(["-i", str(tmp_path), "--shape_buckets", "100,256", "--config", "realsr_v3"])
    with pytest.raises(SystemExit, match="sizes like"):
        cli_infer.main(["-i", str(tmp_path), "--shape_buckets", "big", "--config", "realsr_v3"])
    with pytest.raises(SystemExit, match="io_threads"):
        cli_infer.main(["-i", str(tmp_path), "--io_threads", "-1", "--config", "tiny"])


def test_shape_buckets_flag_and_config():
    from resshift_jax.config import load_config
    cfg = load_config("realsr_v3")
    assert cli_infer.parse_buckets(None, cfg) == tuple(cfg.inference.shape_buckets)
    assert cli_infer.parse_buckets("off", cfg) == ()
    assert cli_infer.parse_buckets("512,128,256,128", cfg) == (128, 256, 512)


def test_outputs_never_replace_inputs(tmp_path):
    for name in ["a.png", "a.jpg", "b.png"]:
        (tmp_path / name).write_bytes(b"x")
    files = sorted(tmp_path.iterdir())
    args = cli_infer.build_parser().parse_args(["-i", str(tmp_path), "-o", str(tmp_path)])
    todo, skipped = cli_infer.plan_outputs(files, tmp_path, args)
    outs = [o.name for _, o in todo]
    assert skipped == [] and len(set(outs)) == 3
    assert not set(outs) & {"a.png", "a.jpg", "b.png"}, outs


# ----------------------------------------------------------------------------- model selection
# The "bundled" compact models here are the micro UNet with the space-to-depth first stage and
# RANDOM weights (written to tmp; the real trained files are tested elsewhere): these tests check
# which files and configs the CLI picks, not image quality.
ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPACT_TEST_CONFIG = """
from resshift_jax.config import load_config


def get_config():  # micro UNet on the parameter-free first stage (48 = 3 * 4**2 latent channels)
    cfg = load_config("micro")
    cfg.name = "{name}"
    cfg.autoencoder.kind = "space_to_depth"
    cfg.model.in_channels = 48
    cfg.model.out_channels = 48
    cfg.diffusion.scale_factor = 1.0
    cfg.inference.chop_size = 64
    cfg.inference.chop_stride = 48
    return cfg
"""


def test_compact_models_are_configured():
    """The real compact configs that `-v compact` and the fallback load: space-to-depth, x4."""
    from resshift_jax.config import load_config
    for task in ("bicsr", "realsr"):
        cfg = load_config(download.compact_config(task))
        assert cfg.name == download.compact_name(task) == f"compact_{task}"
        assert cfg.autoencoder.kind == "space_to_depth" and int(cfg.diffusion.sf) == 4
        assert download.bundled_file(task).name == f"compact_{task}.safetensors"


@pytest.fixture(scope="module")
def compact_bundle(tmp_path_factory):
    """{task: config file} and the folder holding their random-weight 'bundled' UNets."""
    from flax import nnx

    from resshift_jax.config import load_config
    from resshift_jax.models.unet import UNetModelSwin
    from resshift_jax.weights import save_checkpoint

    root = tmp_path_factory.mktemp("compact")
    configs = {}
    for seed, (task, name) in enumerate(download.COMPACT_CONFIGS.items()):
        path = root / f"{name}.py"
        path.write_text(COMPACT_TEST_CONFIG.format(name=name))
        configs[task] = str(path)
        save_checkpoint(UNetModelSwin(load_config(path).model, rngs=nnx.Rngs(seed)), root / f"{name}.safetensors")
    return configs, root


@pytest.fixture
def bundled(compact_bundle, monkeypatch):
    """The compact configs/bundled files of `compact_bundle` in place of the package's."""
    configs, root = compact_bundle
    for task, path in configs.items():
        monkeypatch.setitem(download.COMPACT_CONFIGS, task, path)
    monkeypatch.setattr(download, "BUNDLED_DIR", root)
    return root


@pytest.fixture
def tiny_as_official(monkeypatch):
    """The official realsr v3 model is the tiny one (its .pth fixtures under the official names)."""
    monkeypatch.setitem(cli_infer._CONFIG_OF, ("realsr", "v3"), "tiny")


def args_of(*argv):
    return cli_infer.build_parser().parse_args(["-i", "unused", "--no_progress", *argv])


def put_tiny_official(tiny_ckpts, folder):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_ckpts[0], folder / "resshift_realsrx4_s4_v3.pth")
    shutil.copy(tiny_ckpts[1], folder / "autoencoder_vq_f4.pth")
    return folder


@pytest.mark.parametrize("task", ["bicsr", "realsr"])
def test_compact_flag_runs_the_bundled_model_of_the_task(task, bundled, tmp_path, monkeypatch, tiny_ckpts):
    put_tiny_official(tiny_ckpts, tmp_path / "w")  # official files present: -v compact still picks compact
    monkeypatch.setenv("RESSHIFT_WEIGHTS_URL", dead_url())
    m = cli_infer.load_model(args_of("--task", task, "-v", "compact", "--weights_dir", str(tmp_path / "w")))
    name = f"compact_{task}"
    assert m.line == f"model: bundled {name} ({bundled / (name + '.safetensors')})"
    assert m.config.name == name and m.config.autoencoder.kind == "space_to_depth"
    assert type(m.first_stage).__name__ == "SpaceToDepth"
    ref = download.bundled_file(task)  # the bundled weights were loaded (seeds differ per task)
    from resshift_jax.weights import module_state_dict, read_checkpoint
    got, want = module_state_dict(m.unet), read_checkpoint(ref)
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)


def test_compact_flag_errors(bundled, tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="parameter-free"):  # a VQ checkpoint makes no sense here
        cli_infer.load_model(args_of("-v", "compact", "--vae_ckpt", str(download.bundled_file("realsr"))))
    monkeypatch.setattr(download, "BUNDLED_DIR", tmp_path)
    with pytest.raises(SystemExit, match=re.escape(str(tmp_path / "compact_realsr.safetensors"))):
        cli_infer.load_model(args_of("-v", "compact"))


def test_official_weights_present_are_used(bundled, tiny_as_official, tiny_ckpts, tmp_path, monkeypatch):
    w = put_tiny_official(tiny_ckpts, tmp_path / "w")
    monkeypatch.setenv("RESSHIFT_WEIGHTS_URL", dead_url())
    m = cli_infer.load_model(args_of("-v", "v3", "--weights_dir", str(w)))
    assert m.line == f"model: official ResShift realsr v3 ({w / 'resshift_realsrx4_s4_v3.pth'})"
    assert m.config.name == "tiny" and type(m.first_stage).__name__ == "VQModel"


def test_official_weights_downloadable_are_downloaded_and_used(bundled, tiny_as_official, tiny_ckpts, tmp_path,
                                                               monkeypatch):
    release = put_tiny_official(tiny_ckpts, tmp_path / "release")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(release))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("RESSHIFT_WEIGHTS_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
        m = cli_infer.load_model(args_of("-v", "v3", "--weights_dir", str(tmp_path / "w")))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert m.line.startswith("model: official ResShift realsr v3 ")
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["autoencoder_vq_f4.pth", "resshift_realsrx4_s4_v3.pth"]


def test_no_official_weights_falls_back_to_the_bundled_model(bundled, tmp_path, monkeypatch, capsys):
    """What `./run.sh` does on a fresh clone without network: its default arguments (read from
    run.sh), the official files absent and the release unreachable -> the bundled compact model
    writes x4 images of the examples, and one line says which model ran and why."""
    url = dead_url()
    monkeypatch.setenv("RESSHIFT_WEIGHTS_URL", url)
    default = re.search(r"^\s*set -- (.*?)(?:\s+#.*)?$", (ROOT / "run.sh").read_text(), re.M).group(1)
    argv = shlex.split(default)
    argv[argv.index("-i") + 1] = str(ROOT / argv[argv.index("-i") + 1])
    out = tmp_path / "out"
    rc = cli_infer.main(argv + ["-o", str(out), "--weights_dir", str(tmp_path / "w"), "--no_progress", "--bs", "8"])
    text = capsys.readouterr().out
    assert rc == 0
    lines = [ln for ln in text.splitlines() if ln.startswith("model: ")]
    assert len(lines) == 1, text
    bundled_file = bundled / "compact_realsr.safetensors"
    assert lines[0].startswith(f"model: bundled compact_realsr ({bundled_file}): official weights not found and "
                               "not downloadable (")
    assert str(tmp_path / "w" / "resshift_realsrx4_s4_v3.pth") in lines[0] and "cannot connect" in lines[0]
    inputs = sorted((ROOT / "examples").glob("*.png"))
    assert len(inputs) >= 3
    for f in inputs:
        lr, sr = Image.open(f), Image.open(out / f.name)
        assert sr.size == (4 * lr.size[0], 4 * lr.size[1]) and sr.mode == "RGB"
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())  # nothing half-downloaded


def test_no_download_flag_falls_back_without_trying(bundled, tmp_path, monkeypatch):
    monkeypatch.setenv("RESSHIFT_WEIGHTS_URL", "http://192.0.2.1/never-contacted")  # TEST-NET-1: unroutable
    m = cli_infer.load_model(args_of("--task", "bicsr", "--no_download", "--weights_dir", str(tmp_path)))
    assert m.line.startswith("model: bundled compact_bicsr (") and m.line.endswith("missing; downloads off)")


def test_neither_official_nor_bundled_names_both(tmp_path, monkeypatch):
    url = dead_url()
    monkeypatch.setenv("RESSHIFT_WEIGHTS_URL", url)
    monkeypatch.setattr(download, "BUNDLED_DIR", tmp_path / "assets")
    with pytest.raises(SystemExit) as err:
        cli_infer.load_model(args_of("--task", "realsr", "-v", "v3", "--weights_dir", str(tmp_path / "w")))
    msg = str(err.value)
    for name in ("resshift_realsrx4_s4_v3.pth", "autoencoder_vq_f4.pth"):
        assert str(tmp_path / "w" / name) in msg and f"{url}/{name}" in msg
    assert str(tmp_path / "assets" / "compact_realsr.safetensors") in msg and "-v compact" in msg


def test_explicit_checkpoints_never_fall_back(bundled, tiny_as_official, tiny_ckpts, tmp_path, monkeypatch):
    """--unet_ckpt given, the official autoencoder unobtainable: an error, not a silent swap."""
    monkeypatch.setenv("RESSHIFT_WEIGHTS_URL", dead_url())
    with pytest.raises(SystemExit, match="autoencoder_vq_f4.pth"):
        cli_infer.load_model(args_of("-v", "v3", "--unet_ckpt", str(tiny_ckpts[0]), "--weights_dir", str(tmp_path)))


# ----------------------------------------------------------------------------- example inputs
def test_examples_are_what_make_examples_writes(tmp_path):
    """The committed examples/ PNGs are reproduced by scripts/make_examples.py (skimage's photos,
    MATLAB bicubic x1/4). Pixels may differ by one 8-bit level: the float32 matrix products can
    round differently with another BLAS and move a value across a .5 boundary."""
    pytest.importorskip("skimage")
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_examples", ROOT / "scripts" / "make_examples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--out", str(tmp_path)]) == 0
    committed = sorted(p.name for p in (ROOT / "examples").glob("*.png"))
    assert committed == sorted(p.name for p in tmp_path.glob("*.png")) and len(committed) >= 3
    for name in committed:
        a = np.asarray(Image.open(ROOT / "examples" / name), np.int16)
        b = np.asarray(Image.open(tmp_path / name), np.int16)
        assert a.shape == b.shape and a.shape[2] == 3 and np.abs(a - b).max() <= 1, name
        assert 64 <= min(a.shape[:2]) and max(a.shape[:2]) <= 128  # small LR inputs
