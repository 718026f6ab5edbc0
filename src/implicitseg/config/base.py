"""What every method's config is: :class:`MethodConfig` (its name, its preset, and the role of each of its
sections) and :class:`RoiMethodConfig` (a method that sees a world-axis-aligned cube around its target)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from implicitseg.config.sections import IntensityConfig, RoiConfig
from implicitseg.errors import InputError

ROLES = ("data", "network", "train", "predict")
"""What a top-level config field is for, and so when it may change:

- ``data``: fixed by ``prepare`` (the grid, intensities, samples); ``train`` takes it from the prepared folder;
- ``network``: shapes the network; fixed once a run has trained;
- ``train``: optimisation; may change when a run resumes, not at prediction (it changes nothing there);
- ``predict``: how a trained network is used; may change when a run resumes and at prediction (``--set``)."""


@dataclass(kw_only=True)
class MethodConfig:
    """Base of every method's config: ``method`` (its name in the table of methods) and ``preset`` (the preset it
    was made from), then its sections. A subclass lists each of its other fields in exactly one of the role tuples
    (:data:`ROLES`); building a config whose class leaves a field out, or lists one twice, raises ``TypeError``.

    Input size: :meth:`input_res` (voxels per side of the network's input, 0 for methods that take coordinates),
    :meth:`roi_size_mm`, and :meth:`set_input_size` (``--res`` / ``--roi-mm``), which a method without that input
    refuses."""

    method: str = ""
    preset: str = ""

    DATA_SECTIONS: ClassVar[tuple[str, ...]] = ()
    NETWORK_SECTIONS: ClassVar[tuple[str, ...]] = ()
    TRAIN_SECTIONS: ClassVar[tuple[str, ...]] = ("train",)
    PREDICT_SECTIONS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.roles()

    @classmethod
    def roles(cls) -> dict[str, str]:
        """Top-level field → its role (:data:`ROLES`); ``method`` and ``preset`` have none."""
        declared = {"data": cls.DATA_SECTIONS, "network": cls.NETWORK_SECTIONS, "train": cls.TRAIN_SECTIONS,
                    "predict": cls.PREDICT_SECTIONS}
        roles: dict[str, str] = {}
        for role, names in declared.items():
            for name in names:
                if name in roles:
                    raise TypeError(f"{cls.__name__}: {name!r} is declared both {roles[name]} and {role}")
                roles[name] = role
        fields = [f.name for f in dataclasses.fields(cls) if f.name not in ("method", "preset")]
        missing, unknown = sorted(set(fields) - set(roles)), sorted(set(roles) - set(fields))
        if missing or unknown:
            raise TypeError(f"{cls.__name__}: every field needs one role (DATA_SECTIONS, NETWORK_SECTIONS, "
                            f"TRAIN_SECTIONS, PREDICT_SECTIONS): " + "; ".join(
                                [f"{', '.join(missing)} not declared"] * bool(missing)
                                + [f"{', '.join(unknown)} declared but not a field"] * bool(unknown)))
        return roles

    @classmethod
    def sections_with(cls, *roles: str) -> tuple[str, ...]:
        """The top-level fields whose role is one of ``roles``, in field order."""
        return tuple(name for name, role in cls.roles().items() if role in roles)

    def input_res(self) -> int:
        """Voxels per side of the network's input grid; 0: coordinates, any image size."""
        return 0

    def roi_size_mm(self) -> float | None:
        """The ROI's side in mm; None for a method that sees whole images."""
        return None

    def set_input_size(self, res: int | None = None, roi_mm: float | None = None) -> None:
        """Apply ``--res`` (voxels per side of the input) and ``--roi-mm`` (the ROI's side); None leaves a value as
        it is. A value the method has no use for raises :class:`InputError`."""
        if roi_mm is not None:
            raise InputError(f"--roi-mm does not apply to method {self.method!r} (it sees whole images)")
        if res is not None:
            raise InputError(f"--res does not apply to method {self.method!r} (it has no input grid)")


@dataclass(kw_only=True)
class RoiMethodConfig(MethodConfig):
    """A method whose network sees the ROI: a world-axis-aligned cube of ``roi.size_mm`` around the target,
    resampled to ``roi.res``³ voxels and normalised by ``intensity``."""

    roi: RoiConfig = field(default_factory=RoiConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)

    def input_res(self) -> int:
        return int(self.roi.res)

    def roi_size_mm(self) -> float | None:
        return float(self.roi.size_mm)

    def set_input_size(self, res: int | None = None, roi_mm: float | None = None) -> None:
        if roi_mm is not None and not roi_mm > 0:
            raise InputError(f"--roi-mm must be positive, got {roi_mm}")
        if res is not None:
            self.roi.res = int(res)
        if roi_mm is not None:
            self.roi.size_mm = float(roi_mm)
