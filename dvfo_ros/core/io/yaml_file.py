"""Reading a user's YAML file (a twin profile, a ROS 2 params file) with its failures as one line."""
from __future__ import annotations

from typing import Any, Type

import yaml

from dvfo_ros.core.errors import one_line


def read_yaml(path: str, what: str, error: Type[Exception]) -> Any:
    """The parsed document of ``path``. An unreadable file or invalid YAML raises ``error`` with one line
    that names ``what`` the file is ("profile", "params file") and the path."""
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {one_line(exc)}") from None
