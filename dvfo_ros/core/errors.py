"""The project's one error base class and the one way to shorten an exception to a line.

Every exception a user may see from a command (a bad profile, a corrupt checkpoint, a missing bag...)
derives from ``DvfoError`` as well as from the builtin it always derived from (``ValueError``,
``RuntimeError``), so ``except ValueError`` keeps working and a CLI can catch them all in one place.
"""
from __future__ import annotations

from typing import Optional


class DvfoError(Exception):
    """A user-facing error: one line, no traceback."""


def one_line(exc: BaseException, limit: Optional[int] = 200) -> str:
    """The first non-empty line of ``str(exc)``, else the exception's type name; at most ``limit`` characters
    (``None``: no limit)."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return text if limit is None else text[:limit]
