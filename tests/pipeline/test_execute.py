"""Execution of one unit on a worker: run, skip when up to date, redo, fail with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tumorscope.errors import DataError
from tumorscope.pipeline import steps
from tumorscope.pipeline.execute import execute_unit
from tumorscope.pipeline.options import RunOptions
from tumorscope.pipeline.step import Context, Step, StepOutput, Unit, Write


def _toy(ctx: Context, study: Any, unit: Unit, upstream: Any) -> StepOutput:
    src = (ctx.study_root / "in.txt").read_text()
    if src == "broken":
        raise DataError("cannot read", file="in.txt", field="value")
    out = ctx.out_dir / "toy.txt"
    out.write_text(src.upper())
    return StepOutput([out], [Write("t", {}, [{"v": src}])], ["a note"])


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    toy = Step(
        "toy",
        "subject",
        "1",
        "a toy step",
        _toy,
        lambda ctx, study, unit: [ctx.study_root / "in.txt"],
        option_keys=("dce_model",),
    )
    monkeypatch.setattr(steps, "STEPS", (toy,))
    (tmp_path / "study").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "study" / "in.txt").write_text("a")
    return Context(tmp_path / "study", tmp_path / "out")


def _record(o: Any) -> dict[str, Any]:
    return {"status": o.status, "input_hash": o.input_hash, "outputs": o.outputs}


def test_run_skip_redo(ctx: Context) -> None:
    unit = Unit("toy", "001")
    first = execute_unit("toy", ctx, unit, None, {}, False, study=object())
    assert first.status == "done" and first.notes == ["a note"]
    assert set(first.outputs) == {"toy.txt"} and len(first.outputs["toy.txt"]) == 64
    assert first.writes[0].rows == [{"v": "a"}]
    again = execute_unit("toy", ctx, unit, _record(first), {}, False, study=object())
    assert again.status == "skipped" and again.input_hash == first.input_hash
    forced = execute_unit("toy", ctx, unit, _record(first), {}, True, study=object())
    assert forced.status == "done"
    (ctx.out_dir / "toy.txt").write_text("changed")  # an output changed: not up to date
    assert execute_unit("toy", ctx, unit, _record(first), {}, False, study=object()).status == (
        "done"
    )
    other = Context(ctx.study_root, ctx.out_dir, RunOptions(dce_model="tofts"))
    redo = execute_unit("toy", other, unit, _record(first), {}, False, study=object())
    assert redo.status == "done" and redo.input_hash != first.input_hash  # its option changed
    same = Context(ctx.study_root, ctx.out_dir, RunOptions(dwi_models=("adc",)))
    kept = execute_unit("toy", same, unit, _record(first), {}, False, study=object())
    assert kept.input_hash == first.input_hash  # an option the step does not declare


def test_a_failure_is_returned_with_file_and_field(ctx: Context) -> None:
    (ctx.study_root / "in.txt").write_text("broken")
    o = execute_unit("toy", ctx, Unit("toy", "001"), None, {}, False, study=object())
    assert o.status == "failed" and o.error == "DataError: cannot read"
    assert (o.error_file, o.error_field) == ("in.txt", "value") and o.traceback
