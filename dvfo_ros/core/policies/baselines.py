"""Classic baselines behind the policy interface: what a robot does today, and the two halves of DVFO.

- ``static``: a fixed command (``command={"cpu_freq_hz": ..., "offload_ratio": ...}``).
- ``edge_only`` / ``cloud_only``: max clocks, xi = 0 / xi = 1.
- ``cpu_only``: the whole network on the board's CPU at its top clock (the GPU at its lowest): AutoScale's
  "mobile CPU" baseline. ``image_upload``: the image to the cloud, which runs the whole network (target cloud,
  split 0): its "cloud offloading" baseline.
- ``max_freq``: jetson_clocks (every clock at its top level) with a fixed xi (default 0.5).
- ``ondemand``: the Linux ondemand rule on each clock domain, xi fixed (default 0: a stock device).
- ``dvfs_only``: DVFO's agent with the xi branch pinned to 0 (clocks learnt, no offload).
- ``offload_only``: clocks left to the ondemand rule, xi learnt by DVFO's agent.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from dvfo_ros.core.policies.base import Policy, register
from dvfo_ros.core.policies.dvfo import DvfoAgent
from dvfo_ros.core.mdp import ActionExtras, ActionSpace, feature_value


@register("static")
class StaticPolicy(Policy):
    """Always the same command (nearest table levels); missing clocks mean max, missing xi means 0."""

    reads_importance = False

    def __init__(self, action_space: ActionSpace, command: Optional[Dict[str, float]] = None,
                 **fields: float) -> None:
        super().__init__(action_space)
        cmd = dict(command or {})
        for key in ("cpu_freq_hz", "gpu_freq_hz", "emc_freq_hz", "offload_ratio"):
            if key in fields:
                cmd[key] = fields.pop(key)
        if fields:
            raise ValueError(f"policy 'static' got unknown options: {', '.join(sorted(fields))}")
        self.command = cmd
        self._action = action_space.from_command(cmd)

    def act(self, state: np.ndarray) -> np.ndarray:
        return self._action.copy()

    def config(self) -> Dict[str, Any]:
        return {"command": dict(self.command)}


class _FixedMax(Policy):
    offload_ratio = 0.0
    reads_importance = False

    def __init__(self, action_space: ActionSpace, offload_ratio: Optional[float] = None) -> None:
        super().__init__(action_space)
        if offload_ratio is not None:
            self.offload_ratio = float(offload_ratio)
        self._action = action_space.max_action(self.offload_ratio)

    def act(self, state: np.ndarray) -> np.ndarray:
        return self._action.copy()


@register("edge_only")
class EdgeOnlyPolicy(_FixedMax):
    """Whole DNN on the device at max clocks."""

    def __init__(self, action_space: ActionSpace) -> None:
        super().__init__(action_space, 0.0)


@register("cloud_only")
class CloudOnlyPolicy(_FixedMax):
    """Every channel at the split offloaded (the head still runs on the device) at max clocks."""

    def __init__(self, action_space: ActionSpace) -> None:
        super().__init__(action_space, 1.0)


class _FixedTarget(Policy):
    """One target, always (``mdp.TARGETS``), at fixed clock levels."""

    reads_importance = False
    extras = ("split_index", "target")
    placement = ActionExtras()

    def __init__(self, action_space: ActionSpace, levels: Optional[np.ndarray] = None) -> None:
        super().__init__(action_space)
        b = action_space.branches
        self._action = np.array([b[0] - 1, 0, b[2] - 1, 0]) if levels is None else levels

    def act(self, state: np.ndarray) -> np.ndarray:
        return self._action.copy()

    def decide(self, state: np.ndarray) -> Tuple[np.ndarray, ActionExtras]:
        return self._action.copy(), self.placement


@register("cpu_only")
class CpuOnlyPolicy(_FixedTarget):
    """Every stage on the board's CPU at its top clock, memory at its top, the GPU idling at its lowest."""

    placement = ActionExtras(target="cpu")


@register("image_upload")
class ImageUploadPolicy(_FixedTarget):
    """The image to the cloud, which runs the whole network; the board waits at its top CPU clock (the upload)
    and its lowest GPU and memory clocks."""

    placement = ActionExtras(split_index=0, target="cloud")

    def __init__(self, action_space: ActionSpace) -> None:
        super().__init__(action_space, np.array([action_space.branches[0] - 1, 0, 0, 0]))


@register("max_freq")
class MaxFreqPolicy(_FixedMax):
    """jetson_clocks: every clock pinned to its top level; the offload share stays where it is set."""

    offload_ratio = 0.5


def ondemand_levels(state: np.ndarray, action_space: ActionSpace, up_threshold: float = 0.8) -> np.ndarray:
    """Linux ondemand per clock domain: load above ``up_threshold`` -> top level, else the lowest
    level >= load * f_max. Load is measured over the whole frame interval (busy / interval)."""
    out = np.zeros(3, np.int64)
    latency = feature_value(state, "last_latency_ms")
    interval = feature_value(state, "time_since_action_ms")
    duty = min(1.0, latency / interval) if interval > 0 else 1.0
    for d, (dom, table) in enumerate(zip(("cpu", "gpu", "emc"), action_space.tables()[:3])):
        if interval <= 0:                      # nothing measured yet: start at the top
            out[d] = len(table) - 1
            continue
        load = feature_value(state, f"{dom}_util") * duty
        if load > up_threshold:
            out[d] = len(table) - 1
        else:
            target = load * table[-1]
            out[d] = int(np.searchsorted(np.asarray(table), target, side="left"))
            out[d] = min(out[d], len(table) - 1)
    return out


@register("ondemand")
class OndemandPolicy(Policy):
    """The Linux ondemand governor's rule on CPU, GPU and EMC; fixed offload ratio."""

    reads_importance = False

    def __init__(self, action_space: ActionSpace, offload_ratio: float = 0.0, up_threshold: float = 0.8) -> None:
        super().__init__(action_space)
        self.up_threshold = float(up_threshold)
        self._xi = int(action_space.from_command({"offload_ratio": offload_ratio})[3])

    def act(self, state: np.ndarray) -> np.ndarray:
        return np.append(ondemand_levels(state, self.action_space, self.up_threshold), self._xi)


@register("dvfs_only")
class DvfsOnlyAgent(DvfoAgent):
    """DVFO's learner choosing the clocks only; everything runs on the device (xi = 0)."""

    def __init__(self, action_space: ActionSpace, **kw: Any) -> None:
        kw["fixed"] = {"xi": int(action_space.from_command({"offload_ratio": 0.0})[3])}
        super().__init__(action_space, **kw)


@register("offload_only")
class OffloadOnlyAgent(DvfoAgent):
    """DVFO's learner choosing xi only; the clocks follow the device's default (ondemand) governor."""

    def __init__(self, action_space: ActionSpace, **kw: Any) -> None:
        kw["fixed"] = {"cpu": 0, "gpu": 0, "emc": 0}      # not learnt; overwritten by the rule in act()
        super().__init__(action_space, **kw)

    def act(self, state: np.ndarray) -> np.ndarray:
        clocks = ondemand_levels(state, self.action_space)
        greedy = self.greedy(state, fixed={d: int(clocks[d]) for d in range(3)})   # best xi at these clocks
        a = self._explore(greedy.copy(), self._learned)
        self.last_explored = bool(np.any(a != greedy))
        return a
