"""Class ids for standard result messages (vision_msgs): the model artifact's class names when it has
them, else the class index as a string."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple


def class_names(meta: dict) -> Optional[List[str]]:
    """The model's class names (artifact meta ``class_names``), or None when it carries none."""
    names = meta.get("class_names")
    if not names:
        return None
    return [str(n) for n in names]


def class_id(index: int, names: Optional[Sequence[str]]) -> str:
    if names is not None and 0 <= index < len(names):
        return names[index]
    return str(index)


def hypotheses(classes: Sequence[int], scores: Sequence[float],
               names: Optional[Sequence[str]]) -> List[Tuple[str, float]]:
    """(class_id, score) per top-k entry, in the order given (best first)."""
    return [(class_id(int(c), names), float(s)) for c, s in zip(classes, scores)]
