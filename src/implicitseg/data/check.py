"""What a dataset's files must satisfy before anything is learnt from them, for ``prepare`` and ``implicitseg check``.

``prepare`` reads each case through :func:`read_case_label` and :func:`read_case_mesh`, which stop at the first
problem with an :class:`InputError` naming the file — before anything is written for the case. ``implicitseg check``
(:func:`check_dataset`) reads every case once with the same checks, collects every problem instead of stopping, and
adds what only a whole dataset shows: duplicate case ids, unreadable test images, the ranges of spacing, size and
intensity. The checks (:data:`CHECKS`): files readable (not truncated or damaged), finite intensities, labelmaps on
their image's grid (:mod:`implicitseg.io.pairs` states the tolerances), label values declared in ``dataset.json``,
labelmaps not empty, meshes with faces and inside their image (with a hint when the other LPS/RAS convention fits).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from implicitseg.errors import InputError, NonFiniteError
from implicitseg.io.dataset import Case, Dataset, case_id, duplicate_case_ids, load_dataset
from implicitseg.io.images import Volume, VolumeSeries, read_image_series, read_labelmap, read_labelmap_series
from implicitseg.io.meshes import Mesh, read_mesh
from implicitseg.io.pairs import (check_label_grid, check_label_values, check_mesh_in_image, grid_differences,
                                  label_onto_grid)

CHECKS = {
    "images readable": "every training image reads whole (not missing, truncated or damaged)",
    "intensities finite": "no NaN or infinite voxel in the images",
    "labels present": "every case has a labelmap (the method trains on them)",
    "labels readable": "every labelmap reads whole and holds integers",
    "labels on the image grid": "size, origin, spacing and direction of each labelmap equal its image's",
    "label values declared": "every label value is one of dataset.json's labels",
    "labels not empty": "every labelmap has a voxel > 0",
    "meshes readable, with faces": "every mesh reads whole, has faces, finite vertices, faces on existing vertices",
    "meshes inside the image": "each mesh lies inside its image (in the dataset's mesh_space)",
    "test images readable": "every test image reads whole, with finite intensities",
    "case ids unique": "no two training cases share a case id",
}
"""The checks, in the order of the table: name → what holds when it passes."""


@dataclass(frozen=True)
class InputRules:
    """What ``prepare`` asks of a case's files beyond being readable: label values among ``label_values`` (None:
    not checked), meshes read in ``mesh_space``, labelmaps on their image's grid — or, with ``resample_labels``,
    resampled onto it nearest-neighbour in world space."""

    label_values: frozenset[int] | None = None
    mesh_space: str = "LPS"
    resample_labels: bool = False

    @classmethod
    def of(cls, dataset: Dataset, *, resample_labels: bool = False) -> "InputRules":
        """The rules of ``dataset``'s ``dataset.json``."""
        return cls(dataset.label_values, dataset.mesh_space, resample_labels)


@dataclass
class CaseLabel:
    """A case's labelmap on its image's grid, and what differed from that grid when it was resampled onto it
    (None: it was on the grid)."""

    volume: Volume
    resampled_from: str | None = None


def read_case_label(case: Case, image: Volume, rules: InputRules) -> CaseLabel:
    """The case's labelmap (not empty, values declared) on ``image``'s grid; another grid raises
    :class:`InputError` naming both files and what differs, unless ``rules.resample_labels``."""
    if case.label is None:
        raise InputError(f"case {case.case_id!r} has no labelmap")
    label = read_labelmap(case.label)
    if rules.label_values is not None:
        check_label_values(label.array, case.label, rules.label_values)
    if not rules.resample_labels:
        check_label_grid(label, case.label, image, case.image)
        return CaseLabel(label)
    differences = grid_differences(image, label)
    if not differences:
        return CaseLabel(label)
    resampled = label_onto_grid(label, image)
    if not np.any(resampled.array > 0):
        raise InputError(f"{case.label}: no labelled voxel left after resampling onto the grid of {case.image}")
    return CaseLabel(resampled, "; ".join(differences))


def read_case_mesh(case: Case, image: Volume, rules: InputRules) -> Mesh:
    """The case's mesh in world LPS mm, refused (:class:`InputError`) unless it lies inside ``image``."""
    if case.mesh is None:
        raise InputError(f"case {case.case_id!r} has no mesh")
    mesh = read_mesh(case.mesh, space=rules.mesh_space)
    check_mesh_in_image(mesh, case.mesh, image, case.image)
    return mesh


