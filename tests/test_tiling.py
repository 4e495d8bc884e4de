"""Tiling: reference chop coordinates, official/feather blends, cross-image batching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resshift_jax import pipeline, tiling

SF = 4


def reference_starts(length, pch_size, stride):
    """ImageSpliterTh.extract_starts, restated literally from the reference."""
    if length <= pch_size:
        return [0]
    starts = list(range(0, length, stride))
    for i in range(len(starts)):
        if starts[i] + pch_size > length:
            starts[i] = length - pch_size
    return sorted(set(starts), key=starts.index)


def test_chop_starts_match_reference():
    assert tiling.chop_starts(1000, 512, 448) == [0, 448, 488]
    assert tiling.chop_starts(300, 64, 48) == [0, 48, 96, 144, 192, 236]
    assert tiling.chop_starts(64, 64, 48) == [0]
    for length in range(1, 200, 7):
        for chop, stride in [(64, 48), (64, 64), (32, 16), (50, 7)]:
            assert tiling.chop_starts(length, chop, stride) == reference_starts(length, chop, stride)
    with pytest.raises(ValueError, match="must not exceed"):
        tiling.chop_starts(100, 64, 65)


def test_tile_boxes_cover_and_fit():
    assert tiling.tile_boxes(60, 64, 64, 48) == [(0, 60, 0, 64)]  # fits: no chopping
    boxes = tiling.tile_boxes(100, 40, 64, 48)  # only height exceeds: tiles are 64 x 40
    assert boxes == [(0, 64, 0, 40), (36, 100, 0, 40)]
    cover = np.zeros((130, 70), int)
    for h0, h1, w0, w1 in tiling.tile_boxes(130, 70, 64, 48):
        assert (h1 - h0, w1 - w0) == (64, 64)
        cover[h0:h1, w0:w1] += 1
    assert cover.min() >= 1


def test_feather_weights_partition_of_unity():
    for h, w, chop, stride in [(130, 70, 64, 48), (100, 100, 64, 40), (64 * 3, 64, 64, 64)]:
        total = np.zeros((h * SF, w * SF))
        for (h0, h1, w0, w1), wgt in zip(tiling.tile_boxes(h, w, chop, stride),
                                        tiling.tile_weights(h, w, chop, stride, SF, "feather")):
            assert wgt.min() > 0 and wgt.max() <= 1
            total[h0 * SF:h1 * SF, w0 * SF:w1 * SF] += wgt
        np.testing.assert_allclose(total, 1.0, atol=1e-6)


def nearest_up(x):
    return np.repeat(np.repeat(x, SF, -3), SF, -2)


@pytest.mark.parametrize("blend", tiling.BLENDS)
def test_blend_reproduces_a_pointwise_model(blend):
    """A model that is pointwise in LR pixels gives the untiled result exactly, any blend."""
    lq = np.random.default_rng(0).uniform(-1, 1, (90, 75, 3)).astype(np.float32)
    tiles = [nearest_up(lq[h0:h1, w0:w1]) for h0, h1, w0, w1 in tiling.tile_boxes(90, 75, 32, 24)]
    out = tiling.blend_tiles(tiles, 90, 75, SF, 32, 24, blend)
    np.testing.assert_allclose(out, nearest_up(lq), atol=1e-6)


def offset_model(lq, keys):
    """Upsample + one random constant per tile (stands in for per-tile noise differences)."""
    offsets = jax.vmap(lambda k: jax.random.uniform(k, (), minval=-0.2, maxval=0.2))(keys)
    return nearest_up(np.asarray(lq)) + np.asarray(offsets)[:, None, None, None]


def run(lq_list, bs, blend, chop=32, stride=24, offset=16, process=offset_model):
    calls = []

    def proc(lq, keys):
        calls.append(lq.shape)
        return process(lq, keys)

    runner = tiling.TiledRunner(proc, sf=SF, chop_size=chop, chop_stride=stride, padding_offset=offset,
                                bs=bs, blend=blend)
    items = [(i, x, jax.random.fold_in(jax.random.key(7), i)) for i, x in enumerate(lq_list)]
    return dict(runner.run(items)), calls


def test_feather_has_no_seam_on_a_smooth_image():
    h = w = 80
    yy, xx = np.mgrid[0:h, 0:w] / 80.0
    smooth = np.stack([0.5 * xx - 0.25, 0.3 * yy - 0.1, 0.2 * (xx + yy) - 0.2], -1).astype(np.float32)
    base = nearest_up(smooth)
    grad_base = max(np.abs(np.diff(base, axis=a)).max() for a in (0, 1))
    seams = {}
    for blend in tiling.BLENDS:
        out, _ = run([smooth], 4, blend)
        dev = out[0] - base  # what tiling added on top of the smooth image
        seams[blend] = max(np.abs(np.diff(dev, axis=a)).max() for a in (0, 1))
    # offsets differ by < 0.4 between tiles; overlap is (32-24)·4 = 32 HR px -> steps < 0.4/32
    assert seams["feather"] <= 0.4 / 32 + 1e-6, seams
    assert seams["official"] > 5 * seams["feather"], seams  # averaging shows steps at tile edges
    out, _ = run([smooth], 4, "feather")
    assert max(np.abs(np.diff(out[0], axis=a)).max() for a in (0, 1)) <= grad_base + 0.4 / 32 + 1e-6


def test_runner_batches_across_images_and_is_batch_invariant():
    rng = np.random.default_rng(1)
    shapes = [(20, 30), (70, 50), (32, 32), (17, 9), (70, 50)]
    lqs = [rng.uniform(-1, 1, s + (3,)).astype(np.float32) for s in shapes]
    one, calls1 = run(lqs, 1, "feather")
    many, calls4 = run(lqs, 4, "feather")
    assert sorted(one) == sorted(many) == list(range(5))
    for i, s in enumerate(shapes):
        assert many[i].shape == (s[0] * SF, s[1] * SF, 3)
        np.testing.assert_array_equal(one[i], many[i])  # per-tile keys: batching changes nothing
    n_tiles = sum(len(tiling.tile_boxes(*s, 32, 24)) for s in shapes)
    assert len(calls1) == n_tiles
    assert len(calls4) < n_tiles and all(c[0] <= 4 for c in calls4)
    assert all(c[1] % 16 == 0 and c[2] % 16 == 0 for c in calls4)  # padded to the offset
    # 20x30 and 17x9 pad to 32x32 like the 32x32 image: they share batches
    assert any(c[0] > 1 and c[1:3] == (32, 32) for c in calls4)


def test_runner_keeps_inflight_batches_dispatched_and_results_unchanged():
    """Asynchronous dispatch: with `inflight` = k the runner starts batch n + k before it collects
    batch n (never more than k + 1 outputs held), and the images are the same for every k."""
    rng = np.random.default_rng(2)
    lqs = [rng.uniform(-1, 1, (24, 24, 3)).astype(np.float32) for _ in range(7)]
    items = [(i, x, jax.random.fold_in(jax.random.key(7), i)) for i, x in enumerate(lqs)]
    results = {}
    for k in (0, 1, 3):
        log = []

        def proc(lq, keys, log=log):
            log.append("dispatch")
            return offset_model(lq, keys)

        runner = tiling.TiledRunner(proc, sf=SF, chop_size=32, chop_stride=24, padding_offset=16, bs=2,
                                    blend="feather", inflight=k, on_batch=lambda n, log=log: log.append("collect"))
        out = {}
        for tag, img in runner.run(items):
            out[tag] = img
        assert runner.batches_run == 4 and log.count("collect") == 4
        # k batches stay dispatched while the host collects; never more
        assert max(log[: i + 1].count("dispatch") - log[: i + 1].count("collect") for i in range(len(log))) == k + 1
        assert log[: k + 1] == ["dispatch"] * (k + 1)
        results[k] = out
    for k in (1, 3):
        assert sorted(results[k]) == list(range(7))
        for i in range(7):
            np.testing.assert_array_equal(results[k][i], results[0][i])


def test_shape_buckets_pad_tiles_to_few_shapes_and_crop_back():
    """With buckets each tile side is reflect-padded on to the smallest bucket that holds it: the
    mixed sizes below share two program shapes instead of four, and the outputs keep their sizes
    and values (the stand-in model is pointwise, so more padding changes nothing inside)."""
    rng = np.random.default_rng(3)
    shapes = [(20, 30), (40, 50), (32, 32), (17, 9), (60, 64)]
    lqs = [rng.uniform(-1, 1, s + (3,)).astype(np.float32) for s in shapes]
    ref, calls_ref = run(lqs, 1, "feather", chop=64, stride=48, offset=16)
    assert {c[1:3] for c in calls_ref} == {(32, 32), (48, 64), (32, 16), (64, 64)}
    calls = []

    def proc(lq, keys):
        calls.append(lq.shape)
        return offset_model(lq, keys)

    runner = tiling.TiledRunner(proc, sf=SF, chop_size=64, chop_stride=48, padding_offset=16, bs=1,
                                blend="feather", buckets=(32, 64))
    items = [(i, x, jax.random.fold_in(jax.random.key(7), i)) for i, x in enumerate(lqs)]
    got = dict(runner.run(items))
    assert {c[1:3] for c in calls} == {(32, 32), (64, 64)}
    # program_shapes (what bench_buckets counts) predicts the calls, tile by tile (bs 1)
    assert sorted(sum((runner.program_shapes(*s) for s in shapes), [])) == sorted(c[1:3] for c in calls)
    for i, s in enumerate(shapes):
        assert got[i].shape == (s[0] * SF, s[1] * SF, 3)
        # offset_model is pointwise, so padding more changes nothing inside the image
        np.testing.assert_array_equal(got[i], ref[i])
    with pytest.raises(ValueError, match="multiples of the padding offset"):
        tiling.TiledRunner(proc, sf=SF, chop_size=64, chop_stride=48, padding_offset=16, buckets=(40,))


def test_bucket_size_and_reflect_pad_to_a_bucket():
    assert pipeline.bucket_size(48, (32, 64, 128)) == 64
    assert pipeline.bucket_size(64, (32, 64, 128)) == 64
    assert pipeline.bucket_size(192, (32, 64, 128)) == 192  # above every bucket: unchanged
    assert pipeline.bucket_size(48, ()) == 48
    x = np.random.default_rng(0).uniform(-1, 1, (20, 30, 3)).astype(np.float32)
    y = pipeline.reflect_pad(x, 16, (64,))
    assert y.shape == (64, 64, 3)
    np.testing.assert_array_equal(y[:20, :30], x)
    np.testing.assert_array_equal(y[20:32, :30], pipeline.reflect_pad(x, 16)[20:32, :30])  # the same reflection
    np.testing.assert_array_equal(np.asarray(pipeline.reflect_pad(jnp.asarray(x), 16, (64,))), y)


def test_reflect_pad_numpy_tiles_match_the_jax_program():
    """Tiles are padded on the host (numpy branch), the batched program pads with jnp: one rule."""
    for h, w in [(20, 30), (5, 3), (1, 7), (32, 16), (40, 41)]:
        x = np.random.default_rng(h * w).normal(size=(h, w, 3)).astype(np.float32)
        ref = np.asarray(pipeline.reflect_pad(jnp.asarray(x)[None], 16))[0]
        host = pipeline.reflect_pad(x, 16)
        assert isinstance(host, np.ndarray) and host.shape == (pipeline.padded_size(h, 16), pipeline.padded_size(w, 16), 3)
        np.testing.assert_array_equal(host, ref)
    # reflection excludes the edge (torch F.pad 'reflect'): rows 0..4 -> 0..4, 3, 2
    col = np.arange(5, dtype=np.float32).reshape(5, 1, 1) * np.ones((5, 2, 1), np.float32)
    np.testing.assert_array_equal(pipeline.reflect_pad(col, 8)[:, 0, 0], [0, 1, 2, 3, 4, 3, 2, 1])
