"""The table of methods. The CLI and pipeline look a method up here and never branch on its name.

Adding a method = one module in this package that builds a :class:`Method`, and one line in ``METHODS``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from implicitseg.errors import InputError


@dataclass(frozen=True)
class Method:
    """What the pipeline needs of a method.

    - ``presets``: name → config; ``preset_for_res(res)`` picks the default preset for a resolution.
    - ``prepare(dataset_dir, out_dir, config, *, workers, progress) -> manifest``
    - ``train(prep_dir, run_dir, config, *, max_epochs, max_time, devices, resume) -> summary``
    - ``load(run_dir, which, map_location) -> (model, config)``
    - ``predict_roi(model, config, roi, roi_image_zyx, *, device, seed) -> RoiPrediction`` for a method that sees
      a ROI, or
    - ``predict_image(model, config, image, image_path, *, device, output_grid, seed[, frames]) -> ImagePrediction``
      for one that segments whole images (no ROI needed) on any grid ``(shape, affine)``; ``read_input(path)``
      reads its input (default: a 3D image);
    - neither for a method that only serves others (the ROI detector, used through ``predict --roi-run``);
    - ``needs_label``: ``prepare`` needs every case's labelmap (otherwise a labelmap or a mesh will do).
    """

    name: str
    description: str
    config_class: type
    presets: Mapping[str, Any]
    preset_for_res: Callable[[int | None], str]
    prepare: Callable[..., dict]
    train: Callable[..., dict]
    load: Callable[..., tuple[Any, Any]]
    predict_roi: Callable[..., Any] | None = None
    predict_image: Callable[..., Any] | None = None
    read_input: Callable[..., Any] | None = None
    needs_label: bool = False


PresetConfig = TypeVar("PresetConfig")


def copy_preset(presets: Mapping[str, PresetConfig], name: str) -> PresetConfig:
    """A fresh (deep) copy of preset ``name``; an unknown name raises ``KeyError``."""
    return copy.deepcopy(presets[name])


def preset_chooser(presets: Mapping[str, Any], prefix: str, label: str,
                   default_res: int = 64) -> Callable[[int | None], str]:
    """``choose(res)`` → the preset named ``<prefix><res>`` (``default_res`` when ``res`` is None); a resolution
    without a preset raises :class:`InputError` listing the presets."""
    sizes = [name[len(prefix):] for name in presets if name[len(prefix):].isdigit()]

    def choose(res: int | None) -> str:
        name = f"{prefix}{res or default_res}"
        if name not in presets:
            raise InputError(f"no {label} preset for --res {res}; the presets take {', '.join(sizes)} "
                             f"(or name one with --preset: {', '.join(presets)})")
        return name

    return choose


def _table() -> dict[str, Method]:
    from implicitseg.methods import implicit_unet, ismm, nisf, nudf, roi_detector, unet

    return {method.name: method for method in (nudf.METHOD, implicit_unet.METHOD, nisf.METHOD, ismm.METHOD,
                                               unet.METHOD, roi_detector.METHOD)}


def get_method(name: str) -> Method:
    """The registered method ``name``; an unknown name raises :class:`InputError` listing the known ones."""
    table = _table()
    if name not in table:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(table))}")
    return table[name]


def method_names() -> list[str]:
    """Registered method names with one-line descriptions, for --help texts."""
    return [f"{m.name}: {m.description}" for m in _table().values()]
