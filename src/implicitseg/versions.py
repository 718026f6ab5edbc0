"""Versions of implicitseg and of the libraries whose behaviour shapes results, recorded with every output."""

from __future__ import annotations

import importlib.metadata
import platform

from implicitseg import __version__

VERSIONED_PACKAGES = ("torch", "numpy", "scipy", "lightning", "monai", "SimpleITK", "pymeshlab", "point-cloud-utils",
                      "scikit-image")


def versions() -> dict[str, str | None]:
    """Package name → installed version (None when absent), plus implicitseg and Python."""
    found: dict[str, str | None] = {"implicitseg": __version__, "python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found
