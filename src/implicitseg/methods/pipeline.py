"""The pipeline stages behind the CLI: synth, prepare, train, predict, evaluate, demo.

Each stage looks the method up in the table (:func:`implicitseg.methods.get_method`) and writes its resolved
config as YAML next to its outputs; prepare, train and predict apply ``settings``
(:class:`~implicitseg.config.Settings`: ``--config``, ``--set``) over the preset or the run's config. Predict goes
through :class:`~implicitseg.methods.predict.Predictor`, the Python API's code path.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from implicitseg.config import Settings, config_from_dict, config_to_dict, preset_named
from implicitseg.errors import InputError
from implicitseg.io.atomic import write_json
from implicitseg.io.configs import save_config
from implicitseg.versions import versions


def _progress_bar(description: str, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
    task = progress.add_task(description, total=total)
    return progress, lambda done, total_=total: progress.update(task, completed=done, total=total_)


def run_synth(out: Path, *, kind: str, n_cases: int, seed: int, n_test: int | None = None) -> Path:
    """Write a synthetic dataset (``n_test`` held-out cases; default ``n_cases // 5``); returns its folder."""
    from implicitseg.data.synthetic import write_synthetic_dataset

    progress, advance = _progress_bar(f"synth {kind}", n_cases)
    with progress:
        return write_synthetic_dataset(Path(out), kind=kind, n_cases=n_cases, seed=seed, n_test=n_test,
                                         progress=advance)


def resolve_config(method_name: str, *, preset: str | None, res: int | None, roi_mm: float | None,
                   settings: Sequence[Settings] = ()):
    """The method's preset config (chosen by ``preset``, a ``--config`` file's ``preset:``, or ``res``) with
    ``settings`` (``--config``, ``--set``), then ``res`` / ``roi_mm``, applied."""
    from implicitseg.methods import get_method

    method = get_method(method_name)
    name = preset or preset_named(list(settings)) or method.preset_for_res(res)
    if name not in method.presets:
        raise InputError(f"unknown preset {name!r} for {method_name}; available: {', '.join(method.presets)}")
    config = config_from_dict(method.config_class, config_to_dict(method.presets[name]))
    fixed = {"method": f"chosen by --method ({method_name})", "preset": f"chosen by --preset ({name})"}
    for source in settings:
        config, _ = source.apply(config, fixed)
    config.set_input_size(res, roi_mm)
    return method, config


def run_prepare(dataset: Path, out: Path, *, method: str, preset: str | None = None, res: int | None = None,
                roi_mm: float | None = None, settings: Sequence[Settings] = (), workers: int = 1,
                resample_labels: bool = False, show_progress: bool = True) -> dict:
    """Prepare every training case of ``dataset`` for ``method`` into ``out`` (the config: :func:`resolve_config`,
    written to ``out/config.yaml``); returns the manifest. Labelmaps on another grid than their image's are refused,
    or resampled onto it with ``resample_labels``."""
    method_entry, config = resolve_config(method, preset=preset, res=res, roi_mm=roi_mm, settings=settings)
    if not show_progress:
        return method_entry.prepare(Path(dataset), Path(out), config, workers=workers,
                                    resample_labels=resample_labels, progress=None)
    from implicitseg.io.dataset import load_dataset

    progress, advance = _progress_bar("prepare", len(load_dataset(dataset).training))
    with progress:
        return method_entry.prepare(Path(dataset), Path(out), config, workers=workers,
                                    resample_labels=resample_labels, progress=advance)


def run_check(dataset: Path, *, method: str | None = None, json_out: Path | None = None, workers: int = 1,
              show_progress: bool = True):
    """Check every case of ``dataset`` (:func:`implicitseg.data.check.check_dataset`; with ``method``, also what
    its ``prepare`` needs) and write the results to ``json_out`` (atomically) when given; returns the
    :class:`~implicitseg.data.check.DatasetCheck`."""
    from implicitseg.data.check import check_dataset
    from implicitseg.io.dataset import load_dataset
    from implicitseg.methods import get_method

    needs_label = get_method(method).needs_label if method is not None else False
    listing = load_dataset(dataset, strict=False)
    progress, advance = _progress_bar("check", len(listing.training) + len(listing.test))
    with progress if show_progress else contextlib.nullcontext():
        report = check_dataset(dataset, needs_label=needs_label, workers=workers,
                               progress=advance if show_progress else None)
    if json_out is not None:
        write_json(json_out, {**report.to_json(), "method": method})
    return report


def check_table(report):
    """The rich table of a :class:`~implicitseg.data.check.DatasetCheck`: one row per check (✓ / ✗, how many cases
    it held for, the first problem or what was found), then the spacing, size and intensity ranges."""
    from rich.table import Table

    table = Table(title=f"implicitseg check {report.dataset}", title_justify="left")
    for column in ("check", "result", "details"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        details = row.problems[0] + (f" (+{len(row.problems) - 1} more)" if len(row.problems) > 1 else "") \
            if row.problems else row.holds_when
        if row.check == "label values declared" and row.ok:
            details = f"values found: {', '.join(map(str, report.label_values))}"
        result = f"[green]✓[/] {row.passed}/{row.passed + row.failed}" if row.ok else \
            f"[red]✗[/] {row.failed} of {row.passed + row.failed} fail"
        table.add_row(row.check, result, details)

    def ranges(found: dict | None, unit: str) -> str:
        if found is None:
            return "–"
        return " × ".join(f"{low:.4g}" if low == high else f"{low:.4g}–{high:.4g}"
                          for low, high in zip(found["min"], found["max"])) + unit

    table.add_row("spacing", "", ranges(report.spacing_mm, " mm"))
    table.add_row("size", "", ranges(report.size, " voxels"))
    low_high = report.intensity_range
    table.add_row("intensity range", "", "–" if low_high is None else f"{low_high[0]:.6g} … {low_high[1]:.6g}")
    return table


def run_train(prep: Path, out: Path, *, method: str | None = None, preset: str | None = None,
              settings: Sequence[Settings] = (), max_epochs: int | None = None, max_time: str | None = None,
              devices: int = 1, num_nodes: int = 1, resume: bool = False, show_progress: bool = True) -> dict:
    """Train ``method`` on a prepared folder: the preset (``preset``, a ``--config`` file's ``preset:``, or PREP's)
    with PREP's data sections (ROI, intensities, samples: its ``DATA_SECTIONS``) and ``settings`` (``--config``,
    ``--set``; one that would change a data section raises :class:`InputError`), written to ``out/config.yaml``."""
    from implicitseg.data.datasets import read_manifest
    from implicitseg.methods import get_method

    manifest = read_manifest(prep)
    method_name = method or manifest.method
    if method_name != manifest.method:
        raise InputError(f"{prep} was prepared for {manifest.method!r}, not {method_name!r}; run prepare again")
    method_entry = get_method(method_name)
    prepared = config_from_dict(method_entry.config_class, manifest.config, where=f"{prep}/manifest.json")
    name = preset or preset_named(list(settings)) or prepared.preset
    if name not in method_entry.presets:
        raise InputError(f"unknown preset {name!r}; available: {', '.join(method_entry.presets)}")
    config = config_from_dict(method_entry.config_class, config_to_dict(method_entry.presets[name]))
    # the data were prepared once: their grid, intensities and samples stay as prepared
    data_sections = config.sections_with("data")
    for section in data_sections:
        setattr(config, section, getattr(prepared, section))
    fixed = {"method": f"{prep} was prepared for {manifest.method}", "preset": f"chosen by --preset ({name})",
             **{section: f"fixed when {prep} was prepared; prepare again to change it" for section in data_sections}}
    for source in settings:
        config, _ = source.apply(config, fixed)
    return method_entry.train(Path(prep), Path(out), config, max_epochs=max_epochs, max_time=max_time,
                              devices=devices, num_nodes=num_nodes, resume=resume,
                              progress=show_progress)


def run_predict(run: Path, inputs: list[Path], out: Path, *, settings: Sequence[Settings] = (),
                roi_center: str | None = None, roi_label: Path | None = None, roi_run: Path | None = None,
                spacing: str | None = None, plane: str | None = None, frames: list[int] | None = None,
                fit_weights: bool = False, initial: Path | None = None, mesh_format: str = "vtk",
                mesh_space: str = "LPS", checkpoint: str = "best", device: str = "auto", seed: int = 0,
                mesher: str | None = None, band_mm: float | None = None, keep_going: bool = False,
                show_progress: bool = True) -> list[dict]:
    """Predict each input image with the run's model (:class:`~implicitseg.methods.predict.Predictor`, the Python
    API's code path) and write OUT/<case>/ (:meth:`~implicitseg.methods.predict.Predictor.write`) and
    OUT/config.yaml (the run's config with the settings applied).

    ROI methods: the ROI is centred by exactly one of ``roi_center`` (world LPS mm), ``roi_label`` (a labelmap's
    centre of mass) or ``roi_run`` (a trained ROI detector); OUT/<case>/ gets mesh.<fmt>, plus points.ply (surface
    methods) or labelmap.nii.gz on the image's grid (voxel methods). Whole-image methods need no ROI and write
    labelmap.nii.gz and mesh.<fmt> on the image's grid, on the same box at ``spacing`` (mm: one number or three)
    or on a ``plane`` (:func:`~implicitseg.methods.predict.parse_plane`; labelmap only); 3D+t methods take
    ``frames`` (default: all); methods that fit a code first (NISF) also fit the network's weights with
    ``fit_weights`` (the authors' code); methods that refine a segmentation (ISMM) take it as ``initial`` (a
    labelmap or mesh file, or a folder of them by case). ``settings`` (``--config``, ``--set``) change the run's
    prediction sections (the config's ``PREDICT_SECTIONS``); distance-field methods (nudf) also
    take ``mesher`` (``meshing.method``: ``udf-mc``, the surface from the field's narrow band; ``poisson``, the
    paper's dense cloud + screened Poisson) and ``band_mm`` (``meshing.band.cell_mm``, the band's finest cell, mm).
    Every output is in the image's physical space; prediction.json records timings, counts and the settings.
    An image that cannot be predicted (:class:`InputError`: a damaged file, a ROI outside it, no surface found)
    stops the run, or with ``keep_going`` becomes a result ``{"case", "image", "error"}`` (and an entry of
    OUT/failures.json, which evaluation scores as a failed row) while the other images go on; the caller reports it (the CLI exits 2 after the rest).
    """
    from implicitseg.io.dataset import PREDICTION_FAILURES, case_id, list_images
    from implicitseg.methods.predict import ROI_SOURCES_HINT, Predictor, check_options

    if band_mm is not None and not band_mm > 0:
        raise InputError(f"--band-mm must be a positive number of mm, got {band_mm}")
    flags = [Settings(flag, {key: value}) for flag, key, value in (
        ("--mesher", "meshing.method", mesher), ("--band-mm", "meshing.band.cell_mm", band_mm),
        ("--fit-weights", "fit.fit_weights", True if fit_weights else None)) if value is not None]
    options = check_options(run, settings=[*settings, *flags], checkpoint=checkpoint, device=device,
                            roi_center=roi_center, roi_label=roi_label, roi_run=roi_run, spacing=spacing, plane=plane,
                            frames=frames, initial=initial, seed=seed)
    if options.needs_roi and not options.roi_given:
        raise InputError(f"give {ROI_SOURCES_HINT}; got none")
    images = list_images(inputs)
    predictor = Predictor(options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(out / "config.yaml", predictor.config)

    (out / PREDICTION_FAILURES).unlink(missing_ok=True)  # an earlier run's failures are not this run's
    results, failures = [], []
    progress, advance = _progress_bar("predict", len(images))
    with progress if show_progress else contextlib.nullcontext():
        for done, image_path in enumerate(images):
            try:
                prediction = predictor.predict(image_path)
            except InputError as error:
                if not keep_going:
                    raise
                failures.append({"case": case_id(image_path), "image": str(image_path), "error": str(error)})
                results.append(failures[-1])
                write_json(out / PREDICTION_FAILURES, {"failures": failures})
            else:
                results.append(predictor.write(prediction, out / prediction.case, mesh_format=mesh_format,
                                               mesh_space=mesh_space))
            if show_progress:
                advance(done + 1)
    return results


def run_evaluate(pred: Path, gt: Path, out: Path, *, kind: str = "surface", gt_space: str = "LPS",
                 split: str | None = None, strict: bool = False) -> str:
    """Score every ground-truth case (of ``split``); writes METRICS.csv + METRICS.summary.json; returns a printable
    table. ``strict``: a missing or failed case is an InputError (after the files are written)."""
    from implicitseg.evaluation.tables import evaluate_folders, format_table

    summary = evaluate_folders(Path(pred), Path(gt), Path(out), kind=kind, gt_space=gt_space, split=split,
                               strict=strict)
    return format_table(summary)


def run_compare(metrics_a: Path, metrics_b: Path, *, out: Path | None = None, seed: int = 0) -> str:
    """Paired comparison of two evaluations of the same cases; writes ``out`` (JSON) when given; returns a
    printable table."""
    from implicitseg.evaluation.compare import compare_evaluations, format_comparison

    return format_comparison(compare_evaluations(Path(metrics_a), Path(metrics_b), out=out, seed=seed))


def run_report(preds: list[Path], out: Path, *, gt: Path | None = None, runs: list[Path] | None = None,
               gt_space: str = "LPS") -> dict:
    """One self-contained HTML file over prediction folders (one per method): metrics worst first, training
    curves of ``runs``, and per case slice overlays and a 3D view; returns what was written."""
    from implicitseg.evaluation.report import build_report

    return build_report([Path(p) for p in preds], Path(out), gt=None if gt is None else Path(gt),
                        runs=[Path(r) for r in runs or []], gt_space=gt_space)


def _hms(seconds: float) -> str:
    seconds = max(int(seconds), 10)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_demo(out: Path, *, train_minutes: float = 4.0, detector_minutes: float = 1.0, n_cases: int = 12,
             seed: int = 0, echo: Callable[[str], None] = print) -> dict:
    """synth → prepare → train NUDF and the ROI detector → predict the test images (ROI found by the detector,
    no label needed) → evaluate → report, with the small CPU presets; returns the metric summary. Re-running it
    in the same folder continues from what is already there."""
    out = Path(out)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    dataset = out / "dataset"
    if not (dataset / "dataset.json").is_file():
        run_synth(dataset, kind="laa", n_cases=n_cases, seed=seed)
    timings["synth_s"] = time.perf_counter() - start

    start = time.perf_counter()
    prep, prep_roi = out / "prep", out / "prep_roi"
    if not (prep / "manifest.json").is_file():
        run_prepare(dataset, prep, method="nudf", preset="nudf-demo", workers=2)
    if not (prep_roi / "manifest.json").is_file():
        run_prepare(dataset, prep_roi, method="roi", preset="roi32", workers=2)
    timings["prepare_s"] = time.perf_counter() - start

    start = time.perf_counter()
    run, run_roi = out / "run", out / "run_roi"
    run_train(prep_roi, run_roi, max_time=_hms(detector_minutes * 60),
              resume=(run_roi / "checkpoints" / "last.ckpt").is_file())
    run_train(prep, run, max_time=_hms(train_minutes * 60), resume=(run / "checkpoints" / "last.ckpt").is_file())
    timings["train_s"] = time.perf_counter() - start

    start = time.perf_counter()
    predictions = out / "predictions"
    run_predict(run, [dataset], predictions, roi_run=run_roi)
    timings["predict_s"] = time.perf_counter() - start

    start = time.perf_counter()
    table = run_evaluate(predictions, dataset, out / "metrics")
    timings["evaluate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    report = run_report([predictions], out / "report.html", gt=dataset, runs=[run, run_roi])
    timings["report_s"] = time.perf_counter() - start
    write_json(out / "demo.json", {"timings": timings, "versions": versions()})
    echo(table)
    echo(f"dataset:     {dataset}\nruns:        {run} (NUDF), {run_roi} (ROI detector): checkpoints, logs/\n"
         f"predictions: {predictions}/<case>/mesh.vtk, points.ply (world LPS mm: open them over the image in 3D "
         f"Slicer)\nmetrics:     {out / 'metrics.csv'}\n"
         f"report:      {report['path']} (open it in a browser: slices, 3D view, metrics)\n"
         f"time:        " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in timings.items()))
    return json.loads((out / "metrics.summary.json").read_text())
