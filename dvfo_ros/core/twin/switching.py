"""What changing clocks costs a frame: a stall while each domain re-locks, then the old clock until the new
operating point settles. Opt-in (a profile's ``switch_cost``, or ``--switch-cost kang2026``): without it a
frame's cost never depends on the last frame's clocks, and every shipped figure stays as it was.

The model, per frame whose command moves domain d (cpu, gpu, emc) from f_old to f_new::

    stall  = sum over moved domains of stall_us[d]            (nothing runs; the board idles at f_new)
    for t < settle_ms[d] the domain still runs at f_old, then at f_new

Between the sorted settle times the frame runs at a mixed operating point k (the domains not yet settled at
their old clock) whose noise-free (busy time T_k, busy energy E_k) the twin prices. Work progresses at 1/T_k
per ms and draws E_k/T_k watts, so the frame ends when the progress sums to 1 (``settle``). Our choice: the
whole frame (transfer and cloud wait included) is taken to progress uniformly at that rate, so a switch
before an offloaded frame is charged a little more than a board whose link does not care about its clocks.

The published numbers (``KANG_2026``): Kang (2026), arXiv:2606.16106, measured on an Orin Nano: each
domain stalls under 100 us (we charge 100 us, the bound) and the new operating point takes effect after
about 1 ms (CPU), 5 ms (GPU) and 8 ms (EMC). We apply them to every board (our assumption: the other boards
were not measured).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

DOMAINS = ("cpu", "gpu", "emc")


@dataclass(frozen=True)
class SwitchCost:
    """Per-domain stall (us) and settle time (ms) of a clock change. All zero: switching is free."""

    stall_us: Dict[str, float] = field(default_factory=lambda: {d: 0.0 for d in DOMAINS})
    settle_ms: Dict[str, float] = field(default_factory=lambda: {d: 0.0 for d in DOMAINS})

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "SwitchCost":
        """From a profile's ``switch_cost: {stall_us: {cpu: .., gpu: .., emc: ..}, settle_ms: {...}}``
        (a missing domain costs 0); ``ValueError`` on unknown keys or negative numbers."""
        data = dict(data or {})
        unknown = sorted(set(data) - {"stall_us", "settle_ms"})
        if unknown:
            raise ValueError(f"switch_cost: unknown keys {', '.join(unknown)} (stall_us, settle_ms)")
        parts: Dict[str, Dict[str, float]] = {}
        for key in ("stall_us", "settle_ms"):
            given = dict(data.get(key) or {})
            bad = sorted(set(given) - set(DOMAINS))
            if bad:
                raise ValueError(f"switch_cost.{key}: unknown domains {', '.join(bad)} (cpu, gpu, emc)")
            try:
                parts[key] = {d: float(given.get(d, 0.0)) for d in DOMAINS}
            except (TypeError, ValueError):
                raise ValueError(f"switch_cost.{key} values must be numbers") from None
            if any(v < 0 for v in parts[key].values()):
                raise ValueError(f"switch_cost.{key} values must be >= 0")
        return cls(parts["stall_us"], parts["settle_ms"])

    @property
    def free(self) -> bool:
        return not any(self.stall_us.values()) and not any(self.settle_ms.values())

    def to_dict(self) -> Dict[str, Dict[str, float]]:
        return {"stall_us": dict(self.stall_us), "settle_ms": dict(self.settle_ms)}


KANG_2026 = SwitchCost(stall_us={"cpu": 100.0, "gpu": 100.0, "emc": 100.0},
                       settle_ms={"cpu": 1.0, "gpu": 5.0, "emc": 8.0})
NAMED = {"none": SwitchCost(), "kang2026": KANG_2026}


def named(name: str) -> SwitchCost:
    """A switch cost by name (``none``, ``kang2026``)."""
    if name not in NAMED:
        raise ValueError(f"unknown switch cost '{name}'; choose one of {', '.join(NAMED)}")
    return NAMED[name]


def segments(cost: SwitchCost, moved: Sequence[bool]) -> Tuple[List[float], List[Tuple[bool, ...]]]:
    """The settle boundaries (ms, ascending) and, for each segment before and between them, which domains
    still run at their old clock (a tuple per domain); the last segment (after the last boundary) is all new."""
    pending = sorted((cost.settle_ms[d], i) for i, d in enumerate(DOMAINS) if moved[i] and cost.settle_ms[d] > 0)
    bounds: List[float] = []
    olds: List[Tuple[bool, ...]] = []
    for j, (t, _) in enumerate(pending):
        still = {i for _, i in pending[j:]}
        bounds.append(t)
        olds.append(tuple(i in still for i in range(len(DOMAINS))))
    return bounds, olds


def settle(bounds: Sequence[float], times_ms: Sequence[Any], energies_j: Sequence[Any]) -> Tuple[Any, Any]:
    """(busy ms, busy J) of a frame that runs segment k (``times_ms[k]``, ``energies_j[k]``: that operating
    point's noise-free busy time and energy for the whole frame) up to ``bounds[k]`` and the last one after;
    works elementwise on arrays (every action at once, for the oracle)."""
    done = np.zeros(np.shape(times_ms[-1]))
    elapsed = np.zeros_like(done)
    energy = np.zeros_like(done)
    start = 0.0
    for k, end in enumerate(bounds):
        t_k, e_k = np.asarray(times_ms[k], float), np.asarray(energies_j[k], float)
        span = np.minimum(end - start, np.maximum(1.0 - done, 0.0) * t_k)   # the frame may end in this segment
        done = done + span / t_k
        elapsed = elapsed + span
        energy = energy + span * e_k / t_k
        start = end
    t_n, e_n = np.asarray(times_ms[-1], float), np.asarray(energies_j[-1], float)
    rest = np.maximum(1.0 - done, 0.0)
    return elapsed + rest * t_n, energy + rest * e_n


def switched_cost(cost: SwitchCost, old_levels: Sequence[int], new_levels: Sequence[int],
                  price: Callable[[Sequence[int]], Tuple[float, float]],
                  idle_w: float) -> Tuple[float, float]:
    """(busy ms, busy J) of one frame at ``new_levels`` after ``old_levels`` (cpu, gpu, emc level indices);
    ``price(levels)``: the noise-free (busy ms, busy J) of the frame at those clocks; ``idle_w``: the board's
    idle power during the stall."""
    moved = [int(o) != int(n) for o, n in zip(old_levels, new_levels)]
    stall_ms = sum(cost.stall_us[d] for d, m in zip(DOMAINS, moved) if m) / 1e3
    bounds, olds = segments(cost, moved)
    points = [tuple(int(o) if old else int(n) for o, n, old in zip(old_levels, new_levels, mask)) for mask in olds]
    priced = [price(p) for p in points] + [price(tuple(int(n) for n in new_levels))]
    t, e = settle(bounds, [p[0] for p in priced], [p[1] for p in priced])
    return float(t) + stall_ms, float(e) + idle_w * stall_ms / 1e3


def switched_tables(cost: SwitchCost, old_levels: Sequence[int], times_ms: np.ndarray, energies_j: np.ndarray,
                    idle_w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``switched_cost`` for every joint action at once: ``times_ms`` / ``energies_j`` are the noise-free busy
    tables shaped [cpu, gpu, emc, xi] (the action space's branches), ``idle_w`` the idle power at each
    action's clocks (same shape). A domain an action leaves where it was neither stalls nor settles."""
    shape = times_ms.shape
    grid = np.indices(shape)
    old = [int(x) for x in old_levels]
    moved = [grid[i] != old[i] for i in range(len(DOMAINS))]
    stall_ms = sum(cost.stall_us[d] * moved[i] for i, d in enumerate(DOMAINS)) / 1e3
    bounds, olds = segments(cost, [True] * len(DOMAINS))   # an unmoved domain's old clock is its new one
    t_seg, e_seg = [], []
    for mask in olds:
        idx = tuple(np.full(shape, old[i]) if mask[i] else grid[i] for i in range(len(DOMAINS))) + (grid[3],)
        t_seg.append(times_ms[idx])
        e_seg.append(energies_j[idx])
    t, e = settle(bounds, t_seg + [times_ms], e_seg + [energies_j])
    return t + stall_ms, e + idle_w * stall_ms / 1e3
