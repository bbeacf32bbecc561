"""Bad input and resource limits (issue 14, items 5, 7, 8, 9, 12).

Every bad input gets an error naming the file and the field: ``validate`` lists it as a
problem (exit 1: the check ran and found problems), every other command stops with exit 2
before writing anything; never a traceback, never exit 1 for a crash. Hostile sizes (a NIfTI
header declaring gigabytes, a YAML alias bomb) are refused before memory is spent on them.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.errors import DataError
from tumorscope.io import validate_study
from tumorscope.io.manifest import read_manifest
from tumorscope.volume import Volume

runner = CliRunner()


# ---------------------------------------------------------------- a small study to break
@pytest.fixture(scope="module")
def one_subject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom study of one subject (four visits). Treat as read-only."""
    from tumorscope.phantom import make_study

    return make_study(tmp_path_factory.mktemp("one") / "study", size="tiny", seed=0, n_subjects=1)


@pytest.fixture
def study(one_subject: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "study"
    shutil.copytree(one_subject, dst)
    return dst


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _sidecar(study: Path, name: str, **fields: object) -> Path:
    (path,) = study.glob(f"sub-001/ses-01/*/sub-001_ses-01_{name}.json")
    side = json.loads(path.read_text())
    side.update(fields)
    path.write_text(json.dumps(side))
    return path


def _validate(study: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["validate", str(study)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def _run_refused(study: Path, tmp_path: Path, *extra: str) -> str:
    """``run`` exits 2 with no traceback and writes nothing; its message is returned."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(study), "--out", str(out), *extra])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    return " ".join(result.output.split())


# ---------------------------------------------------------------- 5: duplicate keys
def test_a_subject_listed_twice_is_an_error_naming_both_lines(study: Path) -> None:
    manifest = study / "study.yaml"
    text = manifest.read_text()
    block = text[text.index("  '001':") :]
    manifest.write_text(text + block)  # the same subject again at the end
    first = text[: text.index("  '001':")].count("\n") + 1
    second = text.count("\n") + 1
    code, output = _validate(study)
    assert code == 1
    assert f"subjects.001: key '001' is listed twice (lines {first} and {second})" in output


def test_a_visit_listed_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(
        "subjects:\n"
        "  '001':\n"
        "    visits:\n"
        "      '01': {date: 2026-01-05}\n"
        "      '02': {date: 2026-02-05}\n"
        "      '01': {date: 2026-03-05}\n"
    )
    manifest, problems = read_manifest(path)
    assert manifest is None
    ((p),) = problems
    assert (p.file, p.field) == ("study.yaml", "subjects.001.visits.01")
    assert "listed twice (lines 4 and 6)" in p.message


# ---------------------------------------------------------------- 7: errors, not tracebacks
@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("date: '2026-01-26'", "date: 2026-02-30", "subjects.001.visits.02.date", "2026-02-30"),
        (
            "date: '2026-01-26'",
            "date: 2026-01-26 25:00:00",
            "subjects.001.visits.02.date",
            "25:00:00",
        ),
        (
            "treatment:\n      agent: pembrolizumab\n      start_date: '2026-01-09'",
            "treatment: pembrolizumab",
            "subjects.001.treatment",
            "expected a mapping",
        ),
        ("criteria:\n- recist1.1\n- irecist", "criteria: 5", "criteria", "expected a criteria"),
    ],
    ids=["impossible-date", "impossible-time", "treatment-string", "criteria-number"],
)
def test_manifest_values_of_the_wrong_kind_are_named(
    study: Path, tmp_path: Path, old: str, new: str, field: str, message: str
) -> None:
    _edit(study / "study.yaml", old, new)
    code, output = _validate(study)
    assert code == 1 and "Traceback" not in output
    line = next(x for x in output.splitlines() if x.startswith("ERROR"))
    assert line.startswith(f"ERROR study.yaml: {field}: ") and message in line
    assert f"study.yaml: {field}: " in _run_refused(study, tmp_path)


@pytest.mark.parametrize("value", ["five", [5], 2.5, True])
def test_baseline_frames_that_are_not_a_whole_number_are_named(study: Path, value: object) -> None:
    _sidecar(study, "dce", BaselineFrames=value)
    code, output = _validate(study)
    assert code == 1
    assert (
        f"ERROR sub-001/ses-01/perf/sub-001_ses-01_dce.json: BaselineFrames: expected a whole "
        f"number, got {value!r}"
    ) in output


def test_a_lesion_table_in_latin1_is_named(study: Path) -> None:
    (table,) = study.glob("derivatives/lesions/sub-001/ses-01/*.tsv")
    table.write_bytes(table.read_text().replace("liver", "foie (côté droit)", 1).encode("latin-1"))
    code, output = _validate(study)
    assert code == 1
    rel = table.relative_to(study)
    (line,) = [x for x in output.splitlines() if x.startswith("ERROR")]
    assert line.startswith(f"ERROR {rel}: not UTF-8 text") and "save the table as UTF-8" in line


def test_run_refuses_a_lesion_map_off_grid_and_an_unreadable_table_before_writing(
    study: Path, tmp_path: Path
) -> None:
    """The run's pre-flight (io/preflight.py) reads headers and tables only: a lesion map
    moved off its visit's grid (its affine shifted by a voxel) and a lesion table that is not
    UTF-8, at two visits, are both named and nothing is written."""
    (lesion_map,) = study.glob("derivatives/lesions/sub-001/ses-02/*_lesions.nii.gz")
    img = nib.load(lesion_map)
    shifted = img.affine.copy()
    shifted[:3, 3] += shifted[:3, 0]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted, img.header), lesion_map)
    (table,) = study.glob("derivatives/lesions/sub-001/ses-01/*.tsv")
    table.write_bytes(table.read_text().replace("liver", "foie (côté droit)", 1).encode("latin-1"))
    message = _run_refused(study, tmp_path)
    assert f"{lesion_map.relative_to(study)}: affine: grid" in message
    assert f"{table.relative_to(study)}: not UTF-8 text" in message
    assert "2 error(s) in study; nothing was written" in message


def test_an_unsupported_database_says_which_are(study: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", str(study), "--out", str(tmp_path / "out"), "--db", "mysql://u@h/db"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert "--db: unsupported database 'mysql'" in message
    assert "sqlite:///" in message and "postgresql://" in message
    assert not (tmp_path / "out").exists()  # nothing written: no folder, log or marker


def test_out_of_memory_is_a_clear_message_and_exit_2(
    study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tumorscope.io

    def exhausted(path: object) -> list:
        raise MemoryError

    monkeypatch.setattr(tumorscope.io, "validate_study", exhausted)
    result = runner.invoke(app, ["validate", str(study)])
    assert result.exit_code == 2, result.output
    assert "out of memory" in result.output and "TUMORSCOPE_MAX_IMAGE_BYTES" in result.output
    assert "Traceback" not in result.output


def test_a_crash_in_validate_exits_2_not_1(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tumorscope.io

    def broken(path: object) -> list:
        raise KeyError("boom")

    monkeypatch.setattr(tumorscope.io, "validate_study", broken)
    result = runner.invoke(app, ["validate", str(study)])
    assert result.exit_code == 2, result.output
    assert "internal error (KeyError" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------- 8: ids are BIDS labels
@pytest.mark.parametrize("bad", ["001/../../../x", "..", "0_1", "a b", "sub-1"])
def test_subject_ids_are_bids_labels(study: Path, bad: str) -> None:
    _edit(study / "study.yaml", "  '001':", f"  '{bad}':")
    problems = validate_study(study)
    errors = [p for p in problems if p.severity == "error"]
    assert (errors[0].file, errors[0].field) == ("study.yaml", f"subjects.{bad}")
    assert "letters and digits only" in errors[0].message
    # the only other error: the folder sub-001/ is now listed nowhere; no image was read
    assert [p.file for p in errors[1:]] == ["sub-001"]


def test_a_visit_id_climbing_out_of_the_study_reads_nothing_there(
    study: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(study / "sub-001" / "ses-01", outside / "ses-x")  # images to be read
    _edit(study / "study.yaml", "'04':", "'04/../../../elsewhere/ses-x':")
    problems = validate_study(study)
    errors = [p for p in problems if p.severity == "error"]
    assert (errors[0].file, errors[0].field) == (
        "study.yaml",
        "subjects.001.visits.04/../../../elsewhere/ses-x",
    )
    assert not any("elsewhere" in p.file for p in problems)


# ---------------------------------------------------------------- 9: resource abuse
def _header(shape: tuple[int, ...], dtype: type = np.int16) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    buf = io.BytesIO()
    hdr.write_to(buf)
    return buf.getvalue() + b"\0" * 4


def _peak_mib(fn: object) -> float:
    tracemalloc.start()
    try:
        fn()  # type: ignore[operator]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_a_header_declaring_gigabytes_in_a_tiny_file_allocates_nothing(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"bomb{suffix}"
    head = _header((1000, 1000, 1000))
    path.write_bytes(gzip.compress(head) if suffix == ".nii.gz" else head)
    assert path.stat().st_size < 400

    def read() -> None:
        with pytest.raises(DataError, match="truncated") as info:
            Volume.from_nifti(path)
        assert (info.value.file, info.value.field) == (str(path), "dim")

    assert _peak_mib(read) < 20


def test_an_image_over_the_ceiling_is_refused_before_decompression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "zeros.nii.gz"
    shape = (512, 512, 64)  # 32 MiB of int16 zeros, 32 KiB on disk
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(_header(shape))
        fh.write(bytes(2 * 512 * 512 * 64))
    monkeypatch.setenv("TUMORSCOPE_MAX_IMAGE_BYTES", str(8 * 2**20))
    t0 = time.perf_counter()

    def read() -> None:
        with pytest.raises(DataError, match=r"over the limit of 8\.0 MiB") as info:
            Volume.from_nifti(path)
        assert "TUMORSCOPE_MAX_IMAGE_BYTES" in str(info.value) and info.value.field == "dim"

    assert _peak_mib(read) < 4
    assert time.perf_counter() - t0 < 2


def test_a_bad_ceiling_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v.nii.gz"
    Volume(np.zeros((2, 2, 2), np.float32), np.eye(4)).to_nifti(path)
    monkeypatch.setenv("TUMORSCOPE_MAX_IMAGE_BYTES", "lots")
    with pytest.raises(DataError, match="TUMORSCOPE_MAX_IMAGE_BYTES"):
        Volume.from_nifti(path)


def test_the_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    lines.append("name: *a7")  # ten million values once expanded
    path = tmp_path / "study.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 1024
    t0 = time.perf_counter()
    manifest, problems = read_manifest(path)
    assert time.perf_counter() - t0 < 2
    assert manifest is None
    ((p),) = problems
    assert "expands to more than" in p.message and p.file == "study.yaml"


def test_a_huge_or_deeply_nested_manifest_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("[" * 100_000)
    manifest, problems = read_manifest(path)
    assert manifest is None and "nested too deeply" in problems[0].message
    with path.open("w") as fh:
        fh.write("name: x\n")
        fh.truncate(5 * 2**20)  # 5 MiB, mostly NUL bytes
    t0 = time.perf_counter()
    manifest, problems = read_manifest(path)
    assert manifest is None and "longer than" in problems[0].message
    assert time.perf_counter() - t0 < 1


# ---------------------------------------------------------------- 12: CSV injection, sizes
EVIL = '"=HYPERLINK(""http://evil.example"",""click"")"'
MEASUREMENTS = f"""subject,visit,date,lesion_id,kind,diameter_mm,organ
{EVIL},01,2026-01-05,L1,target,{{d1}},liver
{EVIL},02,2026-02-05,L1,target,25,liver
{EVIL},02,2026-02-05,@SUM(1+1),new,,liver
"""


def test_assess_escapes_formula_cells_in_its_csv(tmp_path: Path) -> None:
    import pandas as pd

    table = tmp_path / "m.csv"
    table.write_text(MEASUREMENTS.format(d1=30))
    result = runner.invoke(app, ["assess", str(table), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "out").glob("*.csv")
    cells = pd.read_csv(written, dtype=str, keep_default_na=False).to_numpy().ravel().tolist()
    risky = [c for c in cells if c.startswith(tuple("=+-@\t\r")) and not _number(c)]
    assert risky == []
    assert '\'=HYPERLINK("http://evil.example","click")' in cells and "'@SUM(1+1)" in cells


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_a_diameter_beyond_any_body_is_refused_naming_file_line_column(tmp_path: Path) -> None:
    table = tmp_path / "m.csv"
    table.write_text(MEASUREMENTS.format(d1="1e308"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["assess", str(table), "--out", str(out)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"{table}: diameter_mm: line 2: diameter_mm 1e308 mm is larger than any body" in message
    assert not out.exists()


def test_assess_prints_user_text_as_written_not_as_markup(tmp_path: Path) -> None:
    table = tmp_path / "m.csv"
    table.write_text(
        "subject,visit,date,lesion_id,kind,diameter_mm\n"
        "[/x],01,2026-01-05,L1,target,30\n"
        "[/x],02,2026-02-05,L1,target,20\n"
    )
    result = runner.invoke(app, ["assess", str(table), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "[/x]" in result.output


def test_the_shared_csv_writer_escapes_text_not_numbers(tmp_path: Path) -> None:
    import pandas as pd

    from tumorscope.files import write_csv

    frame = pd.DataFrame(
        {"=name": ["=1+1", "-3.5", "\tx", "L1", None], "value": [-1.0, 2.0, 3.0, 4.0, 5.0]}
    )
    text = write_csv(frame, tmp_path / "t.csv").read_text().splitlines()
    assert text == ["'=name,value", "'=1+1,-1.0", "-3.5,2.0", "'\tx,3.0", "L1,4.0", ",5.0"]


def test_the_csv_writer_escapes_every_cell_of_long_and_odd_columns(tmp_path: Path) -> None:
    """Escaping is computed once per distinct value: every occurrence of a formula is still
    escaped, in string, categorical and object columns, NaN and non-text cells left alone,
    and a column of unhashable cells (lists) escaped cell by cell."""
    import pandas as pd

    from tumorscope.files import csv_cell, write_csv

    cells = ["=A1", "L1", "@SUM(B:B)", "-2", None, "+cmd|x", "L1"] * 500
    frame = pd.DataFrame(
        {
            "text": pd.Series(cells, dtype="string"),
            "category": pd.Series(cells, dtype="category"),
            "mixed": pd.Series([*cells[:-2], 3.5, float("nan")], dtype=object),
            "lists": pd.Series([["=x"], ["y"]] * (len(cells) // 2) + [["z"]], dtype=object),
        }
    )
    got = pd.read_csv(write_csv(frame, tmp_path / "t.csv"), dtype=str, keep_default_na=False)
    for col in ("text", "category", "mixed"):
        want = ["" if pd.isna(v) else str(csv_cell(v)) for v in frame[col]]
        assert got[col].tolist() == want
    assert got["text"].tolist().count("'=A1") == 500
    assert got["lists"].tolist()[:2] == ["['=x']", "['y']"]  # not text cells: unchanged
