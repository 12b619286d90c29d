"""Policies behind one interface (``base.Policy``), one file each, selected by ``policy_mode`` name."""
from dvfo_ros.core.agents.base import (POLICIES, CheckpointError, Policy, RolloutLog, load_checkpoint,  # noqa: F401
                                       load_policy, make_policy, policy_names, rollout, save_checkpoint)
# Import every policy module so POLICIES is complete for whoever imports the package.
from dvfo_ros.core.agents import autoscale, baselines, dvfo, neurosurgeon, oracle  # noqa: F401,E402
