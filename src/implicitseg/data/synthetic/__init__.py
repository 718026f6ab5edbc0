"""Synthetic datasets with known ground truth, one module per phantom kind.

:mod:`.common` holds what every phantom draws from (rotations, smooth random fields, oblique image directions);
:mod:`.laa` (CT, left atrial appendage), :mod:`.organ` (abdominal CT, organ + lesion) and :mod:`.cardiac` (cine
MRI short-axis stacks) build on it; :mod:`.dataset` writes a dataset of any kind from its table :data:`KINDS`.
The names below are the package's API.
"""

from __future__ import annotations

from implicitseg.data.synthetic.common import draw_image_direction
from implicitseg.data.synthetic.dataset import KINDS, case_rng, write_synthetic_dataset
from implicitseg.data.synthetic.laa import LAA_LABELS, LaaPhantom, SyntheticCase, draw_laa_phantom, make_laa_case

__all__ = ["KINDS", "LAA_LABELS", "LaaPhantom", "SyntheticCase", "case_rng", "draw_image_direction", "draw_laa_phantom",
           "make_laa_case", "write_synthetic_dataset"]
