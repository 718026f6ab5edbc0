"""``implicitseg`` command line (DESIGN §2). Thin: parses, calls :mod:`implicitseg.methods.pipeline`, prints.

A user error (:class:`~implicitseg.errors.InputError`) prints one line on stderr and exits with code 2.
Heavy libraries are imported inside the commands so ``--help`` stays fast. ``prepare``, ``train``, ``predict`` and
``refine`` take ``--set SECTION.KEY=VALUE`` (repeatable) and ``--config FILE.yaml``: config values checked against
the method's config (:class:`~implicitseg.config.Settings`; a key that does not exist, a value of the wrong type or
a setting a trained run may not change exits 2 naming the key).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from implicitseg.errors import InputError

if TYPE_CHECKING:
    from implicitseg.config import Settings

app = typer.Typer(
    name="implicitseg",
    help="High-resolution segmentations and surface meshes of 3D medical images with neural implicit functions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class MeshFormat(str, Enum):
    vtk = "vtk"
    ply = "ply"
    stl = "stl"
    obj = "obj"


class Space(str, Enum):
    LPS = "LPS"
    RAS = "RAS"


class Mesher(str, Enum):
    udf_mc = "udf-mc"
    poisson = "poisson"


class Split(str, Enum):
    test = "test"
    training = "training"


class SynthKind(str, Enum):
    laa = "laa"
    organ = "organ"
    cardiac = "cardiac"


SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="SECTION.KEY=VALUE",
    help="Set a config value (repeatable), checked against the method's config: e.g. point_cloud.n_dense=200000, "
         "meshing.method=poisson, intensity.window=[-160,240]. Values are read as YAML; what was set is in the "
         "config.yaml written (and predict's prediction.json).")]
ConfigOption = Annotated[Optional[Path], typer.Option(
    "--config", metavar="FILE.yaml",
    help="A YAML mapping of config values (part of a config or all of one, e.g. a run's config.yaml), applied over "
         "the preset (predict: over the run's config) before --set.")]


def _settings(config_file: Path | None, assignments: list[str] | None) -> list[Settings]:
    """``--config`` then ``--set``, as :class:`~implicitseg.config.Settings` in the order they apply."""
    from implicitseg.config import Settings
    from implicitseg.io.configs import settings_from_file

    return ([settings_from_file(config_file)] if config_file is not None else []) + \
        ([Settings.from_assignments(assignments)] if assignments else [])


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset into (DESIGN §3 layout).")],
    kind: Annotated[SynthKind, typer.Option(help="laa: CT, left atrial appendage (labelmap + open mesh); organ: "
                                                 "abdominal CT, organ + lesion (two labels); cardiac: cine MRI "
                                                 "short-axis stacks, 4D, LV / myocardium / RV, phantoms/ give "
                                                 "labels anywhere.")] = SynthKind.laa,
    cases: Annotated[int, typer.Option(min=1, help="Number of training cases (test cases come on top).")] = 10,
    test_cases: Annotated[Optional[int], typer.Option(min=0, help="Number of held-out test cases (default: "
                                                                  "cases // 5, at least 1).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same dataset.")] = 0,
) -> None:
    """Write a synthetic dataset (CT-like volumes, labelmaps, open-surface meshes)."""
    from implicitseg.methods import pipeline

    dataset = pipeline.run_synth(out, kind=kind.value, n_cases=cases, seed=seed, n_test=test_cases)
    typer.echo(f"wrote {dataset}")


@app.command()
def prepare(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder holding dataset.json.")],
    method: Annotated[str, typer.Option(help="Method: nudf, unet, implicit-unet, nisf, ismm, roi (the ROI detector), or one a plugin package adds.")],
    out: Annotated[Path, typer.Option(help="Folder for the prepared data (PREP).")],
    res: Annotated[Optional[int], typer.Option(help="ROI resolution in voxels per side, or a patch method's patch side (default: the preset's).")] = None,
    roi_mm: Annotated[Optional[float], typer.Option("--roi-mm", help="ROI cube side in mm (default: the preset's).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Preset (default: chosen from --res, e.g. nudf64, unet64, roi64).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel worker processes.")] = 1,
    resample_labels: Annotated[bool, typer.Option("--resample-labels", help="Resample a labelmap that is not on its image's grid onto it (nearest neighbour, world space; recorded in the manifest) instead of stopping.")] = False,
    set_values: SetOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Crop ROIs, normalise images and sample points/distances for METHOD; writes PREP/manifest.json and
    PREP/config.yaml (the preset with --config, --set, --res and --roi-mm applied). Each case's files are checked as
    `implicitseg check` does; the first problem stops it before anything is written for that case."""
    from implicitseg.methods import pipeline

    manifest = pipeline.run_prepare(dataset, out, method=method, preset=preset, res=res, roi_mm=roi_mm,
                                    settings=_settings(config_file, set_values), workers=workers,
                                    resample_labels=resample_labels)
    typer.echo(f"prepared {len(manifest['cases'])} cases ({len(manifest['splits']['train'])} train, "
               f"{len(manifest['splits']['val'])} val) into {out}")
    resampled = manifest["label_resampling"]["cases"]
    if resampled:
        typer.echo(f"resampled {len(resampled)} labelmap(s) onto their image's grid: {', '.join(resampled)}")


