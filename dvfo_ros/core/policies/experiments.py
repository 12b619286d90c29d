"""Experiments in the device twin: train a learnt policy, evaluate it against the oracle, and run
policies side by side on the same frames. ROS-free; ``dvfo-train`` and ``dvfo-bench`` only parse
their options into these types, call these functions and print what comes back.

    setup = TwinSetup(device="xavier_nx", model="resnet18", trace="dvfo", seed=0)
    result = train_experiment(setup, "dvfo", steps=6000)        # runs, summary, checkpoint meta
    rows, reward = run_bench(setup, ["oracle", "dvfo", "edge_only"], frames=1000)
    targets(rows)                                                 # the issue's ratios from one run

A ``progress`` argument is a factory ``(description, total, unit) -> bar`` (``tqdm`` is one: the
bar needs ``update(n)`` and ``close()``); without it nothing is shown.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dvfo_ros.core.policies.setup import AgentOptions, TwinSetup  # noqa: F401 - re-exported for callers

# Policies that learn (trained in the twin, saved as checkpoints).
LEARNT = ("dvfo", "dvfo_sequential", "dvfs_only", "offload_only", "autoscale", "e2e_rl")
# Policies that never choose clocks themselves (fixed clocks, or clocks left to the stock governor).
NO_CLOCK_TUNING = ("edge_only", "cloud_only", "max_freq", "ondemand", "offload_only", "static")

Progress = Callable[[str, Optional[int], str], Any]
Rows = Dict[str, Dict[str, Any]]         # dvfo-bench's rows: {policy: {metric: value}}


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def open_bar(progress: Optional[Progress], desc: str, total: Optional[int], unit: str) -> Any:
    """A bar from ``progress`` (see the module docstring), or one that shows nothing."""
    return progress(desc, total, unit) if progress is not None else _NoBar()


def steps_to_fraction(curve: Sequence[float], window: int, fraction: float = 0.95,
                      steps: Optional[Sequence[int]] = None, final: Optional[float] = None) -> Optional[int]:
    """Env steps until the smoothed per-frame reward first covers ``fraction`` of the way from its
    start to its final level (final = mean of the last 10 % of the run). ``steps``: the env step of
    each entry when the curve holds only some frames (the greedy ones); default 1, 2, 3, ..."""
    r = np.asarray(curve, dtype=float)
    if len(r) < 2 * window:
        return None
    at = np.arange(1, len(r) + 1) if steps is None else np.asarray(steps, dtype=int)
    smooth = np.convolve(r, np.ones(window) / window, mode="valid")
    start = smooth[0]
    if final is None:
        final = float(np.mean(r[-max(len(r) // 10, window):]))
    goal = start + fraction * (final - start)
    hit = np.nonzero(smooth >= goal)[0] if final >= start else np.nonzero(smooth <= goal)[0]
    return int(at[hit[0] + window - 1]) if len(hit) else None


def curve_window(steps: int) -> int:
    """The moving-mean window of a learning curve of ``steps`` frames."""
    return max(10, min(500, steps // 20))


def train_policy(setup: TwinSetup, name: str, steps: int, agent: Optional[AgentOptions] = None,
                 time_scale: float = 0.0, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Train one learnt policy in the twin; returns the policy, its env, reward curves and wall time.

    ``time_scale`` 0 (default): simulated pacing (``rollout``'s "sim": CPU-bound, the same run twice
    for a seed); > 0: real pacing, each frame takes ``interval * time_scale`` of wall time."""
    from dvfo_ros.core.policies import make_policy, rollout, twin_options
    env = setup.make_env()
    policy = make_policy(name, env.action_space, **(agent or AgentOptions()).policy_kwargs(setup.seed),
                         **twin_options(name, env))
    bar = open_bar(progress, f"train {name}", steps, "frame")
    greedy_steps: List[int] = []
    greedy_rewards: List[float] = []

    def tick(i: int, info: Dict[str, Any]) -> None:
        # the learning curve that measures the POLICY, not the epsilon schedule: frames it played greedy
        if not getattr(policy, "last_explored", False):
            greedy_steps.append(i + 1)
            greedy_rewards.append(-float(info["cost"]) - float(info["penalty"]))
        bar.update(1)

    t0 = time.monotonic()
    log = rollout(env, policy, steps, learn=True, pacing="real" if time_scale > 0 else "sim",
                  time_scale=time_scale, on_step=tick)
    if hasattr(policy, "wait_for_learner"):
        policy.wait_for_learner(2.0)
    policy.train(False)
    bar.close()
    return {"policy": policy, "env": env, "curve": log.rewards, "wall_s": time.monotonic() - t0,
            "greedy_steps": greedy_steps, "greedy_curve": greedy_rewards,
            "updates": int(getattr(policy, "updates", 0)),
            "decision_ms_p99_training": float(np.percentile(log.decision_ms, 99)),
            "latency_ms_training": float(np.mean(log.latency_ms))}