@dataclass
class CaseCheck:
    """What one case's files gave. ``outcomes``: check name → None (it holds) or the problem (one line naming the
    file); checks that do not apply to the case are absent. The image's ``spacing_mm`` (3,), ``size`` (voxels per
    axis, frames first for 3D+t), finite ``intensity_range`` and the ``label_values`` found."""

    case_id: str
    outcomes: dict[str, str | None] = field(default_factory=dict)
    spacing_mm: list[float] | None = None
    size: list[int] | None = None
    intensity_range: list[float] | None = None
    label_values: list[int] = field(default_factory=list)


Result = TypeVar("Result")


def _record(check: CaseCheck, name: str, action: Callable[[], Result]) -> Result | None:
    """``action()``, its :class:`InputError` recorded as the problem of check ``name`` (then None)."""
    try:
        result = action()
    except InputError as error:
        check.outcomes[name] = str(error)
        return None
    check.outcomes[name] = None
    return result


def _read_image(check: CaseCheck, path: Path) -> VolumeSeries | None:
    """The image at ``path`` (its non-finite voxels, if any, recorded as the problem of "intensities finite"), or
    None when it cannot be read (recorded as the problem of "images readable")."""
    try:
        image = read_image_series(path)
        check.outcomes["intensities finite"] = None
    except NonFiniteError as error:
        check.outcomes["intensities finite"] = str(error)
        image = read_image_series(path, allow_nonfinite=True)
    except InputError as error:
        check.outcomes["images readable"] = str(error)
        return None
    check.outcomes["images readable"] = None
    return image


def _describe_image(check: CaseCheck, image: VolumeSeries) -> None:
    finite = np.isfinite(image.frames)
    if finite.any():
        values = image.frames[finite]
        check.intensity_range = [float(values.min()), float(values.max())]
    frame = image.frame(0)
    check.spacing_mm = [float(s) for s in frame.spacing]
    check.size = ([len(image.frames)] if len(image.frames) > 1 else []) + [int(n) for n in frame.shape]


def check_case(case: Case, rules: InputRules, *, needs_label: bool = False) -> CaseCheck:
    """Read the case's image, labelmap and mesh once each and run every check that applies (see :data:`CHECKS`);
    a file that cannot be read leaves the checks that need it out."""
    check = CaseCheck(case.case_id)
    image = _read_image(check, case.image)
    if image is not None:
        _describe_image(check, image)
    if case.label is None:
        if needs_label:
            check.outcomes["labels present"] = f"case {case.case_id!r}: no labelmap in dataset.json, and the method " \
                                               f"trains on labelmaps"
    else:
        if needs_label:
            check.outcomes["labels present"] = None
        label = _record(check, "labels readable", lambda: read_labelmap_series(case.label, allow_empty=True))
        if label is not None:
            check.label_values = [int(v) for v in np.unique(label.frames)]
            if rules.label_values is not None:
                _record(check, "label values declared",
                        lambda: check_label_values(label.frames, case.label, rules.label_values))
            check.outcomes["labels not empty"] = None if np.any(label.frames > 0) else \
                f"{case.label}: labelmap is empty (no voxel > 0)"
            if image is not None:
                _record(check, "labels on the image grid",
                        lambda: check_label_grid(label, case.label, image, case.image))
    if case.mesh is not None:
        mesh = _record(check, "meshes readable, with faces", lambda: read_mesh(case.mesh, space=rules.mesh_space))
        if mesh is not None and image is not None:
            _record(check, "meshes inside the image",
                    lambda: check_mesh_in_image(mesh, case.mesh, image.frame(0), case.image))
    return check


def check_test_image(path: Path) -> CaseCheck:
    """A test image read whole, with finite intensities."""
    check = CaseCheck(case_id(path))
    _record(check, "test images readable", lambda: read_image_series(path))
    return check


@dataclass
class CheckRow:
    """One check over the dataset: how many cases it held for and failed for, and the problems (one line each)."""

    check: str
    holds_when: str
    passed: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0


