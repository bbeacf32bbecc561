"""DICOM codes of the export: units (UCUM), parameters, and the private scheme for the rest."""

from __future__ import annotations

import pytest

pytest.importorskip("highdicom")

from tumorscope.errors import ExportError
from tumorscope.io.dicom.codes import (
    _MODEL_CODES,
    PARAMETER_CODES,
    PRIVATE_PARAMETERS,
    PRIVATE_SCHEME,
    default_unit,
    parameter_code,
    response_code,
    unit_code,
)


def test_parameter_codes_standard_or_private() -> None:
    for name in ("ADC", "adc.ADC"):
        c = parameter_code(name)
        assert (c.value, c.scheme_designator) == ("113041", "DCM")
    assert parameter_code("dce_etofts.Ktrans").value == "126312"
    other = parameter_code("2cxm.Fp")
    assert (other.scheme_designator, other.meaning) == (PRIVATE_SCHEME, "2cxm.Fp")
    assert len(parameter_code("a_very_long_model_name.Parameter").value) <= 16


def test_standard_codes_come_from_the_dicom_tables() -> None:
    """Each standard code is the one pydicom's PS3.16 tables hold, in CID 7180 (quantities of
    parametric maps) or, for the kurtosis, CID 7263 (diffusion model values); the model decides
    between the diffusion coefficients."""
    from pydicom.sr import _concepts_dict

    dcm = _concepts_dict.concepts["DCM"]
    for keyword in {*PARAMETER_CODES.values(), *_MODEL_CODES.values()}:
        ((_, (_, cids)),) = dcm[keyword].items()
        assert {7180, 7263} & set(cids), keyword
    expected = {
        "ADC": "113041", "Ktrans": "126312", "kep": "126313", "ve": "126314", "vp": "126331",
        "T1": "113063", "T2": "113065", "T2star": "113064", "R1": "126393", "R2": "126394",
        "R2star": "126395", "ivim.D": "113291", "ivim.D_star": "113292", "ivim.f": "113293",
        "dki.D": "113294", "dki.K": "113206", "MTT": "113052", "rCBV": "126398",
    }  # fmt: skip
    for name, value in expected.items():
        c = parameter_code(name)
        assert (c.scheme_designator, c.value) == ("DCM", value), name
    assert parameter_code("ivim.D").meaning == "Slow Diffusion Coefficient"


def test_every_tumorscope_quantity_is_coded_or_said_private() -> None:
    from tumorscope.units import PARAMETER_UNITS

    for name in PARAMETER_UNITS:
        assert (name in PARAMETER_CODES) != (name in PRIVATE_PARAMETERS), name
        scheme = parameter_code(name).scheme_designator
        assert scheme == (PRIVATE_SCHEME if name in PRIVATE_PARAMETERS else "DCM"), name


def test_units() -> None:
    assert default_unit("ADC") == default_unit("adc.ADC") == "mm2/s"
    assert default_unit("mystery") is None
    c = unit_code("mm2/s")
    assert c.scheme_designator == "UCUM" and c.meaning == "mm2/s"
    assert unit_code("mM.s").value == "mmol.s/L"
    with pytest.raises(ExportError, match="no UCUM code") as info:
        unit_code("furlongs")
    assert info.value.field == "unit"


def test_response_codes() -> None:
    got = {r: (c.scheme_designator, c.value) for r in ("PR", "non-CR/non-PD", "iUPD")
           for c in [response_code(r)]}  # fmt: skip
    assert got == {"PR": ("NCIt", "C18058"), "non-CR/non-PD": ("DCM", "112046"),
                   "iUPD": (PRIVATE_SCHEME, "iUPD")}  # fmt: skip
    with pytest.raises(ExportError, match="unknown response 'XX'") as info:
        response_code("XX")
    assert info.value.field == "response"