def evaluate(setup: TwinSetup, policy: Any, frames: int, trace: Optional[str] = None) -> Dict[str, float]:
    """The greedy policy against the oracle on held-out frames (seed + 1000), on ``trace`` (default:
    the setup's). ``cost_vs_oracle``: the policy's mean cost over the oracle's, minus 1."""
    from dvfo_ros.core.policies import make_policy, rollout
    if trace is not None:
        setup = dataclasses.replace(setup, trace=trace)
    env = setup.make_env(setup.seed + 1000)
    ours = rollout(env, policy, frames).summary()
    env = setup.make_env(setup.seed + 1000)
    bound = rollout(env, make_policy("oracle", env.action_space, env=env), frames).summary()
    return {"reward_mean": ours["reward_mean"], "oracle_reward_mean": bound["reward_mean"],
            "cost_mean": ours["cost_mean"], "oracle_cost_mean": bound["cost_mean"],
            "cost_vs_oracle": (ours["cost_mean"] - bound["cost_mean"]) / max(abs(bound["cost_mean"]), 1e-9),
            "energy_j_per_frame": ours["energy_j_per_frame"], "latency_ms_p95": ours["latency_ms_p95"],
            "slo_violations": ours["slo_violations"], "decision_ms_p99": ours["decision_ms_p99"]}


