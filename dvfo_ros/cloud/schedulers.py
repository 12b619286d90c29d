"""The cloud server's schedulers behind one interface: ``decide(obs) -> (batch size, instances)``.

``dvfo-cloud --scheduler`` and ``dvfo-bench cloud`` name them the same way:

  heuristic         what ``dvfo-cloud`` always did: batches of up to 8, one instance, a 3 ms window
  fixed:B[,C]       batches of up to B on C instances (C = 1 if left out), never changed
  bcedge[:PATH]     the learnt BCEdge scheduler (``dvfo_ros.cloud.bcedge``), from a checkpoint; without
                    one, trained once in the server twin for ``profile`` and cached per user

Each reads the observation of ``dvfo_ros.core.mdp.scheduler_env`` once per interval.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from dvfo_ros.core.twin.server import BATCHES, INSTANCES


class Scheduler:
    name = "scheduler"

    def decide(self, obs: np.ndarray) -> Tuple[int, int]:
        raise NotImplementedError


class FixedScheduler(Scheduler):
    def __init__(self, batch: int, instances: int = 1, name: str = "") -> None:
        self.setting = (int(batch), int(instances))
        self.name = name or (f"fixed:{batch}" if instances == 1 else f"fixed:{batch},{instances}")

    def decide(self, obs: np.ndarray) -> Tuple[int, int]:
        return self.setting


class LearntScheduler(Scheduler):
    def __init__(self, agent: Any, name: str = "bcedge") -> None:
        self.agent, self.name = agent, name

    def decide(self, obs: np.ndarray) -> Tuple[int, int]:
        return tuple(self.agent.decide(obs))  # type: ignore[return-value]


def make_scheduler(spec: str, agent: Optional[Any] = None, profile: str = "cpu_resnet18") -> Scheduler:
    """A scheduler from its command-line name; a bad name is a one-line ValueError."""
    spec = spec.strip()
    if spec == "heuristic":
        return FixedScheduler(max(BATCHES), 1, name="heuristic")
    if spec.startswith("fixed:"):
        try:
            parts = [int(v) for v in spec[6:].split(",")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2) or parts[0] < 1 or parts[0] > 64 or (len(parts) == 2 and
                                                                          parts[1] not in INSTANCES):
            raise ValueError(f"--scheduler {spec!r}: use fixed:B or fixed:B,C with B in 1..64 and C in "
                             f"{INSTANCES[0]}..{INSTANCES[-1]}")
        return FixedScheduler(parts[0], parts[1] if len(parts) == 2 else 1)
    if spec == "bcedge" or spec.startswith("bcedge:"):
        if agent is None:
            from dvfo_ros.cloud.bcedge import BCEdge, cached_bcedge
            agent = BCEdge.load(spec[7:]) if spec[7:] else cached_bcedge(profile)
        return LearntScheduler(agent)
    raise ValueError(f"--scheduler {spec!r}: choose heuristic, fixed:B[,C] or bcedge:PATH")


def evaluate(scheduler: Scheduler, profile: Any, robots: int, intervals: int = 60, seed: int = 1000,
             **env_options: Any) -> Dict[str, Any]:
    """``scheduler`` on the server twin with ``robots`` streaming for ``intervals``: ``summarise``'s figures
    plus the mean utility and the settings it chose (same seed = same arrivals for every scheduler)."""
    from dvfo_ros.core.mdp.scheduler_env import SchedulerEnv, action_index, mean_utility, run_scheduler
    from dvfo_ros.core.twin.server import summarise

    env = SchedulerEnv(profile, robots=robots, episode_intervals=intervals, seed=seed, **env_options)
    chosen: Dict[str, int] = {}

    def choose(obs: np.ndarray) -> int:
        b, c = scheduler.decide(obs)
        chosen[f"{b},{c}"] = chosen.get(f"{b},{c}", 0) + 1
        return action_index(min(BATCHES, key=lambda x: abs(x - b)), c)

    served, us = run_scheduler(env, choose, intervals, seed=seed)
    row = summarise(served, env.interval_ms / 1000.0, robots)
    row.update(utility=mean_utility(us), settings=dict(sorted(chosen.items(), key=lambda kv: -kv[1])))
    return row


def best_fixed(profile: Any, robots: int, intervals: int = 60, seed: int = 1000,
               **env_options: Any) -> Dict[str, Any]:
    """The best of every fixed (B, c) at this load, judged on the same arrivals: the reference a learnt
    scheduler must come close to in each load regime."""
    rows = [evaluate(FixedScheduler(b, c), profile, robots, intervals, seed, **env_options)
            for b in BATCHES for c in INSTANCES]
    return max(rows, key=lambda r: r["utility"])
