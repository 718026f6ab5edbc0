"""Config files: a run's resolved config written as plain YAML (no Python tags), atomically; YAML mappings read
back with one-line errors; a ``--config`` file as :class:`~implicitseg.config.Settings`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from implicitseg.config import Settings, config_to_dict
from implicitseg.errors import InputError
from implicitseg.io.atomic import write_text


def save_config(path: str | os.PathLike, config: Any) -> None:
    """Write the fully resolved config (any method's config dataclass) as plain YAML, atomically."""
    write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping; a missing or broken file raises :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"{path}: invalid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a YAML mapping")
    return data


def settings_from_file(path: str | os.PathLike) -> Settings:
    """A YAML file holding part or all of a config mapping (``--config``), as settings over a preset or a run."""
    return Settings(str(path), load_yaml(path))
