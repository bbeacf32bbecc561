"""Run options: defaults in one place, set from the command line and from study.yaml."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.errors import DataError
from tumorscope.pipeline import RunOptions
from tumorscope.pipeline.options import resolve_options
from tumorscope.study import default_url, open_store

QUICK = ["--steps", "register", "--no-report"]


def test_defaults() -> None:
    o = RunOptions()
    assert o.dwi_models == ("adc", "ivim")
    assert (o.dce_model, o.dce_aif) == ("extended_tofts", "parker")
    assert o.hypoxia_r2star_per_s is None and o.hypoxia_ktrans_per_min is None
    assert o.align_tolerance_vox == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.dce_model = "tofts"  # type: ignore[misc]


def test_read_by_name_like_the_dict_of_old() -> None:
    """The fit steps still read ``ctx.options.get(name, default)``; hashes take its JSON."""
    o = RunOptions(dwi_models="adc, DKI", hypoxia_r2star_per_s=30)  # type: ignore[arg-type]
    assert o.get("dwi_models") == ("adc", "dki")
    assert o.get("hypoxia_r2star_per_s") == 30.0
    assert o.get("colour", "red") == "red"
    assert o["dce_aif"] == "parker" and list(o) == list(RunOptions.names())
    with pytest.raises(KeyError):
        o["colour"]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("dwi_models", "adc,tensor", "tensor"),
        ("dwi_models", "", "at least one"),
        ("dce_model", "toft", "tofts"),
        ("dce_aif", "nope", "parker"),
        ("hypoxia_r2star_per_s", -1, "positive"),
        ("hypoxia_ktrans_per_min", "x", "number"),
        ("align_tolerance_vox", None, "number"),
    ],
)
def test_bad_values_name_the_option(name: str, value: object, says: str) -> None:
    with pytest.raises(DataError, match=says) as exc:
        RunOptions(**{name: value})
    assert exc.value.field == name and name in str(exc.value)


def test_precedence_command_line_over_study_yaml_over_defaults() -> None:
    study = {"dce_model": "tofts", "dwi_models": ["adc"], "align_tolerance_vox": 1}
    o = resolve_options({"dwi_models": "ivim", "dce_aif": None}, study)
    assert o.dwi_models == ("ivim",)  # command line
    assert o.dce_model == "tofts" and o.align_tolerance_vox == 1.0  # study.yaml
    assert o.dce_aif == "parker"  # default (None: not given)
    whole = RunOptions(dce_model="patlak")
    assert resolve_options(whole, study) is whole


def test_study_yaml_errors_name_the_file_and_key() -> None:
    with pytest.raises(DataError, match="colour") as exc:
        resolve_options(None, {"colour": "red"})
    assert exc.value.file == "study.yaml" and exc.value.field == "options.colour"
    with pytest.raises(DataError, match="toft") as exc:
        resolve_options(None, {"dce_model": "toft"})
    assert exc.value.file == "study.yaml" and exc.value.field == "options.dce_model"
    with pytest.raises(DataError, match="unknown option") as exc:
        resolve_options({"colour": "red"})
    assert exc.value.field == "options"


def _with_options(study: Path, options: object) -> None:
    manifest = study / "study.yaml"
    doc = yaml.safe_load(manifest.read_text())
    doc["options"] = options
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))


def _run_options(out: Path) -> dict[str, object]:
    store = open_store(default_url(out))
    try:
        # the latest run: run ids sort by second, then by a random suffix, so two runs in
        # one second would come in any order; started_at has microseconds
        runs = store.read_table("runs").sort_values("started_at")
        return dict(runs["options"].iloc[-1])
    finally:
        store.close()


def test_command_line_and_study_yaml_reach_the_run(study2: Path, tmp_path: Path) -> None:
    _with_options(study2, {"dce_model": "tofts", "hypoxia_ktrans_per_min": 0.2})
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["run", str(study2), "--out", str(out), *QUICK]
    flags = ["--dwi-models", "adc,dki", "--dce-aif", "georgiou", "--hypoxia-r2star", "30"]
    res = runner.invoke(app, [*args, *flags, "--align-tolerance", "0.75"])
    assert res.exit_code == 0, res.output
    o = _run_options(out)
    assert o["dwi_models"] == ["adc", "dki"] and o["dce_aif"] == "georgiou"
    assert o["hypoxia_r2star_per_s"] == 30.0 and o["align_tolerance_vox"] == 0.75
    assert o["dce_model"] == "tofts" and o["hypoxia_ktrans_per_min"] == 0.2  # study.yaml
    res = runner.invoke(app, [*args, "--dce-model", "patlak"])
    assert res.exit_code == 0, res.output
    assert _run_options(out)["dce_model"] == "patlak"  # the command line wins


def test_bad_options_stop_the_run_before_anything_is_written(study2: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(study2), "--out", str(out), "--dce-model", "toft"])
    assert res.exit_code == 2 and "dce_model" in res.output
    _with_options(study2, {"colour": "red"})
    res = runner.invoke(app, ["run", str(study2), "--out", str(out)])
    assert res.exit_code == 2
    assert "study.yaml" in res.output and "options.colour" in res.output
    assert not out.exists()
    _with_options(study2, ["adc"])
    res = runner.invoke(app, ["run", str(study2), "--out", str(out)])
    assert res.exit_code == 2 and "options" in res.output


def test_help_shows_the_defaults() -> None:
    res = CliRunner().invoke(app, ["run", "--help"], terminal_width=200)
    for flag in (
        "--dwi-models",
        "--dce-model",
        "--dce-aif",
        "--hypoxia-r2star",
        "--hypoxia-ktrans",
        "--align-tolerance",
    ):
        assert flag in res.output
    assert "adc,ivim" in res.output and "extended_tofts" in res.output
