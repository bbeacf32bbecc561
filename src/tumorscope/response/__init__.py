"""Response assessment over the longitudinal measurement table.

Size-based criteria (RECIST 1.1, iRECIST, RANO 2.0, iRANO) through :func:`assess` and
:func:`best_overall_response`; functional response (:mod:`~tumorscope.response.functional`:
change beyond the repeatability coefficient, functional diffusion / parametric response
maps); immunotherapy response patterns (:mod:`~tumorscope.response.patterns`:
pseudoprogression, mixed response, hyperprogression, durable response). See
``docs/response.md``.

The public names are imported lazily so that ``import tumorscope.response`` does not import
pandas.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

__getattr__, __dir__, __all__ = lazy_attributes(
    __name__,
    globals(),
    assessment=("CRITERIA", "assess", "from_lesion_table"),
    recist=("best_overall_response",),
    table=("read_table", "validate_table"),
    functional=(
        "Repeatability",
        "repeatability",
        "functional_change",
        "parametric_response_map",
        "joint_response_map",
    ),
    petmri=("joint_pet_mri", "pet_flare", "metabolic_pseudoprogression"),
    patterns=(
        "pseudoprogression",
        "pseudoprogression_candidates",
        "mixed_response",
        "hyperprogression",
        "durable_response",
    ),
)
