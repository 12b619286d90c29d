"""dvfo-bench: policies side by side on one device / model / network trace / seed, in the twin.

    dvfo-bench --device xavier_nx --model resnet18 --trace dvfo \\
               --policies oracle,dvfo,edge_only,cloud_only,max_freq,ondemand --checkpoint dvfo.pt

Every policy meets the same frames (same seed). Learnt policies without a checkpoint are trained
first for ``--train-steps`` frames on other frames (seed + 1). Prints one table, writes ``--json``
({"policies": {name: {...}}}) and a Pareto PNG (energy per frame vs p95 latency).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dvfo_ros.cli.train import LEARNT, add_env_args, make_env, train_policy

# Policies that never choose clocks themselves (fixed clocks, or clocks left to the stock governor).
NO_CLOCK_TUNING = ("edge_only", "cloud_only", "max_freq", "ondemand", "offload_only", "static")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvfo-bench", description=__doc__.split("\n\n")[0])
    add_env_args(p)
    p.add_argument("--policies", default="oracle,dvfo,edge_only,cloud_only,max_freq,ondemand",
                   help="comma-separated policy_mode names")
    p.add_argument("--checkpoint", default=None, help="checkpoint for the learnt policy it was trained as")
    p.add_argument("--frames", type=int, default=1000, help="frames per policy")
    p.add_argument("--train-steps", type=int, default=20000,
                   help="training frames for learnt policies without a checkpoint")
    p.add_argument("--time-scale", type=float, default=0.5, help="pacing of in-bench training (see dvfo-train)")
    p.add_argument("--static", default=None, help='command for "static", JSON, e.g. {"gpu_freq_hz": 6e8}')
    p.add_argument("--json", default=None, help="write results here")
    p.add_argument("--plot", default=None, help="Pareto PNG (energy J/frame vs p95 latency)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    for name, default in (("gamma", 0.0), ("lr", 1e-3), ("batch_size", 128), ("exploration_steps", 4000),
                          ("hidden", 128), ("replay_ratio", 4.0), ("learning_starts", 500)):
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default, help=argparse.SUPPRESS)
    return p


def run_bench(args: argparse.Namespace, names: List[str]) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, float]]:
    """Every named policy on the same frames; returns the rows and the one reward config they all used."""
    from dvfo_ros.core.agents import POLICIES, load_checkpoint, make_policy, rollout
    from dvfo_ros.core.env import RewardConfig
    results: Dict[str, Dict[str, Any]] = {}
    ck = load_checkpoint(args.checkpoint) if args.checkpoint else None
    # One reward config for every row: the checkpoint's own (E_ref, T_ref, SLO, eta) when it has
    # one, so the learnt policy is judged by the cost it was trained on and every rival by the same.
    trained_cfg = (ck or {}).get("meta", {}).get("reward")
    reward_cfg = RewardConfig(**trained_cfg) if trained_cfg else make_env(args, args.seed).reward_cfg
    for name in names:
        env = make_env(args, args.seed)
        env.reward_cfg = reward_cfg
        kw: Dict[str, Any] = {}
        if POLICIES[name].needs_env:          # oracle (bound) and neurosurgeon (latency model)
            kw["env"] = env
        if name == "static" and args.static:
            kw["command"] = json.loads(args.static)
        if name in LEARNT:
            if ck is not None and ck["policy"] == name:
                policy = make_policy(name, env.action_space, checkpoint=args.checkpoint, **ck["config"])
                source = f"checkpoint {args.checkpoint}"
            else:
                train_args = argparse.Namespace(**vars(args))
                train_args.seed = args.seed + 1
                policy = train_policy(train_args, name, args.train_steps)["policy"]
                source = f"trained {args.train_steps} frames"
            policy.train(False)
        else:
            policy = make_policy(name, env.action_space, **kw)
            source = {"oracle": "exhaustive search", "neurosurgeon": "latency model"}.get(name, "rule")
        s = rollout(env, policy, args.frames).summary()
        policy.close()
        results[name] = {"energy_j_per_frame": s["energy_j_per_frame"],
                         "soc_energy_j_per_frame": s["soc_energy_j_per_frame"], "latency_ms_mean": s["latency_ms_mean"],
                         "latency_ms_p95": s["latency_ms_p95"], "accuracy": None,
                         "accuracy_loss": s["accuracy_loss"], "reward_mean": s["reward_mean"],
                         "cost_mean": s["cost_mean"], "slo_violations": s["slo_violations"],
                         "decision_ms_p50": s["decision_ms_p50"], "decision_ms_p99": s["decision_ms_p99"],
                         "source": source}
    return results, reward_cfg.to_dict()


def format_table(results: Dict[str, Dict[str, Any]]) -> str:
    head = (f"{'policy':<16}{'J/frame':>9}{'SoC J':>8}{'lat ms':>8}{'p95 ms':>8}{'acc loss':>9}{'reward':>8}"
            f"{'cost':>7}{'SLO viol':>9}{'dec p50':>9}{'dec p99':>9}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        lines.append(f"{name:<16}{r['energy_j_per_frame']:>9.4f}{r['soc_energy_j_per_frame']:>8.4f}"
                     f"{r['latency_ms_mean']:>8.1f}"
                     f"{r['latency_ms_p95']:>8.1f}{100 * r['accuracy_loss']:>8.2f}%{r['reward_mean']:>8.3f}"
                     f"{r['cost_mean']:>7.3f}{r['slo_violations']:>9d}{r['decision_ms_p50']:>8.3f}m"
                     f"{r['decision_ms_p99']:>8.3f}m")
    return "\n".join(lines)


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
    return out


def plot_pareto(results: Dict[str, Dict[str, Any]], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    pts = [(r["latency_ms_p95"], r["energy_j_per_frame"], n) for n, r in results.items()]
    for x, y, n in pts:
        ax.scatter(x, y, s=40)
        ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = sorted(p for p in pts if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in pts))
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", label="Pareto front")
        ax.legend()
    ax.set_xlabel("p95 latency (ms)")
    ax.set_ylabel("energy per frame (J)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames < 1 or args.train_steps < 1:
        parser.error("--frames and --train-steps must be positive")
    import torch
    torch.set_num_threads(max(1, args.threads))
    from dvfo_ros.core.agents import CheckpointError, policy_names
    from dvfo_ros.core.traces import TraceError
    from dvfo_ros.core.twin import ProfileError
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    valid = policy_names()
    unknown = [n for n in names if n not in valid]
    if not names or unknown:
        print(f"dvfo-bench: error: unknown policy {', '.join(unknown) or '(none given)'}; "
              f"choose from {', '.join(valid)}", file=sys.stderr)
        return 2
    if args.static:
        try:
            if not isinstance(json.loads(args.static), dict):
                raise ValueError
        except ValueError:
            print("dvfo-bench: error: --static must be a JSON object", file=sys.stderr)
            return 2
    try:
        make_env(args, args.seed)
        results, cfg = run_bench(args, names)
    except (ProfileError, TraceError, CheckpointError, OSError) as exc:
        print(f"dvfo-bench: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"dvfo-bench: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.device} / {args.model} / trace {args.trace} / seed {args.seed} / {args.frames} frames / "
          f"eta {cfg.get('eta', args.eta)} / E_ref {cfg.get('energy_ref_j', 0):.4f} J / "
          f"T_ref {cfg.get('latency_ref_ms', 0):.2f} ms / SLO {cfg.get('latency_slo_ms', 0):.1f} ms")
    print(format_table(results))
    for line in ratios(results):
        print(line)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"device": args.device, "model": args.model, "trace": args.trace, "seed": args.seed,
                       "frames": args.frames, "reward": cfg, "policies": results,
                       "targets": targets(results)}, fh, indent=2)
    if args.plot:
        plot_pareto(results, args.plot, f"{args.device} / {args.model} / {args.trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
