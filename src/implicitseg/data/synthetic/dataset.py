"""The synthetic dataset writer: one table of phantom kinds, each drawing a case and writing its files."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from implicitseg.data.synthetic.cardiac import CARDIAC_LABELS, make_cardiac_case
from implicitseg.data.synthetic.laa import LAA_LABELS, make_laa_case
from implicitseg.data.synthetic.organ import ORGAN_LABELS, make_organ_case
from implicitseg.errors import InputError
from implicitseg.io.atomic import write_text
from implicitseg.io.dataset import write_dataset_json
from implicitseg.io.images import VolumeSeries, write_image, write_image_series
from implicitseg.io.meshes import write_mesh

_TRAIN_STREAM, _TEST_STREAM = 0, 1

CaseWriter = Callable[[np.random.Generator, str, str, Path, dict[str, str]], None]
"""``(rng, case_id, split, out_dir, entry)``: draw case ``case_id`` from ``rng`` and write its image and labelmap
to ``out_dir / entry["image"]`` and ``out_dir / entry["label"]``; a file beyond those (a mesh) is written under
the ``split``'s folder (``Tr`` / ``Ts``) and added to ``entry``."""


@dataclass(frozen=True)
class PhantomKind:
    """One kind of synthetic dataset: its ``dataset.json`` labels (value → name) and modality, and its writer."""

    labels: Mapping[str, str]
    modality: str
    write_case: CaseWriter


def _write_laa_case(rng: np.random.Generator, case_id: str, split: str, out_dir: Path, entry: dict[str, str]) -> None:
    """CT image, labelmap and the open appendage wall (``meshes{split}/<case>.vtk``, world LPS mm)."""
    case = make_laa_case(rng, case_id)
    write_image(out_dir / entry["image"], case.image)
    write_image(out_dir / entry["label"], case.labelmap)
    entry["mesh"] = f"meshes{split}/{case_id}.vtk"
    write_mesh(out_dir / entry["mesh"], case.mesh, space="LPS")


def _write_organ_case(rng: np.random.Generator, case_id: str, split: str, out_dir: Path,
                      entry: dict[str, str]) -> None:
    """CT image and two-label labelmap."""
    case = make_organ_case(rng, case_id)
    write_image(out_dir / entry["image"], case.image)
    write_image(out_dir / entry["label"], case.labelmap)


def _write_cardiac_case(rng: np.random.Generator, case_id: str, split: str, out_dir: Path,
                        entry: dict[str, str]) -> None:
    """4D cine image and labelmap (time step: a fraction of the cycle) and ``phantoms/<case>.json``."""
    cine = make_cardiac_case(rng, case_id)
    step = 1.0 / len(cine.image)
    write_image_series(out_dir / entry["image"], VolumeSeries(cine.image, cine.affine_lps, step))
    write_image_series(out_dir / entry["label"], VolumeSeries(cine.labelmap, cine.affine_lps, step))
    write_text(out_dir / "phantoms" / f"{case_id}.json", cine.phantom.to_json())


KINDS: dict[str, PhantomKind] = {
    "laa": PhantomKind(LAA_LABELS, "CT", _write_laa_case),
    "organ": PhantomKind(ORGAN_LABELS, "CT", _write_organ_case),
    "cardiac": PhantomKind(CARDIAC_LABELS, "MR", _write_cardiac_case),
}
"""Phantom kinds :func:`write_synthetic_dataset` can generate, by name."""


def case_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of case ``index`` of a split (``stream`` 0 = training, 1 = test) for ``seed``."""
    return np.random.default_rng([int(seed), int(stream), int(index)])


def write_synthetic_dataset(out_dir: Path, *, kind: str = "laa", n_cases: int = 10, seed: int = 0,
                            n_test: int | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a synthetic dataset in the layout of DESIGN §3 into ``out_dir`` and return ``out_dir``.

    ``kind`` (a key of :data:`KINDS`): ``laa`` (CT with the left atrial appendage: labelmap and open wall mesh;
    :mod:`.laa`), ``organ`` (abdominal CT with an organ and a lesion inside it: a two-label labelmap, no mesh;
    :mod:`.organ`) or ``cardiac`` (cine MRI short-axis stacks, 4D images and labelmaps of 10 frames, three labels,
    and the phantom behind each in ``phantoms/<case>.json``, whose labels are known at any point: :mod:`.cardiac`).
    ``n_cases`` training cases (``imagesTr``, ``labelsTr``, ``meshesTr``) plus ``n_test`` test cases
    (default ``max(1, n_cases // 5)``; images in ``imagesTs``, ground truth in ``labelsTs``/``meshesTs``),
    ids ``<kind>_000``, ``<kind>_001``, … (test ids follow the training ids). Same seed → identical files' arrays;
    each case depends only on (seed, split, its index in the split). ``progress(done, total)`` is called
    after each case. ``dataset.json`` is written last.
    """
    if kind not in KINDS:
        raise InputError(f"unknown synthetic dataset kind {kind!r}; supported kinds: {', '.join(KINDS)}")
    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or n_cases < 1:
        raise InputError(f"number of cases must be a positive integer, got {n_cases!r}")
    n_test = max(1, n_cases // 5) if n_test is None else n_test
    if isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer)) or n_test < 0:
        raise InputError(f"number of test cases must be a non-negative integer, got {n_test!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: output exists and is not a folder")
    phantom = KINDS[kind]
    total = n_cases + n_test
    training: list[dict[str, str]] = []
    test: list[str] = []
    for position in range(total):
        is_test = position >= n_cases
        identifier = f"{kind}_{position:03d}"
        rng = case_rng(seed, _TEST_STREAM if is_test else _TRAIN_STREAM, position - n_cases if is_test else position)
        split = "Ts" if is_test else "Tr"
        entry = {"image": f"images{split}/{identifier}.nii.gz", "label": f"labels{split}/{identifier}.nii.gz"}
        phantom.write_case(rng, identifier, split, out_dir, entry)
        if is_test:
            test.append(entry["image"])
        else:
            training.append(entry)
        if progress is not None:
            progress(position + 1, total)
    write_dataset_json(out_dir, name=f"synthetic-{kind}-seed{seed}", modality=phantom.modality,
                       labels=dict(phantom.labels), training=training, test=test, mesh_space="LPS")
    return out_dir
