"""The DICOM PS3.15 Basic Application Level Confidentiality Profile, as tumorscope applies it.

The attribute actions come from the standard's Table E.1-1 (PS3.15 Annex E), as shipped by the
package ``dicom-anonymizer`` (BSD; module ``dicomfields_2026c``: the table of DICOM 2026c), not
from a hand list: :func:`action` gives the action code of any tag (``K`` for an attribute the
table does not list, ``X`` for every private attribute).

* **Import** (:func:`deidentify_sidecar`): a sidecar holds acquisition fields only; each field
  that is a DICOM attribute is kept if the table keeps it, kept *cleaned* if it is a descriptor
  of the Clean Descriptors Option (series description, protocol name), dropped otherwise; every
  string is cleaned of the patient's identifiers and of dates
  (:class:`tumorscope.io.deid.Identifiers`).
* **Export** (:func:`deidentify_dataset`): a copy of a source image with every attribute
  treated as the table says (``X`` removed, ``Z`` emptied, ``D`` a dummy value, ``U`` a UID
  replaced consistently, compound actions by their least destructive choice that leaves no
  value: ``X/Z`` → Z, ``X/D`` → D, ``Z/D`` → Z, ``X/Z/D`` → Z, ``X/Z/U*`` → the sequence kept
  with its UIDs replaced), private attributes removed, dates and times kept (Retain
  Longitudinal Temporal Information with Full Dates Option; the patient's birth date is not
  kept), and the pseudonymous identity set. Objects built from such copies (Parametric Map,
  SEG, SR) carry no identity of the source.

The options applied are recorded as CID 7050 codes (:data:`METHOD_CODES`): in the De-identification
Method Code Sequence (0012,0064) of exported objects, with Patient Identity Removed = ``YES``,
and in the ``DeidentificationMethod`` field of imported sidecars.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ... import __version__
from ...errors import ExportError

__all__ = [
    "METHOD_CODES",
    "PROFILE_SOURCE",
    "action",
    "carry_deid_marks",
    "check_exported",
    "deidentify_dataset",
    "deidentify_sidecar",
    "method_codes",
    "pseudonymous_uid",
    "removed_identity",
]

#: where the attribute actions come from
PROFILE_SOURCE = "DICOM PS3.15 2026c Table E.1-1 (dicom-anonymizer, dicomfields_2026c)"

#: CID 7050 codes of what tumorscope applies (scheme DCM)
METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113105", "Clean Descriptors Option"),
    ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
)

#: descriptors kept after cleaning (Clean Descriptors Option), by keyword
CLEANED_DESCRIPTORS = frozenset({"SeriesDescription", "ProtocolName"})

#: sidecar keys that are DICOM attributes under another name
_SIDECAR_KEYWORDS = {"ManufacturersModelName": "ManufacturerModelName"}

#: the table's lists → action code
_CATEGORIES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}

#: a compound action → what is done (the least destructive choice that leaves no value)
_CHOICE = {"X/Z": "Z", "X/D": "D", "Z/D": "Z", "X/Z/D": "Z", "X/Z/U*": "U*"}

_DUMMY = {
    "PN": "ANONYMOUS",
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "IS": "0",
    "DS": "0",
    "AS": "000Y",
    "UI": "",
}


@functools.cache
def _table() -> tuple[dict[int, str], list[tuple[int, int, int, int, str]]]:
    """(tag → action, [(group, element, group mask, element mask, action)])."""
    from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table

    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for name, code in _CATEGORIES.items():
        for entry in getattr(table, name):
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = code
            else:
                masked.append((entry[0], entry[1], entry[2], entry[3], code))
    return exact, masked


def action(tag: int) -> str:
    """The Basic Profile action code of a tag (``K`` when the table does not list it).

    Examples
    --------
    >>> action(0x00100010), action(0x0008103E), action(0x0020000D), action(0x00180050)
    ('Z', 'X', 'U', 'K')
    >>> action(0x60003000), action(0x00291010)  # overlay data, a private attribute
    ('X', 'X')
    """
    tag = int(tag)
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1:
        return "X"
    exact, masked = _table()
    if tag in exact:
        return exact[tag]
    for g, e, gm, em, code in masked:
        if group & gm == g & gm and element & em == e & em:
            return code
    return "K"


def method_codes() -> list[dict[str, str]]:
    """:data:`METHOD_CODES` as sidecar entries (code value, scheme, meaning)."""
    return [
        {"CodeValue": v, "CodingSchemeDesignator": "DCM", "CodeMeaning": m} for v, m in METHOD_CODES
    ]


def deidentify_sidecar(side: Mapping[str, Any], ids: Any) -> dict[str, Any]:
    """A sidecar as the profile allows it: table-kept and cleaned fields, cleaned strings.

    Parameters
    ----------
    side : mapping
        Sidecar fields; keys that are DICOM keywords are treated by :func:`action`, the others
        (tumorscope's own: ``FrameTimes``, ``SeriesRoleGuess`` …) are kept.
    ids : tumorscope.io.deid.Identifiers
        The identifiers cleaned from every string.
    """
    from pydicom.datadict import tag_for_keyword

    from ..deid import scrub_fields

    kept: dict[str, Any] = {}
    for key, value in side.items():
        tag = tag_for_keyword(_SIDECAR_KEYWORDS.get(key, key))
        if tag is None or action(tag) == "K" or key in CLEANED_DESCRIPTORS:
            kept[key] = value
    out = scrub_fields(kept, ids)
    out["DeidentificationMethod"] = method_codes()
    return out


def pseudonymous_uid(uid: str, salt: str = "") -> str:
    """A UID that replaces ``uid`` consistently (the same input gives the same UID)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["tumorscope-deid", salt, str(uid)]))


