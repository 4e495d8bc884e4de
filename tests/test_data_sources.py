"""Host pipeline through the trainer's dataset path (train/input.build_row_dataset): determinism,
checkpoint restore, process rows, corrupt files, array_record, TFDS, workers; and the host transforms."""

import logging

import numpy as np
import pytest

from resshift_jax.config import load_config
from resshift_jax.data import pack, sources
from resshift_jax.data.pipeline import area_resize, rescale_crop
from resshift_jax.imageio import list_images
from resshift_jax.train.input import build_row_dataset


@pytest.fixture(scope="module")
def files(data_dir):
    f = [str(p) for p in list_images(data_dir / "train_hr", ("png",))[0]]
    assert len(f) >= 300
    return f[::30][:10]  # 10 real images of mixed sizes (incl. t91 ones smaller than 256)


@pytest.fixture(scope="module")
def cfg():
    return load_config("realsr_v3")


def _take(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


def _rows(cfg, batch, seed, files=None, rows=None, **kw):
    """The trainer's dataset of one process holding `rows` (default: all) of each batch."""
    src = None if files is None else sources.FileSource(files)
    return build_row_dataset(cfg, batch, rows or slice(0, batch), seed, source=src, **kw)


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _cat(bs):
    return {k: np.concatenate([b[k] for b in bs]) for k in bs[0]}


def test_same_seed_same_batches(cfg, files):
    a = _take(_rows(cfg, 3, 7, files), 4)
    b = _take(_rows(cfg, 3, 7, files), 4)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert a[0]["hr"].shape == (3, 256, 256, 3) and a[0]["hr"].dtype == np.float32
    assert 0 <= a[0]["hr"].min() and a[0]["hr"].max() <= 1
    c = _take(_rows(cfg, 3, 8, files), 1)
    assert not np.array_equal(a[0]["hr"], c[0]["hr"])
    # epochs: 10 records, batch 3 -> batch 4 starts in epoch 1; every record once per epoch
    idx = np.concatenate([x["index"] for x in a])
    ep = np.concatenate([x["epoch"] for x in a])
    assert sorted(idx[ep == 0].tolist()) == list(range(10))


def test_examples_do_not_depend_on_the_batch_size(cfg, files):
    """Every example is a function of (seed, epoch, index): 6 batches of 2 and 3 batches of 4
    hold the same examples in the same order (across the epoch boundary at 10)."""
    assert _same(_cat(_take(_rows(cfg, 2, 2, files), 6)), _cat(_take(_rows(cfg, 4, 2, files), 3)))


def test_iterator_restore_continues_exactly(cfg, files):
    ds = _rows(cfg, 2, 3, files)
    it = iter(ds)
    next(it), next(it)
    state = it.get_state()
    want = [next(it) for _ in range(3)]
    it2 = iter(ds)
    it2.set_state(state)
    got = [next(it2) for _ in range(3)]
    assert all(_same(x, y) for x, y in zip(want, got))


def test_process_rows_partition_the_global_batch(cfg, files):
    """Two processes holding rows [0, 2) and [2, 4) of a global batch of 4 decode exactly the
    one-process batch between them (N processes == 1 process)."""
    whole = _take(_rows(cfg, 4, 0, files), 3)
    halves = [_take(_rows(cfg, 4, 0, files, rows=slice(r, r + 2)), 3) for r in (0, 2)]
    for k in range(3):
        assert _same(whole[k], _cat([halves[0][k], halves[1][k]]))
    assert not set(halves[0][0]["index"].tolist()) & set(halves[1][0]["index"].tolist())


def test_corrupt_and_empty_files_skipped_and_counted(cfg, files, tmp_path, caplog):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (tmp_path / "truncated.png").write_bytes(open(files[0], "rb").read()[:300])
    bad = [str(tmp_path / n) for n in ("empty.png", "garbage.png", "truncated.png")]
    with caplog.at_level(logging.WARNING):
        batches = _take(_rows(cfg, 2, 0, files[:3] + bad), 3)  # one epoch of the 6 records
    assert sum(int(b["n_corrupt"].sum()) for b in batches) >= 3  # each bad slot counted
    assert all(np.isfinite(b["hr"]).all() for b in batches)
    assert "empty file" in caplog.text and "cannot decode" in caplog.text


def test_array_record_pack_roundtrip_and_workers(cfg, files, tmp_path):
    import shutil
    src_dir = tmp_path / "imgs" / "sub"
    src_dir.mkdir(parents=True)
    for f in files[:6]:
        shutil.copy(f, src_dir)
    paths = pack.pack(tmp_path / "imgs", tmp_path / "ar", num_shards=2)
    assert len(paths) == 2
    ar = sources.ArrayRecordSource(tmp_path / "ar")
    assert len(ar) == 6
    names = sorted(ar[i][0] for i in range(6))
    assert names == sorted(f"sub/{p.split('/')[-1]}" for p in files[:6])
    name, data = ar[0]
    assert data == (src_dir / name.split("/")[-1]).read_bytes()
    cfg = load_config("realsr_v3")
    cfg.data.train.array_record_dir = str(tmp_path / "ar")
    a = _take(_rows(cfg, 2, 1, num_workers=0), 2)
    b = _take(_rows(cfg, 2, 1, num_workers=2), 2)  # workers once
    assert all(_same(x, y) for x, y in zip(a, b))


def test_bicsr_ground_truth_keeps_the_cubic_overshoot(files):
    """bicsr: GT short side resized with cubic a=-0.75 and not clipped (the reference's
    BicubicFromSource keeps values outside [0, 1]); natural edges overshoot somewhere."""
    hr = _cat(_take(_rows(load_config("bicsr"), 4, 0, files), 1))["hr"]
    assert hr.min() < 0 or hr.max() > 1
    assert -0.2 < hr.min() and hr.max() < 1.2  # a cubic kernel's lobes: |overshoot| < ~0.13 x step


def test_rescale_crop_and_area():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (100, 300, 3), dtype=np.uint8)  # short side < 256: reflect-pad
    out = rescale_crop(small, np.random.default_rng(1), 256)
    assert out.shape == (256, 256, 3) and out.dtype == np.float32
    big = rng.integers(0, 256, (400, 512, 3), dtype=np.uint8)  # S = 400 -> area resize to 256
    assert rescale_crop(big, np.random.default_rng(1), 256).shape == (256, 256, 3)
    flat = np.full((10, 10, 3), 77, np.uint8)
    np.testing.assert_allclose(area_resize(flat, (7, 7)), 77, atol=1e-4)


