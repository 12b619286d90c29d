"""dvfo-train: train a DVFO policy in the device twin; writes a checkpoint and a learning-curve PNG.

    dvfo-train --device xavier_nx --model resnet18 --trace dvfo --steps 20000 --seed 0 --out dvfo.pt

``--trace`` is "dvfo" (0.5-8 Mbps, DVFO's testbed range), "lte" (Markov-modulated) or a CSV with
the header ``time_s,bandwidth_mbps,rtt_ms``. ``--compare-sequential`` also trains the ablation
(concurrency off) and reports env steps to 95 % of the final return for both.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from dvfo_ros.cli.common import add_agent_args, add_env_args, cli_main, tqdm_progress


def plot_curves(curves: Dict[str, List[float]], window: int, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        r = np.asarray(curve, dtype=float)
        if len(r) >= window:
            smooth = np.convolve(r, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(window, len(r) + 1), smooth, label=name)
    ax.set_xlabel("env steps (frames)")
    ax.set_ylabel(f"reward per frame (moving mean of {window})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    from dvfo_ros.core.policies.experiments import LEARNT
    p = argparse.ArgumentParser(prog="dvfo-train", description=__doc__.split("\n\n")[0])
    add_env_args(p)
    p.add_argument("--policy", default="dvfo", choices=LEARNT, help="which learnt policy to train")
    p.add_argument("--steps", type=int, default=20000, help="env steps (frames) to train for")
    p.add_argument("--out", default="dvfo_policy.pt", help="checkpoint path to write")
    p.add_argument("--plot", default=None, help="learning-curve PNG (default: OUT with .png)")
    p.add_argument("--json", default=None, help="write the training summary here as JSON")
    p.add_argument("--eval-frames", type=int, default=600, help="held-out frames to compare with the oracle")
    p.add_argument("--eval-traces", default="heldout",
                   help="comma-separated traces held out from training to evaluate on as well: 'heldout' (the "
                        "shipped heldout_* traces, the default), 'none', or names / CSV paths")
    p.add_argument("--compare-sequential", action="store_true",
                   help="also train the sequential ablation and report steps to 95%% of final return")
    p.add_argument("--time-scale", type=float, default=0.0,
                   help="0 (default): simulated time, the concurrent learner gets its share of each frame "
                        "(CPU-bound, the same run twice for a seed); > 0: wall seconds per simulated second, "
                        "the learner thread races the clock as on a robot")
    add_agent_args(p)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--bag" or a.startswith("--bag=") for a in argv):
        # Offline / batch RL from recorded rosbags (dvfo_ros.cli.train_offline).
        from dvfo_ros.cli.train_offline import main as train_offline
        return train_offline(argv)
    return train_in_twin(argv)


@cli_main("dvfo-train")
def train_in_twin(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 1 or args.eval_frames < 0 or args.episode_frames < 1 or args.fps <= 0:
        parser.error("--steps, --episode-frames and --fps must be positive")
    if not 0.0 <= args.eta <= 1.0:
        parser.error("--eta must be in [0, 1]")
    import torch
    torch.set_num_threads(max(1, args.threads))
    from dvfo_ros.core.policies.experiments import AgentOptions, TwinSetup, train_experiment
    setup = TwinSetup.from_options(args)
    setup.make_env()                     # a bad profile, trace or number: one line before any training
    eval_traces = eval_trace_names(args.eval_traces, args.trace)
    for t in eval_traces:
        TwinSetup(trace=t).make_env()    # a bad held-out trace: one line before any training
    result = train_experiment(setup, args.policy, args.steps, AgentOptions.from_options(args), args.time_scale,
                              args.eval_frames, args.compare_sequential, progress=tqdm_progress(),
                              eval_traces=eval_traces)
    result.policy.save(args.out, meta=result.meta)
    plot = args.plot or os.path.splitext(args.out)[0] + ".png"
    plot_curves(result.curves(), result.window, plot, f"{args.policy} on {args.device}/{args.model}/{args.trace}")
    print_report(result.summary, result.common_goal, args.steps, args.eval_frames)
    print(f"checkpoint: {args.out}\nlearning curve: {plot}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result.summary, fh, indent=2)
    result.close()
    return 0


def eval_trace_names(spec: str, training_trace: str) -> List[str]:
    """--eval-traces: 'heldout' = every shipped held-out trace, 'none' = none, else a comma list; the
    training trace itself is never listed (it is evaluated anyway, on other frames)."""
    from dvfo_ros.core.io.traces import heldout_trace_names
    if spec.strip() == "none":
        return []
    names = heldout_trace_names() if spec.strip() == "heldout" else [t.strip() for t in spec.split(",") if t.strip()]
    return [t for t in names if t != training_trace]


def print_report(summary: Dict[str, Any], common_goal: Optional[float], steps: int, eval_frames: int) -> None:
    """The lines dvfo-train prints: each run, concurrent vs sequential, and the held-out evaluation."""
    for name, r in summary["runs"].items():
        print(f"{name}: {steps} frames in {r['wall_s']:.1f} s, {r['updates']} updates, "
              f"env steps to 95% of final return (greedy frames): {r['steps_to_95pct']} "
              f"(with exploration: {r['steps_to_95pct_with_exploration']}), "
              f"final reward/frame {r['final_reward']:.3f}")
    if common_goal is not None:
        a = summary["runs"]["dvfo"]["steps_to_95pct_common"]
        b = summary["runs"]["dvfo_sequential"]["steps_to_95pct_common"]
        print(f"env steps to 95% of the better final greedy return ({common_goal:.3f}/frame): concurrent {a}, "
              f"sequential {b}" + (" (never reached)" if b is None else ""))
        if a and b:
            print(f"concurrent needs {100.0 * (1 - a / b):.0f}% fewer env steps to 95% of final return")
        elif a and b is None:
            print(f"concurrent reaches it after {a} steps; the sequential ablation never does in {steps}")
    ev = summary["eval"]
    if ev:
        gap = (ev["cost_mean"] - ev["oracle_cost_mean"]) / max(abs(ev["oracle_cost_mean"]), 1e-9)
        print(f"eval on {eval_frames} held-out frames: reward {ev['reward_mean']:.3f} "
              f"(oracle {ev['oracle_reward_mean']:.3f}), cost {100 * gap:+.1f}% vs oracle, "
              f"{ev['energy_j_per_frame']:.4f} J/frame, p95 {ev['latency_ms_p95']:.1f} ms, "
              f"{ev['slo_violations']} SLO violations, decision p99 {ev['decision_ms_p99']:.3f} ms")
    for trace, h in summary.get("eval_heldout", {}).items():
        print(f"held-out trace {trace}: cost {100 * h['cost_vs_oracle']:+.1f}% vs oracle, "
              f"{h['energy_j_per_frame']:.4f} J/frame, p95 {h['latency_ms_p95']:.1f} ms, "
              f"{h['slo_violations']} SLO violations")


if __name__ == "__main__":
    sys.exit(main())
