"""The one interface every policy implements, the registry by ``policy_mode`` name, checkpoints,
and the frame loop that runs any policy in the twin (training, benchmarking and tests share it).

A policy maps a state vector (``env.build_state``) to discrete levels ``[cpu, gpu, emc, xi]``;
``env.ActionSpace.to_command`` turns those into Hz and an offload ratio.
"""
from __future__ import annotations

import abc
import importlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

import numpy as np
import torch

from dvfo_ros.core.errors import DvfoError, one_line
from dvfo_ros.core.mdp import NO_EXTRAS, ActionExtras, ActionSpace

CHECKPOINT_FORMAT = "dvfo_ros.policy/1"

POLICIES: Dict[str, Type["Policy"]] = {}

# policy_mode name -> module that registers it (imported on first use, keeps start-up cheap)
_MODULES = {
    "dvfo": "dvfo", "dvfo_sequential": "dvfo", "oracle": "oracle",
    "static": "baselines", "edge_only": "baselines", "cloud_only": "baselines", "max_freq": "baselines",
    "cpu_only": "baselines", "image_upload": "baselines",
    "ondemand": "baselines", "dvfs_only": "baselines", "offload_only": "baselines",
    "autoscale": "autoscale", "neurosurgeon": "neurosurgeon", "e2e_rl": "e2e_rl",
}


class CheckpointError(ValueError, DvfoError):
    """A checkpoint that is missing, corrupt, or for another policy/action space (one-line message)."""


def register(name: str) -> Callable[[Type["Policy"]], Type["Policy"]]:
    def deco(cls: Type["Policy"]) -> Type["Policy"]:
        cls.name = name
        POLICIES[name] = cls
        return cls
    return deco


class Policy(abc.ABC):
    """A frame-by-frame decision maker behind ``policy_mode``.

    ``concurrent``: the decision is made while the previous frame still runs, so its time is not
    on the frame's critical path (DVFO's thinking-while-moving; the oracle is idealised the same way).
    ``learns``: ``observe`` updates the policy (and training should run it for a while first).
    """

    name: str = "policy"
    concurrent: bool = False
    learns: bool = False
    needs_env: bool = False
    # True: built with the device and model it serves (profile=, model=, input_size=, see twin_options);
    # the twin and the robot both know them, so such a policy can still act live
    serves_model: bool = False
    # the ActionExtras fields ``decide`` may set (split_index, exit_point, model_variant, target)
    extras: Tuple[str, ...] = ()
    # True: built with the latency SLO and E_ref of the reward in force (qos_ms=, energy_ref_j=, see
    # twin_options), because it learns from a reward of its own (autoscale)
    reads_reward: bool = False
    # True: built with the served model and the variants it may run instead (model=, variants=): e2e_rl
    uses_variants: bool = False
    not_live: str = ""      # why it cannot act on a robot ('' = it can, unless needs_env); see why_not_live
    # False: ``act`` never reads the importance_* features, so the executor may skip the attention on
    # frames that offload nothing (its importance=auto); test/test_importance_auto.py checks the claim
    reads_importance: bool = True

    def __init__(self, action_space: ActionSpace, **kwargs: Any) -> None:
        if kwargs:
            raise ValueError(f"policy '{self.name}' got unknown options: {', '.join(sorted(kwargs))}")
        self.action_space = action_space

    @abc.abstractmethod
    def act(self, state: np.ndarray) -> np.ndarray:
        """Levels [cpu, gpu, emc, xi] for the next frame."""

    def decide(self, state: np.ndarray) -> Tuple[np.ndarray, ActionExtras]:
        """The levels and the seed fields (split, exit, variant, target) for the next frame. Policies
        that choose only clocks and xi leave the fields neutral; the twin and the robot both call this."""
        return self.act(state), NO_EXTRAS

    def observe(self, s: np.ndarray, a: np.ndarray, r: float, s2: np.ndarray, done: bool) -> None:
        """Learning policies learn from the transition; the others ignore it."""

    def train(self, mode: bool = True) -> "Policy":
        """Exploration on (training) or off (evaluation); a no-op for fixed policies."""
        return self

    def close(self) -> None:
        """Stop background work (learner threads)."""

    # ---- checkpoints ---------------------------------------------------------------------
    def config(self) -> Dict[str, Any]:
        """Plain-typed constructor options, stored in the checkpoint."""
        return {}

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass

    def set_reward_options(self, options: Dict[str, float]) -> None:
        """A ``reads_reward`` policy's own reward terms (``reward_options``: qos_ms, energy_ref_j, ...) change
        to the reward now in force; the terms it does not use are ignored."""
        hp = getattr(self, "hp", None)
        if self.reads_reward and isinstance(hp, dict):
            hp.update({k: float(v) for k, v in options.items() if k in hp})

    def save(self, path: str, meta: Optional[Dict[str, Any]] = None) -> None:
        """torch.save of plain data (no pickled classes), written atomically."""
        save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "policy": self.name, "config": self.config(),
                               "action_space": self.action_space.to_dict(), "state": self.state_dict(),
                               "meta": dict(meta or {})})

    def load(self, path: str) -> Dict[str, Any]:
        """Load weights saved by the same policy over the same action space; returns the checkpoint."""
        ck = load_checkpoint(path)
        if ck["policy"] != self.name:
            raise CheckpointError(f"{path} holds a '{ck['policy']}' policy, not '{self.name}'")
        if ActionSpace.from_dict(ck["action_space"]) != self.action_space:
            raise CheckpointError(f"{path} was trained for another action space "
                                  f"{ActionSpace.from_dict(ck['action_space']).branches}; "
                                  f"this device has {self.action_space.branches}")
        try:
            self.load_state_dict(ck["state"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path} does not fit policy '{self.name}': {one_line(exc)}") from None
        return ck


def save_checkpoint(path: str, payload: Dict[str, Any]) -> None:
    """Write to a temp file in the same directory, then rename: a crash never leaves half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="tmp-ckpt-", suffix=".pt", dir=directory)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: str) -> Dict[str, Any]:
    """torch.load(weights_only=True) with a one-line CheckpointError for anything unreadable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many exception types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or not a dvfo_ros checkpoint: "
                              f"{one_line(exc, 160)}") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a dvfo_ros policy checkpoint")
    for key in ("policy", "config", "action_space", "state"):
        if key not in ck:
            raise CheckpointError(f"checkpoint {path} lacks '{key}'")
    return ck