@app.command()
def check(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder holding dataset.json.")],
    method: Annotated[Optional[str], typer.Option(help="Also check what this method's prepare needs (unet, roi, implicit-unet and nisf: a labelmap per case).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results (every check, case and problem) to this JSON file.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel worker processes.")] = 1,
) -> None:
    """Read every case once and print one table: files readable (not truncated or damaged), labelmaps on their
    image's grid with declared values and not empty, meshes with faces and inside the image (LPS/RAS hint), finite
    intensities, test images readable, case ids unique; spacing, size and intensity ranges. Exit 0 when all hold,
    2 with one line per problem otherwise."""
    from rich.console import Console

    from implicitseg.methods import pipeline

    report = pipeline.run_check(dataset, method=method, json_out=json_out, workers=workers)
    Console().print(pipeline.check_table(report))
    if not report.ok:
        for problem in report.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(code=2)
    typer.echo(f"all checks hold for {len(report.cases)} case(s) and {len(report.tests)} test image(s)")


@app.command()
def train(
    prep: Annotated[Path, typer.Argument(help="Prepared data folder (from `prepare`).")],
    out: Annotated[Path, typer.Option(help="Run folder: config.yaml, checkpoints/, logs/.")],
    method: Annotated[Optional[str], typer.Option(help="Method (default: the one PREP was prepared for).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Preset (default: the one PREP was prepared with).")] = None,
    max_epochs: Annotated[Optional[int], typer.Option(help="Stop after this many epochs.")] = None,
    max_time: Annotated[Optional[str], typer.Option(help="Stop after this wall time, HH:MM:SS.")] = None,
    devices: Annotated[int, typer.Option(min=1, help="Devices (GPUs, or CPU processes) per node; >1 trains with DDP.")] = 1,
    num_nodes: Annotated[int, typer.Option(min=1, help="Machines, each with --devices devices, under torchrun or SLURM (README: \"Training on several GPUs\").")] = 1,
    resume: Annotated[bool, typer.Option(help="Continue from RUN/checkpoints/last.ckpt.")] = False,
    precision: Annotated[Optional[str], typer.Option(help="Arithmetic of the training steps: 32-true, bf16-mixed (bfloat16 autocast; same as --set train.precision=bf16-mixed), or auto (bf16-mixed where the device runs it natively; NUDF's paper presets' default).")] = None,
    set_values: SetOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Train on PREP; keeps checkpoints `last` and `best` (by validation loss). RUN/config.yaml holds the preset
    with PREP's data sections (ROI, intensities, samples: fixed by prepare) and --config, --set applied."""
    from implicitseg.config import Settings
    from implicitseg.methods import pipeline

    settings = _settings(config_file, set_values) + \
        ([Settings("--precision", {"train.precision": precision})] if precision is not None else [])
    summary = pipeline.run_train(prep, out, method=method, preset=preset, settings=settings,
                                 max_epochs=max_epochs, max_time=max_time, devices=devices, num_nodes=num_nodes,
                                 resume=resume)
    best = summary.get("best_val_loss")
    best_text = "no validation ran" if best is None else f"best val loss {best:.4f}"
    arithmetic = f" in {summary['precision']}" if "precision" in summary else ""
    typer.echo(f"trained {summary['epochs_completed']} epochs{arithmetic}; {best_text}; run in {out}")


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder (from `train`).")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files, DICOM folders, or dataset folders (imagesTs/).")],
    out: Annotated[Path, typer.Option(help="Output folder: OUT/<case>/mesh.<fmt>, points.ply, prediction.json.")],
    roi_center: Annotated[Optional[str], typer.Option(help="ROI centre X,Y,Z in world LPS mm.")] = None,
    roi_label: Annotated[Optional[Path], typer.Option(help="Labelmap (or folder of <case> labelmaps) whose centre of mass is the ROI centre.")] = None,
    roi_run: Annotated[Optional[Path], typer.Option(help="ROI detector run (train --method roi): finds the ROI centre in each whole image.")] = None,
    spacing: Annotated[Optional[str], typer.Option(help="Whole-image methods (implicit-unet, nisf): write the labelmap on the image's box at this spacing, mm (one number, or SI,SJ,SK); default: the image's grid.")] = None,
    plane: Annotated[Optional[str], typer.Option(help="Whole-image methods: the labelmap on a plane instead, 'OX,OY,OZ;UX,UY,UZ;VX,VY,VZ;NU,NV' in world LPS mm: first pixel centre, the steps along its two axes, pixel counts.")] = None,
    frame: Annotated[Optional[list[int]], typer.Option(help="3D+t methods (nisf): only these frames (repeatable); default all.")] = None,
    fit_weights: Annotated[bool, typer.Option("--fit-weights", help="nisf: fit the network's weights too, not only the subject's code (the authors' released code).")] = False,
    initial: Annotated[Optional[Path], typer.Option(help="ismm: the initial segmentation to refine, a labelmap (any grid) or closed mesh (world LPS mm), or a folder of <case> files.")] = None,
    mesh_format: Annotated[MeshFormat, typer.Option(help="Mesh file format.")] = MeshFormat.vtk,
    mesh_space: Annotated[Space, typer.Option(help="Coordinate convention of written meshes and points.")] = Space.LPS,
    checkpoint: Annotated[str, typer.Option(help="Which checkpoint: best or last.")] = "best",
    device: Annotated[str, typer.Option(help="Torch device: auto, cpu, cuda, cuda:1...")] = "auto",
    mesher: Annotated[Optional[Mesher], typer.Option(help="nudf: udf-mc = the surface straight from the field's narrow band (default); poisson = the paper's dense point cloud + screened Poisson.")] = None,
    band_mm: Annotated[Optional[float], typer.Option(help="nudf, udf-mc: the narrow band's finest cell, mm (default 1.0; the vertices lie between corners, finer than this).")] = None,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="An image that cannot be predicted (damaged, ROI outside it, no surface found) is listed in OUT/failures.json and the others go on; exit code 2 at the end if any failed.")] = False,
    set_values: SetOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Predict a mesh per image (plus the dense point cloud, or a labelmap), in the image's physical space. ROI
    methods (nudf, unet) need exactly one of --roi-center, --roi-label, --roi-run; whole-image methods
    (implicit-unet) need none and take --spacing. --set / --config change the run's prediction sections only
    (meshing, point_cloud, inference, fit, tim: those the method has); prediction.json records them."""
    from implicitseg.methods import pipeline

    results = pipeline.run_predict(run, inputs, out, settings=_settings(config_file, set_values),
                                   roi_center=roi_center, roi_label=roi_label, roi_run=roi_run,
                                   spacing=spacing, plane=plane, frames=frame, fit_weights=fit_weights,
                                   initial=initial, mesh_format=mesh_format.value, mesh_space=mesh_space.value,
                                   checkpoint=checkpoint, device=device,
                                   mesher=None if mesher is None else mesher.value, band_mm=band_mm,
                                   keep_going=keep_going)
    _echo_predictions(results)


def _echo_predictions(results: list[dict]) -> None:
    """One line per image; then, if any image failed (``--keep-going``), an :class:`InputError` naming them."""
    failed = [result for result in results if "error" in result]
    for result in results:
        if "error" in result:
            typer.echo(f"{result['case']}: failed: {result['error']}")
            continue
        written = result.get("labelmap") if result.get("mesh") is None else result["mesh"]
        typer.echo(f"{result['case']}: {written} ({result['timings']['total_s']:.1f} s)"
                   + (f"; {result['warning']}" if result.get("warning") else ""))
    if failed:
        raise InputError(f"{len(failed)} of {len(results)} images could not be predicted: "
                         + "; ".join(f"{result['image']}: {result['error']}" for result in failed))


@app.command()
def refine(
    run: Annotated[Path, typer.Argument(help="ISMM run folder (train --method ismm).")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders: each gives the grid of its refined labelmap.")],
    initial: Annotated[Path, typer.Option(help="Initial segmentation: a labelmap (any grid) or closed mesh (world LPS mm), or a folder of <case>.nii.gz / <case>.vtk.")],
    out: Annotated[Path, typer.Option(help="Output folder: OUT/<case>/mesh.<fmt>, labelmap.nii.gz, points.ply (trusted points), prediction.json.")],
    mesh_format: Annotated[MeshFormat, typer.Option(help="Mesh file format.")] = MeshFormat.vtk,
    mesh_space: Annotated[Space, typer.Option(help="Coordinate convention of written meshes and points.")] = Space.LPS,
    checkpoint: Annotated[str, typer.Option(help="Which checkpoint: best or last.")] = "best",
    device: Annotated[str, typer.Option(help="Torch device: auto, cpu, cuda, cuda:1...")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the point draws and fresh codes.")] = 0,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="An image that cannot be refined (damaged, no initial segmentation for it) is listed in OUT/failures.json and the others go on; exit code 2 at the end if any failed.")] = False,
    set_values: SetOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Refine an initial segmentation with an ISMM shape prior (the same as `predict RUN IMAGE --initial ...`):
    the refined mesh and its labelmap on the image's grid, in the image's physical space. --set / --config change
    the refinement (tim.*)."""
    from implicitseg.methods import pipeline

    _echo_predictions(pipeline.run_predict(run, inputs, out, settings=_settings(config_file, set_values),
                                           initial=initial, mesh_format=mesh_format.value,
                                           mesh_space=mesh_space.value, checkpoint=checkpoint, device=device,
                                           seed=seed, keep_going=keep_going))


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Argument(help="Prediction folder (from `predict`).")],
    gt: Annotated[Path, typer.Argument(help="Dataset folder or folder of <case> ground-truth meshes.")],
    out: Annotated[Path, typer.Option(help="Metrics path: writes METRICS.csv and METRICS.summary.json.")],
    kind: Annotated[str, typer.Option(help="surface (meshes: Chamfer, accuracy, completion, HD95), volume "
                                            "(labelmaps: Dice, HD95, ASSD, NSD at 1 mm) or shape (ISMM's Chamfer on "
                                            "30k and EMD on 1k points per surface, in mm and normalised to the GT's "
                                            "unit sphere; a GT labelmap's surface where there is no GT mesh).")] = "surface",
    gt_space: Annotated[Space, typer.Option(help="Space of GT mesh files when GT is not a dataset folder.")] = Space.LPS,
    split: Annotated[Optional[Split], typer.Option(help="Dataset split whose ground-truth cases are scored (default: "
                                                        "test when the dataset has test ground truth).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 2 when a ground-truth case has no usable "
                                                          "prediction (missing or failed).")] = False,
) -> None:
    """Metrics of every ground-truth case (mm; a case without a prediction is a row, scored as a failure) and
    their counts, n, mean, sample std, median and 95 % bootstrap interval of the mean."""
    from implicitseg.methods import pipeline

    table = pipeline.run_evaluate(pred, gt, out, kind=kind, gt_space=gt_space.value,
                                  split=None if split is None else split.value, strict=strict)
    typer.echo(table)


