"""A real PACS: Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) on a free localhost port.

The fixture starts ``Orthanc`` as an ordinary process with a throw-away configuration (storage
in tmp, remote access off, authentication on with a test user, the DICOMweb plugin from
Debian's plugin folder) and stops it afterwards. The round trip: the phantom's DICOM uploaded
to Orthanc, ``pacs pull``, ``import-dicom``, ``run``, ``export-dicom --to-pacs``, the results
queried back (QIDO-RS) and read with highdicom.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("highdicom")
pytest.importorskip("dicomweb_client")

import numpy as np
import pydicom
import requests
import yaml
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.io.pacs import (
    Credentials,
    PacsError,
    check_url,
    credentials_from_env,
    find_studies,
    pull_patient,
    store_files,
)

ORTHANC = shutil.which("Orthanc") or next(
    (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).exists()), None
)
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "tester", "pw-Zq7-not-in-any-log"
PATIENT_ID = "MRN007340"  # what study_to_dicom gives the first subject
SOP_PM, SOP_SEG = "1.2.840.10008.5.1.4.1.1.30", "1.2.840.10008.5.1.4.1.1.66.4"
SOP_SR = "1.2.840.10008.5.1.4.1.1.88.34"
AET = "TSTEST"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_orthanc(folder: Path) -> tuple[subprocess.Popen[bytes], str, int] | None:
    """Orthanc on two free ports with a throw-away configuration; None if it stopped at once
    (a port taken between choosing and binding it)."""
    http, dimse = _free_port(), _free_port()
    while dimse == http:
        dimse = _free_port()
    config = {
        "Name": "tumorscope-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": http,
        "DicomPort": dimse,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        # DIMSE: tumorscope's calling AE title known (C-FIND, C-GET, C-STORE allowed)
        "DicomAet": "ORTHANC",
        "DicomModalities": {"tumorscope": [AET, "127.0.0.1", 104]},
    }
    folder.mkdir()
    (folder / "orthanc.json").write_text(json.dumps(config))
    with (folder / "orthanc.log").open("w") as log:
        proc = subprocess.Popen(
            [str(ORTHANC), str(folder / "orthanc.json")], stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + 30
    while proc.poll() is None:
        try:
            if requests.get(f"{base}/system", auth=(USER, PASSWORD), timeout=2).ok:
                return proc, base, dimse
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail("Orthanc did not answer within 30 s")
        time.sleep(0.2)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if ORTHANC is None:
        pytest.skip("no Orthanc binary (Debian packages orthanc and orthanc-dicomweb)")
    if not PLUGIN.exists():
        pytest.skip(f"no DICOMweb plugin at {PLUGIN} (Debian package orthanc-dicomweb)")
    tmp = tmp_path_factory.mktemp("orthanc")
    for attempt in range(3):
        started = _start_orthanc(tmp / f"run{attempt}")
        if started is not None:
            break
    else:
        pytest.fail(f"Orthanc stopped: {(tmp / 'run2' / 'orthanc.log').read_text()[-2000:]}")
    proc, base, dimse = started
    try:
        yield {
            "base": base,
            "url": f"{base}/dicom-web",
            "dimse": f"dimse://ORTHANC@127.0.0.1:{dimse}",
        }
    finally:
        _stop(proc)


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOKEN", "CONFIG"):
        monkeypatch.delenv(f"TUMORSCOPE_PACS_{name}", raising=False)
    monkeypatch.setenv("TUMORSCOPE_PACS_USER", USER)
    monkeypatch.setenv("TUMORSCOPE_PACS_PASSWORD", PASSWORD)
    monkeypatch.setenv("TUMORSCOPE_PACS_AET", AET)


@pytest.fixture(scope="module")
def phantom_dicom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One subject, its baseline visit, T2w and DWI only, Philips style, lesions as SEG."""
    from tumorscope.phantom import make_study
    from tumorscope.phantom.dicom import study_to_dicom

    tmp = tmp_path_factory.mktemp("pacs-phantom")
    root = make_study(tmp / "phantom", size="tiny", seed=0, n_subjects=1)
    manifest = yaml.safe_load((root / "study.yaml").read_text())
    visits = manifest["subjects"]["001"]["visits"]
    for vid in list(visits)[1:]:
        del visits[vid]
        shutil.rmtree(root / "sub-001" / f"ses-{vid}")
        shutil.rmtree(root / "derivatives" / "lesions" / "sub-001" / f"ses-{vid}")
    (root / "study.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    for f in (root / "sub-001" / "ses-01").rglob("*"):
        if f.is_file() and not any(k in f.name for k in ("_T2w.", "_dwi.")):
            f.unlink()
    return study_to_dicom(root, tmp / "dicom", vendors=("philips",))


def _upload(base: str, folder: Path) -> int:
    """Orthanc's own REST upload (independent of the code under test)."""
    n = 0
    for f in sorted(folder.rglob("*.dcm")):
        r = requests.post(f"{base}/instances", data=f.read_bytes(), auth=(USER, PASSWORD))
        r.raise_for_status()
        n += 1
    return n


# -- without a server -----------------------------------------------------------------------


def test_url_with_credentials_is_refused() -> None:
    for url in ("http://bob:secret@host:8042/dicom-web", "http://bob@host/dicom-web"):
        with pytest.raises(PacsError, match="TUMORSCOPE_PACS_USER") as exc:
            check_url(url)
        assert "secret" not in str(exc.value)
    with pytest.raises(PacsError, match="DICOMweb URL"):
        check_url("ftp://host/dicom-web")
    assert check_url("http://host:8042/dicom-web/") == "http://host:8042/dicom-web"


def test_credentials_from_environment_and_config_file(tmp_path: Path) -> None:
    assert credentials_from_env({}) is None
    c = credentials_from_env({"TUMORSCOPE_PACS_USER": "u", "TUMORSCOPE_PACS_PASSWORD": "p"})
    assert c == Credentials(user="u", password="p") and "p'" not in repr(c)
    assert credentials_from_env({"TUMORSCOPE_PACS_TOKEN": "t"}) == Credentials(token="t")
    with pytest.raises(PacsError, match="needs a password"):
        credentials_from_env({"TUMORSCOPE_PACS_USER": "u"})
    cfg = tmp_path / "pacs.yaml"
    cfg.write_text("user: u\npassword: p\n")
    env = {"TUMORSCOPE_PACS_CONFIG": str(cfg)}
    assert credentials_from_env(env) == Credentials(user="u", password="p")
    cfg.write_text("user: u\npasswd: p\n")
    with pytest.raises(PacsError, match="expected a mapping"):
        credentials_from_env(env)
    with pytest.raises(PacsError, match="cannot read"):
        credentials_from_env({"TUMORSCOPE_PACS_CONFIG": str(tmp_path / "missing")})


def test_token_and_basic_authentication_go_in_the_session() -> None:
    from tumorscope.io.pacs import _client

    c = _client("http://pacs/dicom-web", Credentials(token="tok"))
    assert c._session.headers["Authorization"] == "Bearer tok"
    c = _client("http://pacs/dicom-web/", Credentials(user="u", password="p"))
    assert c._session.auth == ("u", "p") and "Authorization" not in c._session.headers
    assert c.base_url == "http://pacs/dicom-web"


def test_server_down_is_a_clear_error(tmp_path: Path, creds: None) -> None:
    url = f"http://127.0.0.1:{_free_port()}/dicom-web"
    r = CliRunner().invoke(
        app, ["pacs", "pull", "--url", url, "--patient-id", "X", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "cannot reach the PACS" in r.output, r.output
    assert not (tmp_path / "o").exists() and list(tmp_path.iterdir()) == []


def test_dimse_server_down() -> None:
    pytest.importorskip("pynetdicom")
    with pytest.raises(PacsError, match="could not be reached"):
        find_studies(f"dimse://PACS@127.0.0.1:{_free_port()}", "X")


def test_password_in_url_refused_by_the_command(tmp_path: Path) -> None:
    url = "http://tester:hunter2@127.0.0.1:1/dicom-web"
    r = CliRunner().invoke(
        app, ["pacs", "pull", "--url", url, "--patient-id", "X", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "TUMORSCOPE_PACS_PASSWORD" in r.output, r.output
    assert "hunter2" not in r.output
    # export-dicom refuses it before writing anything
    args = ["export-dicom", str(tmp_path / "s"), str(tmp_path / "d"), str(tmp_path / "out")]
    r = CliRunner().invoke(app, [*args, "--subject", "001", "--visit", "01", "--to-pacs", url])
    assert r.exit_code == 2 and "TUMORSCOPE_PACS_PASSWORD" in r.output, r.output
    assert "hunter2" not in r.output and list(tmp_path.iterdir()) == []


class _Answer(BaseHTTPRequestHandler):
    """A web server that is no PACS: HTML for every GET, 503 for every POST."""

    def do_GET(self) -> None:
        body = b"<html>a web page</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_is_no_pacs(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
        with pytest.raises(PacsError, match="not DICOMweb"):
            find_studies(url, "X", credentials=None)
        dcm = tmp_path / "x.dcm"
        ds = pydicom.Dataset()
        ds.SOPInstanceUID = ds.SOPClassUID = "1.2.3"
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.save_as(dcm, enforce_file_format=True)
        with pytest.raises(PacsError, match="stayed busy \\(HTTP 503\\)"):
            store_files(url, [dcm], credentials=None)
        (tmp_path / "no.dcm").write_text("not DICOM")
        with pytest.raises(PacsError, match=r"no\.dcm: not a DICOM file"):
            store_files(url, [dcm, tmp_path / "no.dcm"], credentials=None)
    finally:
        server.shutdown()
        server.server_close()


# -- against Orthanc ------------------------------------------------------------------------


def test_wrong_password_and_unknown_patient(
    orthanc: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, creds: None
) -> None:
    runner = CliRunner()
    args = ["pacs", "pull", "--url", orthanc["url"], "--patient-id", "NOBODY", str(tmp_path / "o")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "no study of Patient ID 'NOBODY'" in r.output, r.output
    monkeypatch.setenv("TUMORSCOPE_PACS_PASSWORD", "wrong-one")
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "refused the credentials (HTTP 401)" in r.output, r.output
    assert "wrong-one" not in r.output
    monkeypatch.delenv("TUMORSCOPE_PACS_USER")
    monkeypatch.delenv("TUMORSCOPE_PACS_PASSWORD")
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "HTTP 401" in r.output
    assert list(tmp_path.iterdir()) == []
    # the config file path
    cfg = tmp_path.parent / f"{tmp_path.name}-pacs.json"
    cfg.write_text(json.dumps({"user": USER, "password": PASSWORD}))
    monkeypatch.setenv("TUMORSCOPE_PACS_CONFIG", str(cfg))
    assert find_studies(orthanc["url"], "NOBODY") == []
    with pytest.raises(PacsError, match="exactly"):
        find_studies(orthanc["url"], "MRN*")


def test_python_api_errors(orthanc: dict[str, str], phantom_dicom: Path, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    good = Credentials(user=USER, password=PASSWORD)
    with pytest.raises(PacsError, match="not an empty folder"):
        pull_patient(orthanc["url"], PATIENT_ID, tmp_path / "full", credentials=good)
    one = next(phantom_dicom.rglob("*.dcm"))
    with pytest.raises(PacsError, match="HTTP 401"):
        store_files(orthanc["url"], [one], credentials=Credentials(user=USER, password="bad"))
    with pytest.raises(PacsError, match="404"):
        find_studies(orthanc["base"] + "/not-dicom-web", PATIENT_ID, credentials=good)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::tumorscope.errors.TumorscopeWarning")
def test_round_trip_through_orthanc(
    orthanc: dict[str, str],
    phantom_dicom: Path,
    tmp_path: Path,
    creds: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import highdicom as hd
    from dicomweb_client.api import DICOMwebClient

    caplog.set_level(logging.DEBUG)
    n = _upload(orthanc["base"], phantom_dicom)
    runner = CliRunner()
    outputs: list[str] = []

    def cli(*args: str) -> str:
        r = runner.invoke(app, list(args))
        outputs.append(r.output)
        assert r.exit_code == 0, r.output
        return r.output

    pulled = tmp_path / "pulled"
    out = cli("pacs", "pull", "--url", orthanc["url"], "--patient-id", PATIENT_ID, str(pulled))
    assert f"retrieved 1 studies ({n} files)" in out
    assert len(list(pulled.rglob("*.dcm"))) == n
    assert [p.name for p in tmp_path.iterdir()] == ["pulled"]  # no temporary left
    assert "1 studies" in cli("pacs", "find", "--url", orthanc["url"], "--patient-id", PATIENT_ID)

    study = tmp_path / "study"
    cli("import-dicom", str(pulled), str(study))
    cli("run", str(study), "--steps", "register,fit_dwi,measure,assess")
    results = study / "derivatives" / "tumorscope"
    out = cli(
        "export-dicom", str(study), str(pulled), str(tmp_path / "export"),
        "--subject", "001", "--visit", "01", "--results", str(results),
        "--to-pacs", orthanc["url"],
    )  # fmt: skip
    written = [
        Path(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("wrote ")
    ]
    assert f"stored {len(written)} objects" in out

    # query the results back (QIDO-RS) and read them with highdicom
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    client = DICOMwebClient(orthanc["url"], session=session)
    found = client.search_for_instances(search_filters={"PatientID": "001"})
    by_class: dict[str, list[tuple[str, str, str]]] = {}
    for rec in found:
        uids = tuple(rec[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
        by_class.setdefault(rec["00080016"]["Value"][0], []).append(uids)  # type: ignore[arg-type]
    assert set(by_class) == {SOP_PM, SOP_SEG, SOP_SR}
    assert sum(len(v) for v in by_class.values()) == len(written)
    local = {pydicom.dcmread(f).SOPInstanceUID: f for f in written}
    for sop, reader in (
        (SOP_PM, hd.pm.ParametricMap.from_dataset),
        (SOP_SEG, hd.seg.Segmentation.from_dataset),
        (SOP_SR, hd.sr.Comprehensive3DSR.from_dataset),
    ):
        for study_uid, series_uid, uid in by_class[sop]:
            ds = client.retrieve_instance(study_uid, series_uid, uid)
            obj = reader(ds)
            assert obj.SOPInstanceUID in local
            if sop == SOP_PM:
                # NaN where a map was not fitted (fit_dwi: the background, dwi_region)
                theirs, ours = obj.pixel_array, pydicom.dcmread(local[uid]).pixel_array
                assert theirs.shape == ours.shape
                assert ((theirs == ours) | (np.isnan(theirs) & np.isnan(ours))).all()
            if sop == SOP_SEG:
                assert obj.number_of_segments >= 1
            if sop == SOP_SR:
                assert obj.content.get_volumetric_roi_measurement_groups()

    everything = "\n".join(outputs) + caplog.text
    assert PASSWORD not in everything
    # nor any file written (the import's and the run's logs among them)
    leaks = [f for f in tmp_path.rglob("*") if f.is_file() and PASSWORD.encode() in f.read_bytes()]
    assert leaks == []


def test_dimse_find_pull_and_store(
    orthanc: dict[str, str], phantom_dicom: Path, tmp_path: Path, creds: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    pytest.importorskip("pynetdicom")
    sent = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f
            for f in phantom_dicom.rglob("*.dcm")}  # fmt: skip
    assert len(store_files(orthanc["dimse"], sorted(sent.values()))) == len(sent)  # C-STORE
    [study] = find_studies(orthanc["dimse"], PATIENT_ID)  # C-FIND
    assert study["StudyDate"]
    out = tmp_path / "pulled"
    r = CliRunner().invoke(
        app, ["pacs", "pull", "--url", orthanc["dimse"], "--patient-id", PATIENT_ID, str(out)]
    )
    assert r.exit_code == 0, r.output
    got = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in out.rglob("*.dcm")}
    assert got == set(sent)
    # an AE title the PACS does not know is told so
    monkeypatch.setenv("TUMORSCOPE_PACS_AET", "STRANGER")
    with pytest.raises(PacsError, match="calling AE title 'STRANGER'"):
        find_studies(orthanc["dimse"], PATIENT_ID)
    for bad in ("dimse://127.0.0.1:104", "dimse://A:pw@127.0.0.1:104", "dimse://A@h"):
        with pytest.raises(PacsError, match="AET@HOST:PORT"):
            check_url(bad)


def test_a_failed_retrieval_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tumorscope.io.pacs as pacs

    studies = [{"StudyInstanceUID": "1.2", "StudyDate": None}, {"StudyInstanceUID": "1.3"}]
    monkeypatch.setattr(pacs, "find_studies", lambda *a, **k: studies)

    def retrieve(uid: str, folder: Path, doing: str) -> list[Path]:
        if uid == "1.3":
            raise PacsError(f"lost the connection while {doing}")
        (folder / "a.dcm").write_bytes(b"")
        return [folder / "a.dcm"]

    monkeypatch.setattr(pacs, "_retriever", lambda url, credentials: retrieve)
    with pytest.raises(PacsError, match="while retrieving study 2 of 2"):
        pull_patient("http://pacs/dicom-web", "X", tmp_path / "new" / "deeper" / "out")
    assert list(tmp_path.iterdir()) == []