def _ensure_registered(name: str) -> None:
    if name not in POLICIES and name in _MODULES:
        importlib.import_module(f"dvfo_ros.core.policies.{_MODULES[name]}")


def reads_importance(name: str) -> bool:
    """Whether policy_mode ``name`` may read the importance features (True for '' and unknown names)."""
    try:
        _ensure_registered(name)
    except ImportError:
        return True
    cls = POLICIES.get(name)
    return True if cls is None else bool(cls.reads_importance)


def policy_names() -> List[str]:
    """Every policy_mode name that make_policy accepts."""
    for module in sorted(set(_MODULES.values())):
        try:
            importlib.import_module(f"dvfo_ros.core.policies.{module}")
        except ImportError:
            continue
    return sorted(POLICIES)


def why_not_live(name: str) -> Optional[str]:
    """None when ``name`` can act on a robot (the policy node's policy_mode), else one line saying why not."""
    try:
        _ensure_registered(name)
    except ImportError:
        pass
    if name not in POLICIES:
        return f"unknown policy '{name}'; choose one of {', '.join(live_policy_names())}"
    cls = POLICIES[name]
    if cls.not_live:
        return cls.not_live
    if cls.needs_env:
        return f"{name} needs the device twin (env=SimEnv); it cannot act on a robot"
    return None


def live_policy_names() -> List[str]:
    """The policy_mode names a robot can run (static first): registered, and needing no twin."""
    names = [n for n in policy_names() if not (POLICIES[n].not_live or POLICIES[n].needs_env)]
    return sorted(names, key=lambda n: (n != "static", n))


