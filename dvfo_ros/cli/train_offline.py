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
import resource
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

from dvfo_ros.core.offline import (OfflineError, OfflineTrainer, ReadStats, ReservoirBuffer, action_coverage,
                                   auto_cql_alpha, iter_transitions, load_all, twin_transitions)


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


def detect_profile(paths: List[str], warn) -> str:
    """The device profile the robot's governor reported (first DeviceState found), else xavier_nx."""
    from dvfo_ros.core.bags import BagError, BagReader
    for path in paths:
        try:
            with BagReader(path, warn=lambda _m: None) as r:
                for m in r.messages(msgtypes=["dvfo_ros/msg/DeviceState"]):
                    name = str(getattr(m.msg, "profile", "") or "")
                    if name:
                        return name
                    break
        except BagError:
            continue
    return "xavier_nx"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _split(buf: ReservoirBuffer, fraction: float, seed: int) -> tuple:
    """Hold out a random share of ``buf`` in place: returns the held-out arrays, shrinks ``buf``."""
    n = len(buf)
    k = int(round(n * fraction))
    if k < 1 or n - k < 1:
        return tuple(x[:0] for x in buf.all())
    perm = np.random.default_rng(seed + 5).permutation(n)
    held, kept = perm[:k], perm[k:]
    val = tuple(x[held].copy() for x in buf.all())
    for name in ("s", "a", "r", "s2", "done"):
        arr = getattr(buf, name)
        arr[:n - k] = arr[kept]
    buf.size = n - k
    return val


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
        st = [h["step"] for h in history]
        l1 = axes[1].plot(st, [h.get("val_td", np.nan) for h in history], "o-", label="held-out TD error (left)")
        ax2 = axes[1].twinx()
        l2 = ax2.plot(st, [h.get("val_agreement", np.nan) for h in history], "s--", color="tab:green",
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


def train(args: argparse.Namespace, log=print) -> Dict[str, Any]:
    """The whole run; returns the numbers the CLI prints (and --json writes)."""
    import torch
    from tqdm import tqdm

    from dvfo_ros.core.agents import CheckpointError, make_policy
    from dvfo_ros.core.env import ActionSpace
    from dvfo_ros.core.twin import load_profile

    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    warnings: List[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        log(f"warning: {msg}")

    profile = args.profile or detect_profile(args.bag, warn)
    try:
        space = ActionSpace.from_profile(load_profile(profile))
    except Exception as e:  # noqa: BLE001 - unknown profile name or bad YAML
        raise OfflineError(str(e).splitlines()[0]) from None
    agent = make_policy("dvfo", space, seed=args.seed, gamma=args.gamma, lr=args.lr, batch_size=args.batch_size)
    if args.init:
        try:
            agent.load(args.init)
        except CheckpointError as e:
            raise OfflineError(str(e)) from None
    agent.train(True)

    stats = ReadStats()
    bar = tqdm(desc="reading bags", unit=" transitions", disable=args.no_progress, file=sys.stderr)
    t0 = time.perf_counter()
    buf = load_all(iter_transitions(args.bag, space, warn=warn, topic=args.topic, stats=stats), args.capacity,
                   seed=args.seed, on_chunk=bar.update)
    read_s = time.perf_counter() - t0
    bar.close()
    if len(buf) == 0:
        raise OfflineError(f"no usable transitions in {', '.join(args.bag)} "
                           f"(see the warnings above); nothing written to {args.out}")
    if args.val_bag:
        vstats = ReadStats()
        vbuf = load_all(iter_transitions(args.val_bag, space, warn=warn, topic=args.topic, stats=vstats),
                        args.capacity, seed=args.seed + 1)
        val = vbuf.all()
        if len(vbuf) == 0:
            warn(f"validation bags {', '.join(args.val_bag)} hold no usable transitions; validating on none")
    else:
        val = _split(buf, args.val_fraction, args.seed)
    etas = sorted(stats.etas, key=lambda e: -stats.etas[e])
    eta = args.eta if args.eta is not None else (etas[0] if etas else 0.5)
    if len(etas) > 1:
        warn(f"bags mix eta values {etas}: rewards trade energy against latency differently; using them as recorded")
    twin_buf: Optional[ReservoirBuffer] = None
    if args.twin_frames > 0:
        tb = tqdm(desc="twin rollouts", unit=" frames", total=args.twin_frames, disable=args.no_progress,
                  file=sys.stderr)
        twin_buf = load_all(twin_transitions(profile, args.twin_frames, seed=args.seed, eta=eta),
                            args.twin_frames, seed=args.seed + 2, on_chunk=tb.update)
        tb.close()

    coverage = action_coverage(buf.a[:len(buf)], space)
    if twin_buf is not None:
        coverage = max(coverage, args.twin_share * action_coverage(twin_buf.a[:len(twin_buf)], space))
    alpha = auto_cql_alpha(coverage) if args.cql_alpha == "auto" else float(args.cql_alpha)
    log(f"action coverage {coverage:.3f} -> CQL alpha {alpha:g}" +
        (" (the data never tries some levels: the policy stays close to the recorded one)" if alpha > 0 else ""))
    trainer = OfflineTrainer(agent, cql_alpha=alpha)
    n_twin = int(round(args.batch_size * args.twin_share)) if twin_buf is not None else 0
    history: List[Dict[str, float]] = []
    losses: List[tuple] = []

    def validate(step: int) -> None:
        h: Dict[str, float] = {"step": float(step)}
        h.update(trainer.evaluate(val))
        if args.eval_frames > 0:
            from dvfo_ros.core.agents import rollout
            from dvfo_ros.core.env import RewardConfig, SimEnv
            agent.load_state_dict(agent.state_dict())   # publish the current weights to the actor
            agent.training = False
            env = SimEnv(profile, seed=args.seed + 1000, reward_cfg=RewardConfig(eta=float(eta)))
            h["twin_reward"] = rollout(env, agent, args.eval_frames).summary()["reward_mean"]
            agent.training = True
        history.append(h)
        save(step)

    def save(step: int) -> None:
        agent.steps = max(int(agent.steps), int(agent.hp["exploration_steps"]), len(buf))  # exploit from the start
        agent.save(args.out, meta={"trained": "offline", "bags": list(args.bag), "val_bags": list(args.val_bag),
                                   "steps": step, "transitions": len(buf), "profile": profile,
                                   "cql_alpha": alpha, "coverage": coverage, "history": list(history)})

    bar = tqdm(total=args.steps, desc="training", unit=" steps", disable=args.no_progress, file=sys.stderr)
    t1 = time.perf_counter()
    step = 0
    try:
        for step in range(1, args.steps + 1):
            batch = buf.sample(args.batch_size - n_twin)
            if n_twin:
                tw = twin_buf.sample(n_twin)  # type: ignore[union-attr]
                batch = tuple(np.concatenate([x, y]) for x, y in zip(batch, tw))
            out = trainer.step(batch)
            losses.append((step, out["td"], out["cql"]))
            bar.update(1)
            if step % 100 == 0:
                bar.set_postfix(td=f"{out['td']:.3f}", cql=f"{out['cql']:.3f}")
            if step % args.eval_every == 0 or step == args.steps:
                validate(step)
    finally:
        bar.close()
    train_s = time.perf_counter() - t1
    plot = args.plot or os.path.splitext(args.out)[0] + ".png"
    plot_curve(history, losses, plot)
    last = history[-1] if history else {}
    return {"checkpoint": args.out, "plot": plot, "profile": profile, "bags": len(args.bag),
            "transitions_read": stats.transitions, "transitions_trained": len(buf),
            "skipped_nan": stats.skipped_nan, "skipped_malformed": stats.skipped_bad,
            "policies": stats.policies, "read_s": read_s,
            "read_transitions_per_s": stats.transitions / max(read_s, 1e-9),
            "cql_alpha": alpha, "coverage": coverage, "steps": args.steps, "train_s": train_s,
            "steps_per_s": args.steps / max(train_s, 1e-9),
            "trained_transitions_per_s": args.steps * args.batch_size / max(train_s, 1e-9),
            "buffer_mb": buf.nbytes / 2**20, "peak_rss_mb": peak_rss_mb(), "val": last, "warnings": warnings}


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
    try:
        res = train(args)
    except OfflineError as e:
        print(f"dvfo-train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"dvfo-train: interrupted; {args.out} holds the last validated checkpoint (if any)", file=sys.stderr)
        return 130
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
