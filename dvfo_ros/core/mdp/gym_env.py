"""The twin as a ``gymnasium.Env``, so other people's RL code trains against our twin unchanged.

    import gymnasium, dvfo_ros.core.mdp
    env = gymnasium.make("dvfo_ros/DvfoTwin-v0", profile="tx2", model="mobilenet_v2", trace="lte")
    env = gymnasium.make("dvfo_ros/ServerScheduler-v0", profile="cpu_resnet18")   # the shared server's scheduler

``ServerScheduler-v0`` is ``scheduler_env.SchedulerEnv`` (observation ``OBS_NAMES``, action an index into
``ACTIONS``: batch size x instances, reward the interval's utility); the rest of this docstring is the twin's.

Observation: the contract's state vector (``features.STATE_NAMES``, float32, clipped to
[-STATE_CLIP, STATE_CLIP]). Action: ``MultiDiscrete`` levels ``[cpu, gpu, emc, xi]`` of the
action space. Reward: ``reward.reward`` of the frame. An episode is ``episode_frames`` camera frames
and ends by truncation (the twin never reaches a terminal state). ``info`` carries the frame's
energy, latency, accuracy loss and command, as ``SimEnv.step`` reports them.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dvfo_ros.core.mdp.env import SimEnv
from dvfo_ros.core.mdp.features import STATE_CLIP, STATE_DIM

ENV_ID = "dvfo_ros/DvfoTwin-v0"


class DvfoTwinEnv(gym.Env):
    """``SimEnv`` behind gymnasium's API (reset -> (obs, info), step -> 5-tuple); options as SimEnv's."""

    metadata: Dict[str, Any] = {"render_modes": []}

    def __init__(self, **sim_options: Any) -> None:
        super().__init__()
        self.sim = SimEnv(**sim_options)
        self.observation_space = spaces.Box(-STATE_CLIP, STATE_CLIP, shape=(STATE_DIM,), dtype=np.float32)
        self.action_space = spaces.MultiDiscrete(list(self.sim.action_space.branches))

    def reset(self, *, seed: Optional[int] = None,
              options: Optional[Dict[str, Any]] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
        super().reset(seed=seed)
        return self.sim.reset(seed), {}

    def step(self, action: Any) -> Tuple[np.ndarray, float, bool, bool, Dict[str, Any]]:
        state, r, done, info = self.sim.step(np.asarray(action, dtype=np.int64))
        return state, float(r), False, bool(done), info


class ServerSchedulerEnv(gym.Env):
    """``SchedulerEnv`` behind gymnasium's API; options as SchedulerEnv's."""

    metadata: Dict[str, Any] = {"render_modes": []}

    def __init__(self, **options: Any) -> None:
        super().__init__()
        from dvfo_ros.core.mdp.scheduler_env import ACTIONS, OBS_NAMES, SchedulerEnv
        self.sim = SchedulerEnv(**options)
        self.observation_space = spaces.Box(np.array([0, 0, -1, 0, 0, 0], np.float32),
                                            np.array([4, 8, 1, 1, 1, 1], np.float32), shape=(len(OBS_NAMES),),
                                            dtype=np.float32)
        self.action_space = spaces.Discrete(len(ACTIONS))

    def reset(self, *, seed: Optional[int] = None,
              options: Optional[Dict[str, Any]] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
        super().reset(seed=seed)
        return self.sim.reset(seed)

    def step(self, action: Any) -> Tuple[np.ndarray, float, bool, bool, Dict[str, Any]]:
        obs, u, terminated, truncated, info = self.sim.step(int(action))
        return obs, float(u), terminated, truncated, {"robots": info["robots"], "utility": info["utility"]}


SCHEDULER_ENV_ID = "dvfo_ros/ServerScheduler-v0"


def register() -> None:
    """Register ``ENV_ID`` and ``SCHEDULER_ENV_ID`` with gymnasium (idempotent)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=f"{__name__}:DvfoTwinEnv")
    if SCHEDULER_ENV_ID not in gym.registry:
        gym.register(id=SCHEDULER_ENV_ID, entry_point=f"{__name__}:ServerSchedulerEnv")
