"""THE sim-to-real contract, ROS-free: the twin and the robot both use exactly these pieces.

- ``features``: the state, every feature with one meaning (``FEATURES``), ``observe`` + ``build_state``
- ``actions``: the action space and the one snapping rule the hardware clamp shares
- ``energy``: a frame's energy over its interval
- ``reward``: the reward and its configuration
- ``env``: ``SimEnv``, the twin stepping that contract; ``gym_env``: the same as a ``gymnasium.Env``,
  registered as ``dvfo_ros/DvfoTwin-v0`` when this package is imported (and gymnasium is installed)
- ``observation``: the robot's side of ``observe``: running estimates from measured frames
"""
from dvfo_ros.core.mdp.actions import (BRANCH_NAMES, COMMAND_KEYS, NO_EXTRAS, ActionExtras, ActionSpace, snap,
                                      snap_index, snap_indices)
from dvfo_ros.core.mdp.energy import frame_energy_j, frame_interval_ms, soc_energy_j
from dvfo_ros.core.mdp.env import SimEnv
from dvfo_ros.core.mdp.context import TARGETS, Conditions, EdgeServer
from dvfo_ros.core.mdp.features import (CONTEXT_NAMES, DVFO_STATE_DIM, FEATURES, STATE_CLIP, STATE_DIM,
                                        STATE_LOG_SCALES, STATE_NAMES, STATE_SCALES, build_state, feature_value,
                                        importance_summary, observe)
from dvfo_ros.core.mdp.reward import (DEFAULT_ACCURACY_TABLE, RewardConfig, accuracy_loss_at, cost, penalty, reward,
                                      reward_array)

__all__ = ["BRANCH_NAMES", "COMMAND_KEYS", "CONTEXT_NAMES", "DEFAULT_ACCURACY_TABLE", "DVFO_STATE_DIM", "FEATURES",
           "NO_EXTRAS", "STATE_CLIP", "STATE_DIM", "STATE_LOG_SCALES", "STATE_NAMES", "STATE_SCALES", "TARGETS",
           "ActionExtras", "ActionSpace", "Conditions", "EdgeServer", "RewardConfig", "SimEnv",
           "accuracy_loss_at", "build_state", "cost", "feature_value", "frame_energy_j", "frame_interval_ms",
           "importance_summary", "observe", "penalty", "reward", "reward_array", "snap", "snap_index", "snap_indices",
           "soc_energy_j"]

try:
    from dvfo_ros.core.mdp import gym_env as _gym_env
except ImportError:          # gymnasium is optional for the robot's nodes
    pass
else:
    _gym_env.register()
