"""dvfo-bench cloud: the shared server's schedulers side by side in the server twin, at 1, 4, 8 and 16 robots.

    dvfo-bench cloud --json out/cloud.json                                # train BCEdge here, then compare
    dvfo-bench cloud --checkpoint out/bcedge.pt --robots 1,2,4,8,16

The server's batch run times are a measured profile (``dvfo-profile cloud``; bundled: this project's
CPU measurement of resnet18's tail). Every scheduler meets the same arrivals per robot count;
``best fixed`` is the best of all 16 fixed (batch, instances) settings at that load, found by trying
each, so it is a bound no single fixed setting beats. Prints one table per robot count: goodput
(requests answered within their deadline per second), p95 latency, SLO violations (late or dropped),
the mean utility (``dvfo_ros.core.mdp.scheduler_env.utility``), the mean batch, Jain fairness over the
robots' mean latencies, and the settings chosen.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from dvfo_ros.cli.common import cli_main, format_table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvfo-bench cloud", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu_resnet18", help="bundled server profile or a dvfo-profile cloud YAML")
    p.add_argument("--robots", default="1,4,8,16", help="robot counts, comma-separated")
    p.add_argument("--schedulers", default="heuristic,fixed:1,fixed:2,fixed:4,fixed:8,bcedge",
                   help="heuristic, fixed:B[,C], bcedge (trained here unless --checkpoint)")
    p.add_argument("--checkpoint", default=None, help="a BCEdge checkpoint to judge instead of training one")
    p.add_argument("--save", default=None, help="write the BCEdge trained here to this checkpoint")
    p.add_argument("--train-steps", type=int, default=6000, help="training intervals (0.5 s each) for BCEdge")
    p.add_argument("--intervals", type=int, default=60, help="intervals judged per robot count")
    p.add_argument("--fps", type=float, default=15.0, help="frames each robot offloads per second")
    p.add_argument("--budget-ms", default="40,100", help="range of the robots' server-side deadlines, ms")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--live", action="store_true",
                   help="also run each scheduler in a real dvfo-cloud on loopback against real robot clients")
    p.add_argument("--live-seconds", type=float, default=10.0, help="streaming time per robot count, live")
    p.add_argument("--live-model", default="resnet18", help="the live server's model (untrained weights)")
    p.add_argument("--live-input-size", type=int, default=224, help="the live server's input size")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--no-progress", action="store_true")
    return p


def _ints(text: str, what: str) -> List[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what}: integers, comma-separated (got {text!r})") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"{what}: at least one, each >= 1 (got {text!r})")
    return vals


def table(rows: Sequence[Dict[str, Any]]) -> str:
    headers = ("robots", "scheduler", "goodput rps", "p95 ms", "SLO viol %", "utility", "mean batch", "Jain",
               "settings (B,c: intervals)")
    body = [[r["robots"], r["scheduler"], f"{r['throughput_rps']:.1f}", f"{r['p95_ms']:.1f}",
             f"{r['slo_violation_pct']:.1f}", f"{r['utility']:.3f}", f"{r['mean_batch']:.2f}", f"{r['jain']:.3f}",
             " ".join(f"{k}:{v}" for k, v in list(r["settings"].items())[:3])] for r in rows]
    return format_table(body, headers)


def run_live(args: argparse.Namespace, names: Sequence[str], agent: Any, robots: Sequence[int],
             opts: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each scheduler in its own dvfo-cloud process; every robot count streams ``--live-seconds`` against it."""
    import socket
    import tempfile

    from dvfo_ros.cloud.loadtest import run_load, start_cloud, stop_cloud, template_frames
    from dvfo_ros.core.inference.spec import ModelSpec

    model = ModelSpec(model=args.live_model, input_size=args.live_input_size, artifact="none").load()
    frames = template_frames(model.meta, model.feature_shape, seed=args.seed)
    out: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "bcedge.pt")
        if agent is not None:
            agent.save(ckpt)
        for name in names:
            sched = f"bcedge:{ckpt}" if name.split(":")[0] == "bcedge" else name
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            proc = start_cloud(["--bind", f"tcp://127.0.0.1:{port}", "--model", args.live_model, "--artifact", "none",
                                "--input-size", str(args.live_input_size), "--scheduler", sched, "--device", "cpu",
                                "--deadline-slack-s", "0", "--log-level", "ERROR"])
            try:
                for n in robots:
                    row = run_load(f"tcp://127.0.0.1:{port}", frames, n, args.live_seconds, fps=opts["fps"],
                                   budget_ms=opts["budget_ms"], seed=args.seed + 1000)
                    out.append({"scheduler": "heuristic" if name == "heuristic" else make_name(name), **row})
            finally:
                stop_cloud(proc)
    return out


