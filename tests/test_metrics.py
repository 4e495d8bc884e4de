"""PSNR / SSIM / NIQE against independent implementations with the same conventions:
scikit-image (PSNR, SSIM with Gaussian weights on the same uint8 Y images) and
scikit-video's own NIQE (run with its removed scipy.misc.imresize restored via Pillow)."""

import numpy as np
import pytest
from PIL import Image

from resshift_jax import metrics as M

skm = pytest.importorskip("skimage.metrics")


def _rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def val_pairs(data_dir):
    gts = sorted((data_dir / "Val_SR" / "gt").glob("*.png"))
    assert len(gts) == 32
    out = []
    for g in gts:
        gt = _rgb(g)
        lq = Image.open(data_dir / "Val_SR" / "lq" / g.name).convert("RGB")
        up = np.asarray(lq.resize((gt.shape[1], gt.shape[0]), Image.Resampling.BICUBIC))
        out.append((g.stem, gt, up))
    return out


def test_y_channel_and_ubyte_conventions():
    from skimage import img_as_ubyte

    np.testing.assert_allclose(M.rgb_to_y(np.array([[0, 0, 0], [1, 1, 1]], np.float32)), [16 / 255, 235 / 255], atol=1e-7)
    x = np.array([0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 0.4999 / 255, 0.5001 / 255, 0.999, 1], np.float32)
    for dt in (np.float32, np.float64):
        np.testing.assert_array_equal(M.img_as_ubyte(x.astype(dt)), img_as_ubyte(x.astype(dt)))
    assert list(M.img_as_ubyte(x)[:4]) == [0, 0, 2, 2]  # rounds half to even, as skimage does
    with pytest.raises(ValueError):
        M.img_as_ubyte(np.array([1.5], np.float32))


def test_psnr_ssim_match_skimage_on_val_sr(val_pairs):
    rng = np.random.default_rng(0)
    worst_p = worst_s = 0.0
    for name, gt, up in val_pairs:
        noisy = np.clip(gt + rng.normal(0, 8, gt.shape), 0, 255).astype(np.uint8)
        for pred in (up, noisy):
            yp, yg = M.y_uint8(pred), M.y_uint8(gt)
            p_ref = skm.peak_signal_noise_ratio(yg, yp, data_range=255)
            s_ref = skm.structural_similarity(yg, yp, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False, data_range=255)
            worst_p = max(worst_p, abs(M.psnr_y(pred, gt) - p_ref))
            worst_s = max(worst_s, abs(M.ssim_y(pred, gt) - s_ref))
    assert worst_p < 1e-9 and worst_s < 1e-9, (worst_p, worst_s)
    # float [0, 1] input gives the same Y as uint8 input
    _, gt, up = val_pairs[0]
    assert M.psnr_y(up / 255.0, gt.astype(np.float32) / 255) == pytest.approx(M.psnr_y(up, gt), abs=1e-12)
    assert M.psnr_y(gt, gt) == float("inf") and M.ssim_y(gt, gt) == pytest.approx(1.0)


def test_bicubic_baseline_numbers(val_pairs):
    """Pinned: PIL-bicubic x4 of Val_SR lq vs gt (guards against silent convention changes: Y
    weights, uint8 rounding, border handling, SSIM window). The pinned means were computed with
    scikit-image's peak_signal_noise_ratio / structural_similarity on the same uint8 Y images
    (identical to ours to 1e-9, test above): PSNR-Y 24.13209 dB, SSIM-Y 0.626955.
    Tolerance: Pillow's 8-bit bicubic is integer arithmetic and the metrics are float64 means of
    32 images, so CPU-dependent summation order moves them by ~1e-13; 1e-5 dB / 1e-6 leave room
    for that while any convention change (one grey level of Y offset moves PSNR by ~0.1 dB) fails."""
    p = np.mean([M.psnr_y(up, gt) for _, gt, up in val_pairs])
    s = np.mean([M.ssim_y(up, gt) for _, gt, up in val_pairs])
    assert p == pytest.approx(24.132087, abs=1e-5)
    assert s == pytest.approx(0.626955, abs=1e-6)
    assert min(M.psnr_y(up, gt) for _, gt, up in val_pairs) == pytest.approx(20.088695, abs=1e-5)


