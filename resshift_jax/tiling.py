"""Tiled inference for large images: the reference's chop coordinates, two blends, and a
planner that batches tiles of several images together.

Coordinates follow `ImageSpliterTh` (utils/util_image.py of the reference), in LR pixels:
an axis longer than `chop_size` is cut at starts 0, stride, 2·stride, ... each clipped to
`length − chop_size`, duplicates removed; an axis that fits gives one (shorter) tile. An image
is chopped only when its height or width exceeds `chop_size`. Outputs are pasted at ×sf
coordinates and blended:

* ``official``: uniform averaging (Σ tile / count), exactly the reference's `gather`;
* ``feather``: each tile's weight ramps linearly over the overlap it shares with its
  neighbour (in HR pixels), so the weights of two overlapping tiles sum to one and per-tile
  differences fade in smoothly instead of showing a seam.

`TiledRunner` streams images through a batch function `process(lq (B, hp, wp, 3), keys (B,))`
(an `SRPipeline` call): tiles whose padded shape agrees are batched together up to `bs`
across images; every tile gets its own key `fold_in(image_key, tile_index)`, so a result does
not depend on how tiles were batched. Tiles are padded on the host by `pipeline.reflect_pad`,
the one padding rule of the sampler program.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict, deque
from typing import Callable, Iterable, Iterator

import jax
import numpy as np

from resshift_jax.pipeline import program_side, reflect_pad

BLENDS = ("official", "feather")


# ----------------------------------------------------------------------------- coordinates
def chop_starts(length: int, chop_size: int, stride: int) -> list[int]:
    """Tile starts along one axis, exactly as ImageSpliterTh.extract_starts."""
    if stride > chop_size:
        raise ValueError(f"chop_stride ({stride}) must not exceed chop_size ({chop_size})")
    if stride <= 0:
        raise ValueError(f"chop_stride must be positive, got {stride}")
    if length <= chop_size:
        return [0]
    starts = [min(s, length - chop_size) for s in range(0, length, stride)]
    return list(dict.fromkeys(starts))  # drop duplicates, keep order


def needs_chop(h: int, w: int, chop_size: int) -> bool:
    """The reference chops when either side exceeds chop_size."""
    return h > chop_size or w > chop_size


def tile_boxes(h: int, w: int, chop_size: int, stride: int) -> list[tuple[int, int, int, int]]:
    """LR boxes (h0, h1, w0, w1), row-major; one full-image box when no chopping is needed."""
    if not needs_chop(h, w, chop_size):
        return [(0, h, 0, w)]
    hs, ws = chop_starts(h, chop_size, stride), chop_starts(w, chop_size, stride)
    ch, cw = min(chop_size, h), min(chop_size, w)
    return [(i, i + ch, j, j + cw) for i in hs for j in ws]


def feather_ramps(starts: list[int], size: int, sf: int) -> list[np.ndarray]:
    """1-D HR weights of each tile along one axis (tiles of `size` LR pixels at `starts`).

    The weight ramps linearly, at pixel centres, over the overlap with the previous and the
    next tile, so two overlapping tiles' weights sum to 1; 1 elsewhere (never 0).
    """
    n = size * sf
    out = []
    for k, s in enumerate(starts):
        w = np.ones(n, np.float64)
        if k > 0:
            ov = (starts[k - 1] + size - s) * sf
            if ov > 0:
                w[:ov] = np.minimum(w[:ov], (np.arange(ov) + 0.5) / ov)
        if k + 1 < len(starts):
            ov = (s + size - starts[k + 1]) * sf
            if ov > 0:
                w[n - ov:] = np.minimum(w[n - ov:], (ov - np.arange(ov) - 0.5) / ov)
        out.append(w.astype(np.float32))
    return out


def tile_weights(h: int, w: int, chop_size: int, stride: int, sf: int, blend: str) -> list[np.ndarray | None]:
    """Per-tile HR weight maps (in `tile_boxes` order); None means uniform weight 1."""
    if blend not in BLENDS:
        raise ValueError(f"unknown blend {blend!r}; choose one of {BLENDS}")
    boxes = tile_boxes(h, w, chop_size, stride)
    if blend == "official" or len(boxes) == 1:
        return [None] * len(boxes)
    hs = chop_starts(h, chop_size, stride) if h > chop_size else [0]
    ws = chop_starts(w, chop_size, stride) if w > chop_size else [0]
    rh = feather_ramps(hs, min(chop_size, h), sf)
    rw = feather_ramps(ws, min(chop_size, w), sf)
    return [np.outer(a, b) for a in rh for b in rw]


# ----------------------------------------------------------------------------- blending
class Canvas:
    """Σ weight·tile and Σ weight for one HR image."""

    def __init__(self, h: int, w: int, sf: int, channels: int = 3):
        self.acc = np.zeros((h * sf, w * sf, channels), np.float32)
        self.wsum = np.zeros((h * sf, w * sf, 1), np.float32)

    def add(self, tile: np.ndarray, box_hr: tuple[int, int, int, int], weight: np.ndarray | None):
        h0, h1, w0, w1 = box_hr
        if weight is None:
            self.acc[h0:h1, w0:w1] += tile
            self.wsum[h0:h1, w0:w1] += 1.0
        else:
            self.acc[h0:h1, w0:w1] += tile * weight[..., None]
            self.wsum[h0:h1, w0:w1] += weight[..., None]

    def result(self) -> np.ndarray:
        if not np.all(self.wsum > 0):
            raise RuntimeError("tiling left HR pixels uncovered (bug in the tile plan)")
        return self.acc / self.wsum


def blend_tiles(tiles: list[np.ndarray], h: int, w: int, sf: int, chop_size: int, stride: int,
                blend: str = "official") -> np.ndarray:
    """Blend per-tile HR outputs (in `tile_boxes` order) into one (h·sf, w·sf, c) image."""
    boxes = tile_boxes(h, w, chop_size, stride)
    if len(tiles) != len(boxes):
        raise ValueError(f"{len(tiles)} tiles given, the plan for {h}x{w} has {len(boxes)}")
    canvas = Canvas(h, w, sf, tiles[0].shape[-1])
    for t, box, wgt in zip(tiles, boxes, tile_weights(h, w, chop_size, stride, sf, blend)):
        canvas.add(np.asarray(t, np.float32), tuple(v * sf for v in box), wgt)
    return canvas.result()


# ----------------------------------------------------------------------------- planner
@dataclasses.dataclass
class _Image:
    tag: object
    canvas: Canvas
    remaining: int


@dataclasses.dataclass
class _Tile:
    image: _Image
    index: int
    key: jax.Array
    box_hr: tuple[int, int, int, int]
    size_hr: tuple[int, int]
    weight: np.ndarray | None
    lq: np.ndarray  # padded LR tile


_fold_keys = jax.jit(jax.vmap(jax.random.fold_in))


def tile_keys(image_key: jax.Array, count: int) -> jax.Array:
    """(count,) keys fold_in(image_key, i): tile i's noise, whatever its batch."""
    return _fold_keys(jax.numpy.stack([image_key] * count), jax.numpy.arange(count, dtype=jax.numpy.uint32))


