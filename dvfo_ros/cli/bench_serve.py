"""dvfo-bench serve: the fleet load test, Ray Serve behind our ZeroMQ front against the in-process server.

    dvfo-bench serve --json out/serve.json                       # 1, 2, 4 replicas; 1, 4 and 8 robots; a kill
    dvfo-bench serve --replicas 1,2 --robots 8 --live-seconds 6

Every row is a real ``dvfo-cloud`` process on loopback and N real robot clients (``cloud/loadtest.py``:
a DEALER each, real codec frames, open loop at ``--fps``, per-request deadlines drawn from
``--budget-ms``), scored as ``dvfo-bench cloud`` scores the twin: goodput (answered within the deadline
per second), p95, SLO violations (late or refused), Jain fairness over the robots' mean latencies, the
utility, and ``unanswered``: requests that got no reply at all, not even a refusal, by their deadline
plus 100 ms. Rows: ``inprocess`` (the default server, ``--scheduler``), then ``ray xR`` for each replica
count (``--backend ray --ray-replicas R``: batches formed at the front with the same ``--scheduler``, or
with ``--ray-batching serve`` each request on its own, batched by ``@serve.batch``), then ``ray xR kill``
for the first R > 1 at ``--kill-robots``: one replica process SIGKILLed halfway through (Serve restarts
it). ``cost`` is what one lone robot's request costs more through Ray than in-process: the difference of
the two mean latencies at one robot.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from dvfo_ros.cli.common import cli_main, format_table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvfo-bench serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--robots", default="4,8", help="robot counts, comma-separated (1 is always run for the cost)")
    p.add_argument("--replicas", default="1,2,4", help="Ray Serve replica counts, comma-separated")
    p.add_argument("--no-kill", action="store_true", help="skip the run that kills a replica halfway")
    p.add_argument("--scheduler", default="heuristic", help="the server's --scheduler (both backends)")
    p.add_argument("--ray-batching", choices=("front", "serve"), default="front",
                   help="dvfo-cloud's --ray-batching: batches formed at the front, or @serve.batch at the replicas")
    p.add_argument("--kill-robots", type=int, default=4, help="robots in the run that kills a replica")
    p.add_argument("--live-seconds", type=float, default=8.0, help="streaming time per row")
    p.add_argument("--fps", type=float, default=15.0, help="frames each robot offloads per second")
    p.add_argument("--budget-ms", default="40,100", help="range of the robots' server-side deadlines, ms")
    p.add_argument("--model", default="resnet18", help="the served model (untrained weights)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the rows here")
    return p


def _ints(text: str, what: str) -> List[int]:
    try:
        vals = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"{what}: integers, comma-separated (got {text!r})") from None
    if not vals or vals[0] < 1:
        raise ValueError(f"{what}: at least one, each >= 1 (got {text!r})")
    return vals


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill_one_replica(app: str, record: Dict[str, Any]) -> None:
    from dvfo_ros.cloud.ray_backend import replica_pids
    pids = replica_pids(app)
    record["replicas_before"] = len(pids)
    if pids:
        os.kill(pids[0], signal.SIGKILL)
        record["killed_pid"] = pids[0]


def run_rows(args: argparse.Namespace) -> List[Dict[str, Any]]:
    from dvfo_ros.cloud.loadtest import run_load, start_cloud, stop_cloud, template_frames
    from dvfo_ros.core.inference.spec import ModelSpec

    robots = sorted({1, *_ints(args.robots, "--robots")})
    replicas = _ints(args.replicas, "--replicas")
    lo, hi = (float(v) for v in args.budget_ms.split(","))
    model = ModelSpec(model=args.model, input_size=args.input_size, artifact="none").load()
    frames = template_frames(model.meta, model.feature_shape, seed=args.seed)
    base = ["--model", args.model, "--artifact", "none", "--input-size", str(args.input_size), "--device", "cpu",
            "--deadline-slack-s", "0", "--log-level", "ERROR"]
    configs: List[Dict[str, Any]] = [{"row": "inprocess", "args": ["--scheduler", args.scheduler]}]
    ray_sched = ["--ray-batching", args.ray_batching]
    if args.ray_batching == "front":
        ray_sched += ["--scheduler", args.scheduler]
    for r in replicas:
        configs.append({"row": f"ray x{r}", "args": ["--backend", "ray", "--ray-replicas", str(r), *ray_sched]})
    killable = [r for r in replicas if r > 1]
    if killable and not args.no_kill:
        r = killable[0]
        configs.append({"row": f"ray x{r} kill", "kill": True,
                        "args": ["--backend", "ray", "--ray-replicas", str(r), *ray_sched]})
    rows: List[Dict[str, Any]] = []
    for cfg in configs:
        port = _free_port()
        app = f"dvfo-bench-{port}"
        extra = ["--ray-app", app] if "--backend" in cfg["args"] else []
        t0 = time.monotonic()
        proc = start_cloud(["--bind", f"tcp://127.0.0.1:{port}", *base, *cfg["args"], *extra], timeout_s=240.0)
        start_s = time.monotonic() - t0
        try:
            for n in (args.kill_robots,) if cfg.get("kill") else robots:
                record: Dict[str, Any] = {}
                event = (args.live_seconds / 2.0, lambda: _kill_one_replica(app, record)) if cfg.get("kill") else None
                row = run_load(f"tcp://127.0.0.1:{port}", frames, n, args.live_seconds, fps=args.fps,
                               budget_ms=(lo, hi), seed=args.seed + 1000, event=event)
                rows.append({"row": cfg["row"], "start_s": start_s, **record, **row})
                print(f"  {cfg['row']:>12} {n:2d} robots: {row['throughput_rps']:.1f} rps in time, "
                      f"{row['slo_violation_pct']:.1f} % SLO violations, {row['unanswered']} unanswered", flush=True)
            if cfg.get("kill"):
                from dvfo_ros.cloud.ray_backend import replica_pids
                deadline = time.monotonic() + 30.0
                while time.monotonic() < deadline and len(replica_pids(app)) < int(cfg["args"][3]):
                    time.sleep(0.5)
                rows[-1]["replicas_after_s"] = len(replica_pids(app))
        finally:
            stop_cloud(proc, timeout_s=60.0)
    return rows


def table(rows: Sequence[Dict[str, Any]]) -> str:
    headers = ("server", "robots", "goodput rps", "mean ms", "p95 ms", "SLO viol %", "unanswered", "Jain", "utility")
    body = [[r["row"], r["robots"], f"{r['throughput_rps']:.1f}", f"{r['mean_ms']:.1f}", f"{r['p95_ms']:.1f}",
             f"{r['slo_violation_pct']:.1f}", r["unanswered"], f"{r['jain']:.3f}", f"{r['utility']:.3f}"]
            for r in rows]
    return format_table(body, headers)


@cli_main("dvfo-bench serve")
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from dvfo_ros.cloud.ray_backend import ray_available
    problem = ray_available()
    if problem:
        raise ValueError(problem)
    rows = run_rows(args)
    print(table(rows))
    lone = {r["row"]: r["mean_ms"] for r in rows if r["robots"] == 1}
    for name, ms in lone.items():
        if name != "inprocess" and "inprocess" in lone:
            print(f"{name}: a lone robot's request costs {ms - lone['inprocess']:+.1f} ms through Ray "
                  f"({ms:.1f} vs {lone['inprocess']:.1f} ms in-process)")
    for r in rows:
        if "killed_pid" in r:
            print(f"{r['row']}: replica pid {r['killed_pid']} killed at {args.live_seconds / 2:.0f} s of "
                  f"{args.live_seconds:.0f} s; {r['unanswered']} of {r['sent']} requests unanswered; "
                  f"{r.get('replicas_after_s', '?')} replicas live afterwards")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"config": vars(args), "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
