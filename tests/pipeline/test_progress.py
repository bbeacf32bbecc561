"""Progress bars of a run: subjects, units of work and the fitting engine's voxel chunks."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from tumorscope.fitting import progress
from tumorscope.pipeline import run_study

KW = {
    "steps": ("register", "fit_dwi"),
    "options": {"dwi_models": ("ivim",)},
    "report": False,
    "progress": True,
}


def _bars(text: str) -> dict[str, tuple[int, int]]:
    out = {}
    for name in ("subjects", "units of work", "voxel chunks"):
        m = re.findall(rf"{name}\D*?(\d+)/(\d+)", text)
        assert m, f"no {name!r} bar in:\n{text}"
        done, total = m[-1]
        out[name] = (int(done), int(total))
    return out


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=120, force_terminal=False), buf


def test_serial_run_counts_the_voxel_chunks(small_study: Path, tmp_path: Path) -> None:
    console, buf = _console()
    s = run_study(small_study, tmp_path / "out", console=console, **KW)
    assert s.ok
    bars = _bars(buf.getvalue())
    assert bars["subjects"] == (2, 2)
    assert bars["units of work"][0] == bars["units of work"][1] > 0
    done, total = bars["voxel chunks"]
    assert done == total > 0


def test_dask_workers_send_their_chunks_to_the_client(small_study: Path, tmp_path: Path) -> None:
    from dask.distributed import LocalCluster

    console, buf = _console()
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        s = run_study(
            small_study,
            tmp_path / "out",
            scheduler=cluster.scheduler_address,
            console=console,
            **KW,
        )
    assert s.ok
    done, total = _bars(buf.getvalue())["voxel chunks"]
    assert total > 0
    # events travel asynchronously: every announced chunk arrives, or nearly every one
    assert done >= 0.9 * total


def test_a_broken_hook_never_breaks_a_fit() -> None:
    from tumorscope.fitting.engine import BlockFit, fit_blocks

    seen: list[tuple[str, int]] = []

    def hook(event: str, n: int) -> None:
        seen.append((event, n))
        raise RuntimeError("display went away")

    def block(y: np.ndarray) -> BlockFit:
        n = y.shape[0]
        return BlockFit(y[:, :1].copy(), np.zeros(n, np.uint8), np.zeros(n))

    data = np.arange(200, dtype=float).reshape(5, 10, 4)
    with progress.chunk_progress(hook):
        res = fit_blocks(block, data, None, n_params=1, chunk_voxels=10)
    np.testing.assert_array_equal(res.params[:, 0], data.reshape(-1, 4)[:, 0])
    assert seen[0] == ("planned", 5) and seen.count(("done", 1)) == 5
    assert progress._hook is None  # restored


class _Count:
    """A chunk count that records whether anyone read it."""

    def __init__(self) -> None:
        self.reads = 0

    def __int__(self) -> int:
        self.reads += 1
        return 3


@pytest.mark.parametrize("event", ["planned", "done"])
def test_no_hook_no_cost(event: str) -> None:
    """Without a hook ``report`` returns at once (it does not even read its count), and a hook
    that was installed and then removed is never called again."""
    seen: list[tuple[str, int]] = []
    count = _Count()
    with progress.chunk_progress(lambda e, n: seen.append((e, n))):
        progress.report(event, count)  # the control: a listener gets the event, count read
    assert seen == [(event, 3)] and count.reads == 1
    assert progress.set_hook(None) is None  # the block restored "no hook"
    idle = _Count()
    assert progress.report(event, idle) is None
    assert idle.reads == 0  # nothing done at all
    assert seen == [(event, 3)]  # the removed hook was not called
