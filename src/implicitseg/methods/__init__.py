"""The table of methods. The CLI and pipeline look a method up here and never branch on its name.

Adding a method = one module in this package that builds a :class:`~implicitseg.methods.base.Method` from
:mod:`implicitseg.methods.base`, and one entry in :func:`_table`, the one place that imports the method modules
(on first use, so importing the package stays light).
"""

from __future__ import annotations

from implicitseg.errors import InputError
from implicitseg.methods.base import Method


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
