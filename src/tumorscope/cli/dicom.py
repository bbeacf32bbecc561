"""``tumorscope import-dicom`` and ``tumorscope export-dicom``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import user_errors


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"expected {what}, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def import_dicom(
    dicom_dir: Path = typer.Argument(..., help="Folder of DICOM files (any nesting and order)."),
    study_dir: Path = typer.Argument(..., help="Study folder to write (must not exist)."),
    keep_identifiers: bool = typer.Option(
        False,
        "--keep-identifiers",
        help="Use Patient IDs as subject ids and keep UIDs in sidecars (no pseudonyms).",
    ),
    mapping: Path = typer.Option(
        None,
        help="Identifier mapping TSV for the site (default: <STUDY_DIR>-identifiers.tsv beside "
        "the study); existing pseudonyms in it are reused.",
    ),
    role: list[str] = typer.Option(
        [],
        "--role",
        help="Override a series kind: 'DESCRIPTION_GLOB=SUFFIX' (SUFFIX: T2w, dwi, VFA, dce, "
        "dsc, MEGRE, MESE, IRT1, T1w, optionally with BIDS entities as in ce-ferumoxytol_MEGRE, "
        "or skip). Repeatable.",
    ),
    dce_baseline_frames: int = typer.Option(
        None,
        help="Pre-contrast frames of DCE series (estimated if not given; DSC series: "
        "the DSC step finds the bolus onset).",
    ),
    name: str = typer.Option(None, help="Study name written to study.yaml."),
    overwrite: bool = typer.Option(False, help="Replace the study folder if it exists."),
    merge_split: bool = typer.Option(
        False,
        "--merge-split",
        help="Merge single-volume series written one per flip angle, TE or TI (e.g. VFA).",
    ),
    allow_burned_in: bool = typer.Option(
        False,
        "--allow-burned-in",
        help="Import series with BurnedInAnnotation = YES (text in the pixels, which "
        "de-identification does not remove); skipped with a warning by default.",
    ),
) -> None:
    """Import DICOM MR series (and SEG / RT-STRUCT lesion masks) as a de-identified study.

    Exit code 1 if some series were rejected (the rest is imported), 2 on bad input.
    """
    from rich.console import Console
    from rich.markup import escape

    from ..io.dicom import import_dicom as run

    console = Console(soft_wrap=True, highlight=False)
    with user_errors():
        report = run(
            dicom_dir,
            study_dir,
            keep_identifiers=keep_identifiers,
            mapping_file=mapping,
            roles=_pairs(role, "DESCRIPTION_GLOB=SUFFIX"),
            dce_baseline_frames=dce_baseline_frames,
            name=name,
            overwrite=overwrite,
            merge_split=merge_split,
            allow_burned_in=allow_burned_in,
        )
    for p in report.problems:
        style = "red" if p.severity == "error" else "yellow"
        console.print(
            f"[{style}]{p.severity.upper()}[/{style}] {escape(str(p)[len(p.severity) + 1 :])}"
        )
    for row in report.series:
        console.print(f"{row['file']}  <- {escape(row['description'])} ({escape(row['reason'])})")
    console.print(f"wrote {len(report.series)} series to {report.study_dir}")
    console.print(f"problems listed in {report.log_file}")
    if report.mapping_file is not None:
        console.print(f"identifier mapping (keep it at the site): {report.mapping_file}")
    if report.n_rejected:
        raise typer.Exit(code=1)


def export_dicom(
    study_dir: Path = typer.Argument(..., help="The imported study."),
    dicom_dir: Path = typer.Argument(..., help="The DICOM folder the study was imported from."),
    out_dir: Path = typer.Argument(
        ...,
        help="Folder for the DICOM objects written: new, empty, or one export-dicom wrote "
        "(only files it wrote are replaced); created once every object is written.",
    ),
    subject: str = typer.Option(..., help="Subject id (as in the study)."),
    visit: str = typer.Option(..., help="Visit id (as in the study)."),
    map_: list[str] = typer.Option(
        [],
        "--map",
        help="A parameter map: 'NAME=PATH.nii.gz[:SOURCE]' (SOURCE: role or suffix of the series "
        "it was computed from, default the reference series). Repeatable.",
    ),
    reference: str = typer.Option(
        None,
        help="Role or suffix of the series the lesions were drawn on (default: anatomical); "
        "when given, the visit must have it.",
        show_default=False,
    ),
    mapping: Path = typer.Option(None, help="Identifier mapping TSV of a de-identified study."),
    reidentify: Path = typer.Option(
        None,
        "--reidentify",
        metavar="MAPPING_FILE",
        help="Give the objects the real patient and study of the source images (for the "
        "site's PACS), checked against this mapping file of the import. By default they carry "
        "the study's pseudonymous identity and no free text of the source.",
    ),
    response: str = typer.Option(
        None,
        help="Overall response at this visit, written into the SR: CR, PR, SD, PD (or another "
        "category of the criteria, e.g. non-CR/non-PD, iUPD); an unknown one is refused.",
    ),
    criteria: str = typer.Option("RECIST 1.1", help="Criteria the response was assessed with."),
    results: Path = typer.Option(
        None,
        help="Output folder of 'tumorscope run' (e.g. STUDY/derivatives/tumorscope): export "
        "every map it fitted for the visit, and its response.",
    ),
    to_pacs: str = typer.Option(
        None,
        "--to-pacs",
        metavar="URL",
        help="Also store the objects written in this PACS (DICOMweb root: STOW-RS; "
        "dimse://AET@HOST:PORT: C-STORE); credentials from the environment, as for "
        "'tumorscope pacs'.",
    ),
) -> None:
    """Write parameter maps (Parametric Map), lesions (SEG) and measurements (SR, TID 1500).

    The objects are de-identified (PS3.15 Basic Profile, the study's pseudonyms) unless
    --reidentify is given.
    """
    from .._warnings import capture_warnings
    from ..io.dicom.export import export_visit

    maps: dict[str, tuple[str | Path, str]] = {}
    for name, spec in _pairs(map_, "NAME=PATH[:SOURCE]").items():
        path, _, source = spec.partition(":")
        maps[name] = (Path(path), source or reference or "anatomical")
    with user_errors():
        if to_pacs is not None:  # a bad URL or credentials stop before anything is written
            from ..io.pacs import check_url, credentials_from_env

            check_url(to_pacs)
            credentials_from_env()
        with capture_warnings() as caught:
            files = export_visit(
                study_dir,
                dicom_dir,
                out_dir,
                subject=subject,
                visit=visit,
                maps=maps,
                reference=reference,
                mapping_file=reidentify if reidentify is not None else mapping,
                reidentify=reidentify is not None,
                response=response,
                criteria=criteria,
                results=results,
                sizes=_lesion_sizes(study_dir, subject, visit),
            )
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    for f in files:
        typer.echo(f"wrote {f}")
    if to_pacs is not None:
        from ..io.pacs import store_files

        with user_errors():
            stored = store_files(to_pacs, files)
        typer.echo(f"stored {len(stored)} objects in {to_pacs}")


def _lesion_sizes(study_dir: Path, subject: str, visit: str) -> dict[str, dict[str, object]]:
    """Size of each lesion of a visit (``measure`` of its mask), by lesion id, for the SR.

    Empty when the study has no such visit or no lesion map (the export then says what is
    missing).
    """
    from ..io import open_study
    from ..lesions.geometry import measure

    subj = open_study(study_dir).subjects.get(subject)
    v = None if subj is None else subj.visits.get(visit)
    if v is None or v.lesions is None:
        return {}
    labels = v.lesions.load_labels()
    sizes: dict[str, dict[str, object]] = {}
    for info in v.lesions.table:
        mask = labels.data == info.label
        if mask.any():
            sizes[info.lesion_id] = measure(mask, labels.affine, lesion=info.lesion_id)
    return sizes


def register(app: typer.Typer) -> None:
    app.command("import-dicom")(import_dicom)
    app.command("export-dicom")(export_dicom)
