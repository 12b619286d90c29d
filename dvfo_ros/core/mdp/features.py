"""The state the policy sees: every feature once, with its one meaning, for the twin and the robot.

The twin (``SimEnv.step``) and the live path (the executor's ``ObservationTracker``) both describe a
finished frame with :func:`observe`, and the policy turns the named features into the vector with
:func:`build_state`. Clock features travel as Hz and become levels here with the action space's one
snapping rule, so the twin and the robot cannot disagree about what a level means.

Each feature is divided by a fixed scale (``STATE_SCALES``, not learnt statistics) so the network
sees numbers near [0, 1] and a state means the same on every device and in every run. The network
features span three decades (0.1 Mbps in a Wi-Fi dropout to 70 Mbps next to the access point), so
they are log-scaled instead (``STATE_LOG_SCALES``: log1p(v) / log1p(scale)): a policy trained on a
throttled 0.5-8 Mbps link then meets a fast Wi-Fi link near the inputs it saw, not at 5x them.
``feature_value`` reads a feature back in its units.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from dvfo_ros.core.mdp.actions import BRANCH_NAMES, ActionSpace

# name -> its one meaning (units in the name). The vector order is this dict's order.
FEATURES: Dict[str, str] = {
    "bandwidth_mbps": "uplink bandwidth estimate when the state is built (twin: the trace now; robot: the link "
                      "estimator's fit of the offloaded frames' transfers)",
    "rtt_ms": "network round-trip estimate, the part of a transfer that does not grow with its bytes (twin: the "
              "trace; robot: the same fit)",
    "cpu_level": "CPU clock in force during the last frame, as its level's position in the table (0 lowest, 1 top)",
    "gpu_level": "GPU clock in force during the last frame, level position",
    "emc_level": "memory (EMC) clock in force during the last frame, level position",
    "cpu_util": "CPU busy share of the last frame's latency", "gpu_util": "GPU busy share of the last frame's latency",
    "emc_util": "memory-controller busy share of the last frame's latency",
    "temperature_c": "board temperature after the last frame",
    "last_latency_ms": "end-to-end latency of the last frame (camera stamp to fused result)",
    "last_energy_j": "board energy of the last frame over its interval (frame_energy_j)",
    "importance_low25": "share of the attention mass held by the least important 25 % of a frame's channels (robot: "
                        "the last processed frame; twin: the frame the action is for, one frame fresher)",
    "importance_low50": "same, least important 50 %", "importance_low75": "same, least important 75 %",
    "prev_cpu_level": "CPU level the policy commanded for the last frame",
    "prev_gpu_level": "GPU level commanded for the last frame",
    "prev_emc_level": "EMC level commanded for the last frame",
    "prev_offload_ratio": "offload ratio xi commanded for the last frame",
    "time_since_action_ms": "how long the last action was in force: the last frame's interval, max(camera period, "
                            "its latency) (frame_interval_ms)",
    "decision_ms": "time the policy took to choose the last action",
    # the context of the seed systems (AutoScale's interference, E2E-RL's users and accuracy requirement);
    # DVFO's network reads only the features above (DVFO_STATE_DIM)
    "corunner_cpu_util": "share of the CPU other processes held during the last frame (twin: the episode's co-runner "
                         "load; robot: 0, not measured yet)",
    "corunner_gpu_util": "share of the GPU other processes held during the last frame (same sources)",
    "edge_server_users": "other robots sharing the LAN edge server (twin: the episode's draw; robot: 0, not "
                         "reported yet)",
    "accuracy_requirement": "the accuracy-loss bound the frame must meet (the reward's accuracy_loss_bound, or the "
                            "episode's draw in the twin)",
}
STATE_NAMES: List[str] = list(FEATURES)
CONTEXT_NAMES: List[str] = ["corunner_cpu_util", "corunner_gpu_util", "edge_server_users", "accuracy_requirement"]
DVFO_STATE_DIM = STATE_NAMES.index(CONTEXT_NAMES[0])   # the features DVFO's paper observes come first
STATE_LOG_SCALES: Dict[str, float] = {"bandwidth_mbps": 100.0, "rtt_ms": 1000.0}
STATE_SCALES: Dict[str, float] = {
    "temperature_c": 100.0,
    "last_latency_ms": 100.0, "last_energy_j": 0.5, "time_since_action_ms": 100.0, "decision_ms": 100.0,
    "edge_server_users": 10.0, "accuracy_requirement": 0.01,
}
STATE_DIM = len(STATE_NAMES)
STATE_CLIP = 10.0
IMPORTANCE_QUANTILES = (25, 50, 75)


def importance_summary(weights: Any) -> Dict[str, float]:
    """Share of the attention mass held by the least important 25/50/75 % of a frame's channels.

    ``weights``: one frame's channel importances (the attention scores on the robot, Gamma draws in
    the twin; a torch tensor or anything numpy reads). Negative scores count as 0.
    """
    w = np.sort(np.clip(np.asarray(weights, dtype=np.float64).reshape(-1), 0.0, None))
    cum = np.cumsum(w) / (float(w.sum()) or 1.0)
    n = w.size
    return {f"importance_low{q}": float(cum[max(1, n * q // 100) - 1]) for q in IMPORTANCE_QUANTILES}


def observe(*, bandwidth_mbps: float, rtt_ms: float, clocks_hz: Sequence[float], utils: Sequence[float],
            temperature_c: float, latency_ms: float, energy_j: float, importance: Mapping[str, float],
            command: Optional[Mapping[str, float]], interval_ms: float, decision_ms: float) -> Dict[str, float]:
    """The named features after one frame (see ``FEATURES``); clocks in Hz, ``command`` = what was commanded."""
    obs: Dict[str, float] = {"bandwidth_mbps": float(bandwidth_mbps), "rtt_ms": float(rtt_ms),
                             "temperature_c": float(temperature_c), "last_latency_ms": float(latency_ms),
                             "last_energy_j": float(energy_j), "time_since_action_ms": float(interval_ms),
                             "decision_ms": float(decision_ms)}
    for d, hz, u in zip(BRANCH_NAMES[:3], clocks_hz, utils):
        obs[f"{d}_freq_hz"] = float(hz)
        obs[f"{d}_util"] = float(u)
    if command is not None:
        for d in BRANCH_NAMES[:3]:
            obs[f"prev_{d}_freq_hz"] = float(command[f"{d}_freq_hz"])
        obs["prev_offload_ratio"] = float(command["offload_ratio"])
    obs.update({k: float(v) for k, v in importance.items()})
    return obs


def build_state(obs: Mapping[str, Any], action_space: Optional[ActionSpace] = None,
                accuracy_requirement: Optional[float] = None) -> np.ndarray:
    """Named features -> float32 vector in STATE_NAMES order (missing names read as 0).

    ``accuracy_requirement``: the bound in force (the reward's ``accuracy_loss_bound``) when ``obs`` does
    not carry one: the twin and the policy runtime both pass their reward's.

    With ``action_space``, ``*_level`` features missing from ``obs`` come from ``cpu_freq_hz`` /
    ``prev_cpu_freq_hz``-style entries (what ``observe``, the executor and the governor report),
    snapped to levels with the action space's rule.
    """
    feats = dict(obs)
    if accuracy_requirement is not None:
        feats.setdefault("accuracy_requirement", float(accuracy_requirement))
    if action_space is not None:
        for d in BRANCH_NAMES[:3]:
            for prefix in ("", "prev_"):
                key, hz_key = f"{prefix}{d}_level", f"{prefix}{d}_freq_hz"
                if key not in feats and feats.get(hz_key):
                    feats[key] = action_space.level_fraction(action_space.level_of(d, float(feats[hz_key])), d)
    vec = np.zeros(STATE_DIM, dtype=np.float32)
    for i, name in enumerate(STATE_NAMES):
        value = feats.get(name, 0.0)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = 0.0
        if not np.isfinite(value):
            value = 0.0
        if name in STATE_LOG_SCALES:
            vec[i] = np.log1p(max(value, 0.0)) / np.log1p(STATE_LOG_SCALES[name])
        else:
            vec[i] = value / STATE_SCALES.get(name, 1.0)
    return np.clip(vec, -STATE_CLIP, STATE_CLIP)


def feature_value(state: Any, name: str) -> float:
    """Feature ``name`` of a state vector back in its units (``build_state`` inverted)."""
    v = float(np.asarray(state, dtype=np.float64)[STATE_NAMES.index(name)])
    if name in STATE_LOG_SCALES:
        return float(np.expm1(v * np.log1p(STATE_LOG_SCALES[name])))
    return v * STATE_SCALES.get(name, 1.0)