def _tail_mean(curve: Sequence[float]) -> float:
    return float(np.mean(curve[-max(len(curve) // 10, 1):]))


@dataclass
class TrainResult:
    """What ``train_experiment`` returns: the runs (policies still open), their JSON summary, and the
    metadata the main run's checkpoint carries."""

    policy_name: str
    runs: Dict[str, Dict[str, Any]]
    summary: Dict[str, Any]
    window: int
    meta: Dict[str, Any]
    common_goal: Optional[float] = None  # concurrent vs sequential: the better final greedy return
    eval: Dict[str, float] = field(default_factory=dict)
    eval_heldout: Dict[str, Dict[str, float]] = field(default_factory=dict)   # by held-out trace

    @property
    def policy(self) -> Any:
        return self.runs[self.policy_name]["policy"]

    def curves(self) -> Dict[str, List[float]]:
        """Every run's reward curve, and its greedy frames alone, by label (what the PNG plots)."""
        return {**{k: v["curve"] for k, v in self.runs.items()},
                **{f"{k} (greedy frames)": v["greedy_curve"] for k, v in self.runs.items()}}

    def close(self) -> None:
        for run in self.runs.values():
            run["policy"].close()


def train_experiment(setup: TwinSetup, policy: str = "dvfo", steps: int = 20000,
                     agent: Optional[AgentOptions] = None, time_scale: float = 0.0, eval_frames: int = 600,
                     compare_sequential: bool = False, progress: Optional[Progress] = None,
                     eval_traces: Sequence[str] = ()) -> TrainResult:
    """dvfo-train in the twin: train ``policy`` (and, with ``compare_sequential``, the sequential ablation),
    evaluate it against the oracle on the training trace and on each of ``eval_traces`` (traces held
    out from training: the figure that says how it will do on a robot's own network), and measure env
    steps to 95 % of the final return."""
    window = curve_window(steps)
    runs = {policy: train_policy(setup, policy, steps, agent, time_scale, progress)}
    if compare_sequential and policy == "dvfo":
        runs["dvfo_sequential"] = train_policy(setup, "dvfo_sequential", steps, agent, time_scale, progress)
    main_run = runs[policy]
    ev = evaluate(setup, main_run["policy"], eval_frames) if eval_frames else {}
    held = {t: evaluate(setup, main_run["policy"], eval_frames, t) for t in eval_traces} if eval_frames else {}
    summary: Dict[str, Any] = {"device": setup.device, "model": setup.model, "trace": setup.trace,
                               "seed": setup.seed, "steps": steps, "eval": ev, "eval_heldout": held, "runs": {}}
    for name, run in runs.items():
        summary["runs"][name] = {"wall_s": round(run["wall_s"], 2), "updates": run["updates"],
                                 "steps_to_95pct": steps_to_fraction(run["greedy_curve"], window, 0.95,
                                                                     run["greedy_steps"]),
                                 "steps_to_95pct_with_exploration": steps_to_fraction(run["curve"], window),
                                 "final_reward": _tail_mean(run["curve"]),
                                 "final_greedy_reward": _tail_mean(run["greedy_curve"]) if run["greedy_curve"]
                                 else None,
                                 "latency_ms_training": run["latency_ms_training"]}
    best = None
    if {"dvfo", "dvfo_sequential"} <= set(runs):
        # Each run's own "95 % of ITS final return" rewards a run that plateaus lower; the comparison
        # uses one goal for both: 95 % of the way from the run's start to the better final (greedy) return.
        best = max(r["final_greedy_reward"] for r in summary["runs"].values() if r["final_greedy_reward"] is not None)
        for name in ("dvfo", "dvfo_sequential"):
            summary["runs"][name]["steps_to_95pct_common"] = steps_to_fraction(
                runs[name]["greedy_curve"], window, 0.95, runs[name]["greedy_steps"], final=best)
    curve = main_run["curve"]
    meta = {"device": setup.device, "model": setup.model, "trace": setup.trace, "seed": setup.seed, "steps": steps,
            "fps": setup.fps, "arrival": setup.arrival, "reward": main_run["env"].reward_cfg.to_dict(),
            "curve_window_means": [float(np.mean(curve[i:i + window])) for i in range(0, len(curve), window)],
            "eval": ev, "eval_heldout": {t: round(h["cost_vs_oracle"], 4) for t, h in held.items()}}
    return TrainResult(policy, runs, summary, window, meta, best, ev, held)


# ---- dvfo-bench: policies side by side -------------------------------------------------------

def run_bench(setup: TwinSetup, names: Sequence[str], frames: int = 1000, checkpoint: Optional[str] = None,
              train_steps: Optional[int] = None, agent: Optional[AgentOptions] = None, time_scale: float = 0.0,
              static: Optional[Dict[str, float]] = None, progress: Optional[Progress] = None,
              train_trace: Optional[str] = None) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, float]]:
    """Every named policy on the same frames of ``setup.trace``; returns the rows and the one reward
    config they all used (``run_bench_traces`` with one trace)."""
    by_trace, cfg = run_bench_traces(setup, names, [setup.trace], frames, checkpoint, train_steps, agent,
                                     time_scale, static, progress, train_trace)
    return by_trace[setup.trace], cfg


def run_bench_traces(setup: TwinSetup, names: Sequence[str], traces: Sequence[str], frames: int = 1000,
                     checkpoint: Optional[str] = None, train_steps: Optional[int] = None,
                     agent: Optional[AgentOptions] = None, time_scale: float = 0.0,
                     static: Optional[Dict[str, float]] = None, progress: Optional[Progress] = None,
                     train_trace: Optional[str] = None) -> Tuple[Dict[str, Rows], Dict[str, float]]:
    """Every named policy on the same frames of each trace in ``traces``: {trace: rows}, and the one
    reward config they all used.

    A learnt policy runs from ``checkpoint`` when that holds it, else it is first trained (once, for
    every trace) for ``train_steps`` frames on other frames (seed + 1) of ``train_trace``. Both
    default to what the checkpoint was trained with (its steps and trace), so every learnt rival is
    trained as long as, and on the networks that, the checkpoint's policy was; without a checkpoint:
    20000 frames of ``setup.trace``. ``static``: the command of the "static" policy.
    """
    from dvfo_ros.core.mdp import RewardConfig
    from dvfo_ros.core.policies import POLICIES, load_checkpoint, make_policy, rollout, twin_options
    rivals = [POLICIES[n] for n in names if n != "oracle" and n in POLICIES]
    cuts = any("split_index" in cls.extras for cls in rivals)
    places = any("target" in cls.extras for cls in rivals)
    default_cfg = setup.make_env().reward_cfg        # also: a bad profile or trace fails before anything runs
    for trace in traces:
        dataclasses.replace(setup, trace=trace).make_env()
    ck = load_checkpoint(checkpoint) if checkpoint else None
    # One reward config for every row: the checkpoint's own (E_ref, T_ref, SLO, eta) when it has
    # one, so the learnt policy is judged by the cost it was trained on and every rival by the same.
    trained_cfg = (ck or {}).get("meta", {}).get("reward")
    reward_cfg = RewardConfig(**trained_cfg) if trained_cfg else default_cfg
    ck_meta = (ck or {}).get("meta", {})
    train_steps = int(train_steps or ck_meta.get("steps") or 20000)
    train_setup = dataclasses.replace(setup, seed=setup.seed + 1,
                                      trace=train_trace or ck_meta.get("trace") or setup.trace)
    learnt: Dict[str, Tuple[Any, str]] = {}
    for name in names:
        if name not in LEARNT:
            continue
        if ck is not None and ck["policy"] == name:
            policy = make_policy(name, setup.make_env().action_space, checkpoint=checkpoint, **ck["config"])
            learnt[name] = (policy, f"checkpoint {checkpoint}")
        else:
            policy = train_policy(train_setup, name, train_steps, agent, time_scale, progress)["policy"]
            learnt[name] = (policy, f"trained {train_steps} frames on {train_setup.trace}")
        policy.train(False)
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for trace in traces:
        results: Dict[str, Dict[str, Any]] = {}
        for name in names:
            env = dataclasses.replace(setup, trace=trace).make_env()
            env.reward_cfg = reward_cfg
            if name in learnt:
                policy, source = learnt[name]
            else:
                # the oracle searches the rivals' cuts and targets too
                kw: Dict[str, Any] = twin_options(name, env, partitions=cuts, targets=places)
                if name == "static" and static:
                    kw["command"] = dict(static)
                policy = make_policy(name, env.action_space, **kw)
                err = getattr(policy, "predictor_error", None)     # neurosurgeon: how far off its regressions are
                source = f"stage regressions ({100 * err['latency']:.0f} % latency error)" if err else \
                    "exhaustive search" if name == "oracle" else "rule"
            s = rollout(env, policy, frames).summary()
            results[name] = {"energy_j_per_frame": s["energy_j_per_frame"],
                             "soc_energy_j_per_frame": s["soc_energy_j_per_frame"],
                             "latency_ms_mean": s["latency_ms_mean"], "latency_ms_p95": s["latency_ms_p95"],
                             "accuracy": None, "accuracy_loss": s["accuracy_loss"], "reward_mean": s["reward_mean"],
                             "cost_mean": s["cost_mean"], "slo_violations": s["slo_violations"],
                             "accuracy_violations": s["accuracy_violations"], "frames": s["frames"],
                             "decision_ms_p50": s["decision_ms_p50"], "decision_ms_p99": s["decision_ms_p99"],
                             "source": source}
        out[trace] = results
    for policy, _ in learnt.values():
        policy.close()
    return out, reward_cfg.to_dict()


def _saving(ours: Dict[str, Any], theirs: Dict[str, Any], key: str) -> float:
    return 1.0 - ours[key] / theirs[key] if theirs[key] > 0 else 0.0


def targets(results: Dict[str, Dict[str, Any]], policy: str = "dvfo") -> Dict[str, Any]:
    """The policy issue's targets as ratios from this one run (empty when ``policy`` did not run).

    Energy is compared with the lowest-energy policy that does not tune clocks among those whose
    p95 is no better than ``policy``'s ("at equal or better p95"); when every such policy is faster,
    the lowest-energy one overall is named and ``p95_equal_or_better`` is false. The oracle's own
    saving against the same policy is the bound: no policy can save more at this reward.
    Savings are given for the whole board (VDD_IN) and for the CPU/GPU/SoC rails that DVFS drives.
    """
    if policy not in results:
        return {}
    ours = results[policy]
    out: Dict[str, Any] = {"policy": policy, "decision_ms_p99": ours["decision_ms_p99"]}
    if "oracle" in results:
        o = results["oracle"]["cost_mean"]          # energy-latency cost, penalties excluded
        out["cost_vs_oracle"] = (ours["cost_mean"] - o) / max(o, 1e-9)
    base = [n for n in NO_CLOCK_TUNING if n in results and n != policy]
    if base:
        slower = [n for n in base if results[n]["latency_ms_p95"] >= ours["latency_ms_p95"] - 1e-9]
        best = min(slower or base, key=lambda n: results[n]["energy_j_per_frame"])
        theirs = results[best]
        out.update({"energy_baseline": best, "p95_equal_or_better": bool(slower),
                    "baseline_latency_ms_p95": theirs["latency_ms_p95"],
                    "energy_saving": _saving(ours, theirs, "energy_j_per_frame"),
                    "soc_energy_saving": _saving(ours, theirs, "soc_energy_j_per_frame")})
        if "oracle" in results:
            orc = results["oracle"]
            out.update({"oracle_energy_saving": _saving(orc, theirs, "energy_j_per_frame"),
                        "oracle_soc_energy_saving": _saving(orc, theirs, "soc_energy_j_per_frame")})
    return out


def _less(saving: float) -> str:
    return f"{100 * saving:.1f}% less" if saving >= 0 else f"{-100 * saving:.1f}% more"


def ratios(results: Dict[str, Dict[str, Any]], policy: str = "dvfo") -> List[str]:
    """``targets`` as the lines dvfo-bench prints under its table."""
    t = targets(results, policy)
    out = []
    if "cost_vs_oracle" in t:
        out.append(f"{policy} cost vs oracle: {100 * t['cost_vs_oracle']:+.1f}%")
    if "energy_baseline" in t:
        p95 = "equal or better" if t["p95_equal_or_better"] else "WORSE"
        line = (f"{policy} energy/frame vs {t['energy_baseline']} (lowest-energy policy without clock tuning, "
                f"p95 {t['baseline_latency_ms_p95']:.1f} ms; ours {p95}): {_less(t['energy_saving'])} on the board, "
                f"{_less(t['soc_energy_saving'])} on the SoC rails")
        if "oracle_energy_saving" in t:
            line += (f"; the oracle (the bound): {_less(t['oracle_energy_saving'])} / "
                     f"{_less(t['oracle_soc_energy_saving'])}")
        out.append(line)
    if t:
        out.append(f"{policy} decision p99: {t['decision_ms_p99']:.3f} ms")
    auto = results.get("autoscale")
    vs = [(n, results[n]) for n in ("cpu_only", "image_upload") if n in results]
    if auto and vs and auto["energy_j_per_frame"] > 0:       # AutoScale's headline: energy efficiency
        gains = ", ".join(f"{r['energy_j_per_frame'] / auto['energy_j_per_frame']:.2f}x vs {n}" for n, r in vs)
        out.append(f"autoscale energy efficiency (frames per J): {gains} (its paper: 9.8x vs the mobile CPU, "
                   f"1.6x vs cloud offloading)")
    up = results.get("image_upload") or {}
    for name, r in ((n, results[n]) for n in ("neurosurgeon", "e2e_rl") if n in results and up):
        frames = max(int(r.get("frames", 0)), 1)
        out.append(f"{name} vs image_upload (the status quo of sending the input): latency "
                   f"{up['latency_ms_mean'] / max(r['latency_ms_mean'], 1e-9):.2f}x faster, mobile energy "
                   f"{_less(_saving(r, up, 'energy_j_per_frame'))}; accuracy requirement missed on "
                   f"{r.get('accuracy_violations', 0)} of {frames} frames"
                   + (" (its paper: 3.1x, -59.5 %)" if name == "neurosurgeon" else " (its paper: -35 % response "
                      "time against prior work at < 0.9 % accuracy loss)"))
    return out
