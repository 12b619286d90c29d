"""Policies behind one interface (``base.Policy``), one file each, selected by ``policy_mode`` name."""
from dvfo_ros.core.policies.base import (POLICIES, CheckpointError, Policy, RolloutLog, load_checkpoint,  # noqa: F401
                                       live_policy_names, load_policy, make_policy, policy_names,
                                       reads_importance, reward_options, rollout, save_checkpoint,
                                       twin_options,
                                       why_not_live)
# Import every policy module so POLICIES is complete for whoever imports the package.
from dvfo_ros.core.policies import autoscale, baselines, dvfo, e2e_rl, neurosurgeon, oracle  # noqa: F401,E402
