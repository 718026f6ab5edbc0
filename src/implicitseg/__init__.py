"""implicitseg: high-resolution segmentations and surface meshes of 3D medical images with neural implicit functions.

The Python API (the command line's code path, for notebooks and other pipelines)::

    predictor = implicitseg.load_run("runs/laa", roi_run="runs/roi")
    result = predictor.predict("image.nii.gz")          # or a Volume in memory: voxels + index → world LPS affine
    implicitseg.write_mesh("mesh.vtk", result.mesh)     # world LPS mm

``load_run`` (:func:`implicitseg.methods.predict.load_run`), ``read_image``, ``write_mesh``, ``Volume`` and ``Mesh``
are imported on first use, so ``import implicitseg`` (and ``implicitseg --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {"load_run": "implicitseg.methods.predict", "read_image": "implicitseg.io.images",
        "Volume": "implicitseg.io.images", "write_mesh": "implicitseg.io.meshes", "Mesh": "implicitseg.io.meshes"}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