def test_psnr_y_jax_matches_numpy(val_pairs):
    jnp = pytest.importorskip("jax.numpy")
    pred = np.stack([up for _, _, up in val_pairs[:4]]).astype(np.float32) / 255
    gt = np.stack([g for _, g, _ in val_pairs[:4]]).astype(np.float32) / 255
    ours = np.asarray(M.psnr_y_jax(jnp.asarray(pred), jnp.asarray(gt)))
    ref = [M.psnr_y(p, g) for p, g in zip(pred, gt)]
    # float32 (jax) vs float64 (numpy) mean squared error over ~1e5 pixels: float32 pairwise sums
    # err ~ log2(n) * 6e-8 ~ 1e-6 relative on the MSE, i.e. ~5e-6 dB on ~25 dB: rtol 1e-5 bounds it
    np.testing.assert_allclose(ours, ref, rtol=1e-5)


def test_ssim_errors():
    with pytest.raises(ValueError, match="shape|equal"):
        M.ssim(np.zeros((20, 20)), np.zeros((20, 21)))
    with pytest.raises(ValueError, match="window"):
        M.ssim(np.zeros((8, 8)), np.zeros((8, 8)))


@pytest.fixture(scope="module")
def skvideo_niqe():
    """scikit-video's NIQE, runnable again: scipy.misc.imresize(mode='F') is PIL resize of a
    float image; np.int is int."""
    scipy_misc = pytest.importorskip("scipy.misc")
    had_int = hasattr(np, "int")

    def imresize(arr, size, interp="bicubic", mode=None):
        assert interp == "bicubic" and mode == "F"
        im = Image.fromarray(np.asarray(arr, np.float32))
        wh = tuple((np.array(im.size) * size).astype(int))
        return np.asarray(im.resize(wh, Image.Resampling.BICUBIC))

    old = getattr(scipy_misc, "imresize", None)
    scipy_misc.imresize = imresize
    np.int = int
    try:
        import skvideo.measure
    except Exception as e:  # pragma: no cover
        pytest.skip(f"scikit-video does not import: {e}")
    yield lambda y: float(skvideo.measure.niqe(y)[0])
    if old is None:
        del scipy_misc.imresize
    if not had_int:
        del np.int


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_niqe_matches_scikit_video(data_dir, skvideo_niqe):
    files = [data_dir / "Val_SR" / "gt" / "ILSVRC2012_val_00000067.png",
             sorted((data_dir / "train_hr").glob("*.png"))[1]]
    for f in files:
        y = M.y_uint8(_rgb(f)).astype(np.float32)
        ours, ref = M.niqe(y), skvideo_niqe(y)
        assert np.isfinite(ours) and ours > 0
        # same float64 algorithm; only the resize path and summation order differ (~1e-12 observed
        # order); rel 1e-5 allows scipy/Pillow version differences in the bicubic pyramid
        assert ours == pytest.approx(ref, rel=1e-5), f.name


def test_niqe_behaviour(data_dir):
    """Lower for a natural image than for its blurred or noisy versions; shape errors."""
    y = M.y_uint8(_rgb(sorted((data_dir / "train_hr").glob("*.png"))[2])).astype(np.float32)
    blurred = np.asarray(Image.fromarray(y).resize((y.shape[1] // 4, y.shape[0] // 4), Image.Resampling.BICUBIC)
                         .resize((y.shape[1], y.shape[0]), Image.Resampling.BICUBIC))
    noisy = np.clip(y + np.random.default_rng(0).normal(0, 25, y.shape), 0, 255)
    clean = M.niqe(y)
    assert clean < M.niqe(blurred) and clean < M.niqe(noisy)
    assert M.niqe_rgb(_rgb(sorted((data_dir / "train_hr").glob("*.png"))[2])) == pytest.approx(clean)
    with pytest.raises(ValueError, match="too small"):
        M.niqe(np.zeros((150, 300), np.float32))
    with pytest.raises(ValueError, match="single-channel"):
        M.niqe(np.zeros((200, 200, 3), np.float32))
