"""The dataset layout of DESIGN §3 (Medical Segmentation Decathlon / nnU-Net style, plus meshes)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from implicitseg.errors import InputError
from implicitseg.io.atomic import read_json_object, write_json
from implicitseg.io.images import IMAGE_SUFFIXES
from implicitseg.io.meshes import MESH_SUFFIXES, SPACES


PREDICTION_FAILURES = "failures.json"
"""``PRED/failures.json``: the images ``predict --keep-going`` could not predict, ``{"failures": [{"case",
"image", "error"}, ...]}``; evaluation scores each as a ``failed`` row."""


def read_prediction_failures(pred_dir: str | os.PathLike) -> dict[str, str]:
    """Case id → why ``predict --keep-going`` could not predict it (``PRED/failures.json``; empty if none)."""
    path = Path(pred_dir) / PREDICTION_FAILURES
    if not path.is_file():
        return {}
    try:
        return {str(entry["case"]): str(entry["error"]) for entry in read_json_object(path)["failures"]}
    except (KeyError, TypeError) as error:
        raise InputError(f"{path}: not a list of {{case, image, error}} entries") from error


def case_id(path: str | os.PathLike) -> str:
    """Case id = file name without its (possibly double) extension; a DICOM folder's name."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES + MESH_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class Case:
    """One training case: absolute paths to its image and to its label and/or mesh."""

    case_id: str
    image: Path
    label: Path | None = None
    mesh: Path | None = None


@dataclass
class Dataset:
    """A parsed ``dataset.json`` with absolute paths."""

    root: Path
    name: str
    modality: str
    labels: dict[str, str]
    training: list[Case]
    test: list[Path] = field(default_factory=list)
    mesh_space: str = "LPS"

    @property
    def label_values(self) -> frozenset[int]:
        """The label values ``dataset.json`` declares (the keys of ``labels``); non-integer keys raise
        :class:`InputError`."""
        try:
            return frozenset(int(value) for value in self.labels)
        except ValueError:
            raise InputError(f"{self.root / 'dataset.json'}: label values must be integers, "
                             f"got {list(self.labels)}") from None

    def case(self, identifier: str) -> Case:
        for case in self.training:
            if case.case_id == identifier:
                return case
        raise InputError(f"{self.root}: no training case {identifier!r}")


def _resolve(root: Path, relative: str, what: str, json_path: Path, strict: bool) -> Path:
    path = (root / relative).resolve()
    if strict and not path.exists():
        raise InputError(f"{json_path}: {what} {relative!r} not found")
    return path


def load_dataset(root: str | os.PathLike, *, strict: bool = True) -> Dataset:
    """Parse ``root/dataset.json``; each case's files share one case id, every referenced file must exist and case
    ids must be unique (unless not ``strict``: ``implicitseg check`` reports missing files and duplicate ids
    itself)."""
    root = Path(root)
    json_path = root / "dataset.json"
    if not json_path.is_file():
        raise InputError(f"{root}: not a dataset folder (no dataset.json)")
    data = read_json_object(json_path)
    mesh_space = str(data.get("mesh_space", "LPS")).upper()
    if mesh_space not in SPACES:
        raise InputError(f"{json_path}: mesh_space must be one of {SPACES}, got {mesh_space!r}")
    training: list[Case] = []
    for position, entry in enumerate(data.get("training", [])):
        if not isinstance(entry, dict) or "image" not in entry:
            raise InputError(f"{json_path}: training entry {position} has no 'image'")
        image = _resolve(root, entry["image"], "image", json_path, strict)
        identifier = case_id(image)
        label = _resolve(root, entry["label"], "label", json_path, strict) if entry.get("label") else None
        mesh = _resolve(root, entry["mesh"], "mesh", json_path, strict) if entry.get("mesh") else None
        if label is None and mesh is None:
            raise InputError(f"{json_path}: case {identifier!r} has neither a label nor a mesh")
        for other in (label, mesh):
            if other is not None and case_id(other) != identifier:
                raise InputError(f"{json_path}: case ids do not match: image {identifier!r} vs {other.name!r}")
        training.append(Case(identifier, image, label, mesh))
    duplicates = duplicate_case_ids(training)
    if strict and duplicates:
        raise InputError(f"{json_path}: duplicate case ids {duplicates}")
    test = [_resolve(root, entry if isinstance(entry, str) else entry["image"], "test image", json_path, strict)
            for entry in data.get("test", [])]
    return Dataset(
        root=root.resolve(),
        name=str(data.get("name", root.name)),
        modality=str(data.get("modality", "CT")),
        labels={str(k): str(v) for k, v in data.get("labels", {"0": "background", "1": "foreground"}).items()},
        training=training,
        test=test,
        mesh_space=mesh_space,
    )


def duplicate_case_ids(cases: list[Case]) -> list[str]:
    """Case ids that more than one case has, sorted."""
    identifiers = [case.case_id for case in cases]
    return sorted({i for i in identifiers if identifiers.count(i) > 1})


def write_dataset_json(root: str | os.PathLike, *, name: str, modality: str, labels: dict[str, str],
                       training: list[dict[str, str]], test: list[str], mesh_space: str = "LPS") -> None:
    """Write ``root/dataset.json`` (paths relative to ``root``)."""
    write_json(Path(root) / "dataset.json", {
        "name": name, "modality": modality, "labels": labels, "mesh_space": mesh_space,
        "numTraining": len(training), "numTest": len(test), "training": training, "test": test,
    })


def list_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand CLI inputs: image files, DICOM folders, dataset folders (their ``imagesTs/``) or folders of image
    files (such as ``imagesTs/`` itself)."""
    images: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise InputError(f"{path}: input not found")
        folder = path / "imagesTs" if path.is_dir() and (path / "imagesTs").is_dir() else path
        image_files = sorted(p for p in folder.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)) \
            if folder.is_dir() else []
        if folder is not path:
            found = sorted(image_files + [p for p in folder.iterdir() if p.is_dir()])
            if not found:
                raise InputError(f"{folder}: no images")
            images.extend(found)
        elif image_files:
            images.extend(image_files)
        else:
            images.append(path)  # an image file or a DICOM series folder
    return images
