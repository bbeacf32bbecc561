"""``Context.out_rel`` / ``in_rel`` keep their folders' resolved paths: the names they give
must be those of ``Path(path).resolve()`` (what they computed before, for every path)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from tumorscope.pipeline.step import Context


def _reference(path: Path, root: Path) -> str:
    return Path(path).resolve().relative_to(root.resolve()).as_posix()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "out" / "sub-001" / "maps").mkdir(parents=True)
    (tmp_path / "study" / "sub-001" / "anat").mkdir(parents=True)
    (tmp_path / "out" / "sub-001" / "maps" / "a.nii.gz").write_bytes(b"a")
    (tmp_path / "out" / "sub-001" / "maps" / "b.nii.gz").write_bytes(b"b")
    (tmp_path / "study" / "sub-001" / "anat" / "t2w.nii.gz").write_bytes(b"t")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.nii.gz").write_bytes(b"x")
    os.symlink(tmp_path / "out", tmp_path / "out-link")
    os.symlink(tmp_path / "study", tmp_path / "study-link")
    # a file of the run that is a link to another file of the run, and one to outside it
    os.symlink(
        tmp_path / "out" / "sub-001" / "maps" / "b.nii.gz",
        tmp_path / "out" / "sub-001" / "maps" / "link-to-b.nii.gz",
    )
    os.symlink(
        tmp_path / "elsewhere" / "x.nii.gz", tmp_path / "out" / "sub-001" / "maps" / "out.nii.gz"
    )
    return tmp_path


@pytest.mark.parametrize("out", ["out", "out-link"])
@pytest.mark.parametrize("study", ["study", "study-link"])
def test_names_are_those_of_resolve(tree: Path, out: str, study: str) -> None:
    ctx = Context(tree / study, tree / out)
    outputs = [
        tree / out / "sub-001" / "maps" / "a.nii.gz",
        tree / "out" / "sub-001" / "maps" / "a.nii.gz",  # the same file by the other name
        tree / "out-link" / "sub-001" / "maps" / "b.nii.gz",
        tree / out / "sub-001" / "maps" / "link-to-b.nii.gz",  # a link: its target's name
        tree / out / "sub-001" / "maps" / "not-yet-written.nii.gz",
        tree / out / "sub-001" / "maps" / ".." / "maps" / "a.nii.gz",
        tree / out / "sub-001" / "maps" / "..",
        tree / out,  # the folder itself: "."
        f"{tree}/{out}//sub-001/./maps/a.nii.gz",  # a str with // and ./
        f"{tree}/{out}/sub-001/maps/",  # a folder, trailing slash
        f"{tree}/{out}/sub-001/maps/b.nii.gz",  # a str, not a Path
    ]
    for _ in range(2):  # the second time from the kept folders
        for p in outputs:
            assert ctx.out_rel(p) == _reference(p, tree / out), p
        p = tree / study / "sub-001" / "anat" / "t2w.nii.gz"
        assert ctx.in_rel(p) == _reference(p, tree / study)


def test_a_link_out_of_the_folder_is_refused_as_before(tree: Path) -> None:
    ctx = Context(tree / "study", tree / "out")
    p = tree / "out" / "sub-001" / "maps" / "out.nii.gz"
    with pytest.raises(ValueError):
        _reference(p, tree / "out")
    with pytest.raises(ValueError):
        ctx.out_rel(p)


def test_relative_paths(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    ctx = Context(Path("study"), Path("out-link"))
    p = Path("out") / "sub-001" / "maps" / "a.nii.gz"
    assert ctx.out_rel(p) == "sub-001/maps/a.nii.gz" == _reference(p, Path("out-link"))


def test_the_kept_folders_are_not_sent_to_workers(tree: Path) -> None:
    ctx = Context(tree / "study", tree / "out-link")
    ctx.out_rel(tree / "out" / "sub-001" / "maps" / "a.nii.gz")
    assert "_dirs" in ctx.__dict__
    copy = pickle.loads(pickle.dumps(ctx))
    assert "_dirs" not in copy.__dict__
    assert copy == ctx
    assert copy.out_rel(tree / "out" / "sub-001" / "maps" / "a.nii.gz") == "sub-001/maps/a.nii.gz"
