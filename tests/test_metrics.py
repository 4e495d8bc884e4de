"""PSNR / SSIM / NIQE against independent implementations with the same conventions:
scikit-image (PSNR, SSIM with Gaussian weights on the same uint8 Y images) and BasicSR's
MATLAB-compatible NIQE (values computed with BasicSR 1.4.2's own code, pinned below)."""

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


# ----------------------------------------------------------------------------- NIQE
# Reference values: BasicSR 1.4.2's own niqe.py / matlab_functions.imresize / to_y_channel (the
# PyPI sdist), run outside this repository with float64 images and a float64 resize (BasicSR
# ships float32 there; see test_niqe_matches_basicsr), on BasicSR's rounded Y of these images.
NIQE_BASICSR = {
    "Val_SR/gt/ILSVRC2012_val_00000067.png": 11.743280138455106,
    "Val_SR/gt/ILSVRC2012_val_00000073.png": 8.217184436722961,
    "RealSet65/bike1.jpeg": 2.420838556021556,  # 323x430: cropped to 288x384 (3x4 blocks)
    "bicubic-x4:Val_SR/lq/ILSVRC2012_val_00000067.png": 7.521248321891042,
}
NIQE_NPZ_SHA256 = "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"  # as in assets/NOTICE


def _niqe_image(data_dir, key):
    if key.startswith("bicubic-x4:"):  # PIL bicubic x4, as val_pairs
        lq = Image.open(data_dir / key.split(":", 1)[1]).convert("RGB")
        return np.asarray(lq.resize((lq.width * 4, lq.height * 4), Image.Resampling.BICUBIC))
    return _rgb(data_dir / key)


def test_niqe_pristine_model_asset():
    """The shipped npz is BasicSR's file unchanged, and its window is MATLAB's
    fspecial('gaussian', 7, 7/6)."""
    import hashlib

    assert hashlib.sha256(M.niqe_params_path().read_bytes()).hexdigest() == NIQE_NPZ_SHA256
    assert NIQE_NPZ_SHA256 in (M.niqe_params_path().parent / "NOTICE").read_text()
    mu, cov, window = M.niqe_pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36) and np.allclose(cov, cov.T)
    x = np.arange(7.0) - 3
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))
    # the stored taps are float64 values of the formula: 1e-16 is a few ulps of taps <= 0.14
    np.testing.assert_allclose(window, g / g.sum(), rtol=0, atol=1e-16)


def test_niqe_y_is_basicsr_rounding():
    """BasicSR's Y (float32 storage of Y/255, then round; equal to BasicSR's to_y_channel + round
    on all 2^24 colours, checked outside the repo). A few dozen colours round differently from
    y_uint8, e.g. RGB (2, 221, 108), exact Y 138.500012 (-> 139, BasicSR's value)."""
    rgb = np.array([[[2, 221, 108], [0, 0, 0], [255, 255, 255], [44, 173, 245]]], np.uint8)
    np.testing.assert_array_equal(M.niqe_y(rgb), [[139.0, 16.0, 235.0, 139.0]])
    assert M.niqe_y(rgb).dtype == np.float64
    np.testing.assert_array_equal(M.niqe_y(rgb.astype(np.float32) / 255), M.niqe_y(rgb))


def test_niqe_matches_basicsr(data_dir):
    """Pinned to BasicSR's values (comment at NIQE_BASICSR), and on the scale the SR literature
    reports (these numbers: Val_SR gt 8.2-11.7 on 4 blocks, a real photo 2.4, bicubic x4 7.5).
    Tolerance: both sides are float64 end to end with the same algorithm; they differ only in
    summation order (2-D filter vs the same filter, resize as a matrix product vs BasicSR's loop,
    pinv/cov), measured at <= 2e-12 relative on these images, and these images have no flat
    regions, where rounding noise would decide the AGGD split (a separable filter also moved them
    by < 2e-12). rel 1e-9 leaves three orders of magnitude for other CPUs / BLAS / scipy while
    a one-step flip of any single alpha on the 0.001 grid moves these values by >= 4e-7 relative
    (median 2e-4, measured over every block and alpha), and a changed Y rounding, window or
    resize by more. (BasicSR as shipped, float32 Y image, filters and resize, differs from
    these by up to 1e-4 relative, e.g. 2.42060 for bike1: float32 noise, not a convention.)"""
    for key, want in NIQE_BASICSR.items():
        assert M.niqe_rgb(_niqe_image(data_dir, key)) == pytest.approx(want, rel=1e-9, abs=0), key


def test_niqe_behaviour(data_dir):
    """Lower for a natural image than for its blurred or noisy versions; float input; shapes."""
    rgb = _rgb(sorted((data_dir / "train_hr").glob("bsd200_*.png"))[0])
    y = M.niqe_y(rgb)
    blurred = np.round(np.asarray(Image.fromarray(y.astype(np.float32))
                                  .resize((y.shape[1] // 4, y.shape[0] // 4), Image.Resampling.BICUBIC)
                                  .resize((y.shape[1], y.shape[0]), Image.Resampling.BICUBIC), np.float64))
    noisy = np.round(np.clip(y + np.random.default_rng(0).normal(0, 25, y.shape), 0, 255))
    clean = M.niqe(y)
    assert 1.5 < clean < 5.0  # a pristine BSD photo (2.68 for this one, BSD200 range 1.97-4.88)
    assert clean < M.niqe(blurred) and clean < M.niqe(noisy)
    assert M.niqe_rgb(rgb) == clean and M.niqe(y[..., None]) == clean
    assert M.niqe_rgb(rgb.astype(np.float32) / 255) == pytest.approx(clean, rel=1e-12)  # same Y
    with pytest.raises(ValueError, match="single-channel"):
        M.niqe(np.zeros((200, 200, 3)))


def test_niqe_small_and_flat_images(data_dir):
    """Fewer than two whole 96x96 blocks leave the covariance undefined (BasicSR: LinAlgError for
    one block, 96..191 px per side; ValueError for none): a ValueError naming the size. Two blocks
    (e.g. 96x192, 100x200) is BasicSR's smallest case that returns a value. Flat images have no
    finite AGGD features at all."""
    y = M.niqe_y(_rgb(sorted((data_dir / "train_hr").glob("bsd200_*.png"))[0]))  # 321x481
    for h, w in ((191, 191), (96, 96), (95, 300), (300, 95)):
        with pytest.raises(ValueError, match=f"image {h}x{w} too small"):
            M.niqe(y[:h, :w])
    assert np.isfinite(M.niqe(y[:100, :200]))  # 2 blocks
    with pytest.raises(ValueError, match="finite features"):
        M.niqe(np.full((192, 192), 128.0))
