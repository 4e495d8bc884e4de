"""Image I/O: bit depths, gray, alpha, palette, EXIF orientation, formats, clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

from resshift_jax import imageio as iio


def _rng_image(h, w, c, dtype=np.uint8, seed=0):
    peak = 65535 if dtype == np.uint16 else 255
    return np.random.default_rng(seed).integers(0, peak + 1, (h, w, c)).astype(dtype)


def _write_png16(path, arr):
    import png
    h, w, c = arr.shape
    png.Writer(w, h, greyscale=c in (1, 2), alpha=c in (2, 4), bitdepth=16).write(
        open(path, "wb"), arr.reshape(h, w * c))


def test_rgb8_png_roundtrip(tmp_path):
    a = _rng_image(5, 7, 3)
    Image.fromarray(a).save(tmp_path / "a.png")
    x, meta = iio.read_image(tmp_path / "a.png")
    assert x.dtype == np.float32 and x.shape == (5, 7, 3)
    assert (meta.format, meta.bit_depth, meta.channels, meta.alpha) == ("PNG", 8, 3, None)
    np.testing.assert_array_equal(iio.to_uint(x, 8), a)
    out = iio.write_image(tmp_path / "o" / "a.png", x, meta)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), a)


def test_rgb16_png_keeps_16_bits(tmp_path):
    a = _rng_image(4, 6, 3, np.uint16)
    _write_png16(tmp_path / "a16.png", a)
    x, meta = iio.read_image(tmp_path / "a16.png")
    assert meta.bit_depth == 16 and meta.channels == 3 and meta.alpha is None
    np.testing.assert_array_equal(iio.to_uint(x, 16), a)  # precision beyond 8 bits survives
    out = iio.write_image(tmp_path / "o.png", x, meta)
    y, meta2 = iio.read_image(out)
    assert meta2.bit_depth == 16
    np.testing.assert_array_equal(iio.to_uint(y, 16), a)


def test_png_level_changes_size_not_pixels(tmp_path):
    """The default level writes exactly the bytes Pillow writes by default (zlib's default is
    level 6), so outputs did not change when the flag came; other levels keep every pixel."""
    yy, xx = np.mgrid[0:64, 0:64]
    a = np.stack([xx * 4, yy * 4, (xx * yy) % 256], -1).astype(np.uint8)  # compressible, not trivially
    a[::7] = _rng_image(10, 64, 3)[: a[::7].shape[0]]
    Image.fromarray(a).save(tmp_path / "a.png")
    x, meta = iio.read_image(tmp_path / "a.png")
    Image.fromarray(a).save(tmp_path / "pil_default.png")
    default = iio.write_image(tmp_path / "d.png", x, meta).read_bytes()
    assert default == (tmp_path / "pil_default.png").read_bytes()
    sizes = {}
    for level in (0, 1, 9):
        out = iio.write_image(tmp_path / f"l{level}.png", x, meta, png_level=level)
        np.testing.assert_array_equal(np.asarray(Image.open(out)), a)
        sizes[level] = out.stat().st_size
    assert sizes[0] > sizes[1] >= sizes[9] and sizes[0] > len(default)  # level 0 stores, no deflate
    a16 = _rng_image(4, 6, 3, np.uint16)
    _write_png16(tmp_path / "a16.png", a16)
    x16, meta16 = iio.read_image(tmp_path / "a16.png")
    y16, _ = iio.read_image(iio.write_image(tmp_path / "o16.png", x16, meta16, png_level=1))
    np.testing.assert_array_equal(iio.to_uint(y16, 16), a16)
    with pytest.raises(ValueError, match="png_level must be 0 to 9"):
        iio.write_image(tmp_path / "bad.png", x, meta, png_level=10)


def test_rgba16_and_gray16(tmp_path):
    a = _rng_image(3, 5, 4, np.uint16, seed=1)
    _write_png16(tmp_path / "rgba16.png", a)
    x, meta = iio.read_image(tmp_path / "rgba16.png")
    assert meta.bit_depth == 16 and meta.alpha is not None
    np.testing.assert_array_equal(iio.to_uint(meta.alpha, 16), a[..., 3])
    g = _rng_image(3, 5, 1, np.uint16, seed=2)
    Image.fromarray(g[..., 0]).save(tmp_path / "g16.png")  # Pillow writes 16-bit gray
    x, meta = iio.read_image(tmp_path / "g16.png")
    assert (meta.bit_depth, meta.channels) == (16, 1) and x.shape == (3, 5, 3)
    np.testing.assert_array_equal(iio.to_uint(x[..., 0], 16), g[..., 0])
    out = iio.write_image(tmp_path / "g16_out.png", x, meta)
    im = Image.open(out)
    assert im.mode.startswith("I;16") or im.mode == "I"
    np.testing.assert_array_equal(np.asarray(im).astype(np.uint16), g[..., 0])


def test_gray_in_gray_out(tmp_path):
    g = _rng_image(6, 4, 1)[..., 0]
    Image.fromarray(g).save(tmp_path / "g.png")
    x, meta = iio.read_image(tmp_path / "g.png")
    assert meta.channels == 1 and x.shape == (6, 4, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    out = iio.write_image(tmp_path / "g_out.png", x, meta)
    im = Image.open(out)
    assert im.mode == "L"
    np.testing.assert_array_equal(np.asarray(im), g)


def test_rgba_alpha_upscaled_and_reattached(tmp_path):
    a = _rng_image(8, 6, 4)
    Image.fromarray(a).save(tmp_path / "rgba.png")
    x, meta = iio.read_image(tmp_path / "rgba.png")
    assert meta.alpha is not None and meta.alpha.shape == (8, 6)
    np.testing.assert_array_equal(iio.to_uint(x, 8), a[..., :3])
    alpha4 = iio.upscale_alpha(meta.alpha, (32, 24))
    assert alpha4.shape == (32, 24) and alpha4.min() >= 0 and alpha4.max() <= 1
    # a constant alpha stays exactly constant
    np.testing.assert_allclose(iio.upscale_alpha(np.full((8, 6), 0.5, np.float32), (32, 24)), 0.5, atol=1e-6)
    big = np.repeat(np.repeat(x, 4, 0), 4, 1)
    out = iio.write_image(tmp_path / "rgba_out.png", big, meta, alpha=alpha4)
    im = Image.open(out)
    assert im.mode == "RGBA" and im.size == (24, 32)
    # LA (gray + alpha) comes back as LA
    Image.fromarray(_rng_image(4, 4, 2)).save(tmp_path / "la.png")
    x, meta = iio.read_image(tmp_path / "la.png")
    assert meta.channels == 1 and meta.alpha is not None
    out = iio.write_image(tmp_path / "la_out.png", x, meta, alpha=meta.alpha)
    assert Image.open(out).mode == "LA"


def test_palette_and_bilevel(tmp_path):
    rgb = Image.fromarray(_rng_image(10, 10, 3))
    p = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    p.save(tmp_path / "p.png")
    x, meta = iio.read_image(tmp_path / "p.png")
    assert meta.mode == "P" and meta.channels == 3 and meta.alpha is None
    np.testing.assert_array_equal(iio.to_uint(x, 8), np.asarray(p.convert("RGB")))
    p.info["transparency"] = 0
    p.save(tmp_path / "pt.png", transparency=0)
    _, meta = iio.read_image(tmp_path / "pt.png")
    assert meta.alpha is not None
    Image.fromarray(_rng_image(5, 5, 1)[..., 0] > 128).save(tmp_path / "b.png")
    x, meta = iio.read_image(tmp_path / "b.png")
    assert meta.channels == 1 and set(np.unique(x)) <= {0.0, 1.0}


def test_exif_orientation_applied(tmp_path):
    a = _rng_image(4, 6, 3)  # h=4, w=6; JPEG is lossy, so compare orientation by shape + content
    a[:, :3] = 0
    a[:, 3:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    Image.fromarray(a).save(tmp_path / "r.jpg", exif=exif, quality=100)
    x, meta = iio.read_image(tmp_path / "r.jpg")
    assert x.shape == (6, 4, 3) and meta.format == "JPEG"
    assert x[0].mean() < 0.2 and x[-1].mean() > 0.8  # left half (dark) is now on top
    # and for 16-bit PNGs (decoded by pypng) through the eXIf chunk
    a16 = _rng_image(4, 6, 3, np.uint16)
    buf = io.BytesIO()
    Image.fromarray(a16[..., 0]).save(buf, "PNG", exif=exif)
    (tmp_path / "r16.png").write_bytes(buf.getvalue())
    x, meta = iio.read_image(tmp_path / "r16.png")
    assert x.shape == (6, 4, 3) and meta.bit_depth == 16
    np.testing.assert_array_equal(iio.to_uint(x[..., 0], 16), np.rot90(a16[..., 0], -1))


@pytest.mark.parametrize("fmt,ext", [("JPEG", ".jpg"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("TIFF", ".tif")])
def test_formats(tmp_path, fmt, ext):
    a = _rng_image(8, 8, 3)
    Image.fromarray(a).save(tmp_path / f"a{ext}", format=fmt)
    x, meta = iio.read_image(tmp_path / f"a{ext}")
    assert x.shape == (8, 8, 3) and meta.format == fmt
    assert iio.output_format(meta, "auto") == ext and iio.output_format(meta, "png") == ".png"
    out = iio.write_image(tmp_path / f"o{ext}", x, meta)
    assert Image.open(out).format == fmt


def test_output_format_auto_falls_back_to_png():
    m = iio.ImageMeta("x.jpg", "JPEG", "RGBA", 8, 3, alpha=np.zeros((1, 1), np.float32))
    assert iio.output_format(m, "auto") == ".png"
    m = iio.ImageMeta("x.tif", "TIFF", "RGB", 16, 3)
    assert iio.output_format(m, "auto") == ".png"
    m = iio.ImageMeta("x.tif", "TIFF", "I;16", 16, 1)
    assert iio.output_format(m, "auto") == ".tif"


def test_unreadable_files_raise_clear_errors(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    good = io.BytesIO()
    Image.fromarray(_rng_image(64, 64, 3)).save(good, "PNG")
    (tmp_path / "trunc.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    jpg = io.BytesIO()
    Image.fromarray(_rng_image(64, 64, 3)).save(jpg, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(jpg.getvalue()[:300])
    bad16 = tmp_path / "bad16.png"
    _write_png16(bad16, _rng_image(16, 16, 3, np.uint16))
    bad16.write_bytes(bad16.read_bytes()[:200])
    expect = {"zero.png": "empty file", "text.jpg": "not an image", "trunc.png": "truncated",
              "trunc.jpg": "truncated", "bad16.png": "PNG"}
    for name, words in expect.items():
        with pytest.raises(iio.ImageReadError) as err:
            iio.read_image(tmp_path / name)
        assert name in str(err.value) and words in str(err.value), str(err.value)
    with pytest.raises(iio.ImageReadError, match="missing.png"):
        iio.read_image(tmp_path / "missing.png")


def test_output_never_overwrites_input(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(_rng_image(4, 4, 3)).save(src)
    out = iio.output_path(src, tmp_path, rel_to=tmp_path, ext=".png")
    assert out != src and out.name == "a_sr.png"
    assert iio.output_path(src, tmp_path / "res", rel_to=tmp_path).name == "a.png"
    x, meta = iio.read_image(src)
    with pytest.raises(ValueError, match="overwrite the input"):
        iio.write_image(src, x, meta)


def test_list_images_recursive(tmp_path, data_dir):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    for p in ["a.png", "sub/b.JPG", ".hidden/c.png", "notes.txt"]:
        (tmp_path / p).write_bytes(b"x")
    files, root = iio.list_images(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.png", "sub/b.JPG"]
    assert root == tmp_path
    # every RealSet65 photo reads (one of them is an RGBA PNG named .jpeg)
    files, _ = iio.list_images(data_dir / "RealSet65")
    assert len(files) >= 60
    x, meta = iio.read_image(data_dir / "RealSet65" / "flower2.jpeg")
    assert meta.format == "PNG" and meta.alpha is not None and x.shape[-1] == 3