def deidentify_dataset(
    ds: Any,
    *,
    patient: str,
    study_id: str = "",
    uid: Callable[[str], str] = pseudonymous_uid,
    ids: Any = None,
) -> Any:
    """A de-identified copy of a pydicom dataset (see the module doc), with the pseudonymous
    identity ``patient`` as Patient's Name and Patient ID (and ``study_id`` as Study ID).

    The dataset given is not changed. Pixel data are kept (series with burned-in annotation are
    not imported). With ``ids`` (:class:`tumorscope.io.deid.Identifiers`), the text the table
    keeps is cleaned of them (and of dates).
    """
    import copy

    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    out = copy.deepcopy(ds)
    _apply(out, uid)
    if ids is not None:  # what the table keeps is cleaned too (as the sidecars' strings are)
        for elem in _elements(out):
            if elem.VR in _TEXT_VRS and elem.VR != "PN" and elem.value:
                cleaned = [ids.scrub(v) for v in _strings(elem)]
                elem.value = cleaned if len(cleaned) > 1 else cleaned[0]
    out.PatientName = f"{patient}^"  # one component, said so (PS3.5 6.2.1.2)
    out.PatientID = patient
    if study_id or "StudyID" in out:
        out.StudyID = study_id
    out.PatientIdentityRemoved = "YES"
    out.LongitudinalTemporalInformationModified = "UNMODIFIED"
    out.DeidentificationMethod = f"tumorscope {__version__}: PS3.15 Basic Profile"[:64]
    items = []
    for value, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    out.DeidentificationMethodCodeSequence = Sequence(items)
    return out


_MARKS = (
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
)


def carry_deid_marks(obj: Any, source: Any) -> None:
    """Copy the record of the de-identification of ``source`` (if it was) into ``obj``."""
    import copy

    if str(getattr(source, "PatientIdentityRemoved", "")).upper() != "YES":
        return
    for keyword in _MARKS:
        if keyword in source:
            setattr(obj, keyword, copy.deepcopy(source[keyword].value))


