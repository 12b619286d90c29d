"""DVFO trained as the discounted DRL it is named for (gamma > 0) against gamma = 0, with and without a cost
for switching clocks (issue 14).

    python scripts/gamma_bench.py --devices nano,xavier_nx --model resnet18 --steps 6000 --frames 1000 \
        --json out/gamma.json

Without a switch cost a frame's cost depends on its own action only, so gamma = 0 (a contextual bandit)
is exact and gamma > 0 only adds bootstrapping noise. With ``kang2026`` (``twin/switching.py``: a stall
and the old clock for 1/5/8 ms after each CPU/GPU/EMC change) today's clocks shape the next frame's cost,
and a discounted learner can see that leaving a clock where it is pays later. For each device and switch
cost, DVFO at each gamma is trained on the same frames (``--steps`` of the setup's trace, seed + 1) and
judged on the same held-out frames (seed + 1000) against the per-frame oracle (which knows the clocks in
force; with switches priced it is myopic, not a bound), ``dvfs_only``, ``edge_only`` and ``held`` (the
free-switch oracle's most frequent command held on every frame: no switch at all). A row: mean cost, its gap
to the better of the oracle and ``held``, energy per frame, p95 latency, and clock switches per 100 frames
(frames whose command moved any clock).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any, Dict, List

import numpy as np


def run_row(setup: Any, policy: Any, frames: int, **kw: Any) -> Dict[str, Any]:
    """``policy`` (a policy, or a name built on this row's env with ``kw``: the oracle must search the env
    it runs on) on the held-out frames."""
    from dvfo_ros.core.policies import make_policy, rollout, twin_options
    env = setup.make_env(setup.seed + 1000)
    env.reward_cfg = setup.make_env().reward_cfg
    if isinstance(policy, str):
        policy = make_policy(policy, env.action_space, **twin_options(policy, env), **kw)
    last: List[Any] = [None]
    moved: List[bool] = []
    commands: List[Dict[str, float]] = []

    def tick(_i: int, info: Dict[str, Any]) -> None:
        c = info["command"]
        commands.append(dict(c))
        clocks = (c["cpu_freq_hz"], c["gpu_freq_hz"], c["emc_freq_hz"])
        moved.append(last[0] is not None and clocks != last[0])
        last[0] = clocks
    s = rollout(env, policy, frames, on_step=tick).summary()
    return {"cost_mean": -s["reward_mean"], "energy_j_per_frame": s["energy_j_per_frame"],   # cost + penalties
            "latency_ms_p95": s["latency_ms_p95"], "switches_per_100": 100.0 * float(np.mean(moved)),
            "commands": commands}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", default="nano,xavier_nx")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--trace", default="dvfo")
    p.add_argument("--gammas", default="0,0.9")
    p.add_argument("--switch-costs", default="none,kang2026")
    p.add_argument("--steps", type=int, default=6000, help="training frames of every learnt policy")
    p.add_argument("--frames", type=int, default=1000, help="held-out frames per row")
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="")
    args = p.parse_args()

    import torch

    from dvfo_ros.core.policies import policy_names
    from dvfo_ros.core.policies.experiments import AgentOptions, TwinSetup, train_policy
    torch.set_num_threads(1)
    policy_names()
    gammas = [float(g) for g in args.gammas.split(",")]
    rows: List[Dict[str, Any]] = []
    for device in args.devices.split(","):
        for switch in args.switch_costs.split(","):
            setup = TwinSetup(device=device, model=args.model, trace=args.trace, seed=args.seed, noise=args.noise,
                              switch_cost=switch)
            train_setup = dataclasses.replace(setup, seed=args.seed + 1)
            oracle = run_row(setup, "oracle", args.frames)
            # the free-switch oracle's most frequent command, held on every frame: it never pays a switch (with
            # switches priced, the per-frame oracle is myopic and no longer a bound)
            free = run_row(dataclasses.replace(setup, switch_cost="none"), "oracle", args.frames)["commands"]
            keys = [tuple(sorted(c.items())) for c in free]
            held = dict(max(set(keys), key=keys.count))
            group: List[Dict[str, Any]] = []
            for name, gamma in [("dvfo", g) for g in gammas] + [("dvfs_only", 0.0)]:
                t0 = time.monotonic()
                run = train_policy(train_setup, name, args.steps, AgentOptions(gamma=gamma))
                row = run_row(setup, run["policy"].train(False), args.frames)
                run["policy"].close()
                row.update(policy=name, gamma=gamma, train_s=round(time.monotonic() - t0, 1))
                group.append(row)
            group.append(dict(run_row(setup, "edge_only", args.frames),
                              policy="edge_only", gamma=0.0))
            group.append(dict(run_row(setup, "static", args.frames, command=held), policy="held", gamma=0.0))
            group.append(dict(oracle, policy="oracle", gamma=0.0))
            best = min(oracle["cost_mean"], group[-2]["cost_mean"])      # the oracle or the held command
            for row in group:
                row.update(device=device, switch_cost=switch, gap_to_best=row["cost_mean"] / best - 1.0)
                print(f"{device:9s} {switch:8s} {row['policy']:9s} gamma {row['gamma']:<4g} "
                      f"cost {row['cost_mean']:.4f} "
                      f"({100 * row['gap_to_best']:+5.1f} % vs the better of oracle and held)  "
                      f"{1e3 * row['energy_j_per_frame']:6.1f} mJ  "
                      f"p95 {row['latency_ms_p95']:6.1f} ms  switches {row['switches_per_100']:5.1f}/100", flush=True)
            rows.extend({k: v for k, v in r.items() if k != "commands"} for r in group)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
