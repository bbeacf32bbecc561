"""A PACS over DICOMweb: find and retrieve a patient's studies, store objects back.

Client functions over ``dicomweb-client`` (QIDO-RS to find, WADO-RS to retrieve, STOW-RS to
store). Credentials come from the environment, never from the URL or the command line:

- ``TUMORSCOPE_PACS_USER`` and ``TUMORSCOPE_PACS_PASSWORD`` (HTTP basic authentication), or
- ``TUMORSCOPE_PACS_TOKEN`` (a bearer token), or
- ``TUMORSCOPE_PACS_CONFIG``: the path of a YAML or JSON file with ``user`` and ``password``
  or ``token`` (keep it readable by its owner only).

A URL that holds a user name or password is refused. Every failure (server down, credentials
refused, no such patient, a store rejected) is a :class:`PacsError` whose message says what
happened and never holds a credential; :func:`pull_patient` writes nothing unless the whole
retrieval succeeded (files go to a temporary folder beside ``out_dir``, renamed at the end).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import DataError, TumorscopeError
from ..files import regular_file

if TYPE_CHECKING:
    from dicomweb_client.api import DICOMwebClient

__all__ = [
    "Credentials",
    "PacsError",
    "PullReport",
    "check_url",
    "credentials_from_env",
    "find_studies",
    "pull_patient",
    "store_files",
]

log = logging.getLogger(__name__)

#: Where credentials go (named in every message about them).
CREDENTIALS_HELP = (
    "set TUMORSCOPE_PACS_USER and TUMORSCOPE_PACS_PASSWORD (or TUMORSCOPE_PACS_TOKEN) in the "
    "environment, or TUMORSCOPE_PACS_CONFIG to a file with 'user' and 'password' (or 'token')"
)
_TIMEOUT_S = 60.0
_STORE_BATCH = 50
_RETRIES = 3
_RETRY_ON = (
    HTTPStatus.TOO_MANY_REQUESTS,
    HTTPStatus.SERVICE_UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT,
)


class PacsError(TumorscopeError):
    """The PACS could not be reached, refused a request, or has nothing to give."""


@dataclass(frozen=True)
class Credentials:
    """How to authenticate: basic (user, password) or a bearer token; ``repr`` hides secrets."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass
class PullReport:
    """What :func:`pull_patient` retrieved."""

    out_dir: Path
    studies: list[str]
    files: list[Path]