@dataclass
class DatasetCheck:
    """Every check over a dataset (:data:`CHECKS` order; only those that applied to some case), per-case results,
    and the ranges over the training images: ``spacing_mm`` and ``size`` (min, max) per axis, ``intensity_range``."""

    dataset: str
    rows: list[CheckRow]
    cases: list[CaseCheck]
    tests: list[CaseCheck]
    spacing_mm: dict[str, list[float]] | None
    size: dict[str, list[int]] | None
    intensity_range: list[float] | None
    label_values: list[int]

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def problems(self) -> list[str]:
        return [problem for row in self.rows for problem in row.problems]

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "ok": self.ok,
                "checks": [{**asdict(row), "ok": row.ok} for row in self.rows],
                "spacing_mm": self.spacing_mm, "size": self.size, "intensity_range": self.intensity_range,
                "label_values": self.label_values,
                "cases": {c.case_id: asdict(c) for c in self.cases},
                "test_images": {c.case_id: asdict(c) for c in self.tests}}


def _range(values: list[list[float]]) -> dict[str, list] | None:
    lengths = {len(v) for v in values}
    if not values or len(lengths) > 1:  # 3D and 3D+t sizes mixed: no per-axis range
        return None
    stacked = np.array(values)
    return {"min": stacked.min(axis=0).tolist(), "max": stacked.max(axis=0).tolist()}


def _run(task: Callable[..., CaseCheck], items: list, workers: int, progress: Callable[[int, int], None] | None,
         *arguments: object) -> list[CaseCheck]:
    results: list[CaseCheck | None] = [None] * len(items)
    if workers == 1 or len(items) < 2:
        for position, item in enumerate(items):
            results[position] = task(item, *arguments)
            if progress is not None:
                progress(position + 1, len(items))
        return results  # type: ignore[return-value]
    context = multiprocessing.get_context("forkserver")  # as prepare: no inherited threads
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context) as pool:
        futures = {pool.submit(task, item, *arguments): position for position, item in enumerate(items)}
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            results[futures[future]] = future.result()
            if progress is not None:
                progress(done, len(items))
    return results  # type: ignore[return-value]


def _check_item(item: Case | Path, rules: InputRules, needs_label: bool) -> CaseCheck:
    return check_test_image(item) if isinstance(item, Path) else check_case(item, rules, needs_label=needs_label)


def check_dataset(dataset_dir: str | Path, *, needs_label: bool = False, workers: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> DatasetCheck:
    """Run every check on every training case and test image of the dataset at ``dataset_dir`` (each file read once,
    in ``workers`` processes; ``progress(done, total)`` after each); ``needs_label``: the method to come trains on
    labelmaps. A ``dataset.json`` that cannot be parsed raises :class:`InputError`; problems with the files it lists
    are collected in the result."""
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    dataset = load_dataset(dataset_dir, strict=False)
    rules = InputRules.of(dataset)
    items: list[Case | Path] = [*dataset.training, *dataset.test]
    results = _run(_check_item, items, workers, progress, rules, needs_label)
    cases, tests = results[: len(dataset.training)], results[len(dataset.training):]
    identifiers = [case.case_id for case in dataset.training]
    duplicates = duplicate_case_ids(dataset.training)
    unique = CheckRow("case ids unique", CHECKS["case ids unique"],
                      passed=sum(i not in duplicates for i in identifiers),
                      failed=sum(i in duplicates for i in identifiers),
                      problems=[f"{dataset.root / 'dataset.json'}: case id {duplicate!r} is listed "
                                f"{identifiers.count(duplicate)} times" for duplicate in duplicates])
    rows = []
    for name, holds_when in CHECKS.items():
        if name == "case ids unique":
            rows.append(unique)
            continue
        row = CheckRow(name, holds_when)
        for result in cases + tests:
            if name in result.outcomes:
                problem = result.outcomes[name]
                row.passed += problem is None
                row.failed += problem is not None
                row.problems += [] if problem is None else [problem]
        if row.passed + row.failed:
            rows.append(row)
    intensities = [c.intensity_range for c in cases if c.intensity_range is not None]
    return DatasetCheck(
        dataset=str(dataset.root), rows=rows, cases=cases, tests=tests,
        spacing_mm=_range([c.spacing_mm for c in cases if c.spacing_mm is not None]),
        size=_range([c.size for c in cases if c.size is not None]),
        intensity_range=[min(r[0] for r in intensities), max(r[1] for r in intensities)] if intensities else None,
        label_values=sorted({v for c in cases for v in c.label_values}))
