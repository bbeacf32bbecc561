"""A PACS over DIMSE (``pynetdicom``): C-FIND, C-GET and C-STORE; used by :mod:`.pacs`.

The PACS is named ``dimse://AET@HOST:PORT`` (its Application Entity title, host and port);
tumorscope calls as ``TUMORSCOPE_PACS_AET`` from the environment (default ``TUMORSCOPE``), which
the PACS must know and allow to query and retrieve. C-GET needs no listening port of our own:
the objects come back over the association that asked for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .pacs import PacsError

__all__ = ["DimsePeer", "c_find_studies", "c_get_study", "c_store", "parse_dimse_url"]

_STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
_STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
_TIMEOUT_S = 60.0
_STUDY_KEYS = ("StudyInstanceUID", "StudyDate", "StudyDescription", "AccessionNumber")


@dataclass(frozen=True)
class DimsePeer:
    """The PACS's Application Entity: title, host, port."""

    aet: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"dimse://{self.aet}@{self.host}:{self.port}"


def parse_dimse_url(url: str) -> DimsePeer:
    """``dimse://AET@HOST:PORT`` → :class:`DimsePeer`; :class:`PacsError` on anything else."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if (
        parts.scheme != "dimse"
        or not parts.username
        or parts.password is not None
        or not parts.hostname
        or port is None
        or parts.path not in ("", "/")
        or len(parts.username) > 16
    ):
        raise PacsError(
            f"expected a DIMSE address dimse://AET@HOST:PORT (AET: the PACS's Application "
            f"Entity title, at most 16 characters), got {url!r}"
        )
    return DimsePeer(parts.username, parts.hostname, port)


def _calling_aet() -> str:
    return os.environ.get("TUMORSCOPE_PACS_AET", "TUMORSCOPE")[:16]


@contextmanager
def _association(
    peer: DimsePeer,
    contexts: Sequence[tuple[str, Sequence[str] | None]],
    *,
    handlers: Sequence[tuple[Any, Callable[..., Any]]] = (),
    scp_roles: Sequence[str] = (),
) -> Iterator[Any]:
    from pynetdicom import AE, build_role

    ae = AE(ae_title=_calling_aet())
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = _TIMEOUT_S
    for abstract, syntaxes in contexts:
        if syntaxes is None:
            ae.add_requested_context(abstract)
        else:
            ae.add_requested_context(abstract, list(syntaxes))
    roles: list[Any] = [build_role(uid, scp_role=True) for uid in scp_roles]
    assoc = ae.associate(
        peer.host, peer.port, ae_title=peer.aet, ext_neg=roles, evt_handlers=list(handlers)
    )
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "could not be reached"
        raise PacsError(
            f"the PACS {peer} {why} (calling AE title {_calling_aet()!r}; set "
            "TUMORSCOPE_PACS_AET to the title the PACS knows)"
        )
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _check_status(status: Any, peer: DimsePeer, doing: str) -> int:
    if not status or "Status" not in status:
        raise PacsError(
            f"the PACS {peer} broke off while {doing}: does it know and allow the calling AE "
            f"title {_calling_aet()!r}? (set TUMORSCOPE_PACS_AET to the title it knows)"
        )
    code = int(status.Status)
    if code in (0x0000, 0xFF00, 0xFF01, 0xB000):  # success, pending, warning
        return code
    if code in (0x0124, 0xA801):
        raise PacsError(f"the PACS {peer} refused {doing} to AE {_calling_aet()!r} (0x{code:04X})")
    raise PacsError(f"the PACS {peer} failed while {doing}: status 0x{code:04X}")


def c_find_studies(peer: DimsePeer, patient_id: str) -> list[dict[str, str | None]]:
    """C-FIND (Study Root, STUDY level) of one patient's studies."""
    from pydicom import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    for keyword in _STUDY_KEYS:
        setattr(query, keyword, "")
    out: list[dict[str, str | None]] = []
    with _association(peer, [(_STUDY_ROOT_FIND, None)]) as assoc:
        for status, ident in assoc.send_c_find(query, _STUDY_ROOT_FIND):
            if _check_status(status, peer, "a study search") in (0xFF00, 0xFF01):
                if ident is None or str(ident.get("PatientID", "")) != patient_id:
                    continue
                out.append({k: (str(ident.get(k)) if ident.get(k) else None) for k in _STUDY_KEYS})
    return [s for s in out if s["StudyInstanceUID"]]


def c_get_study(
    peer: DimsePeer,
    study_uid: str,
    save: Callable[[Any], Path],
) -> list[Path]:
    """C-GET of one study; each object received goes to ``save(dataset)``."""
    from pydicom import Dataset
    from pynetdicom import StoragePresentationContexts, evt

    files: list[Path] = []

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        files.append(save(ds))
        return 0x0000

    # at most 128 presentation contexts: the C-GET one and 127 storage classes
    storage = [c.abstract_syntax for c in StoragePresentationContexts][:127]
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    with _association(
        peer,
        [(_STUDY_ROOT_GET, None)] + [(uid, None) for uid in storage],  # type: ignore[misc]
        handlers=[(evt.EVT_C_STORE, on_store)],
        scp_roles=storage,  # type: ignore[arg-type]
    ) as assoc:
        for status, _ in assoc.send_c_get(query, _STUDY_ROOT_GET):
            code = _check_status(status, peer, "a retrieval (C-GET)")
            failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
            if code == 0xB000 or failed:
                raise PacsError(f"the PACS {peer} could not send {failed} objects of a study")
    return files


def c_store(peer: DimsePeer, datasets: Sequence[Any]) -> None:
    """C-STORE of datasets (each proposed in its own transfer syntax)."""
    contexts: dict[str, set[str]] = {}
    for ds in datasets:
        contexts.setdefault(str(ds.SOPClassUID), set()).add(str(ds.file_meta.TransferSyntaxUID))
    with _association(peer, [(k, sorted(v)) for k, v in contexts.items()]) as assoc:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            _check_status(status, peer, f"storing {ds.SOPInstanceUID}")