@app.command()
def compare(
    metrics_a: Annotated[Path, typer.Argument(help="First evaluation: the METRICS of `evaluate --out` (or its .csv).")],
    metrics_b: Annotated[Path, typer.Argument(help="Second evaluation of the same cases.")],
    out: Annotated[Optional[Path], typer.Option(help="Also write the comparison as JSON here.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resampling.")] = 0,
) -> None:
    """Paired comparison per metric over the cases both evaluations hold: mean difference B - A, its 95 %
    bootstrap interval and the Wilcoxon signed-rank p-value; cases on one side only are listed."""
    from implicitseg.methods import pipeline

    typer.echo(pipeline.run_compare(metrics_a, metrics_b, out=out, seed=seed))


@app.command()
def report(
    preds: Annotated[list[Path], typer.Argument(help="Prediction folders (from `predict`), one per method.")],
    out: Annotated[Path, typer.Option(help="The HTML file to write (self-contained: open it offline).")],
    gt: Annotated[Optional[Path], typer.Option(help="Dataset folder or folder of <case> ground truths: adds its "
                                                    "contours, surfaces and the metrics.")] = None,
    run: Annotated[Optional[list[Path]], typer.Option(help="Run folder(s) whose training curves to show.")] = None,
    gt_space: Annotated[Space, typer.Option(help="Space of GT mesh files when GT is not a dataset folder.")] = Space.LPS,
) -> None:
    """An HTML report: metrics of every case worst first, training curves, and per case three slices with the
    predicted and ground-truth contours and an interactive 3D view."""
    from implicitseg.methods import pipeline

    written = pipeline.run_report(preds, out, gt=gt, runs=run, gt_space=gt_space.value)
    typer.echo(f"report of {written['n_cases']} case(s), {len(written['methods'])} method(s): {written['path']} "
               f"({written['size_bytes'] / 1e6:.1f} MB)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("demo_out"),
    minutes: Annotated[float, typer.Option(help="NUDF training time budget in minutes.")] = 4.0,
    detector_minutes: Annotated[float, typer.Option(help="ROI detector training time budget in minutes.")] = 1.0,
    cases: Annotated[int, typer.Option(min=3, help="Synthetic training cases.")] = 12,
) -> None:
    """synth → prepare → train NUDF and the ROI detector (short) → predict raw test images → evaluate, on CPU in
    minutes."""
    from implicitseg.methods import pipeline

    pipeline.run_demo(out, train_minutes=minutes, detector_minutes=detector_minutes, n_cases=cases, echo=typer.echo)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except InputError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
