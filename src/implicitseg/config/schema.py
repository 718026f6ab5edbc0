"""The one schema of configs: :func:`config_to_dict` gives the plain form written as YAML next to every run's
outputs, :func:`config_from_dict` reads it back and refuses unknown keys and values of the wrong type, and
:class:`Settings` sets values by dotted key (``--set point_cloud.n_dense=200000``, a ``--config`` file's mapping)
with the same checks, so files, the CLI and the code share it. Reading and writing files: :mod:`implicitseg.io.configs`.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from implicitseg.errors import InputError

T = TypeVar("T")


def config_to_dict(config: Any) -> dict:
    """Plain nested dict (tuples become lists) for YAML/JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
"""A number written as text (YAML 1.1 reads ``1e-4`` as a string)."""


_TYPE_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
               str: ("a string", "strings")}


def _expected(hint: Any) -> str:
    """What a field of type ``hint`` takes, for error messages ("an integer", "a list of 2 numbers")."""
    if dataclasses.is_dataclass(hint):
        return "a mapping of its keys"
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            return f"a list of {_TYPE_NAMES[items[0]][1]}"
        return f"a list of {len(items)} {_TYPE_NAMES[items[0]][1]}"
    return _TYPE_NAMES[hint][0]


def _checked(hint: Any, value: Any, where: str, key: str) -> Any:
    """``value`` as a field of type ``hint`` holds it (ints become floats for float fields, lists tuples); a value of
    another type raises :class:`InputError` naming ``key`` and the expected type."""
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, where, f"{key}.")
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        variadic = len(items) == 2 and items[1] is Ellipsis
        if isinstance(value, (list, tuple)) and (variadic or len(value) == len(items)):
            item_hints = items[:1] * len(value) if variadic else items
            return tuple(_checked(item_hint, item, where, f"{key}[{index}]")
                         for index, (item_hint, item) in enumerate(zip(item_hints, value)))
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint in (int, float):
        number = float(value) if isinstance(value, str) and _NUMBER.fullmatch(value.strip()) else value
        if isinstance(number, numbers.Real) and not isinstance(number, bool):
            if hint is float:
                return float(number)
            if float(number).is_integer():
                return int(number)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{key}: config fields of type {hint!r} are not supported")
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise InputError(f"{where}: {key}: expected {_expected(hint)}, got {shown}")


def choice(default: str, values: tuple[str, ...]) -> Any:
    """A string field that takes one of ``values`` (checked wherever a config is read or set)."""
    if default not in values:
        raise TypeError(f"default {default!r} is not one of {values}")
    return field(default=default, metadata={"choices": values})


def _check_choice(config_field: dataclasses.Field, value: Any, where: str, key: str) -> None:
    choices = config_field.metadata.get("choices")
    if choices is not None and value not in choices:
        raise InputError(f"{where}: {key}: expected one of {', '.join(choices)}, got {value!r}")


def _from_dict(cls: type[T], data: Any, where: str, prefix: str) -> T:
    section = prefix.rstrip(".") or "the config"
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: {section}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(prefix + str(name) for name in unknown)}; "
                         f"{section} has {', '.join(names)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {}
    for name, value in data.items():
        values[name] = _checked(hints[name], value, where, prefix + name)
        _check_choice(fields[name], values[name], where, prefix + name)
    return cls(**values)


def config_from_dict(cls: type[T], data: Mapping, *, where: str = "config") -> T:
    """Build dataclass ``cls`` from a nested mapping (missing keys keep their defaults). Unknown keys and values of
    the wrong type raise :class:`InputError` naming the key and what it takes (``where``: the source, e.g. a file)."""
    return _from_dict(cls, data, where, "")


def _flattened(values: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"meshing": {"band": {"cell_mm": 2}}}`` → ``{"meshing.band.cell_mm": 2}`` (dotted keys stay as they are)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flattened(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _from_text(hint: Any, text: str) -> Any:
    """A ``--set`` value for a field of type ``hint``: YAML (scalars, ``[a, b]`` lists), except that a string field
    takes the text as written unless YAML reads it as a string (``012`` stays ``"012"``, ``"a b"`` loses its quotes)."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if hint is str and not isinstance(parsed, str) else parsed


@dataclass(frozen=True)
class Settings:
    """Config values to set over a preset or a run's config, from one source.

    ``values`` maps dotted keys (``"point_cloud.n_dense"``) or nested sections to values; with ``as_text`` the
    values are ``--set`` text, parsed for each field's type. ``where`` names the source in errors (``--set``, a file:
    :func:`implicitseg.io.configs.settings_from_file`).
    """

    where: str
    values: Mapping[str, Any]
    as_text: bool = False

    @classmethod
    def from_assignments(cls, assignments: list[str], where: str = "--set") -> "Settings":
        """``["section.key=value", ...]`` (``--set``, repeatable); a text without ``=`` or a key raises InputError."""
        values: dict[str, str] = {}
        for text in assignments:
            key, sign, value = text.partition("=")
            if not sign or not key.strip() or not all(part.isidentifier() for part in key.strip().split(".")):
                raise InputError(f"{where} {text!r}: expected section.key=value (e.g. point_cloud.n_dense=200000)")
            values[key.strip()] = value.strip()
        return cls(where, values, as_text=True)

    def apply(self, config: T, fixed: Mapping[str, str] | None = None) -> tuple[T, dict[str, Any]]:
        """A copy of ``config`` with these values set, each checked against its field's type, and the values set
        by dotted key. A key under a top-level name of ``fixed`` (name → why it may not change) raises
        :class:`InputError` when its value would change; so do unknown keys and values of the wrong type."""
        config = copy.deepcopy(config)
        applied: dict[str, Any] = {}
        for key, value in _flattened(self.values).items():
            parts = key.split(".")
            owner = config
            for depth, part in enumerate(parts):
                names = [f.name for f in dataclasses.fields(owner)]
                if part not in names:
                    section = ".".join(parts[:depth]) or f"{config.method}'s config"  # type: ignore[attr-defined]
                    raise InputError(f"{self.where}: {key}: no such setting ({section} has {', '.join(names)})")
                hint = typing.get_type_hints(type(owner))[part]
                if depth == len(parts) - 1:
                    break
                if not dataclasses.is_dataclass(hint):
                    raise InputError(f"{self.where}: {key}: {'.'.join(parts[:depth + 1])} is a value, not a section")
                owner = getattr(owner, part)
            if dataclasses.is_dataclass(hint):
                raise InputError(f"{self.where}: {key}: a section; set its keys ({key}.KEY=VALUE)")
            checked = _checked(hint, _from_text(hint, value) if self.as_text else value, self.where, key)
            _check_choice(next(f for f in dataclasses.fields(owner) if f.name == parts[-1]), checked, self.where, key)
            if fixed and parts[0] in fixed and checked != getattr(owner, parts[-1]):
                raise InputError(f"{self.where}: {key}: {fixed[parts[0]]}")
            setattr(owner, parts[-1], checked)
            applied[key] = list(checked) if isinstance(checked, tuple) else checked
        return config, applied


def preset_named(settings: list[Settings]) -> str | None:
    """The preset the last of ``settings`` that names one names (a ``--config`` file's ``preset:``), else None."""
    named = [source.values["preset"] for source in settings if isinstance(source.values.get("preset"), str)]
    return named[-1] if named else None
