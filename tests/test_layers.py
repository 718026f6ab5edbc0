"""The import rules of README "Layout", read from the source with ``ast``.

Every ``import`` / ``from … import`` statement under ``src/implicitseg`` counts: at module level, inside functions
and under ``if TYPE_CHECKING:`` (a type-only import still ties the two modules together for a reader and for a
type checker). Relative forms (``from . import x``, ``from ..io import images``) are resolved to module names.
Strings given to ``importlib.import_module`` (the lazy Python API in ``implicitseg/__init__.py``) are not import
statements and are not read.

Rules, each failure naming the importing module, the imported one and the rule:
- a package (or top-level module) never imports one in a layer above its own;
- two packages never import each other (one-way imports within a layer are fine);
- no module imports itself back through a chain of imports (a module cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "implicitseg"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("methods",),
    ("training", "inference", "data"),
    ("models", "fitting", "meshing", "evaluation"),
    ("io",),
    ("geometry",),
    ("config",),
    (ROOT, "errors", "versions"),
)
"""Top layer first. A unit is a subpackage of ``implicitseg`` or a top-level module; ``implicitseg`` itself (its
``__init__``: ``__version__`` and the lazy API) is a leaf with ``errors`` and ``versions``."""

LAYER_OF = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    """``src/implicitseg/io/images.py`` → ``implicitseg.io.images``; a package's ``__init__.py`` → the package."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(path): path for path in sorted((SRC / ROOT).rglob("*.py"))}


def unit_of(module: str) -> str:
    """The layer unit of a module: its subpackage or top-level module under ``implicitseg`` (or ``implicitseg``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def imports_in(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Modules of ``implicitseg`` that ``source`` (the text of ``module``) imports anywhere, with each import's line.

    ``from P import x`` imports ``P.x`` when that is a module, else ``P`` (``x`` is a name defined in ``P``)."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((candidate if candidate in MODULES else base, node.lineno))
    return sorted({(name, line) for name, line in found if name in MODULES and name != module})


IMPORTS: dict[str, list[tuple[str, int]]] = {
    module: imports_in(path.read_text(), module, path.name == "__init__.py") for module, path in MODULES.items()}


def test_every_unit_has_a_layer() -> None:
    unplaced = sorted({unit_of(module) for module in MODULES} - set(LAYER_OF))
    assert not unplaced, f"packages or top-level modules missing from LAYERS (tests/test_layers.py): {unplaced}"


def test_no_upward_imports() -> None:
    broken = [f"{module}:{line} imports {target}: upward import ({unit_of(module)} is below {unit_of(target)})"
              for module, targets in IMPORTS.items() for target, line in targets
              if LAYER_OF[unit_of(target)] < LAYER_OF[unit_of(module)]]
    assert not broken, "\n".join(broken)


def test_no_two_packages_import_each_other() -> None:
    edges: dict[tuple[str, str], str] = {}
    for module, targets in IMPORTS.items():
        for target, line in targets:
            if unit_of(module) != unit_of(target):
                edges.setdefault((unit_of(module), unit_of(target)), f"{module}:{line} imports {target}")
    broken = [f"{edges[(a, b)]} and {edges[(b, a)]}: packages {a} and {b} import each other"
              for a, b in sorted(edges) if a < b and (b, a) in edges]
    assert not broken, "\n".join(broken)


def module_cycles() -> list[list[str]]:
    """Every strongly connected set of two or more modules in the import graph (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target, _ in IMPORTS[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    return cycles


def test_no_module_cycles() -> None:
    broken = []
    for cycle in module_cycles():
        members = set(cycle)
        links = [f"{module}:{line} imports {target}" for module in cycle for target, line in IMPORTS[module]
                 if target in members]
        broken.append(f"module cycle among {', '.join(cycle)}: " + "; ".join(links))
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(("source", "expected"), [
    ("from . import images", "implicitseg.io.images"),
    ("from .images import Volume", "implicitseg.io.images"),
    ("from .. import errors", "implicitseg.errors"),
    ("from ..geometry.frames import Roi", "implicitseg.geometry.frames"),
    ("from implicitseg.io import meshes", "implicitseg.io.meshes"),
    ("import implicitseg.geometry.frames", "implicitseg.geometry.frames"),
    ("def f():\n    from implicitseg.errors import InputError", "implicitseg.errors"),
    ("if TYPE_CHECKING:\n    from implicitseg.geometry.frames import Roi", "implicitseg.geometry.frames"),
])
def test_imports_are_resolved(source: str, expected: str) -> None:
    """Relative, in-function and TYPE_CHECKING imports are all read (as if written in ``implicitseg/io/pairs.py``)."""
    assert [name for name, _ in imports_in(source, "implicitseg.io.pairs", is_package=False)] == [expected]


def test_package_relative_imports_start_at_the_package() -> None:
    """In a package's ``__init__``, ``from . import x`` means a module of that package."""
    assert imports_in("from . import images", "implicitseg.io", is_package=True) == [("implicitseg.io.images", 1)]