def _apply(ds: Any, uid: Callable[[str], str]) -> None:
    """Apply the profile to ``ds`` in place, sequences included."""
    from pydicom.multival import MultiValue

    for elem in list(ds):
        tag = int(elem.tag)
        if tag >> 16 == 0x0002:  # file meta: rebuilt when saved
            continue
        code = action(tag)
        code = _CHOICE.get(code, code)
        if elem.VR in ("DA", "DT", "TM") and tag >> 16 != 0x0010 and code != "X":
            code = "K"  # Retain Longitudinal Temporal Information, Full Dates (not the birth)
        if code == "X":
            del ds[elem.tag]
        elif elem.VR == "SQ":
            if code in ("K", "U*", "U"):
                for item in elem.value:
                    _apply(item, uid)
            else:
                elem.value = []
        elif code == "Z":
            elem.value = None
        elif code == "D":
            elem.value = _DUMMY.get(elem.VR, "ANONYMIZED")
        elif code in ("U", "U*") and elem.value:
            values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
            new = [uid(str(v)) for v in values]
            elem.value = new if len(new) > 1 else new[0]


_TEXT_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def _elements(ds: Any) -> Iterator[Any]:
    """Every data element of a dataset, those inside sequences included."""
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _elements(item)


def _strings(elem: Any) -> list[str]:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)]


def removed_identity(originals: Sequence[Any]) -> tuple[Any, set[str]]:
    """What the profile takes away from source images, to search the outputs for.

    Returns
    -------
    ids : tumorscope.io.deid.Identifiers
        The patient's identifiers (names, IDs, birth date, other persons, institution) and the
        text of every standard attribute that the profile removes, empties or replaces (study
        description, patient history, station name, device serial number …), series
        descriptors excepted (they are cleaned, not identity).
    uids : set of str
        The UIDs the profile replaces.

    Notes
    -----
    The text of a removed attribute is searched for whole (its words in order, any
    separator), as institution names are: a ``^`` in it does not make it a person's name
    whose every part is an identifier (Siemens writes the study description as
    ``Region^Protocol``: ``Research^Rorden_Prisma`` made ``Prisma`` an identifier and refused
    the model name ``Prisma_fit``). Persons' names are PN attributes, taken by
    :meth:`~tumorscope.io.deid.Identifiers.of_headers` (every part of the patient's name).
    Private attributes are not searched for: the profile removes all of them because their
    content is unknown, not because it is identity (most hold vendor parameters: GE's Product
    id ``SIGNA`` (0009,1004), pulse sequence names, private creators), and taking their text
    for identifiers refuses what the profile keeps on purpose (Manufacturer's Model Name
    ``Signa HDxt``, copied by highdicom into the Contributing Equipment Sequence). Nothing
    private reaches an object (built on copies without private attributes; ``originals``
    keep them for the geometry of a mosaic), and the patient's identity is taken from the
    standard attributes, where the standard puts it.
    """
    from ..deid import Identifiers

    values: list[str] = []
    uids: set[str] = set()
    for ds in originals:
        for elem in _elements(ds):
            code = action(int(elem.tag))
            if code == "K" or elem.keyword in CLEANED_DESCRIPTORS or elem.tag.is_private:
                continue
            if elem.VR == "UI":
                uids.update(_strings(elem))
            elif elem.VR in _TEXT_VRS and elem.VR != "PN":  # a phrase: ^ separates words
                values += [v.replace("^", " ") for v in _strings(elem)]
    ids = Identifiers.of_headers(originals, check=True) | Identifiers.of_values(values, check=True)
    return ids, uids


def check_exported(paths: Sequence[Path], originals: Sequence[Any]) -> None:
    """Refuse exported objects that carry an identity of their source images.

    Every element of every dataset (sequences included) is searched: text for the identifiers
    and removed text of :func:`removed_identity` (whole tokens), UIDs for the source UIDs that
    the profile replaces.

    Raises
    ------
    ExportError
        Names the file and the attribute, not the value.
    """
    import pydicom

    ids, uids = removed_identity(originals)
    for path in paths:
        ds = pydicom.dcmread(path)
        for elem in _elements(ds):
            if elem.VR == "UI":
                leaked = bool(uids.intersection(_strings(elem)))
            elif elem.VR in _TEXT_VRS:
                leaked = any(ids.search(v) is not None for v in _strings(elem))
            else:
                continue
            if leaked:
                raise ExportError(
                    "an identifier of the source images appears in the exported object; "
                    "nothing was written",
                    file=path.name,
                    field=elem.keyword or str(elem.tag),
                )
