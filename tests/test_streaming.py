"""Host-side streaming: ordered, bounded decode-ahead and write-behind."""

import threading
import time

import pytest

from resshift_jax import streaming


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_prefetch_map_keeps_order_and_stays_bounded(workers):
    started, lock = [], threading.Lock()
    consumed = []

    def fn(i):
        with lock:
            started.append(i)
        time.sleep(0.002 * (i % 3))  # finish out of order
        return i * i

    got = []
    for r in streaming.prefetch_map(fn, range(20), workers=workers, ahead=4):
        with lock:
            # never more than `ahead` items started beyond what the consumer has taken
            assert len(started) - len(consumed) <= (4 if workers else 1)
        consumed.append(r)
        got.append(r)
    assert got == [i * i for i in range(20)]


def test_prefetch_map_raises_at_the_failing_item():
    def fn(i):
        if i == 3:
            raise ValueError("bad 3")
        return i

    got = []
    with pytest.raises(ValueError, match="bad 3"):
        for r in streaming.prefetch_map(fn, range(10), workers=2, ahead=3):
            got.append(r)
    assert got == [0, 1, 2]


@pytest.mark.parametrize("workers", [0, 2])
def test_write_behind_reports_each_job_once_in_order_and_bounds_pending(workers):
    running, peak, lock = [0], [0], threading.Lock()
    written = []

    def job(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.003)
        with lock:
            running[0] -= 1
        if i == 5:
            raise OSError("disk full")
        written.append(i)

    reported = []
    with streaming.WriteBehind(workers=workers, max_pending=3) as w:
        for i in range(12):
            reported += w.submit(i, job, i)
            assert len(w._queue) <= 3
        reported += w.drain()
    assert [t for t, _ in reported] == list(range(12))
    errors = {t: e for t, e in reported if e is not None}
    assert list(errors) == [5] and isinstance(errors[5], OSError)
    assert sorted(written) == [i for i in range(12) if i != 5]
    assert peak[0] <= max(1, workers)
