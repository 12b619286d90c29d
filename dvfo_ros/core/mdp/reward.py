"""The reward: what a frame's outcome is worth, the same function in training, benchmarks and on the robot.

``reward = -(eta*E/E_ref + (1-eta)*T/T_ref)`` minus a penalty when T exceeds the latency SLO and
when the frame's expected accuracy loss exceeds its bound. E is the board's energy over the frame's
interval (``energy.frame_energy_j``), T the frame's end-to-end latency; E_ref/T_ref are edge-only
inference at max clocks counted the same way (``SimEnv.reference_cost``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict

import numpy as np


@dataclass
class RewardConfig:
    """Weights and bounds of the reward; all of them are ROS parameters of the policy node.

    eta trades energy (1.0) against latency (0.0). E_ref/T_ref put both terms on one scale
    (SimEnv sets them to the device's edge-only cost at max clocks unless given).
    """

    eta: float = 0.5
    latency_slo_ms: float = 100.0
    accuracy_loss_bound: float = 0.01
    energy_ref_j: float = 0.1
    latency_ref_ms: float = 10.0
    slo_penalty: float = 1.0
    accuracy_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.energy_ref_j <= 0 or self.latency_ref_ms <= 0 or self.latency_slo_ms <= 0:
            raise ValueError("energy_ref_j, latency_ref_ms and latency_slo_ms must be > 0")

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def cost(energy_j: Any, latency_ms: Any, cfg: RewardConfig) -> Any:
    """The weighted, normalised energy-latency cost (lower is better; no penalties). Works on arrays."""
    return cfg.eta * np.asarray(energy_j) / cfg.energy_ref_j \
        + (1.0 - cfg.eta) * np.asarray(latency_ms) / cfg.latency_ref_ms


def penalty(latency_ms: Any, accuracy_loss: Any, cfg: RewardConfig) -> Any:
    """Constraint terms: a step plus the relative excess, so a violation is both felt and graded."""
    lat = np.asarray(latency_ms, dtype=float)
    acc = np.asarray(accuracy_loss, dtype=float)
    slo = cfg.latency_slo_ms
    bound = max(cfg.accuracy_loss_bound, 1e-6)
    p_slo = np.where(lat > slo, cfg.slo_penalty * (1.0 + (lat - slo) / slo), 0.0)
    p_acc = np.where(acc > cfg.accuracy_loss_bound,
                     cfg.accuracy_penalty * (1.0 + (acc - cfg.accuracy_loss_bound) / bound), 0.0)
    return p_slo + p_acc


def reward_array(energy_j: Any, latency_ms: Any, accuracy_loss: Any, cfg: RewardConfig) -> np.ndarray:
    """``reward`` over arrays of candidate outcomes (the oracle scores every action at once)."""
    return -cost(energy_j, latency_ms, cfg) - penalty(latency_ms, accuracy_loss, cfg)


def reward(energy_j: float, latency_ms: float, accuracy_loss: float, cfg: RewardConfig) -> float:
    """-(eta*E/E_ref + (1-eta)*T/T_ref) - penalties (SLO exceeded, accuracy loss over its bound)."""
    return float(reward_array(energy_j, latency_ms, accuracy_loss, cfg))


# Default accuracy loss per xi when no trained artifact's table is given: quantising and fusing the
# offloaded (least important) channels costs little at small xi and ~1.5 points at xi = 1. This is
# an assumption for the twin (shape of DVFO's Fig. on accuracy vs offload ratio), not a measurement;
# pass a measured table (dvfo-accuracy's xi -> accuracy_loss) to replace it.
DEFAULT_ACCURACY_TABLE: Dict[float, float] = {round(0.1 * i, 1): round(0.015 * (0.1 * i) ** 1.5, 5)
                                              for i in range(11)}


def accuracy_loss_at(xi: float, table: Dict[float, float]) -> float:
    """Linear interpolation of an xi -> accuracy-loss table."""
    keys = sorted(table)
    return float(np.interp(xi, keys, [table[k] for k in keys]))
