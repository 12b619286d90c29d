"""The paper's grid in the twin: where DVFO saves energy, and how much (``dvfo-bench grid``).

    cfg = GridConfig.quick()                         # or GridConfig() for the full grid
    report = run_grid(cfg, workers=2, progress=tqdm_progress())
    report["headline"]["sentence"]                   # stated the way the DVFO paper states it

A *training group* is one (profile, model, workload, eta): bandwidth is a state feature, so every learnt
policy (dvfo, dvfs_only, offload_only, autoscale) is trained once per group, as long as DVFO and on the
same trace, one over the DVFO testbed's 0.5-8 Mbps range (log-uniform, as the grid's bandwidths
are; redrawn every second, or every ``TRAIN_TRACE_FRAMES`` frames where frames move the env's clock
further, back to back at the edge's own pace: the state's bandwidth is what the last frame met, so a
regime shorter than a few frames leaves it uninformative, and DVFO, trained so on a Nano running the
ViT back to back, offloaded into a 0.5 Mbps link at 5x the edge's cost), then judged on
constant-bandwidth traces at each grid bandwidth. A *cell* is a group at one bandwidth: every policy
runs the same frames for each evaluation seed (the twin's noise, the frames' importance draws and the
start point differ by seed; the learnt policies are trained once, with ``train_seed``), and
``grid_report`` turns the runs into means with 95 % intervals across evaluation seeds.

Workloads: ``camera`` (frames at ``fps``; SLO = one frame period, as every other caller) and
``back_to_back`` (the next frame starts when the previous one ends; SLO ``back_to_back_slo_ms``).
Trained checkpoints are cached under ``cache_dir`` keyed by everything that affects training
(``checkpoint_key``), so a rerun only evaluates.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from dvfo_ros.core.policies.experiments import AgentOptions, Progress, TwinSetup, open_bar

PROFILES = ("nano", "tx2", "xavier_nx", "orin_nx")
MODELS = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "vit_b_16")
BANDWIDTHS_MBPS = (0.5, 1.0, 2.0, 4.0, 8.0)
WORKLOADS = ("camera", "back_to_back")
ETAS = (0.2, 0.5, 0.8)
GRID_LEARNT = ("dvfo", "dvfs_only", "offload_only", "autoscale")
# What DVFO is compared with, in the order the tables list them; the oracle is the bound, not a rival.
BASELINES = ("edge_only", "cloud_only", "ondemand", "max_freq", "dvfs_only", "offload_only", "autoscale",
             "neurosurgeon")
GRID_POLICIES = ("dvfo",) + BASELINES + ("oracle",)
REQUIRED = ("dvfo", "edge_only", "oracle")
# Files whose source defines the twin, the MDP and the learnt policies: their hash is in every cache key.
_SOURCE_GLOBS = ("mdp/*.py", "twin/*.py", "twin/profiles/*.yaml", "io/traces.py", "inference/models.py",
                 "inference/vit.py",
                 "policies/base.py", "policies/dvfo.py", "policies/qtables.py", "policies/exploration.py",
                 "policies/learner.py", "policies/baselines.py",
                 "policies/autoscale.py", "policies/experiments.py", "policies/setup.py")
_CORE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_TRACE_HOLD_S = 1.0            # the training trace redraws its bandwidth every second at the least
TRAIN_TRACE_FRAMES = 25             # ... and holds it for this many frames at the edge's max-clock pace
TRAIN_TRACE_REGIMES = 100           # ... over a trace of at least this many regimes (600 s at the least)
TRAIN_TRACE_S = 600.0


@dataclass
class GridConfig:
    """What the grid covers and how long each part runs (dvfo-bench grid's flags of the same names)."""

    profiles: Tuple[str, ...] = PROFILES
    models: Tuple[str, ...] = MODELS
    bandwidths_mbps: Tuple[float, ...] = BANDWIDTHS_MBPS
    workloads: Tuple[str, ...] = WORKLOADS
    etas: Tuple[float, ...] = ETAS
    policies: Tuple[str, ...] = GRID_POLICIES
    steps: int = 3000                   # training frames of EVERY learnt policy
    eval_frames: int = 60               # frames per policy, cell and evaluation seed
    eval_seeds: int = 5
    train_seed: int = 0
    noise: float = 0.05                 # the twin's relative latency/power noise (training and evaluation)
    fps: float = 30.0                   # the camera workload's rate
    back_to_back_slo_ms: float = 100.0  # the back-to-back workload's SLO (a 10 Hz perception deadline)
    # where even edge_only at max clocks misses that SLO, it becomes slo_headroom x that latency (see group_setup)
    slo_headroom: float = 1.25
    rtt_ms: float = 20.0                # RTT of the training and evaluation traces (the DVFO trace's)
    agent: Optional[AgentOptions] = None   # None: AgentOptions with exploration scaled to ``steps``
    cache_dir: str = os.path.join("build", "grid")

    def __post_init__(self) -> None:
        for name in ("profiles", "models", "bandwidths_mbps", "workloads", "etas", "policies"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.agent is None:
            # one gradient step per 2 frames (the README's runs: up to 4): what lets 144 groups x 4
            # learnt policies train in about an hour on 2 cores; exploration scaled to the run's length
            self.agent = AgentOptions(exploration_steps=max(1, int(0.6 * self.steps)),
                                      learning_starts=max(32, min(500, self.steps // 10)), replay_ratio=0.5)

    @classmethod
    def quick(cls, **kw: Any) -> "GridConfig":
        """The --quick subset: the slowest and the fastest board, a small CNN and the ViT, every
        bandwidth and both workloads at eta 0.5, shorter training (a few minutes on 2 cores)."""
        base: Dict[str, Any] = dict(profiles=("nano", "orin_nx"), models=("resnet18", "vit_b_16"), etas=(0.5,),
                                    steps=1500, eval_frames=60)
        base.update(kw)
        return cls(**base)

    def validate(self) -> None:
        """One-line errors (ValueError / ProfileError / ModelError) before anything runs."""
        from dvfo_ros.core.inference.models import TWIN_MODELS, ModelError
        from dvfo_ros.core.mdp.env import ARRIVALS
        from dvfo_ros.core.policies import policy_names
        from dvfo_ros.core.twin import load_profile
        for p in self.profiles:
            load_profile(p)
        bad = [m for m in self.models if m not in TWIN_MODELS]
        if bad:
            raise ModelError(f"unknown model {', '.join(bad)}; choose from {', '.join(TWIN_MODELS)}")
        bad = [w for w in self.workloads if w not in ARRIVALS]
        if bad:
            raise ValueError(f"unknown workload {', '.join(bad)}; choose from {', '.join(ARRIVALS)}")
        known = policy_names()
        bad = [n for n in self.policies if n not in known]
        if bad:
            raise ValueError(f"unknown policy {', '.join(bad)}; choose from {', '.join(known)}")
        missing = [n for n in REQUIRED if n not in self.policies]
        if missing:
            raise ValueError(f"the grid compares dvfo with edge_only and the oracle: add {', '.join(missing)}")
        if not all(0.0 <= e <= 1.0 for e in self.etas) or not all(b > 0 for b in self.bandwidths_mbps):
            raise ValueError("every eta must be in [0, 1] and every bandwidth > 0 Mbps")
        if not (self.profiles and self.models and self.bandwidths_mbps and self.workloads and self.etas):
            raise ValueError("every axis of the grid needs at least one value")
        if self.steps < 1 or self.eval_frames < 1 or self.eval_seeds < 2:
            raise ValueError("steps and eval frames must be >= 1, eval seeds >= 2 (for an interval)")

    def groups(self) -> List[Tuple[str, str, str, float]]:
        """Every (profile, model, workload, eta), the costliest first (better load balance)."""
        cost = {m: i for i, m in enumerate(("mobilenet_v3_large", "mobilenet_v2", "efficientnet_b0", "resnet18",
                                            "resnet50", "vit_b_16"))}
        out = [(p, m, w, e) for p in self.profiles for m in self.models for w in self.workloads for e in self.etas]
        return sorted(out, key=lambda g: (-cost.get(g[1], 9), g[2] != "camera", PROFILES.index(g[0])
                                          if g[0] in PROFILES else 9))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def constant_trace(bandwidth_mbps: float, rtt_ms: float) -> Any:
    """A trace that holds one bandwidth and RTT for ever (one evaluation cell's network)."""
    from dvfo_ros.core.io.traces import NetworkTrace
    return NetworkTrace(np.array([0.0]), np.array([float(bandwidth_mbps)]), np.array([float(rtt_ms)]),
                        name=f"const_{bandwidth_mbps:g}mbps")


def train_hold_s(cfg: GridConfig, setup: Any) -> float:
    """How long the group's training trace holds a bandwidth: a second, or ``TRAIN_TRACE_FRAMES``
    frames, in the trace time a frame moves the env's clock by: one camera period on the camera (the
    camera's clock, whatever the frame's latency) and the edge's latency at max clocks back to back.
    (Until stop 32 a camera frame counted at the edge's pace too, so where frames are slower than the
    period a regime lasted 25 x latency / period frames: 131 for vit_b_16 on the Nano, 23 regimes in
    3000 training frames, and the top bandwidth bin met in frames 105-782 only.)"""
    t_ref_ms = setup.make_env().reward_cfg.latency_ref_ms
    frame_ms = 1000.0 / cfg.fps if setup.arrival == "camera" else t_ref_ms
    return round(max(TRAIN_TRACE_HOLD_S, TRAIN_TRACE_FRAMES * frame_ms / 1000.0), 3)


def train_trace_spec(cfg: GridConfig, hold_s: float = TRAIN_TRACE_HOLD_S) -> Dict[str, Any]:
    """What a training trace is (it goes into the cache key): log-uniform over the grid's bandwidths."""
    return {"kind": "log_uniform", "low_mbps": float(min(cfg.bandwidths_mbps)),
            "high_mbps": float(max(cfg.bandwidths_mbps)), "hold_s": float(hold_s),
            "duration_s": max(TRAIN_TRACE_S, TRAIN_TRACE_REGIMES * float(hold_s)), "rtt_ms": float(cfg.rtt_ms),
            "seed": int(cfg.train_seed)}


def train_trace(cfg: GridConfig, hold_s: float = TRAIN_TRACE_HOLD_S) -> Any:
    from dvfo_ros.core.io.traces import uniform_trace
    s = train_trace_spec(cfg, hold_s)
    return uniform_trace(s["low_mbps"], s["high_mbps"], duration_s=s["duration_s"], step_s=TRAIN_TRACE_HOLD_S,
                         rtt_ms=s["rtt_ms"], seed=s["seed"], hold_s=s["hold_s"], log=True)


def group_train_setup(cfg: GridConfig, group: Tuple[str, str, str, float]) -> TwinSetup:
    """The group's twin on its training trace (whose hold depends on the group: ``train_hold_s``)."""
    profile, model, workload, eta = group
    setup = group_setup(cfg, profile, model, workload, eta, constant_trace(max(cfg.bandwidths_mbps), cfg.rtt_ms))
    return dataclasses.replace(setup, trace=train_trace(cfg, train_hold_s(cfg, setup)))


def group_setup(cfg: GridConfig, profile: str, model: str, workload: str, eta: float, trace: Any) -> TwinSetup:
    """The group's twin. SLO: one camera period (camera) or ``back_to_back_slo_ms``, raised to
    ``slo_headroom`` x the edge's own latency at max clocks where that misses it (vit_b_16 on the
    smaller boards, resnet50 on a Nano): with an SLO no action can meet, every reward is a penalty
    beyond the learners' reward floor and they could not tell one action from another."""
    base = 1000.0 / cfg.fps if workload == "camera" else cfg.back_to_back_slo_ms
    setup = TwinSetup(device=profile, model=model, trace=trace, seed=cfg.train_seed, fps=cfg.fps, arrival=workload,
                      eta=float(eta), noise=cfg.noise, latency_slo_ms=base)
    t_ref = setup.make_env().reward_cfg.latency_ref_ms
    return dataclasses.replace(setup, latency_slo_ms=round(max(base, cfg.slo_headroom * t_ref), 3))


def source_hash() -> str:
    """Hash of the files that define the twin, the MDP and the learnt policies."""
    h = hashlib.sha256()
    for pattern in _SOURCE_GLOBS:
        for path in sorted(glob.glob(os.path.join(_CORE, pattern))):
            h.update(os.path.relpath(path, _CORE).encode())
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


def checkpoint_key(cfg: GridConfig, setup: TwinSetup, policy: str, source: str) -> str:
    """Hash of everything that affects one trained policy: the setup (trace by its spec), the steps,
    the agent's options, the policy and the source of the files that define it and the twin."""
    s = dataclasses.asdict(setup)
    s["trace"] = train_trace_spec(cfg, train_hold_s(cfg, setup))
    payload = {"setup": s, "steps": cfg.steps, "agent": dataclasses.asdict(cfg.agent or AgentOptions()),
               "policy": policy, "source": source}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_path(cfg: GridConfig, group: Tuple[str, str, str, float], policy: str, key: str) -> str:
    profile, model, workload, eta = group
    return os.path.join(cfg.cache_dir, f"{profile}_{model}_{workload}_eta{eta:g}", f"{policy}-{key}.pt")


def _learnt_policies(cfg: GridConfig, group: Tuple[str, str, str, float], setup: TwinSetup,
                     info: Dict[str, Any]) -> Dict[str, Any]:
    """Every learnt policy of the group, from the cache or trained now (then cached); evaluated from
    the checkpoint either way, so a rerun gives the same numbers."""
    from dvfo_ros.core.policies import CheckpointError, load_policy
    from dvfo_ros.core.policies.experiments import train_policy
    source = source_hash()
    out: Dict[str, Any] = {}
    for name in (n for n in cfg.policies if n in GRID_LEARNT):
        path = checkpoint_path(cfg, group, name, checkpoint_key(cfg, setup, name, source))
        info["checkpoints"][name] = path
        if os.path.isfile(path):
            try:
                out[name] = load_policy(path).train(False)
                info["loaded"].append(name)
                continue
            except CheckpointError:
                pass                        # damaged or foreign: train it again
        t0 = time.monotonic()
        run = train_policy(setup, name, cfg.steps, cfg.agent)
        run["policy"].save(path, meta={"grid_group": list(group), "steps": cfg.steps,
                                       "reward": run["env"].reward_cfg.to_dict()})
        run["policy"].close()
        info["train_wall_s"][name] = round(time.monotonic() - t0, 2)
        info["trained"].append(name)
        out[name] = load_policy(path).train(False)
    return out


def _run_summary(log: Any, action_space: Any) -> Dict[str, float]:
    s = log.summary()
    xis = np.asarray(action_space.offload_ratios)[np.asarray(log.actions, dtype=int)[:, 3]]
    return {"energy_j_per_frame": s["energy_j_per_frame"], "soc_energy_j_per_frame": s["soc_energy_j_per_frame"],
            "latency_ms_mean": s["latency_ms_mean"], "latency_ms_p95": s["latency_ms_p95"],
            "accuracy_loss": s["accuracy_loss"], "cost_mean": s["cost_mean"], "reward_mean": s["reward_mean"],
            "slo_violation_share": s["slo_violations"] / max(s["frames"], 1),
            "offload_ratio_mean": float(np.mean(xis))}


def run_group(cfg: GridConfig, group: Tuple[str, str, str, float]) -> Dict[str, Any]:
    """Train (or load) the group's learnt policies, then run every policy on every bandwidth and
    evaluation seed. Returns {"group": info, "runs": {bandwidth: {policy: [per-seed summary]}}}."""
    import torch

    from dvfo_ros.core.policies import make_policy, policy_names, rollout, twin_options
    torch.set_num_threads(1)
    policy_names()                          # every policy module registered
    profile, model, workload, eta = group
    setup = group_train_setup(cfg, group)
    info: Dict[str, Any] = {"profile": profile, "model": model, "workload": workload, "eta": eta,
                            "trained": [], "loaded": [], "checkpoints": {}, "train_wall_s": {}}
    t0 = time.monotonic()
    learnt = _learnt_policies(cfg, group, setup, info)
    reward_cfg = setup.make_env().reward_cfg
    info["reward"] = reward_cfg.to_dict()
    t1 = time.monotonic()
    runs: Dict[str, Dict[str, List[Dict[str, float]]]] = {}
    for bw in cfg.bandwidths_mbps:
        per: Dict[str, List[Dict[str, float]]] = {n: [] for n in cfg.policies}
        eval_setup = dataclasses.replace(setup, trace=constant_trace(bw, cfg.rtt_ms))
        for k in range(cfg.eval_seeds):
            seed = 1000 + k                 # frames no training run saw
            env = eval_setup.make_env(seed)
            env.reward_cfg = reward_cfg
            for name in cfg.policies:
                if name in learnt:
                    policy = learnt[name]
                else:
                    policy = make_policy(name, env.action_space, **twin_options(name, env))
                env.reset(seed)             # every policy meets the same frames (as a fresh env at this seed)
                per[name].append(_run_summary(rollout(env, policy, cfg.eval_frames), env.action_space))
        runs[f"{bw:g}"] = per
    for policy in learnt.values():
        policy.close()
    info["learn_wall_s"] = round(t1 - t0, 2)
    info["eval_wall_s"] = round(time.monotonic() - t1, 2)
    return {"group": info, "runs": runs}


def _run_group_star(args: Tuple[GridConfig, Tuple[str, str, str, float]]) -> Dict[str, Any]:
    return run_group(*args)


def run_grid(cfg: GridConfig, workers: int = 2, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Every group (in ``workers`` processes; 1: in this one), then the report (``grid_report.report``):
    {"config", "groups", "cells", "headline", "wall_s"}."""
    from dvfo_ros.core.policies.grid_report import report
    cfg.validate()
    groups = cfg.groups()
    bar = open_bar(progress, "grid groups", len(groups), "group")
    results: List[Dict[str, Any]] = []
    t0 = time.monotonic()
    if workers <= 1:
        for g in groups:
            results.append(run_group(cfg, g))
            bar.update(1)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        # spawn: a fresh interpreter per worker (torch and forked threads do not mix)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_group_star, (cfg, g)) for g in groups]
            for fut in as_completed(futures):
                results.append(fut.result())
                g = results[-1]["group"]
                bar.set_postfix(last=f"{g['profile']}/{g['model']}/{g['workload']}/eta{g['eta']:g}")
                bar.update(1)
    bar.close()
    out = report(cfg, results)
    out["wall_s"] = round(time.monotonic() - t0, 1)
    out["workers"] = int(max(1, workers))
    return out
