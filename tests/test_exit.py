"""``tumorscope._exit``: a command's process (and a local Dask worker) exits without the
collector's passes over what it holds; the command line registers it, the library does not.

Each case runs in its own interpreter: an ``atexit`` handler registered *before* the one
under test runs *after* it (last in, first out) and prints the collector's state then.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

_PROBE = textwrap.dedent(
    """
    import atexit, gc, sys
    def probe():
        print("enabled", gc.isenabled(), "frozen", gc.get_freeze_count() > 0, flush=True)
    atexit.register(probe)  # first registered: runs last, after the handler under test
    {body}
    """
)


def _run(body: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "TUMORSCOPE_EXIT_GC"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(body=textwrap.dedent(body))],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_the_handler_disables_and_freezes_the_collector_at_exit() -> None:
    body = """
    from tumorscope._exit import skip_collection_at_exit
    skip_collection_at_exit()
    skip_collection_at_exit()  # registered once
    assert gc.isenabled()  # nothing changes before the exit
    """
    assert _run(body) == "enabled False frozen True"


def test_the_baseline_keeps_the_collection() -> None:
    body = """
    from tumorscope._exit import skip_collection_at_exit
    skip_collection_at_exit()
    """
    assert _run(body, TUMORSCOPE_EXIT_GC="1") == "enabled True frozen False"


def test_the_command_line_registers_it_and_the_library_does_not() -> None:
    cli = """
    from tumorscope.cli import main
    sys.argv = ["tumorscope", "--version"]
    try:
        main()
    except SystemExit:
        pass
    """
    assert _run(cli) == "enabled False frozen True"
    library = """
    import tumorscope.pipeline, tumorscope.stages.diffusion  # noqa: F401
    """
    assert _run(library) == "enabled True frozen False"


def test_a_local_clusters_workers_register_it() -> None:
    pytest.importorskip("distributed")
    from tumorscope.pipeline.executor import Executor

    ex = Executor(workers=1, scheduler=None)
    try:
        ex.warm_up(modules=(), kernels=False)

        def registered() -> bool:
            import tumorscope._exit

            return tumorscope._exit.registered

        assert list(ex.client.run(registered).values()) == [True]
    finally:
        ex.close()


def test_the_workers_of_a_cluster_it_did_not_start_are_left_alone() -> None:
    distributed = pytest.importorskip("distributed")
    from tumorscope.pipeline.executor import Executor

    def registered() -> bool:
        import tumorscope._exit

        return tumorscope._exit.registered

    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        ex = Executor(workers=None, scheduler=cluster.scheduler_address)
        try:
            ex.warm_up(modules=(), kernels=False)
            assert list(ex.client.run(registered).values()) == [False]
        finally:
            ex.close()
