"""Why DVFO loses a grid cell: its Q-values against the twin's noise-free reward, frame by frame.

    python scripts/dvfo_diagnose.py --profile nano --model vit_b_16 --workload back_to_back --eta 0.5 \
        --bandwidth 8 --frames 20

Trains the grid group's DVFO exactly as ``dvfo-bench grid`` does (same setup, trace, steps and options,
so the same checkpoint; about 10 s for this group), then runs it greedily on the cell's constant
bandwidth and prints, per frame, the joint action it chose, its Q, that action's true reward (the
twin without noise, what the oracle scores) and the best true reward. Then, over the training frames
that fell in the cell's network bin, how far Q is from the truth by how often an action was taken.
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="nano")
    p.add_argument("--model", default="vit_b_16")
    p.add_argument("--workload", default="back_to_back", choices=("camera", "back_to_back"))
    p.add_argument("--eta", type=float, default=0.5)
    p.add_argument("--bandwidth", type=float, default=8.0, help="the cell's constant bandwidth, Mbps")
    p.add_argument("--frames", type=int, default=20)
    args = p.parse_args()

    import torch

    from dvfo_ros.core.policies import policy_names
    from dvfo_ros.core.policies.experiments import train_policy
    from dvfo_ros.core.policies.grid import GridConfig, constant_trace, group_train_setup
    torch.set_num_threads(1)
    policy_names()
    cfg = GridConfig()
    setup = group_train_setup(cfg, (args.profile, args.model, args.workload, args.eta))
    run = train_policy(setup, "dvfo", cfg.steps, cfg.agent)
    agent = run["policy"].train(False)
    env = dataclasses.replace(setup, trace=constant_trace(args.bandwidth, cfg.rtt_ms)).make_env(1000)
    env.reward_cfg = run["env"].reward_cfg
    state = env.reset(1000)
    print(f"{args.profile}/{args.model}/{args.workload}/eta {args.eta:g} at {args.bandwidth:g} Mbps "
          "(action = cpu, gpu, emc, xi levels)")
    got, best, chosen = [], [], []
    for i in range(args.frames):
        q = agent.q_table(state)
        true = np.asarray(env.rewards_of_all_actions()).reshape(q.shape)
        a = tuple(int(x) for x in agent.act(state))
        top = tuple(int(x) for x in np.unravel_index(int(true.argmax()), q.shape))
        print(f"{i:3d} chose {a} Q {q[a]:+.3f} true {true[a]:+.3f} | best {top} true {true.max():+.3f}")
        got.append(true[a])
        chosen.append(a)
        best.append(true.max())
        state = env.step(np.asarray(a))[0]
    print(f"mean true reward {np.mean(got):+.3f}, the best's {np.mean(best):+.3f}; "
          f"{len(set(chosen))} distinct actions chosen")

    buf, cell = agent.buffer, agent.support.cell(state)
    rows = [i for i in range(buf.size) if agent.support.cell(buf.s[i]) == cell]
    q = agent.q_table(state)
    true = np.asarray(env.rewards_of_all_actions()).reshape(q.shape)
    counts = np.zeros(q.shape)
    np.add.at(counts, tuple(buf.a[rows].T), 1)             # times each joint action was taken in this bin
    print(f"training frames in this network bin: {len(rows)} of {buf.size}, {int((counts > 0).sum())} distinct "
          f"actions, the last at frame {rows[-1] if rows else '-'}")
    offload = np.zeros(q.shape, bool)
    offload[..., 1:] = True
    for lo, hi, label in ((0, 1, "0-0"), (1, 3, "1-2"), (3, 10, "3-9"), (10, np.inf, "10-more")):
        m = offload & (counts >= lo) & (counts < hi)
        if m.any():
            print(f"offload actions taken {label} times: {int(m.sum())}, "
                  f"Q - true {float((q - true)[m].mean()):+.3f} on average")

if __name__ == "__main__":
    main()
