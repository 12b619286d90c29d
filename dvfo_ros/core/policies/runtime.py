"""The live side of a policy: named features in, a command out, and a Transition for every step.

The policy node is a shell around this class. It uses the same MDP contract (``dvfo_ros.core.mdp``:
features, snapping rule, reward) as the simulated training environment, so a checkpoint trained in the
twin acts the same on a robot, and every command it sends is a level of its action space: what the
governor applies is exactly what the Transition records.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


@dataclass
class TransitionRecord:
    step: int
    state_names: List[str]
    state: np.ndarray
    action: np.ndarray
    action_values: List[float]
    reward: float
    next_state: np.ndarray
    done: bool = False


@dataclass
class Step:
    command: Dict[str, float]
    decision_ms: float
    transition: Optional[TransitionRecord]
    extras: Any = None      # the seed fields (mdp.ActionExtras: split, exit, variant, target) of the action


class PolicyRuntime:
    def __init__(self, mode: str, profile: str, checkpoint: str = "", static: Optional[Dict[str, float]] = None,
                 reward: Optional[Dict[str, float]] = None, learning: bool = False, model: str = "resnet18",
                 input_size: int = 224, objective: str = "latency", variants: Optional[List[str]] = None) -> None:
        from dvfo_ros.core import mdp
        from dvfo_ros.core.twin import load_profile
        self.env = mdp
        self.mode = mode
        self.board = load_profile(profile)
        self.static = dict(static or {})
        self.space = self._static_space() if mode == "static" else mdp.ActionSpace.from_profile(self.board)
        self.reward_cfg = mdp.RewardConfig()
        self.set_reward(reward or {})
        self.learning = learning
        self.policy = None
        if mode != "static":
            from dvfo_ros.core.policies import load_policy, make_policy
            if checkpoint:
                # The checkpoint carries its own action space (the device it was trained for).
                self.policy = load_policy(checkpoint)
                if self.policy.name != mode:
                    raise ValueError(f"checkpoint {checkpoint} holds policy '{self.policy.name}', not '{mode}'")
                self.space = self.policy.action_space
                # Rewards on the robot are scored as in training (E_ref, T_ref, SLO), unless overridden below.
                from dvfo_ros.core.policies import load_checkpoint
                trained = (load_checkpoint(checkpoint).get("meta") or {}).get("reward") or {}
                self.set_reward({k: v for k, v in trained.items()
                                 if isinstance(v, (int, float)) and k not in (reward or {})})
            else:
                from dvfo_ros.core.policies import POLICIES, reward_options
                # a policy that predicts the served model's cost is built for this board and model; one that
                # learns a reward of its own, with this reward's SLO and E_ref
                cls = POLICIES.get(mode)
                served: Dict[str, Any] = {"profile": self.board, "model": model, "input_size": int(input_size),
                                          "objective": objective} if getattr(cls, "serves_model", False) else {}
                if getattr(cls, "reads_reward", False):
                    served.update(reward_options(self.reward_cfg))
                if getattr(cls, "uses_variants", False):
                    served.update(model=model, variants=list(variants or []))
                self.policy = make_policy(mode, self.space, **served)
            self.policy.train(learning)   # a deployed policy exploits unless told to keep learning
        self._prev: Optional[tuple] = None   # (state, action, command)
        self._last_result: Optional[tuple] = None
        self.steps = 0

    def set_learning(self, learning: bool) -> None:
        self.learning = learning
        if self.policy is not None:
            self.policy.train(learning)

    def set_reward(self, r: Dict[str, float]) -> None:
        """The reward in force (the node's eta / SLO / accuracy bound). A policy that learns from a reward of
        its own (``reads_reward``: autoscale's QoS, e2e_rl's reference) follows it too, on the next frame."""
        for k, v in r.items():
            if hasattr(self.reward_cfg, k):
                setattr(self.reward_cfg, k, float(v))
        policy = getattr(self, "policy", None)
        if policy is not None and getattr(policy, "reads_reward", False):
            from dvfo_ros.core.policies import reward_options
            policy.set_reward_options(reward_options(self.reward_cfg))

    def _static_space(self) -> Any:
        """Static's action space: every clock of the board's table, and the xi grid plus the requested xi."""
        space = self.env.ActionSpace.from_profile(self.board, None, None, None)
        xi = float(self.static.get("offload_ratio", 0.0))
        if 0.0 <= xi <= 1.0 and xi not in space.offload_ratios:
            space.offload_ratios = sorted(space.offload_ratios + [xi])
        return space

    def static_command(self) -> Dict[str, float]:
        """The static request snapped to the action space (0 Hz = the top level): what will really run."""
        if self.mode == "static":
            self.space = self._static_space()
        s = self.static
        request = {"cpu_freq_hz": s.get("cpu_freq_hz") or self.space.cpu_hz[-1],
                   "gpu_freq_hz": s.get("gpu_freq_hz") or self.space.gpu_hz[-1],
                   "emc_freq_hz": s.get("emc_freq_hz") or self.space.emc_hz[-1],
                   "offload_ratio": float(s.get("offload_ratio", 0.0))}
        return dict(self.space.snap_command(request))

    def first_action(self) -> Dict[str, float]:
        return self.first_decision()[0]

    def first_decision(self) -> Tuple[Dict[str, float], Any]:
        """The command (and the seed fields, mdp.ActionExtras) to send before any frame was observed."""
        if self.policy is None:
            return self.static_command(), self.env.NO_EXTRAS
        levels, extras = self.policy.decide(self._state({}))
        return self.space.to_command(levels), extras

    def on_device_state(self, temperature_c: float) -> None:
        pass

    def on_result(self, energy_j: float, latency_ms: float, fallback: bool) -> None:
        self._last_result = (float(energy_j), float(latency_ms), bool(fallback))

    def _state(self, features: Dict[str, float]) -> np.ndarray:
        """The state vector, with the accuracy requirement in force (the reward's bound) unless reported."""
        return self.env.build_state(features, self.space, self.reward_cfg.accuracy_loss_bound)

    def step(self, features: Dict[str, float]) -> Step:
        state = self._state(features)
        t0 = time.perf_counter()
        extras = self.env.NO_EXTRAS
        if self.policy is None:
            command = self.static_command()
            action = self.space.from_command(command)
        else:
            action, extras = self.policy.decide(state)
            command = self.space.to_command(action)
        decision_ms = (time.perf_counter() - t0) * 1000.0
        transition = None
        if self._prev is not None and self._last_result is not None:
            s, a, cmd = self._prev
            energy, latency, _ = self._last_result
            r = float(self.env.reward(energy, latency, 0.0, self.reward_cfg))
            transition = TransitionRecord(self.steps, list(self.env.STATE_NAMES), s, a,
                                          [float(cmd[k]) for k in ("cpu_freq_hz", "gpu_freq_hz", "emc_freq_hz",
                                                                   "offload_ratio")], r, state)
            if self.learning and self.policy is not None:
                self.policy.observe(s, a, r, state, False)
            self.steps += 1
        self._prev = (state, np.asarray(action), command)
        return Step(command, decision_ms, transition, extras)

    def close(self) -> None:
        close = getattr(self.policy, "close", None)
        if callable(close):
            close()