def make_name(spec: str) -> str:
    return "bcedge" if spec.split(":")[0] == "bcedge" else spec


def live_table(live: Sequence[Dict[str, Any]], twin: Sequence[Dict[str, Any]]) -> str:
    by = {(r["robots"], r["scheduler"]): r for r in twin}
    headers = ("robots", "scheduler", "goodput rps real / twin", "p95 ms real / twin", "SLO viol % real / twin",
               "utility real / twin")
    body = []
    for r in live:
        t = by.get((r["robots"], r["scheduler"]), {})
        body.append([r["robots"], r["scheduler"],
                     f"{r['throughput_rps']:.1f} / {t.get('throughput_rps', float('nan')):.1f}",
                     f"{r['p95_ms']:.1f} / {t.get('p95_ms', float('nan')):.1f}",
                     f"{r['slo_violation_pct']:.1f} / {t.get('slo_violation_pct', float('nan')):.1f}",
                     f"{r['utility']:.3f} / {t.get('utility', float('nan')):.3f}"])
    return format_table(body, headers)


@cli_main("dvfo-bench cloud")
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    robots = _ints(args.robots, "--robots")
    lo, hi = (float(v) for v in args.budget_ms.split(","))
    from dvfo_ros.cloud.bcedge import BCEdge
    from dvfo_ros.cloud.schedulers import best_fixed, evaluate, make_scheduler
    from dvfo_ros.core.twin.server import load_server_profile

    profile = load_server_profile(args.profile)
    opts = {"fps": args.fps, "budget_ms": (lo, hi)}
    names = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    agent, train_s = None, 0.0
    if any(n.split(":")[0] == "bcedge" for n in names):
        if args.checkpoint:
            agent = BCEdge.load(args.checkpoint)
        else:
            from dvfo_ros.core.mdp.scheduler_env import SchedulerEnv
            t0 = time.process_time()
            agent = BCEdge(seed=args.seed)
            agent.train(SchedulerEnv(profile, seed=args.seed, max_robots=max(robots), **opts), args.train_steps,
                        progress=not args.no_progress)
            train_s = time.process_time() - t0
            if args.save:
                agent.save(args.save)
    scheds = [make_scheduler(n, agent if n.split(":")[0] == "bcedge" else None) for n in names]
    rows: List[Dict[str, Any]] = []
    for n in robots:
        for s in scheds:
            rows.append({"scheduler": s.name, **evaluate(s, profile, n, args.intervals, args.seed + 1000, **opts)})
        best = best_fixed(profile, n, args.intervals, args.seed + 1000, **opts)
        rows.append({**best, "scheduler": f"best fixed {next(iter(best['settings']))}"})
    print(f"server profile {profile.name}: run_ms(B,c) = ({profile.base_ms:.2f} + {profile.per_item_ms:.2f} B) x "
          f"contention[c] {', '.join(f'{c:.2f}' for c in profile.contention)}"
          + (f"; BCEdge trained {args.train_steps} intervals in {train_s:.0f} s CPU" if train_s else ""))
    print(table(rows))
    live: List[Dict[str, Any]] = []
    if args.live:
        live = run_live(args, names, agent, robots, opts)
        print("live (real dvfo-cloud on loopback, real ZeroMQ clients; twin figures beside them):")
        print(live_table(live, rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"profile": profile.name, "train_steps": args.train_steps if train_s else 0,
                       "train_cpu_s": train_s, "rows": rows, "live": live}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
