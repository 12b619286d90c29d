"""Where a frame can run (``TARGETS``) and the conditions around the robot that the seed systems observe:
co-running processes on the board (AutoScale's interference), other robots on a LAN edge server (E2E-RL's
users) and the accuracy requirement in force (E2E-RL's). The twin draws them per episode
(``Conditions.draw``); each is a state feature (``features.CONTEXT_NAMES``).

Targets (``ActionExtras.target``), each a place the whole frame (or its remote part) runs:

- ``gpu``: every stage on the board's GPU (all local at the chosen clocks).
- ``cpu``: every stage on the board's CPU cores (the GPU idles at its clock): the twin's CPU roofline,
  ``cpu_macs_per_cycle`` x ``cpu_efficiency`` of the profile.
- ``edge``: a LAN edge server; the device runs ``split_index`` stages (-1 = 0: the image goes up) and
  the server the rest, over the LAN's link, its compute and link shared equally with the other robots.
  Without one (``Conditions.edge_server`` None, the default, as the robot's ``edge_server_endpoint`` '')
  the cloud serves this target too.
- ``cloud``: the same with the cloud: the trace's link, the env's ``cloud_gflops``.
- ``''``: DVFO's own frame (the channel split at the model's split, xi of its channels to the cloud).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

TARGETS = ("gpu", "cpu", "edge", "cloud")
# How long the robot's executor waits for the cloud's answer, from the frame's start (its ``deadline_ms``
# parameter's default); the twin finishes a frame without an answer due later (``DeviceTwin.frame_cost``).
CLOUD_DEADLINE_MS = 200.0
REMOTE_TARGETS = ("edge", "cloud")


def check_target(target: str) -> str:
    if target and target not in TARGETS:
        raise ValueError(f"unknown target '{target}'; choose one of {', '.join(TARGETS)} (or '' for DVFO's split)")
    return target


@dataclass(frozen=True)
class EdgeServer:
    """A GPU server on the robots' LAN: nearer than the cloud (short RTT, a fast Wi-Fi link) and smaller.
    Defaults: a workstation GPU (~4 TFLOPS achieved on batch-1 CNNs) behind 802.11ac at ~50 Mbps of goodput
    and a 3 ms round trip; our assumptions, not a measurement."""

    gflops: float = 4000.0
    mbps: float = 50.0
    rtt_ms: float = 3.0

    def __post_init__(self) -> None:
        if self.gflops <= 0 or self.mbps <= 0 or self.rtt_ms < 0:
            raise ValueError("edge server: gflops and mbps must be > 0, rtt_ms >= 0")

    def share(self, others: int) -> Tuple[float, float, float]:
        """(bandwidth Mbps, RTT ms, GFLOPS) one robot gets while ``others`` robots share the server equally."""
        n = 1.0 + max(int(others), 0)
        return self.mbps / n, self.rtt_ms, self.gflops / n


@dataclass(frozen=True)
class Conditions:
    """The ranges the twin draws an episode's conditions from; all-zero / None ranges draw nothing, so an
    env without them meets the same frames (and random numbers) as before they existed.

    ``corunner``: (lo, hi) of the CPU and GPU share other processes hold, each drawn uniformly.
    ``edge_users``: (lo, hi) other robots on the edge server, an integer drawn uniformly.
    ``accuracy_bounds``: accuracy-loss requirements an episode draws one of (None: the reward's bound).
    ``edge_server``: the LAN edge server (None: none; target ``edge`` then uses the cloud).
    """

    corunner: Tuple[float, float] = (0.0, 0.0)
    edge_users: Tuple[int, int] = (0, 0)
    accuracy_bounds: Optional[Sequence[float]] = None
    edge_server: Optional[EdgeServer] = None

    def __post_init__(self) -> None:
        lo, hi = self.corunner
        if not 0.0 <= lo <= hi <= 0.95:
            raise ValueError("corunner range must satisfy 0 <= lo <= hi <= 0.95")
        if not 0 <= self.edge_users[0] <= self.edge_users[1]:
            raise ValueError("edge_users range must satisfy 0 <= lo <= hi")
        if self.accuracy_bounds is not None and (not self.accuracy_bounds or min(self.accuracy_bounds) <= 0):
            raise ValueError("accuracy_bounds must be a non-empty list of positive bounds")

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "Conditions":
        d = dict(d or {})
        server = d.pop("edge_server", None)
        kw: Dict[str, Any] = {k: tuple(v) if isinstance(v, list) and k != "accuracy_bounds" else v
                              for k, v in d.items()}
        if server is not None and server is not False:
            kw["edge_server"] = server if isinstance(server, EdgeServer) else \
                EdgeServer() if server is True else EdgeServer(**server)
        return cls(**kw)

    def draw(self, rng: np.random.Generator) -> Dict[str, float]:
        """One episode's conditions, as the context features name them (``accuracy_requirement`` only when
        drawn: otherwise the reward's bound is in force)."""
        out = {"corunner_cpu_util": 0.0, "corunner_gpu_util": 0.0, "edge_server_users": 0.0}
        lo, hi = self.corunner
        if hi > 0:
            out["corunner_cpu_util"], out["corunner_gpu_util"] = (float(v) for v in rng.uniform(lo, hi, 2))
        if self.edge_users[1] > 0:
            out["edge_server_users"] = float(rng.integers(self.edge_users[0], self.edge_users[1] + 1))
        if self.accuracy_bounds is not None:
            out["accuracy_requirement"] = float(self.accuracy_bounds[int(rng.integers(len(self.accuracy_bounds)))])
        return out
