"""A subject's units two at a time (``execute_subject`` with ``step_concurrency`` 2): the
order the steps' requirements impose, failures, outcomes and warnings per unit."""

from __future__ import annotations

import itertools
import math
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from tumorscope.errors import DataError, TumorscopeWarning
from tumorscope.pipeline import execute, steps
from tumorscope.pipeline.execute import CONCURRENCY_ENV, execute_subject, step_concurrency
from tumorscope.pipeline.step import Context, Step, StepOutput, Unit

EVENTS: list[tuple[str, str, float]] = []
_lock = threading.Lock()


def _step(
    name: str,
    requires: tuple[str, ...] = (),
    *,
    sleep: float = 0.05,
    exclusive: tuple[str, ...] = (),
    check: bool = True,
    cost: float = 0.1,
) -> Step:
    def run(ctx: Context, study: Any, unit: Unit, upstream: Any) -> StepOutput:
        with _lock:
            EVENTS.append((unit.key + ":" + name, "start", time.perf_counter()))
        for r in requires if check else ():  # every unit of a required step finished first
            assert len(upstream.get(r, {})) == 2, (name, r, upstream)  # both visits
        warnings.warn(f"from {name} {unit.key}", TumorscopeWarning, stacklevel=1)
        time.sleep(sleep)
        if (ctx.study_root / f"fail-{name}").exists():
            raise DataError(f"{name} cannot", file="x", field="y")
        out = ctx.out_dir / f"{name}-{unit.key.replace('/', '_')}.txt"
        out.write_text(name)
        with _lock:
            EVENTS.append((unit.key + ":" + name, "end", time.perf_counter()))
        return StepOutput([out])

    return Step(
        name,
        "visit",
        "1",
        name,
        run,
        lambda ctx, study, unit: [],
        requires=requires,
        exclusive=exclusive,
        cost=cost,
    )


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    table = (
        _step("a"),
        _step("b", ("a",), exclusive=("memory",)),
        _step("c", ("a",), exclusive=("memory", "itk")),
        _step("d", ("b", "c")),
        _step("e", ("a",), sleep=0.3),
    )
    monkeypatch.setattr(steps, "STEPS", table)
    monkeypatch.setattr(execute, "_study", lambda ctx: object())
    for d in ("study", "out"):
        (tmp_path / d).mkdir()
    EVENTS.clear()
    return Context(tmp_path / "study", tmp_path / "out")


def _items() -> list[tuple[str, list[Unit]]]:
    visits = ("001/01", "001/02")
    return [(n, [Unit(n, "001", v.split("/")[1]) for v in visits]) for n in "abcde"]


def _run(ctx: Context, width: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[str]]:
    monkeypatch.setenv(CONCURRENCY_ENV, str(width))
    seen: list[str] = []
    main = threading.get_ident()

    def on_outcome(o: Any) -> None:
        assert threading.get_ident() == main  # recorded in the calling thread
        seen.append(f"{o.unit.step} {o.unit.key}")

    active = frozenset("abcde")
    return execute_subject(ctx, _items(), {}, frozenset(), active, 2, on_outcome), seen