def twin_options(name: str, env: Any, partitions: bool = False, targets: bool = False) -> Dict[str, Any]:
    """The options ``make_policy(name, ...)`` needs beside a twin env: the env itself for a policy that
    reads the twin (``needs_env``: the oracle; with ``partitions`` its search covers whole-layer cuts
    too, with ``targets`` the CPU and the LAN edge server as well), the env's device and model for one
    that predicts the served model's cost (``serves_model``: neurosurgeon), the reward's SLO and E_ref for
    one that learns its own reward (``reads_reward``: autoscale, e2e_rl), the served model and its variants
    for one that picks among them (``uses_variants``: e2e_rl); none for the rest."""
    _ensure_registered(name)
    cls = POLICIES.get(name)
    if cls is not None and cls.needs_env:
        return {"env": env, **({"partitions": True} if partitions and "split_index" in cls.extras else {}),
                **({"targets": True} if targets and "target" in cls.extras else {})}
    if cls is not None and cls.serves_model:
        return {"profile": env.profile, "model": env.model, "input_size": int(env.workload.input_size),
                "cloud_gflops": float(env.cloud_gflops)}
    out: Dict[str, Any] = {}
    if cls is not None and getattr(cls, "reads_switch_cost", False):
        out["last_frame"] = not env.switch_cost.free
    if cls is not None and cls.reads_reward:
        out.update(reward_options(env.reward_cfg))
    if cls is not None and cls.uses_variants:
        out.update(model=env.model, variants=list(env.variants))
    return out


def reward_options(cfg: Any) -> Dict[str, float]:
    """What a ``reads_reward`` policy is built with, from a RewardConfig (the twin's or the node's)."""
    return {"qos_ms": float(cfg.latency_slo_ms), "energy_ref_j": float(cfg.energy_ref_j),
            "latency_ref_ms": float(cfg.latency_ref_ms), "slo_penalty": float(cfg.slo_penalty),
            "accuracy_penalty": float(cfg.accuracy_penalty)}


def make_policy(name: str, action_space: ActionSpace, checkpoint: Optional[str] = None, **kw: Any) -> Policy:
    """Build a policy by policy_mode name (ValueError listing the valid names); load a checkpoint if given."""
    try:
        _ensure_registered(name)
    except ImportError:
        pass
    if name not in POLICIES:
        raise ValueError(f"unknown policy '{name}'; choose one of {', '.join(policy_names())}")
    policy = POLICIES[name](action_space, **kw)
    if checkpoint:
        policy.load(checkpoint)
    return policy


def load_policy(path: str, **kw: Any) -> Policy:
    """Rebuild a policy from its checkpoint alone (action space and options come from the file)."""
    ck = load_checkpoint(path)
    _ensure_registered(ck["policy"])
    if ck["policy"] not in POLICIES:
        raise CheckpointError(f"{path} holds an unknown policy '{ck['policy']}'")
    options = dict(ck["config"])
    options.update(kw)
    policy = POLICIES[ck["policy"]](ActionSpace.from_dict(ck["action_space"]), **options)
    policy.load(path)
    return policy


# ---- running a policy in the twin ------------------------------------------------------------
@dataclass
class RolloutLog:
    """Per-frame outcomes of a run (what dvfo-bench aggregates and dvfo-train plots)."""

    rewards: List[float] = field(default_factory=list)
    energy_j: List[float] = field(default_factory=list)
    soc_energy_j: List[float] = field(default_factory=list)
    latency_ms: List[float] = field(default_factory=list)
    accuracy_loss: List[float] = field(default_factory=list)
    slo_violation: List[bool] = field(default_factory=list)
    accuracy_violation: List[bool] = field(default_factory=list)   # loss over the requirement in force
    decision_ms: List[float] = field(default_factory=list)
    costs: List[float] = field(default_factory=list)
    actions: List[List[int]] = field(default_factory=list)
    splits: List[int] = field(default_factory=list)        # the split each frame ran at (info['split_index'])
    episode_returns: List[float] = field(default_factory=list)

    def summary(self) -> Dict[str, Any]:
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        dec = np.asarray(self.decision_ms) if self.decision_ms else np.zeros(1)
        return {"frames": len(self.rewards),
                "energy_j_per_frame": float(np.mean(self.energy_j)) if self.energy_j else 0.0,
                "soc_energy_j_per_frame": float(np.mean(self.soc_energy_j)) if self.soc_energy_j else 0.0,
                "latency_ms_mean": float(np.mean(lat)), "latency_ms_p95": float(np.percentile(lat, 95)),
                "accuracy_loss": float(np.mean(self.accuracy_loss)) if self.accuracy_loss else 0.0,
                "reward_mean": float(np.mean(self.rewards)) if self.rewards else 0.0,
                "cost_mean": float(np.mean(self.costs)) if self.costs else 0.0,
                "slo_violations": int(np.sum(self.slo_violation)),
                "accuracy_violations": int(np.sum(self.accuracy_violation)),
                "decision_ms_p50": float(np.percentile(dec, 50)), "decision_ms_p99": float(np.percentile(dec, 99))}