class TiledRunner:
    """Run `process(lq (B, hp, wp, 3), keys (B,)) -> (B, sf·hp, sf·wp, 3)` over images of any
    size: chop, batch tiles of equal padded shape across images up to `bs`, blend, crop.

    A last, smaller batch of a shape that already ran at `bs` is padded up to `bs` (repeating
    its last tile) so it reuses the compiled program instead of compiling a new one. Batches
    are whole multiples of `batch_multiple` (the number of devices): a batch the pipeline
    cannot split over its devices would be computed on every device. `inflight` batches stay
    dispatched while the host collects (0: each batch is waited for at once). `buckets` (LR
    sizes, multiples of `padding_offset`): each tile side is reflect-padded on to the smallest
    bucket that holds it, so a folder of mixed sizes compiles a few programs, not one per size
    (the default, no buckets, pads as the reference does: to the next multiple of the offset).
    """

    def __init__(self, process: Callable, *, sf: int, chop_size: int, chop_stride: int,
                 padding_offset: int, bs: int = 1, blend: str = "feather", batch_multiple: int = 1,
                 on_batch: Callable[[int], None] | None = None, inflight: int = 1, buckets=()):
        if blend not in BLENDS:
            raise ValueError(f"unknown blend {blend!r}; choose one of {BLENDS}")
        if bs < 1:
            raise ValueError(f"bs must be >= 1, got {bs}")
        chop_starts(chop_size + 1, chop_size, chop_stride)  # validates size/stride
        self.multiple = max(1, int(batch_multiple))
        bs = -(-bs // self.multiple) * self.multiple  # whole batches per device (no replicated work)
        self.process, self.sf, self.bs, self.blend = process, sf, bs, blend
        self.chop_size, self.chop_stride, self.offset = chop_size, chop_stride, padding_offset
        self.on_batch = on_batch
        self.batch_sizes_run: dict[tuple, set] = defaultdict(set)
        self.batches_run = 0
        self.inflight = max(0, int(inflight))
        self.buckets = tuple(int(b) for b in buckets or ())
        if any(b % padding_offset for b in self.buckets):
            raise ValueError(f"shape buckets {self.buckets} must be multiples of the padding offset {padding_offset}")

    def count_tiles(self, h: int, w: int) -> int:
        return len(tile_boxes(h, w, self.chop_size, self.chop_stride))

    def program_shapes(self, h: int, w: int) -> list[tuple[int, int]]:
        """The padded LR shape (hp, wp) of each tile of an h x w image: the programs it needs."""
        return [(program_side(h1 - h0, self.offset, self.buckets), program_side(w1 - w0, self.offset, self.buckets))
                for h0, h1, w0, w1 in tile_boxes(h, w, self.chop_size, self.chop_stride)]

    def _tiles_of(self, tag, lq: np.ndarray, image_key) -> tuple[_Image, list[_Tile]]:
        h, w = lq.shape[:2]
        boxes = tile_boxes(h, w, self.chop_size, self.chop_stride)
        weights = tile_weights(h, w, self.chop_size, self.chop_stride, self.sf, self.blend)
        keys = tile_keys(image_key, len(boxes))
        img = _Image(tag, Canvas(h, w, self.sf, lq.shape[-1]), len(boxes))
        tiles = []
        for k, (box, wgt) in enumerate(zip(boxes, weights)):
            h0, h1, w0, w1 = box
            hr = tuple(v * self.sf for v in box)
            tiles.append(_Tile(img, k, keys[k], hr, (hr[1] - hr[0], hr[3] - hr[2]), wgt,
                               reflect_pad(np.ascontiguousarray(lq[h0:h1, w0:w1]), self.offset, self.buckets)))
        return img, tiles

    def _dispatch(self, batch: list[_Tile], pad_to: int) -> tuple:
        """Start the program on one batch (asynchronously: JAX returns before the device is done)."""
        shape = batch[0].lq.shape
        padded = batch + [batch[-1]] * (pad_to - len(batch))
        lq = np.stack([t.lq for t in padded])
        keys = jax.numpy.stack([t.key for t in padded])
        self.batch_sizes_run[shape].add(pad_to)
        self.batches_run += 1
        return batch, self.process(lq, keys)

    def _collect(self, batch: list[_Tile], out) -> list[_Image]:
        """Wait for one batch's output, blend its tiles; the images it completes."""
        out = np.asarray(jax.device_get(out), np.float32)
        done = []
        for t, o in zip(batch, out[: len(batch)]):
            th, tw = t.size_hr
            t.image.canvas.add(o[:th, :tw], t.box_hr, t.weight)
            t.image.remaining -= 1
            if t.image.remaining == 0:
                done.append(t.image)
        if self.on_batch is not None:
            self.on_batch(len(batch))
        return done

    def run(self, items: Iterable[tuple[object, np.ndarray, jax.Array]]) -> Iterator[tuple[object, np.ndarray]]:
        """items: (tag, lq float (h, w, 3) in [-1, 1], image key). Yields (tag, (sf·h, sf·w, 3))
        in order of completion, each as soon as its last tile is blended.

        Up to `inflight` batches run on the device while the host collects the previous one and
        cuts the next (asynchronous dispatch); the results do not depend on it."""
        pending: dict[tuple, list[_Tile]] = defaultdict(list)
        running: deque = deque()

        def start(queue, pad_to):
            running.append(self._dispatch(queue, pad_to))
            while len(running) > self.inflight:
                yield from ((img.tag, img.canvas.result()) for img in self._collect(*running.popleft()))

        for tag, lq, key in items:
            _, tiles = self._tiles_of(tag, np.asarray(lq, np.float32), key)
            for t in tiles:
                queue = pending[t.lq.shape]
                queue.append(t)
                if len(queue) == self.bs:
                    pending[t.lq.shape] = []
                    yield from start(queue, self.bs)
        for shape, queue in pending.items():
            if queue:
                pad_to = self.bs if self.bs in self.batch_sizes_run[shape] else -(-len(queue) // self.multiple) * self.multiple
                yield from start(queue, pad_to)
        while running:
            yield from ((img.tag, img.canvas.result()) for img in self._collect(*running.popleft()))
