"""Host-side streaming for folder inference: decode ahead and write behind on threads, with
bounded queues, while the device computes (JAX dispatches the sampler program asynchronously;
`tiling.TiledRunner` keeps one batch queued on the device while the host collects the last).

PNG/JPEG decoding and encoding (Pillow, zlib) and the numpy conversions release the GIL, so two
host threads overlap with the device program. Memory stays bounded for a folder of any length:
at most `ahead` decoded images wait for the device and at most `max_pending` finished images wait
for their file, whatever the number of files.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
from typing import Callable, Iterable, Iterator


def prefetch_map(fn: Callable, items: Iterable, *, workers: int = 1, ahead: int = 4) -> Iterator:
    """Yield fn(item) for each item, in order, computing up to `ahead` results in advance on
    `workers` threads (workers=0: in the caller's thread, nothing ahead). An exception raised by
    fn is raised here, at its item's position; `fn` should catch what the caller wants to skip."""
    if workers <= 0:
        for item in items:
            yield fn(item)
        return
    ahead = max(1, int(ahead))
    queue: collections.deque = collections.deque()
    pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="decode")
    try:
        for item in items:
            queue.append(pool.submit(fn, item))
            if len(queue) >= ahead:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
    finally:
        for f in queue:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


class WriteBehind:
    """Run `fn(*args)` jobs (writing an image file) on `workers` threads, at most `max_pending` at
    once (`submit` waits for the oldest when full). `submit` and `drain` return the jobs that
    finished, in submission order, as (tag, error or None), so the caller reports each file
    once. workers=0 runs each job at once in the caller's thread."""

    def __init__(self, workers: int = 1, max_pending: int = 4):
        self.workers = int(workers)
        self.max_pending = max(1, int(max_pending))
        self._pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="write") if self.workers > 0 else None
        self._queue: collections.deque = collections.deque()

    @staticmethod
    def _outcome(tag, future_or_call) -> tuple:
        try:
            future_or_call()
            return tag, None
        except Exception as e:  # noqa: BLE001 - reported per file by the caller
            return tag, e

    def submit(self, tag, fn: Callable, *args) -> list[tuple]:
        if self._pool is None:
            return [self._outcome(tag, lambda: fn(*args))]
        self._queue.append((tag, self._pool.submit(fn, *args)))
        done = []
        while len(self._queue) > self.max_pending or (self._queue and self._queue[0][1].done()):
            t, f = self._queue.popleft()
            done.append(self._outcome(t, f.result))
        return done

    def drain(self) -> list[tuple]:
        done = []
        while self._queue:
            t, f = self._queue.popleft()
            done.append(self._outcome(t, f.result))
        return done

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