def rollout(env: Any, policy: Policy, frames: int, learn: bool = False, pacing: str = "sim",
            time_scale: float = 0.5,
            on_step: Optional[Callable[[int, Dict[str, Any]], None]] = None) -> RolloutLog:
    """Run ``frames`` frames of ``env`` under ``policy``; episodes restart automatically.

    Decision time lands on the frame's critical path unless the policy is ``concurrent``; so does
    learning inline in ``observe`` (the sequential ablation). ``pacing``:

    - ``"sim"`` (default): simulated time. The env is charged the policy's modelled decision and
      inline-learning times (``sim_decision_ms``, ``last_inline_ms``), a concurrent learner gets its
      share of each frame's interval from ``advance``, and nothing sleeps: as fast as the CPU allows,
      and the same run twice for a seed. The measured decision time is still logged.
    - ``"real"``: measured times, and each frame takes ``interval * time_scale`` of wall time
      (interval = max(camera period, latency)) while a learner thread trains beside it.
    """
    if pacing not in ("sim", "real"):
        raise ValueError("pacing must be 'sim' or 'real'")
    sim = pacing == "sim"
    set_pacing = getattr(policy, "set_pacing", None)
    if set_pacing is not None:
        set_pacing(pacing)
    log = RolloutLog()
    state = env.reset()
    episode_return = 0.0
    pending_ms = 0.0                     # inline learning time that delays the next frame
    for i in range(int(frames)):
        t0 = time.perf_counter()
        action, extras = policy.decide(state) if hasattr(policy, "decide") else (policy.act(state), NO_EXTRAS)
        decision_ms = (time.perf_counter() - t0) * 1e3
        charged_ms = float(getattr(policy, "sim_decision_ms", 0.0)) if sim else decision_ms
        step_kw = {"extras": extras} if extras != NO_EXTRAS else {}
        next_state, r, done, info = env.step(action, decision_ms=charged_ms + pending_ms,
                                             decision_on_path=not policy.concurrent, **step_kw)
        pending_ms = 0.0
        if learn:
            t1 = time.perf_counter()
            policy.observe(state, action, r, next_state, done)
            if not policy.concurrent:
                pending_ms = float(getattr(policy, "last_inline_ms", 0.0)) if sim \
                    else (time.perf_counter() - t1) * 1e3
            advance = getattr(policy, "advance", None)
            if sim and advance is not None:
                advance(info.get("interval_ms", info["latency_ms"]))
        if not sim and time_scale > 0:
            time.sleep(info.get("interval_ms", info["latency_ms"]) * time_scale / 1e3)
        log.rewards.append(float(r))
        log.energy_j.append(float(info["energy_j"]))
        log.soc_energy_j.append(float(info["soc_energy_j"]))
        log.latency_ms.append(float(info["latency_ms"]))
        log.accuracy_loss.append(float(info["accuracy_loss"]))
        log.slo_violation.append(bool(info["slo_violation"]))
        log.accuracy_violation.append(bool(info.get("accuracy_violation", False)))
        log.decision_ms.append(decision_ms)
        log.costs.append(float(info["cost"]))
        log.actions.append([int(v) for v in action])
        log.splits.append(int(info.get("split_index", -1)))
        episode_return += float(r)
        if on_step is not None:
            on_step(i, info)
        if done:
            log.episode_returns.append(episode_return)
            episode_return = 0.0
            state = env.reset()
        else:
            state = next_state
    return log
