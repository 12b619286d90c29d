"""mcia (multi-compression-scale inference on cloud-edge-end collaboration, ACM TECS 2024): for many
robots sharing one server, choose each robot's model version and partition point, and share the
server's compute and uplink among them.

What the paper states and we follow: several model versions at different compression scales are
deployed; an RL agent chooses, per device and task, the version and the partition point; the server's
compute and bandwidth are allocated among the devices; the objective trades accuracy against latency,
weighted by whether each task is accuracy- or latency-sensitive (``core/twin/fleet.py``: the setting,
the options, the utility).

Where we differ or choose (the paper's details are not public here):
- The allocation is solved exactly, not learnt: for fixed discrete choices the weighted latency is
  convex in the shares and ``fleet.allocate`` gives its optimum in closed form (water-filled under each
  robot's own link). Learning what can be solved would only add error.
- The choice is learnt by Q-learning with one table shared by every robot (parameter sharing), not a
  deep network: the state a robot acts on has 10 x 4 x 2 x 4 cells. State: its own uplink and round trip
  (10 and 4 bins), whether its task is accuracy-sensitive, and how many other robots offloaded last
  step (0-3+).
  Action: one of its options (version x cut). Reward: its own utility under the exact shares.
  Robots act together, each epsilon-greedy, so each learns a best response to the others' habits.
- Episodes draw 1-4 robots, their weights, and their links from the training trace mix.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dvfo_ros.core.twin.fleet import Floats, Option, Robot, Server, evaluate

BW_EDGES = (1.0, 3.0, 10.0, 20.0, 30.0, 40.0, 50.0, 70.0, 100.0)   # Mbps: 10 bins
RTT_EDGES = (10.0, 30.0, 100.0)                          # ms: 4 bins


def state_of(link_mbps: float, rtt_ms: float, weight: float, others_offloading: int) -> Tuple[int, int, int, int]:
    return (int(np.searchsorted(BW_EDGES, float(link_mbps))), int(np.searchsorted(RTT_EDGES, float(rtt_ms))),
            int(weight >= 0.5), min(int(others_offloading), 3))


class Mcia:
    """One shared Q-table per option set (robots of one board and version list share it)."""

    name = "mcia"

    def __init__(self, epsilon: float = 0.2, seed: int = 0) -> None:
        self.epsilon = float(epsilon)
        self.rng = np.random.default_rng(seed)
        self.q: Dict[Tuple[str, Tuple[str, ...]], np.ndarray] = {}
        self.n: Dict[Tuple[str, Tuple[str, ...]], np.ndarray] = {}

    def _table(self, robot: Robot) -> np.ndarray:
        key = (robot.profile, tuple(robot.versions))
        if key not in self.q:
            self.q[key] = np.zeros((len(BW_EDGES) + 1, len(RTT_EDGES) + 1, 2, 4, len(robot.options)))
            self.n[key] = np.zeros_like(self.q[key])
        return self.q[key]

    def choose(self, robots: Sequence[Robot], links_mbps: Floats, rtts_ms: Floats, last: Optional[Sequence[Option]],
               explore: bool = False) -> List[int]:
        """Each robot's option index, from the others' last choices (None: nobody offloaded yet). In training
        an option never tried in a state is tried first; deployed, a state never met runs all local."""
        out = []
        offloading = [0] * len(robots) if last is None else [int(not o.local) for o in last]
        total = sum(offloading) if last is not None else 0
        for i, (r, link, rtt) in enumerate(zip(robots, links_mbps, rtts_ms)):
            cell = state_of(link, rtt, r.weight, total - (offloading[i] if last is not None else 0))
            q = self._table(r)[cell]
            n = self.n[(r.profile, tuple(r.versions))][cell]
            if explore and self.rng.random() < self.epsilon:
                out.append(int(self.rng.integers(len(q))))
            elif explore:
                out.append(int(np.argmax(np.where(n > 0, q, np.inf))))
            elif n.sum() == 0:
                out.append(next(k for k, o in enumerate(r.options) if o.local and o.version == r.versions[0]))
            else:
                out.append(int(np.argmax(np.where(n > 0, q, -np.inf))))
        return out

    def learn(self, robots: Sequence[Robot], links_mbps: Floats, rtts_ms: Floats, last: Optional[Sequence[Option]],
              picks: Sequence[int], rewards: Floats) -> None:
        offloading = [0] * len(robots) if last is None else [int(not o.local) for o in last]
        total = sum(offloading) if last is not None else 0
        for i, (r, link, rtt, a, u) in enumerate(zip(robots, links_mbps, rtts_ms, picks, rewards)):
            cell = state_of(link, rtt, r.weight, total - (offloading[i] if last is not None else 0))
            q, n = self._table(r)[cell], self.n[(r.profile, tuple(r.versions))][cell]
            n[a] += 1                               # the sample mean of a choice's utility in this state
            q[a] += (float(u) - q[a]) / n[a]        # (a one-step target: a choice's pay is immediate)

    def train(self, episodes: int, server: Server, link_sampler: Any, robot_sampler: Any, steps: int = 30,
              progress: Optional[Any] = None) -> Dict[str, float]:
        """``episodes`` of ``steps`` decisions; ``robot_sampler(rng) -> robots``, ``link_sampler(rng, n, steps)``
        -> [steps, n] (Mbps, RTT ms) per robot."""
        us: List[float] = []
        for ep in range(episodes):
            robots = robot_sampler(self.rng)
            links = link_sampler(self.rng, len(robots), steps)
            last: Optional[List[Option]] = None
            for t in range(steps):
                mbps, rtt = links[t][:, 0], links[t][:, 1]
                picks = self.choose(robots, mbps, rtt, last, explore=True)
                choice = [r.options[a] for r, a in zip(robots, picks)]
                u, _ = evaluate(robots, choice, mbps, rtt, server)
                self.learn(robots, mbps, rtt, last, picks, u)
                last = choice
                us.append(float(u.mean()))
            if progress is not None:
                progress(ep)
        return {"episodes": episodes, "utility_last": float(np.mean(us[-steps * 10:])) if us else math.nan}