def credentials_from_env(environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials the environment gives (see the module docstring), or None."""
    env = os.environ if environ is None else environ
    user, password = env.get("TUMORSCOPE_PACS_USER"), env.get("TUMORSCOPE_PACS_PASSWORD")
    token = env.get("TUMORSCOPE_PACS_TOKEN")
    config = env.get("TUMORSCOPE_PACS_CONFIG")
    if config and not (user or password or token):
        user, password, token = _read_config(Path(config))
    if token:
        return Credentials(token=token)
    if user or password:
        if not (user and password):
            raise PacsError(
                f"a PACS user needs a password and a password a user: {CREDENTIALS_HELP}"
            )
        return Credentials(user=user, password=password)
    return None


def _read_config(path: Path) -> tuple[str | None, str | None, str | None]:
    import yaml

    where = f"TUMORSCOPE_PACS_CONFIG={path}"
    try:
        if path.exists():
            # a named pipe would block the read forever; a folder is no configuration
            regular_file(path, field="TUMORSCOPE_PACS_CONFIG")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PacsError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DataError(
            "not a text file (expected YAML or JSON with 'user' and 'password', or 'token')",
            file=path,
            field="TUMORSCOPE_PACS_CONFIG",
        ) from None
    except yaml.YAMLError:
        raise PacsError(f"{where}: not a YAML or JSON mapping") from None
    if not isinstance(data, dict) or not set(data) <= {"user", "password", "token"}:
        raise PacsError(f"{where}: expected a mapping with 'user' and 'password', or 'token'")
    values = [data.get(k) for k in ("user", "password", "token")]
    if any(v is not None and not isinstance(v, str) for v in values):
        raise PacsError(f"{where}: 'user', 'password' and 'token' must be text")
    return values[0], values[1], values[2]


def check_url(url: str) -> str:
    """The DICOMweb base URL without a trailing slash (or a ``dimse://AET@HOST:PORT``
    address, checked); refuses credentials in it."""
    if _is_dimse(url):
        from .dimse import parse_dimse_url

        parse_dimse_url(url)
        return url
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise PacsError(f"the PACS URL must not hold a user or password: {CREDENTIALS_HELP}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PacsError(f"expected a DICOMweb URL such as http://HOST:PORT/dicom-web, got {url!r}")
    if parts.query or parts.fragment:
        raise PacsError(f"the PACS URL must not have a query or fragment: {url!r}")
    return url.rstrip("/")


def _is_dimse(url: str) -> bool:
    return url.lower().startswith("dimse://")


def _client(url: str, credentials: Credentials | None) -> DICOMwebClient:
    import requests
    from dicomweb_client.api import DICOMwebClient

    base = check_url(url)
    session = requests.Session()
    if credentials is not None and credentials.token:
        session.headers["Authorization"] = f"Bearer {credentials.token}"
    elif credentials is not None and credentials.user:
        session.auth = (credentials.user, credentials.password or "")
    client = DICOMwebClient(base, session=session, timeout=_TIMEOUT_S)
    # dicomweb-client retries every failed request 5 times over 30 s (a server that is down
    # too): a short back-off for what is worth retrying (busy, time-out) and no more
    client.set_http_retry_params(
        max_attempts=_RETRIES, wait_exponential_multiplier=250, retriable_error_codes=_RETRY_ON
    )
    return client


@contextmanager
def _errors(url: str, doing: str) -> Iterator[None]:
    """Turn network and HTTP failures into a :class:`PacsError` (no credential in it)."""
    import requests
    import retrying
    from pydicom.errors import InvalidDicomError

    try:
        yield
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise PacsError(
                f"the PACS at {url} refused the credentials (HTTP {status}) while {doing}: "
                f"{CREDENTIALS_HELP}"
            ) from None
        if status == 404:
            raise PacsError(
                f"{url} answered 404 Not Found while {doing}: is it the DICOMweb root "
                "(e.g. http://HOST:PORT/dicom-web)?"
            ) from None
        raise PacsError(f"the PACS at {url} answered HTTP {status} while {doing}") from None
    except requests.ConnectionError:
        raise PacsError(f"cannot reach the PACS at {url} while {doing}: is it running?") from None
    except requests.Timeout:
        raise PacsError(f"the PACS at {url} did not answer in time while {doing}") from None
    except (ValueError, InvalidDicomError) as exc:  # not DICOMweb, or not DICOM
        raise PacsError(
            f"the PACS at {url} sent an answer that is not DICOMweb while {doing} ({exc}): is "
            "the URL its DICOMweb root?"
        ) from None
    except requests.RequestException as exc:
        raise PacsError(f"request to the PACS at {url} failed while {doing}: {exc}") from None
    except retrying.RetryError as exc:  # still busy after the retries
        status = getattr(exc.last_attempt.value, "status_code", None)
        raise PacsError(
            f"the PACS at {url} stayed busy (HTTP {status}) while {doing}; try again later"
        ) from None


def _value(record: Mapping[str, Any], tag: str) -> str | None:
    values = record.get(tag, {}).get("Value")
    if not values:
        return None
    first = values[0]
    if isinstance(first, dict):  # a person name
        return str(first.get("Alphabetic", ""))
    return str(first)


def find_studies(
    url: str, patient_id: str, *, credentials: Credentials | None = None
) -> list[dict[str, str | None]]:
    """The studies of one patient (QIDO-RS, or C-FIND), exactly that Patient ID (no wildcards).

    Returns one record per study: ``StudyInstanceUID``, ``StudyDate``, ``StudyDescription``,
    ``AccessionNumber``; ordered by date then UID.
    """
    if not patient_id.strip() or any(c in patient_id for c in "*?\\"):
        raise PacsError(
            f"the Patient ID must be given exactly (no '*', '?' or '\\'): {patient_id!r}"
        )
    if _is_dimse(url):
        from .dimse import c_find_studies, parse_dimse_url

        studies = c_find_studies(parse_dimse_url(url), patient_id)
    else:
        studies = _qido_studies(url, patient_id, credentials)
    studies.sort(key=lambda s: (s["StudyDate"] or "", s["StudyInstanceUID"] or ""))
    log.info("found %d studies on %s", len(studies), check_url(url))
    return studies


def _qido_studies(
    url: str, patient_id: str, credentials: Credentials | None
) -> list[dict[str, str | None]]:
    if credentials is None:
        credentials = credentials_from_env()
    client = _client(url, credentials)
    with _errors(url, "searching for studies"):
        found = client.search_for_studies(search_filters={"PatientID": patient_id})
    studies = []
    for rec in found:
        # a server may match loosely (case, wildcards): keep the exact Patient ID only
        if _value(rec, "00100020") != patient_id or not _value(rec, "0020000D"):
            continue
        studies.append(
            {
                "StudyInstanceUID": _value(rec, "0020000D"),
                "StudyDate": _value(rec, "00080020"),
                "StudyDescription": _value(rec, "00081030"),
                "AccessionNumber": _value(rec, "00080050"),
            }
        )
    return studies


def pull_patient(
    url: str,
    patient_id: str,
    out_dir: str | Path,
    *,
    credentials: Credentials | None = None,
) -> PullReport:
    """Retrieve every study of a patient (WADO-RS, or C-GET) into ``out_dir`` as DICOM files.

    ``out_dir`` must not exist or be empty. Files are written as
    ``out_dir/study-N/<hash of the SOP Instance UID>.dcm`` (Part 10, as the server sent
    them), first into a temporary folder beside ``out_dir`` that is renamed when every
    study has arrived; on any failure nothing is left behind.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise PacsError(f"{out_dir}: exists and is not an empty folder; give a new folder")
    if credentials is None and not _is_dimse(url):
        credentials = credentials_from_env()
    studies = find_studies(url, patient_id, credentials=credentials)
    if not studies:
        raise PacsError(f"the PACS at {check_url(url)} has no study of Patient ID {patient_id!r}")
    retrieve = _retriever(url, credentials)
    made = [p for p in reversed(out_dir.absolute().parents) if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.pull-", dir=out_dir.parent))
    try:
        files: list[Path] = []
        for i, study in enumerate(studies, 1):
            uid = str(study["StudyInstanceUID"])
            folder = tmp / f"study-{i}"
            folder.mkdir()
            files.extend(retrieve(uid, folder, f"retrieving study {i} of {len(studies)}"))
            log.info("retrieved study %d of %d", i, len(studies))
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(made):  # the parents this call made, if still empty
            with suppress(OSError):
                folder.rmdir()
        raise
    return PullReport(
        out_dir=out_dir,
        studies=[str(s["StudyInstanceUID"]) for s in studies],
        files=[out_dir / f.relative_to(tmp) for f in files],
    )


def _retriever(url: str, credentials: Credentials | None) -> Callable[[str, Path, str], list[Path]]:
    """``retrieve(study_uid, folder, doing)``: a study's objects saved in ``folder``."""
    if _is_dimse(url):
        from .dimse import c_get_study, parse_dimse_url

        peer = parse_dimse_url(url)
        return lambda uid, folder, doing: c_get_study(peer, uid, lambda ds: _save(ds, folder))
    client = _client(url, credentials)

    def wado(uid: str, folder: Path, doing: str) -> list[Path]:
        with _errors(url, doing):
            return [_save(ds, folder) for ds in client.iter_study(uid)]

    return wado


def _save(ds: Any, folder: Path) -> Path:
    uid = str(ds.get("SOPInstanceUID", ""))
    if not uid:
        raise PacsError("the PACS sent an object without SOP Instance UID")
    path = folder / f"{hashlib.sha256(uid.encode()).hexdigest()[:20]}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def store_files(
    url: str, files: Iterable[str | Path], *, credentials: Credentials | None = None
) -> list[str]:
    """Store DICOM files in the PACS (STOW-RS, or C-STORE); the SOP Instance UIDs stored.

    Every file is read first (nothing is sent if one is not DICOM). Raises
    :class:`PacsError` when the server reports any object as failed.
    """
    paths = [Path(f) for f in files]
    for p in paths:  # every file readable before anything is sent
        _read(p, stop_before_pixels=True)
    if _is_dimse(url):
        from .dimse import c_store, parse_dimse_url

        peer = parse_dimse_url(url)
    else:
        client = _client(url, credentials or credentials_from_env())
    stored: list[str] = []
    for start in range(0, len(paths), _STORE_BATCH):
        batch = [_read(p) for p in paths[start : start + _STORE_BATCH]]
        if _is_dimse(url):
            c_store(peer, batch)
        else:
            with _errors(url, "storing objects"):
                answer = client.store_instances(batch)
            _check_stored(answer, batch, url)
        stored.extend(str(ds.SOPInstanceUID) for ds in batch)
    log.info("stored %d objects on %s", len(stored), check_url(url))
    return stored


def _read(path: Path, *, stop_before_pixels: bool = False) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise PacsError(f"{path}: not a DICOM file (Part 10), nothing was stored") from None


def _check_stored(answer: Any, batch: Sequence[Any], url: str) -> None:
    failed = list(getattr(answer, "FailedSOPSequence", None) or [])
    if failed:
        uids = ", ".join(str(item.get("ReferencedSOPInstanceUID", "?")) for item in failed)
        raise PacsError(f"the PACS at {url} refused {len(failed)} of {len(batch)} objects: {uids}")