def test_rescale_crop_writes_into_a_batch_slot(files, monkeypatch):
    """`out=` (a slot of a batch array) holds exactly what rescale_crop returns without it."""
    a = sources.decode_image(files[0], open(files[0], "rb").read())
    for use_cv2 in (True, False):
        with monkeypatch.context() as m:
            if not use_cv2:
                m.setattr(sources, "OPENCV", None)
            for rescale in (True, False):
                batch = np.full((2, 256, 256, 3), np.nan, np.float32)
                got = rescale_crop(a, np.random.default_rng(5), 256, rescale, hflip=True, out=batch[1])
                assert np.shares_memory(got, batch[1]) and np.isnan(batch[0]).all()
                want = rescale_crop(a, np.random.default_rng(5), 256, rescale, hflip=True)
                assert np.array_equal(batch[1], want)


def _png(arr, mode=None, **kw):
    """`arr` encoded as PNG by Pillow (converted to `mode` first when given)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    im = Image.fromarray(arr)
    (im.convert(mode) if mode else im).save(buf, "PNG", **kw)
    return buf.getvalue()


def test_imagecodecs_png_path_gives_opencv_pixels(files, monkeypatch):
    """Plain RGB PNGs decoded by imagecodecs equal OpenCV's decoding; the PNGs it leaves to
    OpenCV (gray, palette, alpha, tRNS, EXIF orientation) still decode as OpenCV does."""
    pytest.importorskip("imagecodecs")
    pytest.importorskip("cv2")
    from PIL import Image
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: OpenCV applies it
    payloads = [open(f, "rb").read() for f in files] + [
        _png(rgb[..., 0]), _png(np.dstack([rgb, rgb[..., :1]])), _png(rgb, transparency=(1, 2, 3)),
        _png(rgb, exif=exif.tobytes()), _png(rgb, "P")]
    for i, payload in enumerate(payloads):
        got = sources.decode_image(f"png {i}", payload)
        with monkeypatch.context() as m:
            m.setattr(sources, "IMAGECODECS", None)
            want = sources.decode_image(f"png {i}", payload)
        assert got.dtype == np.uint8 and np.array_equal(got, want), i
    assert sources._decode_png_imagecodecs(payloads[0]) is not None  # the data set's PNGs take this path
    assert sources._decode_png_imagecodecs(payloads[len(files) + 3]) is None  # eXIf: left to OpenCV
    assert sources._decode_png_imagecodecs(payloads[0][:300]) is None  # truncated: left to the others


def test_tfds_source_without_tensorflow(cfg, files, tmp_path):
    import shutil
    import sys
    pytest.importorskip("tensorflow_datasets")
    src_dir = tmp_path / "imgs"
    src_dir.mkdir()
    for f in files[:4]:
        shutil.copy(f, src_dir)
    version_dir = pack.pack_tfds(src_dir, tmp_path / "tfds", "tiny_hr")
    assert "tensorflow" not in sys.modules  # written and read without TensorFlow
    src = sources.TfdsSource("tiny_hr", str(tmp_path / "tfds"))
    assert len(src) == 4
    for i, f in enumerate(sorted(files[:4])):  # encoded bytes, unchanged, in sorted file order
        assert src[i][1] == open(f, "rb").read()
    assert len(sources.TfdsSource(version_dir)) == 4  # a version folder works too
    cfg = load_config("realsr_v3")
    cfg.data.train.tfds_name, cfg.data.train.tfds_data_dir = "tiny_hr", str(tmp_path / "tfds")
    got = _take(_rows(cfg, 2, 5), 2)
    want = _take(_rows(cfg, 2, 5, sorted(files[:4])), 2)
    assert all(_same(x, y) for x, y in zip(got, want))  # same pairs as reading the files
    assert "tensorflow" not in sys.modules


def test_fast_host_paths_match_plain_numpy_pillow(files, monkeypatch):
    """OpenCV decode / INTER_AREA and flip-on-the-crop give the pixels of the plain path."""
    import io

    from PIL import Image
    pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (341, 400, 3), dtype=np.uint8)
    for out in ((256, 256), (100, 77), (170, 200)):  # non-integer and integer factors
        fast = area_resize(img, out)
        plain = area_resize(img, out, use_cv2=False)
        assert fast.shape == plain.shape == out + (3,)
        np.testing.assert_allclose(fast, plain, atol=1e-4)  # on the 0..255 scale
    for i, f in enumerate(files[:6]):
        data = open(f, "rb").read()
        buf = io.BytesIO()
        Image.open(f).convert("RGB").save(buf, "JPEG", quality=90)
        for payload in (data, buf.getvalue()):
            a = sources.decode_image(f, payload)
            with Image.open(io.BytesIO(payload)) as im:
                assert np.array_equal(a, np.asarray(im.convert("RGB")))
        for flip in (False, True):
            for rescale in (True, False):
                want = rescale_crop(np.ascontiguousarray(a[:, ::-1]) if flip else a,
                                    np.random.default_rng(i), 256, rescale)
                got = rescale_crop(a, np.random.default_rng(i), 256, rescale, hflip=flip)
                np.testing.assert_allclose(got, want, atol=1e-6)
                with monkeypatch.context() as m:  # without OpenCV: exactly the plain NumPy result
                    m.setattr(sources, "OPENCV", None)
                    plain = rescale_crop(a, np.random.default_rng(i), 256, rescale, hflip=flip)
                    ref = rescale_crop(np.ascontiguousarray(a[:, ::-1]) if flip else a,
                                       np.random.default_rng(i), 256, rescale)
                    assert np.array_equal(plain, ref)
    with pytest.raises(ValueError, match="cannot decode"):
        sources.decode_image("cut.jpg", buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated JPEG