def test_requirements_order_and_overlap(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes, seen = _run(ctx, 2, monkeypatch)
    assert [o.status for o in outcomes] == ["done"] * 10
    assert [(o.unit.step, o.unit.visit) for o in outcomes] == [
        (n, v) for n in "abcde" for v in ("01", "02")
    ]  # returned in plan order
    assert sorted(seen) == sorted(f"{o.unit.step} {o.unit.key}" for o in outcomes)
    t = {(k, ev): at for k, ev, at in EVENTS}
    for v in ("sub-001/ses-01", "sub-001/ses-02"):
        for step, reqs in {"b": "a", "c": "a", "d": "bc", "e": "a"}.items():
            for r in reqs:
                for w in ("sub-001/ses-01", "sub-001/ses-02"):  # every unit of the step
                    assert t[f"{w}:{r}", "end"] <= t[f"{v}:{step}", "start"]
    # two at a time: some unit started before another ended
    starts = sorted(at for _, ev, at in EVENTS if ev == "start")
    ends = sorted(at for _, ev, at in EVENTS if ev == "end")
    assert starts[1] < ends[0]
    running = max(
        sum(1 for k in t if k[1] == "start" and t[k] <= at)
        - sum(1 for k in t if k[1] == "end" and t[k] <= at)
        for at in starts
    )
    assert running == 2
    # each unit's notes hold its own warning only
    for o in outcomes:
        assert o.notes == [f"warning: from {o.unit.step} {o.unit.key}"], o.notes


def test_same_outcomes_as_one_at_a_time(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    two, _ = _run(ctx, 2, monkeypatch)
    one, _ = _run(ctx, 1, monkeypatch)
    strip = [(o.unit, o.status, o.input_hash, o.outputs, o.notes) for o in two]
    assert strip == [(o.unit, o.status, o.input_hash, o.outputs, o.notes) for o in one]


def test_a_failure_blocks_what_has_not_started(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ctx.study_root / "fail-b").touch()
    outcomes, _ = _run(ctx, 2, monkeypatch)
    status = {(o.unit.step, o.unit.visit): o.status for o in outcomes}
    assert status["a", "01"] == status["a", "02"] == "done"
    assert "failed" in (status["b", "01"], status["b", "02"])
    assert status["d", "01"] == status["d", "02"] == "blocked"  # requires b
    blocked = [o for o in outcomes if o.status == "blocked"]
    assert all("b sub-001" in (o.error or "") for o in blocked)


def test_step_concurrency_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONCURRENCY_ENV, raising=False)
    assert step_concurrency(1) == 1  # one core: one at a time
    assert step_concurrency(4) in (1, 2)  # 1 only where numba's threads are not re-entrant
    monkeypatch.setenv(CONCURRENCY_ENV, "3")
    assert step_concurrency(1) == 3
    for bad in ("two", "0", "-1"):  # 0 and -1 were clamped to 1 without a word
        monkeypatch.setenv(CONCURRENCY_ENV, bad)
        with pytest.raises(DataError, match=CONCURRENCY_ENV):
            step_concurrency(None)


def test_exclusive_units_never_run_together(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """b and c both hold "memory" exclusively: none of their four units overlaps another; e
    (holding nothing) may."""
    _run(ctx, 2, monkeypatch)
    spans = {}
    for k, ev, at in EVENTS:
        spans.setdefault(k, {})[ev] = at
    heavy = sorted((v["start"], v["end"]) for k, v in spans.items() if k.split(":")[1] in "bc")
    assert len(heavy) == 4
    for (_, e0), (s1, _) in itertools.pairwise(heavy):
        assert e0 <= s1, heavy
    light = [v for k, v in spans.items() if k.endswith(":e")]
    assert any(v["start"] < e and s < v["end"] for v in light for s, e in heavy)  # overlaps


def test_requirements_that_cannot_be_met_do_not_hang(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps that require each other (a mistake in a step table): with nothing running and
    nothing ready, the earliest waiting unit runs, as one at a time runs it, instead of the
    subject waiting for ever."""
    table = (_step("x", ("y",), check=False), _step("y", ("x",), check=False))
    monkeypatch.setattr(steps, "STEPS", table)
    monkeypatch.setenv(CONCURRENCY_ENV, "2")
    items = [(n, [Unit(n, "001", v) for v in ("01", "02")]) for n in "xy"]
    result: list[Any] = []
    t = threading.Thread(
        target=lambda: result.extend(
            execute_subject(ctx, items, {}, frozenset(), frozenset("xy"), 2)
        ),
        daemon=True,  # a regression hangs this thread, not the test run
    )
    t.start()
    t.join(30)
    assert not t.is_alive(), "execute_subject waits for ever"
    assert [o.status for o in result] == ["done"] * 4
    starts = [k for k, ev, _ in EVENTS if ev == "start"]
    assert starts[:2] == ["sub-001/ses-01:x", "sub-001/ses-02:x"]  # plan order


def test_one_at_a_time_runs_in_the_calling_thread_in_plan_order(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Width 1 (one core, a Dask worker's share): every unit in the caller's thread, started
    in plan order, each after the previous one ended."""
    threads: list[int] = []
    real = execute.execute_unit

    def spy(*a: Any, **k: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*a, **k)

    monkeypatch.setattr(execute, "execute_unit", spy)
    outcomes, _ = _run(ctx, 1, monkeypatch)
    assert [o.status for o in outcomes] == ["done"] * 10
    assert threads == [threading.get_ident()] * 10
    order = [k for k, ev, _ in EVENTS if ev == "start"]
    assert order == [f"sub-001/ses-{v}:{n}" for n in "abcde" for v in ("01", "02")]
    assert [ev for _, ev, _ in sorted(EVENTS, key=lambda e: e[2])] == ["start", "end"] * 10


def _image(path: Path, shape: tuple[int, ...]) -> Path:
    import nibabel as nib
    import numpy as np

    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), str(path))
    return path


def _spans() -> dict[str, dict[str, float]]:
    spans: dict[str, dict[str, float]] = {}
    for k, ev, at in EVENTS:
        spans.setdefault(k, {})[ev] = at
    return spans


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


@pytest.mark.parametrize(
    ("budget", "memory", "together"),
    [
        ("3", (1.0, 1.0), True),  # 1 + 1 ≤ 3 times the largest image
        ("1.5", (1.0, 1.0), False),  # 2 > 1.5
        ("3", (2.5, 1.0), False),  # 3.5 > 3
        ("0", (0.1, 0.1), False),  # no budget: one counted unit at a time
        ("3", (math.inf, 0.1), False),  # not bounded by its inputs: beside no counted unit
    ],
)
def test_memory_budget_decides_which_heavy_units_run_together(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, budget: str, memory: Any, together: bool
) -> None:
    """Two steps with memory estimates (``Step.memory`` × the largest image of the unit's
    inputs, float32, from the headers) run at once only if the estimates fit the subject's
    budget (``TUMORSCOPE_MEMORY_BUDGET`` × the subject's largest image)."""
    from types import SimpleNamespace

    big = _image(ctx.study_root / "big.nii.gz", (8, 8, 4, 10))  # the subject's largest
    small = _image(ctx.study_root / "small.nii.gz", (8, 8, 4))  # a tenth of it

    def step(name: str, factor: float) -> Step:
        s = _step(name, sleep=0.3, check=False)
        return Step(name, "visit", "1", name, s.run, lambda c, st, u: [big], memory=factor)

    table = (step("h1", memory[0]), step("h2", memory[1]))
    monkeypatch.setattr(steps, "STEPS", table)
    visit = SimpleNamespace(
        series={"a": SimpleNamespace(path=big), "b": SimpleNamespace(path=small)}
    )
    monkeypatch.setattr(execute, "_study", lambda c: SimpleNamespace(subjects={"001": [visit]}))
    monkeypatch.setenv(CONCURRENCY_ENV, "2")
    monkeypatch.setenv(execute.MEMORY_ENV, budget)
    items = [("h1", [Unit("h1", "001", "01")]), ("h2", [Unit("h2", "001", "01")])]
    out = execute_subject(ctx, items, {}, frozenset(), frozenset(["h1", "h2"]), 2)
    assert [o.status for o in out] == ["done", "done"]
    spans = _spans()
    assert _overlap(spans["sub-001/ses-01:h1"], spans["sub-001/ses-01:h2"]) is together


def test_image_bytes_and_budget_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _image(tmp_path / "a.nii.gz", (5, 6, 7, 3))
    b = _image(tmp_path / "b.nii", (5, 6, 7))
    bad = tmp_path / "c.nii.gz"
    bad.write_bytes(b"not an image")
    assert execute._image_bytes([b, tmp_path / "x.json", bad]) == 4 * 5 * 6 * 7
    assert execute._image_bytes([a, b]) == 4 * 5 * 6 * 7 * 3  # float32, the largest
    assert execute._image_bytes([]) == 0
    monkeypatch.delenv(execute.MEMORY_ENV, raising=False)
    assert execute.memory_budget() == execute.MEMORY_BUDGET
    monkeypatch.setenv(execute.MEMORY_ENV, "2.5")
    assert execute.memory_budget() == 2.5
    for text in ("-1", "lots", "inf", "nan"):
        monkeypatch.setenv(execute.MEMORY_ENV, text)
        with pytest.raises(DataError, match=execute.MEMORY_ENV):
            execute.memory_budget()


def test_the_pipelines_heavy_steps_carry_estimates() -> None:
    """The six steps that were one-at-a-time before the budget carry an estimate; every
    factor is positive (0 would not count the step)."""
    heavy = {s.name: s.memory for s in steps.STEPS if s.memory}
    assert set(heavy) == {"fit_dwi", "fit_dce", "fit_relax", "metabolic", "fit_cest", "measure"}
    assert all(f > 0 for f in heavy.values())


def test_units_made_ready_start_before_the_outcome_is_recorded(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two at a time, the outcome of a unit (a database transaction on the client) is passed
    on once the units it made ready have been started, so recording does not delay them;
    one at a time, each outcome is passed on as soon as its unit returns, before the next
    starts. Checked on the submissions themselves (in the calling thread), not on clocks."""
    from concurrent.futures import ThreadPoolExecutor

    table = (_step("a", sleep=0.05), _step("b", ("a",), sleep=0.05))
    monkeypatch.setattr(steps, "STEPS", table)
    items = [(n, [Unit(n, "001", v) for v in ("01", "02")]) for n in "ab"]
    submitted: list[str] = []  # step names, in the order the units were started

    class Pool(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            submitted.append(args[0])
            return super().submit(fn, *args, **kwargs)

    one = execute._InThisThread.submit

    def one_submit(self: Any, fn: Any, *args: Any) -> Any:
        submitted.append(args[0])
        return one(self, fn, *args)

    monkeypatch.setattr(execute, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(execute._InThisThread, "submit", one_submit)
    for width, b_started in (("2", 2), ("1", 0)):
        submitted.clear()
        recorded: list[tuple[str, int]] = []  # (step, units of b started by then)
        monkeypatch.setenv(CONCURRENCY_ENV, width)
        out = execute_subject(
            ctx,
            items,
            {},
            frozenset(),
            frozenset("ab"),
            2,
            lambda o, rec=recorded: rec.append((o.unit.step, submitted.count("b"))),
        )
        assert [o.status for o in out] == ["done"] * 4
        assert sorted(submitted) == ["a", "a", "b", "b"]
        last_a = [n for step, n in recorded if step == "a"][-1]
        assert last_a == b_started, (width, recorded)


@pytest.mark.parametrize("env", [CONCURRENCY_ENV, "TUMORSCOPE_MEMORY_BUDGET"])
def test_a_bad_setting_stops_the_run_before_anything_is_written(
    tiny_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    from tumorscope.pipeline import run_study

    monkeypatch.setenv(env, "lots")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=env):
        run_study(tiny_study, out, steps=("register",), report=False)
    assert not out.exists()


def test_longest_chain_starts_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two at a time, the units of the long chain (r → c) start before the short steps that
    come first in the plan (``pipeline.schedule``); one at a time, plan order."""
    table = (
        _step("s", sleep=0.02),
        _step("t", sleep=0.02),
        _step("r", cost=1.0),
        _step("c", ("r",), cost=2.0),
    )
    monkeypatch.setattr(steps, "STEPS", table)
    monkeypatch.setattr(execute, "_study", lambda ctx: object())
    for d in ("study", "out"):
        (tmp_path / d).mkdir(exist_ok=True)
    ctx = Context(tmp_path / "study", tmp_path / "out")
    items = [(n, [Unit(n, "001", v) for v in ("01", "02")]) for n in "strc"]
    for width, first in ((2, {"r"}), (1, {"s"})):
        EVENTS.clear()
        monkeypatch.setenv(CONCURRENCY_ENV, str(width))
        out = execute_subject(ctx, items, {}, frozenset("strc"), frozenset("strc"), 2)
        assert [o.status for o in out] == ["done"] * 8
        starts = [
            k.split(":")[1] for k, ev, _ in sorted(EVENTS, key=lambda e: e[2]) if ev == "start"
        ]
        assert set(starts[:2]) == first, starts
        assert starts.index("c") > max(i for i, n in enumerate(starts) if n == "r")
