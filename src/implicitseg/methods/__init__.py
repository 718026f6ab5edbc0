"""The table of methods. The CLI and pipeline look a method up here and never branch on its name.

Adding a method = one module that builds a :class:`~implicitseg.methods.base.Method` from its config (a
:class:`~implicitseg.config.MethodConfig`), its network's Lightning module and the shared parts, and one entry that
makes it known:

- a built-in method: an entry in :func:`_built_in` (the one place that imports the method modules, on first use,
  so importing the package stays light);
- a method in another package: an entry point in the group :data:`ENTRY_POINT_GROUP` naming its ``Method``
  (``[project.entry-points."implicitseg.methods"]`` ``mymethod = "mypackage.mymethod:METHOD"`` in its
  ``pyproject.toml``), after which every CLI command and :func:`implicitseg.load_run` know it;
- in a running Python process: :func:`register_method`.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

from implicitseg.errors import InputError
from implicitseg.methods.base import Method

ENTRY_POINT_GROUP = "implicitseg.methods"
"""The entry-point group through which other packages add methods."""

_registered: dict[str, Method] = {}


def _built_in() -> dict[str, Method]:
    from implicitseg.methods import implicit_unet, ismm, nisf, nudf, roi_detector, unet

    return {method.name: method for method in (nudf.METHOD, implicit_unet.METHOD, nisf.METHOD, ismm.METHOD,
                                               unet.METHOD, roi_detector.METHOD)}


@functools.cache
def _from_entry_points() -> dict[str, Method]:
    """The methods other installed packages declare; one that does not load, or is no :class:`Method` of the
    entry point's name, raises :class:`InputError` naming it."""
    found: dict[str, Method] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            method = point.load()
        except Exception as error:  # a plugin's import may fail in any way; name it in one line
            raise InputError(f"method plugin {point.name} ({point.value}): does not load ({type(error).__name__}: "
                             f"{error})") from None
        if not isinstance(method, Method) or method.name != point.name:
            raise InputError(f"method plugin {point.name} ({point.value}): expected an implicitseg Method named "
                             f"{point.name!r}")
        found[point.name] = method
    return found


def _table() -> dict[str, Method]:
    table = _built_in()
    for name, method in {**_from_entry_points(), **_registered}.items():
        if name in table and table[name] is not method:
            raise InputError(f"method {name!r} is declared twice (built in, by an entry point or registered)")
        table[name] = method
    return table


def register_method(method: Method) -> None:
    """Make ``method`` known to this process's pipeline (its CLI stages and :func:`implicitseg.load_run`); a name
    already taken by another method raises :class:`InputError`."""
    if not isinstance(method, Method):
        raise TypeError(f"expected a Method, got {type(method).__name__}")
    existing = _table().get(method.name)
    if existing is not None and existing is not method:
        raise InputError(f"method {method.name!r} exists already")
    _registered[method.name] = method


def get_method(name: str) -> Method:
    """The registered method ``name``; an unknown name raises :class:`InputError` listing the known ones."""
    table = _table()
    if name not in table:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(table))}")
    return table[name]


def method_names() -> list[str]:
    """Registered method names with one-line descriptions, for --help texts."""
    return [f"{m.name}: {m.description}" for m in _table().values()]
