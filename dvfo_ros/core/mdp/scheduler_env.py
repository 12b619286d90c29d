"""The shared server's scheduling MDP: every ``interval_s`` the scheduler sets batch size x instances.

One contract for every server scheduler (``heuristic``, ``fixed:B``, ``bcedge``), in the twin
(``SchedulerEnv`` over ``ServerQueue``) and in ``dvfo-cloud`` (which builds the same observation from
its own queue with ``scheduler_obs``):

state (``OBS_NAMES``), each scaled to about [0, 1]:
  queue      requests waiting, / 16
  load       arrival rate over the last interval x one-instance batch-1 run time (1.0 = one instance
             running single requests back to back is exactly busy)
  slack      the least time left to any queued request's deadline, / 100 ms (1.0 if none waits)
  util       instance-ms the last interval's batches took / (interval x instances)
  batch, instances   the setting in force, as a fraction of the largest

action: index into ``ACTIONS`` = BATCHES x INSTANCES (B in 1, 2, 4, 8; c in 1..4).

utility (our choice; BCEdge "trades throughput against latency under per-request SLOs" but its
formula is not public here), per interval, of the requests that ran or were dropped in it::

    U = met / done  -  beta * mean(min(latency / budget, 2))     (a dropped request counts latency = budget)

the first term is the goodput share (throughput that met its SLO, over the offered requests), the
second the latency price (``beta`` = 0.5): with spare capacity it prefers the setting that answers
soonest; under load the one that keeps up. Range about [-1, 1]; an interval with nothing done is 0.

Load (our choice): ``robots`` varies over an episode; every ``hold`` intervals a new count is drawn
log-uniformly from 1..``max_robots``, so one episode meets light and heavy regimes. Each robot
streams at ``fps`` with a server-side budget drawn once per robot (``RobotLoad``).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dvfo_ros.core.twin.server import (BATCHES, INSTANCES, RobotLoad, Served, ServerProfile, ServerQueue,
                                       load_server_profile)

OBS_NAMES: Tuple[str, ...] = ("queue", "load", "slack", "util", "batch", "instances")
ACTIONS: Tuple[Tuple[int, int], ...] = tuple((b, c) for b in BATCHES for c in INSTANCES)
BETA = 0.5


def action_index(batch: int, instances: int) -> int:
    return ACTIONS.index((int(batch), int(instances)))


def utility(served: Served, beta: float = BETA) -> float:
    if served.done == 0:
        return 0.0
    ran = np.minimum(np.asarray(served.latency_ms) / np.maximum(np.asarray(served.budget_ms), 1e-6), 2.0)
    lat = (float(ran.sum()) + served.dropped) / served.done
    return served.met / served.done - beta * lat


def scheduler_obs(queue_len: int, arrivals_per_s: float, min_slack_ms: float, util: float,
                  batch: int, instances: int, one_ms: float) -> np.ndarray:
    """The state every scheduler reads, from the twin's queue or the real server's."""
    slack = 1.0 if not math.isfinite(min_slack_ms) else min_slack_ms / 100.0
    return np.array([min(queue_len / 16.0, 4.0), min(arrivals_per_s * one_ms / 1000.0, 8.0),
                     float(np.clip(slack, -1.0, 1.0)), float(np.clip(util, 0.0, 1.0)),
                     batch / max(BATCHES), instances / max(INSTANCES)], dtype=np.float32)


class SchedulerEnv:
    """gymnasium-style: reset(seed) -> (obs, info); step(action index) -> (obs, U, terminated, truncated, info)."""

    def __init__(self, profile: Any = "cpu_resnet18", max_robots: int = 16, robots: Optional[int] = None,
                 fps: float = 15.0, budget_ms: Tuple[float, float] = (40.0, 100.0), interval_s: float = 0.5,
                 hold: int = 8, episode_intervals: int = 40, window_ms: float = 3.0, seed: int = 0) -> None:
        self.profile: ServerProfile = profile if isinstance(profile, ServerProfile) else load_server_profile(profile)
        self.max_robots = int(max_robots)
        self.fixed_robots = robots
        self.fps, self.budget_ms, self.window_ms = float(fps), budget_ms, float(window_ms)
        self.interval_ms = 1000.0 * float(interval_s)
        self.hold, self.episode_intervals = int(hold), int(episode_intervals)
        self.n_actions = len(ACTIONS)
        self.obs_dim = len(OBS_NAMES)
        self._seed = seed
        self.reset(seed)

    def _draw_robots(self) -> int:
        if self.fixed_robots is not None:
            return int(self.fixed_robots)
        return int(np.clip(round(math.exp(self.rng.uniform(0.0, math.log(self.max_robots)))), 1, self.max_robots))

    def reset(self, seed: Optional[int] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
        if seed is not None:
            self._seed = seed
        self.rng = np.random.default_rng(self._seed)
        self.load = RobotLoad(self.fps, self.budget_ms, seed=int(self.rng.integers(1 << 31)))
        self.queue = ServerQueue(self.profile, self.window_ms)
        self.t = 0
        self.robots = self._draw_robots()
        self.setting = (1, 1)
        self.last = Served()
        self._seed += 1
        return self._obs(0), {"robots": self.robots}

    def _obs(self, arrived: int) -> np.ndarray:
        util = self.last.busy_ms / (self.interval_ms * self.setting[1])
        return scheduler_obs(len(self.queue.queue), arrived / (self.interval_ms / 1000.0), self.queue.min_slack_ms(),
                             util, self.setting[0], self.setting[1], self.profile.run_ms(1, 1))

    def step(self, action: int) -> Tuple[np.ndarray, float, bool, bool, Dict[str, Any]]:
        batch, instances = ACTIONS[int(action)]
        start = self.t * self.interval_ms
        arrivals = self.load.arrivals(self.robots, start, start + self.interval_ms)
        served = self.queue.run(arrivals, start + self.interval_ms, batch, instances)
        self.setting, self.last = (batch, instances), served
        u = utility(served)
        info = {"robots": self.robots, "served": served, "utility": u}
        self.t += 1
        if self.t % self.hold == 0:
            self.robots = self._draw_robots()
        return self._obs(served.arrived), u, False, self.t >= self.episode_intervals, info


def run_scheduler(env: SchedulerEnv, choose: Any, intervals: int, seed: int = 0) -> Tuple[List[Served], List[float]]:
    """Drive ``env`` for ``intervals`` with ``choose(obs) -> action index``; the per-interval results and utilities."""
    obs, _ = env.reset(seed)
    served: List[Served] = []
    us: List[float] = []
    for _ in range(intervals):
        obs, u, _, truncated, info = env.step(choose(obs))
        served.append(info["served"])
        us.append(u)
        if truncated:
            obs, _ = env.reset()
    return served, us


def mean_utility(us: Sequence[float]) -> float:
    return float(np.mean(us)) if len(us) else 0.0
