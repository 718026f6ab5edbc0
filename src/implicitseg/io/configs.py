"""A config written next to a run's outputs: plain YAML (no Python tags), atomically.

Reading needs no atomic I/O and stays with the schema (:func:`implicitseg.config.load_yaml`,
:func:`implicitseg.config.config_from_dict`)."""

from __future__ import annotations

import os
from typing import Any

import yaml

from implicitseg.config import config_to_dict
from implicitseg.io.atomic import write_text


def save_config(path: str | os.PathLike, config: Any) -> None:
    """Write the fully resolved config (any method's config dataclass) as plain YAML, atomically."""
    write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
