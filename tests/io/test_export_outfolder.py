"""Two exports into one folder at once (:func:`tumorscope.io.dicom.outfolder.deliver`).

The delivery holds the folder's lock: a second export waits for the first's delivery and then
records its files beside the first's; past the wait it is refused, nothing moved.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock

from tumorscope.errors import DataError
from tumorscope.io.dicom import outfolder
from tumorscope.io.dicom.outfolder import LOCK_NAME, MARKER_NAME, deliver


def staged(tmp_path: Path, name: str, content: bytes) -> Path:
    stage = tmp_path / f"stage-{name}"
    stage.mkdir()
    f = stage / name
    f.write_bytes(content)
    return f


def test_a_second_export_waits_for_the_first_and_keeps_its_record(tmp_path: Path) -> None:
    """Export B delivers while export A holds the lock; A then records ``a.dcm``. B waited:
    the marker lists both files (without the lock, B's record was written first and A's
    replaced it: ``b.dcm`` in the folder without a record, refused by every later export)."""
    out = tmp_path / "out"
    out.mkdir()
    b = staged(tmp_path, "b.dcm", b"B")
    result: list[object] = []
    lock = FileLock(str(out / LOCK_NAME))
    lock.acquire()
    try:
        worker = threading.Thread(target=lambda: result.append(deliver([b], out)))
        worker.start()
        time.sleep(0.5)
        assert not (out / "b.dcm").exists()  # waiting for the lock
        (out / "a.dcm").write_bytes(b"A")  # export A's delivery, under the lock
        record = {
            "tumorscope_export": 1,
            "created": "2026-12-06T00:00:00+00:00",
            "files": {"a.dcm": hashlib.sha256(b"A").hexdigest()},
        }
        (out / MARKER_NAME).write_text(json.dumps(record))
    finally:
        lock.release()
    worker.join(30)
    assert result == [[out / "b.dcm"]]
    files = json.loads((out / MARKER_NAME).read_text())["files"]
    assert sorted(files) == ["a.dcm", "b.dcm"]
    assert files["b.dcm"] == hashlib.sha256(b"B").hexdigest()


def test_an_export_held_off_past_the_wait_is_refused_and_moves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outfolder, "DELIVER_WAIT_S", 0.2)
    out = tmp_path / "out"
    out.mkdir()
    b = staged(tmp_path, "b.dcm", b"B")
    with FileLock(str(out / LOCK_NAME)):
        with pytest.raises(DataError, match="another export") as err:
            deliver([b], out)
    assert err.value.file == str(out / LOCK_NAME)
    assert b.exists() and sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_the_lock_file_alone_does_not_make_a_folder_foreign(tmp_path: Path) -> None:
    """An export whose delivery failed after taking the lock leaves only the lock file: the
    folder is still one an export may write into."""
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).touch()
    assert deliver([staged(tmp_path, "b.dcm", b"B")], out) == [out / "b.dcm"]
