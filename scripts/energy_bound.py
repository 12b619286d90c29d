#!/usr/bin/env python3
"""How much energy any policy can save in the twin: the lowest energy per frame over every joint action.

For one device/model and a few uplink bandwidths this prints, next to edge-only inference at max
clocks (what ``edge_only`` runs), the least energy any action reaches (a) without being slower than
that and (b) within the latency SLO, on the whole board and on the CPU/GPU/SoC rails that DVFS
drives. It is the ceiling on an energy-saving target that no training can lift.

    python scripts/energy_bound.py --device xavier_nx --model resnet18
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="xavier_nx")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--rtt-ms", type=float, default=20.0)
    p.add_argument("--bandwidths", type=float, nargs="+", default=[0.5, 2.0, 8.0, 20.0])
    args = p.parse_args(argv)
    from dvfo_ros.core.mdp import SimEnv
    env = SimEnv(args.device, args.model, "dvfo", fps=args.fps)
    space = env.action_space
    acts = space.all_actions()
    top = space.max_action(0.0)
    k = int(np.flatnonzero((acts == top).all(axis=1))[0])
    slo = env.reward_cfg.latency_slo_ms
    print(f"{args.device} / {args.model} / {args.fps:g} fps (SLO {slo:.1f} ms) / RTT {args.rtt_ms:g} ms; "
          f"savings vs edge-only at max clocks, board | SoC rails")
    print(f"{'Mbps':>6} {'edge_only J':>12} {'ms':>6} | {'best at <= its latency':>26} | {'best within the SLO':>30}")
    for bw in args.bandwidths:
        energy, latency = env.outcome_table(bw, args.rtt_ms)
        soc = env.soc_energy_j(energy, np.maximum(env.period_ms, latency))

        def best(mask: np.ndarray) -> str:
            j = int(np.argmin(np.where(mask, energy, np.inf)))
            return (f"{100 * (1 - energy[j] / energy[k]):5.1f}% | {100 * (1 - soc[j] / soc[k]):5.1f}% "
                    f"@ {latency[j]:5.1f} ms")
        print(f"{bw:>6g} {energy[k]:>12.4f} {latency[k]:>6.1f} | {best(latency <= latency[k] + 1e-9):>26} | "
              f"{best(latency <= slo):>30}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
