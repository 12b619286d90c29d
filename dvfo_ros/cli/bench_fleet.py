"""dvfo-bench --robots N: many robots sharing one server, every multi-robot policy side by side.

    dvfo-bench --robots 3 --json out/fleet3.json
    dvfo-bench --robots 4 --trace heldout_drive_lte --uplink-mbps 50

Robots cycle through Nano, Nano, Xavier NX, every other task accuracy-sensitive; each has resnet50
and three smaller versions, every partition point, and its own draw of ``--trace``. ``mcia`` trains
first on ``--train-trace`` (1-4 robots per episode); ``dvfo`` trains one agent per board there
(``--dvfo-steps`` frames each, in the single-robot twin). Prints the mean utility, each robot's mean / p95
latency and board energy per frame, the mean accuracy, deadline misses and Jain fairness over the robots'
mean latencies (``dvfo_ros.core.policies.fleet``). The exhaustive ``oracle`` runs for N <= 3.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

from dvfo_ros.cli.common import cli_main, format_table, tqdm_progress


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvfo-bench --robots", description=__doc__.split("\n\n")[0])
    p.add_argument("--robots", type=int, required=True, help="robots sharing the server")
    p.add_argument("--policies", default="mcia,neurosurgeon,dvfo,all_local,all_upload,oracle")
    p.add_argument("--trace", default="heldout_wifi_dropouts", help="the links the robots are judged on")
    p.add_argument("--train-trace", default="mix", help="the links mcia trains on")
    p.add_argument("--train-episodes", type=int, default=3000, help="mcia's training episodes (30 steps each)")
    p.add_argument("--dvfo-steps", type=int, default=4000, help="dvfo's training frames per board")
    p.add_argument("--steps", type=int, default=60, help="decisions per robot judged (one a second)")
    p.add_argument("--server-gmacs", type=float, default=2000.0, help="the server's rate on the tails, GMAC/s")
    p.add_argument("--uplink-mbps", type=float, default=100.0, help="the server's ingress, shared")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    return p


@cli_main("dvfo-bench --robots")
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from dvfo_ros.core.policies.fleet import FLEET_POLICIES, fleet, run_fleet, train_dvfo, train_mcia
    from dvfo_ros.core.twin.fleet import Server

    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    bad = [n for n in names if n not in FLEET_POLICIES]
    if bad or min(args.robots, args.steps, args.dvfo_steps) < 1 or min(args.server_gmacs, args.uplink_mbps) <= 0:
        raise ValueError(f"--policies from {', '.join(FLEET_POLICIES)} (unknown: {', '.join(bad) or '-'}); "
                         "--robots, --steps, --dvfo-steps, --server-gmacs and --uplink-mbps must be positive")
    if args.robots > 3 and "oracle" in names:
        names.remove("oracle")
        print("oracle skipped: the exhaustive search is for 3 robots or fewer", file=sys.stderr)
    server = Server(args.server_gmacs, args.uplink_mbps)
    robots = fleet(args.robots)
    agent, train_s = None, 0.0
    if "mcia" in names:
        t0 = time.process_time()
        agent = train_mcia(args.train_episodes, server, args.train_trace, args.seed)
        train_s = time.process_time() - t0
    dvfo_agents, dvfo_s = None, 0.0
    if "dvfo" in names:
        t0 = time.process_time()
        dvfo_agents = train_dvfo(robots, server, args.train_trace, args.seed, args.dvfo_steps, tqdm_progress())
        dvfo_s = time.process_time() - t0
    rows: List[Dict[str, Any]] = [run_fleet(n, robots, args.steps, server, args.trace, args.seed + 1000, agent,
                                            dvfo_agents) for n in names]
    for a in (dvfo_agents or {}).values():
        a.close()
    desc = ", ".join(f"{r.profile}/{'acc' if r.weight >= 0.5 else 'lat'}" for r in robots)
    print(f"{args.robots} robots ({desc}) on {args.trace}; server {args.server_gmacs:g} GMAC/s, uplink "
          f"{args.uplink_mbps:g} Mbps" + (f"; mcia trained {args.train_episodes} episodes in {train_s:.0f} s CPU"
                                         if train_s else "")
          + (f"; dvfo {len(dvfo_agents or {})} agent(s) x {args.dvfo_steps} frames in {dvfo_s:.0f} s CPU"
             if dvfo_agents else ""))
    body = [[r["policy"], f"{r['utility']:.4f}", " / ".join(f"{v:.0f}" for v in r["latency_ms_mean"]),
             " / ".join(f"{v:.0f}" for v in r["latency_ms_p95"]),
             " / ".join(f"{v:.2f}" for v in r["energy_j_per_frame"]), f"{100 * r['accuracy']:.2f}",
             f"{r['deadline_misses']}/{r['frames']}", f"{r['jain']:.3f}"] for r in rows]
    print(format_table(body, ("policy", "utility", "mean ms per robot", "p95 ms per robot", "J/frame per robot",
                              "top-1 %", "misses", "Jain")))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"robots": args.robots, "trace": args.trace, "train_cpu_s": train_s,
                       "dvfo_train_cpu_s": dvfo_s, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
