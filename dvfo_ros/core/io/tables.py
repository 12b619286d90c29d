"""The one table formatter every command prints with (a thin layer over ``tabulate``)."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Union


def format_table(rows: Iterable[Sequence[Any]], headers: Sequence[str] = (),
                 floatfmt: Union[str, Sequence[str]] = "g", align: Optional[Sequence[str]] = None,
                 fmt: str = "simple", indent: str = "", missing: str = "-", numparse: bool = True) -> str:
    """``rows`` as a text table.

    ``floatfmt``: one format spec for every float, or one per column (e.g. ``("", ".4f", ".1f")``);
    ``align``: one of "left", "right", "center", "decimal" per column (default: numbers right, text left);
    ``fmt``: a tabulate table format ("simple", "psql", "plain", ...); ``indent`` prefixes every line;
    ``missing`` stands in for None; ``numparse=False`` prints strings that look like numbers as given.
    """
    from tabulate import tabulate
    text = tabulate([list(r) for r in rows], headers=list(headers), tablefmt=fmt, floatfmt=floatfmt,
                    colalign=tuple(align) if align is not None else None, missingval=missing,
                    disable_numparse=not numparse)
    return "\n".join(indent + line for line in text.splitlines()) if indent else text
