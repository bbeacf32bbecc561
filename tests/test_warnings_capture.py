"""Warnings caught per thread (``tumorscope._warnings.capture_warnings``): each thread's
captures get its own warnings only, and the process's warning state is put back."""

from __future__ import annotations

import threading
import warnings

from tumorscope._warnings import capture_warnings
from tumorscope.errors import TumorscopeWarning


def test_threads_capture_their_own_warnings() -> None:
    barrier = threading.Barrier(2)
    got: dict[str, list[str]] = {}

    def work(name: str) -> None:
        with capture_warnings() as caught:
            barrier.wait()  # both captures open at once
            for k in range(50):
                warnings.warn(f"{name} {k}", TumorscopeWarning, stacklevel=1)
            barrier.wait()  # neither closes before the other has warned
        got[name] = [str(w.message) for w in caught]

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # "always": the same place warns 50 times, all caught, none from the other thread
    assert got == {n: [f"{n} {k}" for k in range(50)] for n in ("a", "b")}


def test_nested_captures_and_state_restored() -> None:
    filters, show = list(warnings.filters), warnings.showwarning
    with capture_warnings() as outer:
        warnings.warn("outer", TumorscopeWarning, stacklevel=1)
        with capture_warnings() as inner:
            warnings.warn("inner", RuntimeWarning, stacklevel=1)
        warnings.warn("outer again", TumorscopeWarning, stacklevel=1)
    assert [str(w.message) for w in inner] == ["inner"]
    assert [str(w.message) for w in outer] == ["outer", "outer again"]
    assert warnings.filters == filters and warnings.showwarning is show


def test_a_thread_without_capture_shows_as_before() -> None:
    """A warning of a thread with no capture open goes where it went before the capture
    (here pytest's own recorder, as in any other test), not into another thread's list."""
    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("always")
        with capture_warnings() as caught:
            t = threading.Thread(
                target=lambda: warnings.warn("elsewhere", TumorscopeWarning, stacklevel=1)
            )
            t.start()
            t.join()
    assert caught == []
    assert [str(w.message) for w in before] == ["elsewhere"]
