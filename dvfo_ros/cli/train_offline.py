"""dvfo-train --bag: train the DVFO policy offline from recorded rosbags (mcap or sqlite3).

    dvfo-train --bag run1/ --bag run2/ --val-bag run3/ --out dvfo.pt --steps 5000
    ros2 run dvfo_ros policy --ros-args -p policy_mode:=dvfo -p checkpoint:=dvfo.pt

Bags are streamed into a fixed-size reservoir (``--capacity`` transitions), so hours of recording
train in bounded memory. The checkpoint is written atomically (temp file + rename) after every
validation, so an interrupted or failed run never leaves a broken file where the node looks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

from dvfo_ros.cli.common import cli_main, tqdm_progress
from dvfo_ros.core.errors import DvfoError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvfo-train", description="Train the DVFO policy offline from rosbags "
                                "(Transition messages on /dvfo/transition), optionally mixed with twin rollouts.")
    p.add_argument("--bag", action="append", required=True, metavar="PATH",
                   help="rosbag2 bag directory or .mcap/.db3 file to train on (repeat for several)")
    p.add_argument("--val-bag", action="append", default=[], metavar="PATH",
                   help="held-out bag for validation (repeatable); default: hold out --val-fraction of the data")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training data held out when no --val-bag is given (default 0.1)")
    p.add_argument("--out", required=True, metavar="FILE", help="checkpoint to write (.pt), loaded by the policy node")
    p.add_argument("--steps", type=int, default=2000, help="gradient steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=256, help="minibatch size (default 256)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--gamma", type=float, default=0.5, help="discount; the agent's default 0.5 (default 0.5)")
    p.add_argument("--cql-alpha", default="auto",
                   help="weight of the conservative (CQL) term; 0 = plain double DQN; 'auto' = 0 when the data "
                        "covers every action level (exploration or twin rollouts), else 1 (default auto)")
    p.add_argument("--capacity", type=int, default=500_000,
                   help="most transitions held in memory; longer recordings are sampled uniformly (default 500000)")
    p.add_argument("--profile", default="",
                   help="device profile of the action space (default: the one in the bag's device_state, "
                        "else xavier_nx); must match the policy node's 'profile'")
    p.add_argument("--topic", default=None, help="Transition topic (default: every dvfo_ros/msg/Transition topic)")
    p.add_argument("--twin-frames", type=int, default=0,
                   help="also roll out this many random-action frames in the device twin (default 0: bags only)")
    p.add_argument("--twin-share", type=float, default=0.25,
                   help="share of each minibatch drawn from twin rollouts when --twin-frames > 0 (default 0.25)")
    p.add_argument("--eta", type=float, default=None,
                   help="energy/latency weight for twin rewards (default: the bags' eta)")
    p.add_argument("--init", default="", metavar="CHECKPOINT",
                   help="start from this dvfo checkpoint (e.g. one trained in the twin) instead of random weights")
    p.add_argument("--eval-every", type=int, default=250, help="validate (and checkpoint) every N steps (default 250)")
    p.add_argument("--eval-frames", type=int, default=0,
                   help="also run the greedy policy for N frames in the twin at each validation (default 0)")
    p.add_argument("--plot", default=None, metavar="PNG", help="learning-curve PNG (default: OUT with .png)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", default=None, metavar="FILE", help="write the run's numbers as JSON")
    return p


def plot_curve(history: List[Dict[str, float]], losses: List[tuple], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    twin = [h for h in history if "twin_reward" in h]
    fig, axes = plt.subplots(1, 3 if twin else 2, figsize=(13 if twin else 9, 3.6))
    if losses:
        st = np.asarray([x[0] for x in losses])
        w = max(1, len(losses) // 100)
        for i, name in ((1, "TD (Huber)"), (2, "CQL gap (x alpha in the loss)")):
            v = np.convolve([x[i] for x in losses], np.ones(w) / w, mode="valid")
            axes[0].plot(st[w - 1:], v, label=name)
        axes[0].set_title("training loss")
        axes[0].set_xlabel("gradient step")
        axes[0].legend()
    if history:
        steps = [h["step"] for h in history]
        l1 = axes[1].plot(steps, [h.get("val_td", np.nan) for h in history], "o-", label="held-out TD error (left)")
        ax2 = axes[1].twinx()
        l2 = ax2.plot(steps, [h.get("val_agreement", np.nan) for h in history], "s--", color="tab:green",
                      label="agreement with recorded action (right)")
        ax2.set_ylim(0, 1)
        axes[1].set_title("validation on held-out data")
        axes[1].set_xlabel("gradient step")
        axes[1].legend(l1 + l2, [x.get_label() for x in l1 + l2], loc="best", fontsize=8)
    if twin:
        axes[2].plot([h["step"] for h in twin], [h["twin_reward"] for h in twin], "o-")
        axes[2].set_title("greedy policy in the twin: mean reward")
        axes[2].set_xlabel("gradient step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@cli_main("dvfo-train", errors=(DvfoError,), code=1)
def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "capacity", "eval_every", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 <= args.twin_share < 1.0 or not 0.0 <= args.val_fraction < 1.0:
        parser.error("--twin-share and --val-fraction must be in [0, 1)")
    if args.eta is not None and not 0.0 <= args.eta <= 1.0:
        parser.error("--eta must be in [0, 1]")
    if args.cql_alpha != "auto":
        try:
            if float(args.cql_alpha) < 0:
                raise ValueError
        except ValueError:
            parser.error("--cql-alpha must be 'auto' or a number >= 0")
    import torch
    torch.set_num_threads(max(1, args.threads))
    from dvfo_ros.core.policies.offline_fit import OfflineOptions, fit_offline
    opts = OfflineOptions(bags=list(args.bag), out=args.out, val_bags=list(args.val_bag),
                          val_fraction=args.val_fraction,
                          steps=args.steps, batch_size=args.batch_size, lr=args.lr, gamma=args.gamma,
                          cql_alpha=args.cql_alpha, capacity=args.capacity, profile=args.profile, topic=args.topic,
                          twin_frames=args.twin_frames, twin_share=args.twin_share, eta=args.eta, init=args.init,
                          eval_every=args.eval_every, eval_frames=args.eval_frames, seed=args.seed)
    try:
        fit = fit_offline(opts, progress=tqdm_progress(disable=args.no_progress))
    except KeyboardInterrupt:
        print(f"dvfo-train: interrupted; {args.out} holds the last validated checkpoint (if any)", file=sys.stderr)
        return 130
    plot = args.plot or os.path.splitext(args.out)[0] + ".png"
    plot_curve(fit.history, fit.losses, plot)
    res = {"checkpoint": fit.numbers["checkpoint"], "plot": plot, **fit.numbers}
    v = res["val"]
    print(f"read {res['transitions_read']} transitions from {res['bags']} bag(s) in {res['read_s']:.1f} s "
          f"({res['read_transitions_per_s']:.0f}/s); trained {res['steps']} steps x {args.batch_size} in "
          f"{res['train_s']:.1f} s ({res['steps_per_s']:.0f} steps/s, {res['trained_transitions_per_s']:.0f} "
          f"transitions/s); peak RSS {res['peak_rss_mb']:.0f} MB")
    if v:
        print(f"validation: TD error {v.get('val_td', float('nan')):.4f}, agreement with recorded actions "
              f"{v.get('val_agreement', float('nan')):.2f}" +
              (f", twin mean reward {v['twin_reward']:.3f}" if "twin_reward" in v else ""))
    print(f"checkpoint {res['checkpoint']} (profile {res['profile']}), learning curve {res['plot']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
