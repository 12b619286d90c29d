"""How the DVFO agent (and the baselines built on it) explore: epsilon-greedy over the joint action.

The modes are described in ``dvfo.py``'s docstring ("Exploration"); this file holds the draw only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

MODES = ("joint", "mixed", "branch", "independent")


def explore(a: np.ndarray, learned: Sequence[int], *, eps: float, rng: np.random.Generator,
            branches: Sequence[int], mode: str, clock_share: float, local_share: float, xi: int) -> np.ndarray:
    """``a`` (the greedy action) with the exploratory changes of one frame applied in place.

    ``learned``: the branches the policy chooses (the others are pinned); ``xi``: the offload branch,
    whose level 0 is running locally. ``mixed``: with probability ``clock_share`` random clocks at the
    greedy xi, else a random joint action whose xi is local with probability ``local_share`` (else a
    uniform offload level), so the local slice is explored even while the greedy policy offloads."""
    if not learned:
        return a
    n = branches
    if mode == "independent":                             # every branch on its own coin
        for d in learned:
            if rng.random() < eps:
                a[d] = rng.integers(n[d])
    elif rng.random() < eps:
        clocks = [d for d in learned if d != xi]
        if mode == "mixed" and rng.random() < clock_share and clocks:   # random clocks at the greedy xi
            for d in clocks:
                a[d] = rng.integers(n[d])
        elif mode in ("joint", "mixed"):                  # a random joint action (offload_only: xi alone)
            for d in learned:
                a[d] = rng.integers(n[d])
            if mode == "mixed" and xi in learned and n[xi] > 1:
                a[xi] = 0 if rng.random() < local_share else rng.integers(1, n[xi])
        else:                                             # one branch moved, the others greedy
            d = learned[int(rng.integers(len(learned)))]
            a[d] = rng.integers(n[d])
    return a
