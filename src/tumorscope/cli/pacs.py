"""``tumorscope pacs``: a patient's studies from a PACS (DICOMweb or DIMSE) for ``import-dicom``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import user_errors

pacs_app = typer.Typer(
    help="Find and retrieve studies from a PACS over DICOMweb (or DIMSE). Credentials come from the "
    "environment: TUMORSCOPE_PACS_USER and TUMORSCOPE_PACS_PASSWORD, TUMORSCOPE_PACS_TOKEN, or "
    "TUMORSCOPE_PACS_CONFIG (a file with 'user' and 'password' or 'token'); never in the URL.",
    no_args_is_help=True,
)

#: ``--url``: the DICOMweb root of the PACS.
_URL = typer.Option(
    ...,
    "--url",
    help="DICOMweb root, e.g. http://HOST:PORT/dicom-web, or a DIMSE address "
    "dimse://AET@HOST:PORT (C-FIND and C-GET; calling AE title from TUMORSCOPE_PACS_AET).",
)


@pacs_app.command("find")
def find(
    url: str = _URL,
    patient_id: str = typer.Option(..., "--patient-id", help="Patient ID (exact)."),
) -> None:
    """List a patient's studies: date, Study Instance UID, description."""
    from ..io.pacs import find_studies

    with user_errors():
        studies = find_studies(url, patient_id)
    for s in studies:
        typer.echo(
            f"{s['StudyDate'] or '-'}  {s['StudyInstanceUID']}  {s['StudyDescription'] or ''}"
        )
    typer.echo(f"{len(studies)} studies")


@pacs_app.command("pull")
def pull(
    out_dir: Path = typer.Argument(..., help="Folder to write (new or empty)."),
    url: str = _URL,
    patient_id: str = typer.Option(..., "--patient-id", help="Patient ID (exact)."),
) -> None:
    """Retrieve every study of a patient into OUT_DIR, ready for 'tumorscope import-dicom'.

    Nothing is written unless every study arrived (exit 2 with the reason otherwise).
    """
    from ..io.pacs import pull_patient

    with user_errors():
        report = pull_patient(url, patient_id, out_dir)
    typer.echo(
        f"retrieved {len(report.studies)} studies ({len(report.files)} files) into {report.out_dir}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(pacs_app, name="pacs")
