"""``tumorscope._threads``: the caller's share of the cores and work mapped onto it."""

from __future__ import annotations

import threading

import numba
import pytest

from tumorscope._threads import map_threads, share_of_cores


@pytest.fixture
def two_threads():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one core")  # pragma: no cover - CI and this machine have two
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    yield
    numba.set_num_threads(before)


def test_share_follows_numba(two_threads: None) -> None:
    assert share_of_cores() == 2
    numba.set_num_threads(1)
    assert share_of_cores() == 1


def test_map_threads_keeps_order_and_uses_threads(two_threads: None) -> None:
    seen: set[int] = set()
    barrier = threading.Barrier(2, timeout=10)

    def f(x: int) -> int:
        seen.add(threading.get_ident())
        if x < 2:
            barrier.wait()  # the first two items run at once, or this times out
        return x * x

    assert map_threads(f, range(7)) == [x * x for x in range(7)]
    assert len(seen) == 2 and threading.get_ident() not in seen


def test_map_threads_one_thread_runs_in_the_caller(two_threads: None) -> None:
    numba.set_num_threads(1)
    seen = set()
    assert map_threads(lambda x: seen.add(threading.get_ident()) or x, [1, 2]) == [1, 2]
    assert seen == {threading.get_ident()}


def test_map_threads_raises_the_first_error(two_threads: None) -> None:
    def f(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    with pytest.raises(ValueError, match="three"):
        map_threads(f, range(6))
