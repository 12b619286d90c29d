"""dvfo-bench overhead: what the pipeline costs over running the network yourself.

    dvfo-bench overhead --model resnet18 --input-size 224 --frames 200 --json out/overhead.json
    dvfo-bench overhead --ros2-ws ~/ros2_ws ...      # also `ros2 launch` (found by itself when ros2 is on PATH)

One run, the same frames for every row (the camera's synthetic source at the input size, --seed):
  plain     the network as you would run it: torchvision to_tensor + normalize, forward, softmax, top-k
  core      dvfo_ros's edge core alone: EdgeInference.process (at xi = 0 alternating with plain, frame by frame)
  composed  dvfo-pipeline: camera, governor (sim), executor, policy (static, fixed xi), all in one process
  launched  ros2 launch dvfo_ros pipeline.launch.py: one process per node (skipped, with a note, without ROS 2)
Per row: latency from camera stamp to result (mean, p95) at --fps, throughput with an unthrottled camera,
CPU time per frame, and each as a ratio to the plain loop. Then core, composed and launched again at every
further --xi, offloading to a local cloud server (127.0.0.1) that the benchmark starts.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import socket
import sys
import time
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from dvfo_ros.cli.bench_overhead_ros import BenchError
from dvfo_ros.cli.common import cli_main, format_table, tqdm_progress

PROG = "dvfo-bench overhead"
ROWS = ("plain", "core", "composed", "launched")
MAX_CAMERA_FPS = 240.0      # the camera node's fps range


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:     # one line, exit 2 (cli_main), not usage + message
        raise BenchError(message)


def build_parser() -> argparse.ArgumentParser:
    from dvfo_ros.core.inference.models import ZOO
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet18", choices=ZOO, help="zoo model (untrained weights, --seed)")
    p.add_argument("--input-size", type=int, default=224, help="input side in px (also the camera's frame size)")
    p.add_argument("--num-classes", type=int, default=1000, help="classes of the network's head")
    p.add_argument("--frames", type=int, default=200, help="frames counted per row and phase")
    p.add_argument("--warmup", type=int, default=10, help="frames run first and not counted, per row and phase")
    p.add_argument("--fps", type=float, default=10.0, help="camera rate of the latency phase")
    p.add_argument("--unthrottled-fps", type=float, default=0.0,
                   help="camera rate of the throughput phase; 0 = twice the plain loop's rate (at most 240)")
    p.add_argument("--xi", default="0,0.5", help="comma-separated offload ratios; xi > 0 runs a local cloud")
    p.add_argument("--rows", default=",".join(ROWS), help=f"which rows ({', '.join(ROWS)}; plain always runs)")
    p.add_argument("--ros2-ws", default=os.environ.get("DVFO_ROS2_WS", ""),
                   help="colcon workspace with dvfo_ros for the launched row (default $DVFO_ROS2_WS; "
                        "'' = `ros2` on PATH if there is one)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (every row)")
    p.add_argument("--deadline-ms", type=float, default=200.0, help="executor's per-frame deadline for the cloud")
    p.add_argument("--top-k", type=int, default=5, help="classes per result")
    p.add_argument("--seed", type=int, default=0, help="seed of the frames and of the weights")
    p.add_argument("--timeout-s", type=float, default=300.0, help="longest wait for one phase of a ROS row")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _check(args: argparse.Namespace) -> tuple:
    """(xis, rows) or BenchError naming the bad option."""
    try:
        xis = [float(v) for v in args.xi.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--xi takes comma-separated numbers in [0, 1], got '{args.xi}'") from None
    if not xis or any(not 0.0 <= x <= 1.0 for x in xis):
        raise BenchError(f"--xi takes comma-separated numbers in [0, 1], got '{args.xi}'")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise BenchError(f"unknown row {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if args.frames < 2 or args.warmup < 0:
        raise BenchError("--frames must be at least 2 and --warmup at least 0")
    if not 0.1 <= args.fps <= MAX_CAMERA_FPS or not (args.unthrottled_fps == 0 or
                                                      0.1 <= args.unthrottled_fps <= MAX_CAMERA_FPS):
        raise BenchError(f"--fps and --unthrottled-fps must be in [0.1, {MAX_CAMERA_FPS:.0f}] (0: auto)")
    if not 16 <= args.input_size <= 1024 or args.num_classes < 2 or args.threads < 1 or args.top_k < 1:
        raise BenchError("--input-size must be in [16, 1024], --num-classes >= 2, --threads and --top-k >= 1")
    return xis, ["plain"] + [r for r in ROWS[1:] if r in rows]


def _no_cloud() -> float:
    return 0.0


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _loop_rows(named: Sequence[tuple], xi: float, frames, args: argparse.Namespace, cloud_cpu,
               progress) -> List[Dict[str, Any]]:
    """One row per (name, fn), the fns interleaved frame by frame (run_loop): paced, then back to back."""
    from dvfo_ros.core.inference.overhead import paced_stats, run_loop, throughput_stats
    fns = [fn for _, fn in named]
    desc = "+".join(name for name, _ in named) + f" xi={xi:g}"
    paced = run_loop(fns, frames, args.warmup, args.fps, cloud_cpu, progress, desc)
    shifted = [lambda rgb, seq, fn=fn: fn(rgb, seq + len(frames)) for fn in fns]     # seqs stay unique
    fast = run_loop(shifted, frames, args.warmup, 0.0, cloud_cpu, progress, desc + " unthrottled")
    rows = []
    for (name, _), p, f in zip(named, paced, fast):
        row: Dict[str, Any] = {"row": name, "xi": xi}
        row.update(paced_stats(p, args.warmup, args.frames))
        row.update(throughput_stats(f, args.warmup))
        rows.append(row)
    return rows


def _core(model, link, xi: float, args: argparse.Namespace):
    from dvfo_ros.core.inference.edge import EdgeInference
    engine = EdgeInference(model, link, args.deadline_ms, args.top_k)
    counts = {"fallbacks": 0, "cloud_used": 0}

    def fn(rgb, seq: int) -> None:
        r = engine.process(rgb, seq, xi)
        counts["fallbacks"] += int(r.fallback)
        counts["cloud_used"] += int(r.cloud_used)
    return fn, counts


def measure(args: argparse.Namespace, xis: List[float], wanted: List[str], ros2_env: Optional[Dict[str, str]],
            notes: List[str]) -> List[Dict[str, Any]]:
    """Every row, in order: plain, then per xi: core, composed, launched (those wanted and available)."""
    import torch

    from dvfo_ros.cli import bench_overhead_ros as ros
    from dvfo_ros.cli.pipeline import ensure_cloud, stop_child
    from dvfo_ros.core.inference.overhead import PlainLoop, bench_frames, pid_cpu_s
    from dvfo_ros.core.inference.spec import ModelSpec
    torch.set_num_threads(args.threads)
    progress = tqdm_progress(disable=args.no_progress)
    frames = bench_frames(args.input_size, args.warmup + args.frames, args.seed)
    plain = PlainLoop(args.model, args.num_classes, args.seed, args.top_k)
    spec = ModelSpec(model=args.model, artifact="none", num_classes=args.num_classes, input_size=args.input_size,
                     seed=args.seed)
    model = spec.load()
    # the plain loop and the edge core at xi = 0 alternate frame by frame: their ratio is the steadiest one
    first = [("plain", lambda rgb, seq: plain(rgb))]
    core0, counts0 = _core(model, None, 0.0, args)
    if "core" in wanted and 0.0 in xis:
        first.append(("core", core0))
    block = _loop_rows(first, 0.0, frames, args, _no_cloud, progress)
    rows = block[:1]
    fast = args.unthrottled_fps or min(MAX_CAMERA_FPS, 2.0 * (rows[0]["throughput_fps"] or 5.0))
    args.unthrottled_fps = round(fast, 1)
    cloud, endpoint = None, ""
    try:
        for xi in xis:
            if xi > 0 and cloud is None:
                endpoint = _free_endpoint()
                cloud = ensure_cloud({"executor": dict(spec.params(), cloud_endpoint=endpoint)}, lambda s: None)
                if cloud is None:
                    raise BenchError(f"a cloud server already answers on {endpoint}")
            cloud_cpu = functools.partial(pid_cpu_s, cloud.pid) if xi > 0 and cloud is not None else _no_cloud
            if "core" in wanted and xi == 0.0:
                rows.append(dict(block[1], **counts0))
            elif "core" in wanted:
                from dvfo_ros.core.wire.link import CloudLink
                link = CloudLink(endpoint)
                link.wait_connected(10.0)
                try:
                    fn, counts = _core(model, link, xi, args)
                    rows.append(dict(_loop_rows([("core", fn)], xi, frames, args, cloud_cpu, progress)[0], **counts))
                finally:
                    link.close()
            params = ros.pipeline_params(args.model, args.input_size, args.num_classes, args.seed, xi,
                                         endpoint if xi > 0 else "", args.threads, args.deadline_ms, args.top_k)
            if "composed" in wanted:
                row = ros.composed_row(params, args.frames, args.warmup, args.fps, fast, args.timeout_s, cloud_cpu,
                                       progress, f"composed xi={xi:g}")
                rows.append(dict({"row": "composed", "xi": xi}, **row))
            if "launched" in wanted and ros2_env is not None:
                try:
                    row = ros.launched_row(ros2_env, params, args.frames, args.warmup, args.fps, fast,
                                           args.timeout_s, cloud_cpu, progress, f"launched xi={xi:g}")
                    rows.append(dict({"row": "launched", "xi": xi}, **row))
                except BenchError as exc:
                    notes.append(f"launched xi={xi:g}: {exc}")
    finally:
        stop_child(cloud)
    # the plain loop once more: how far the machine itself drifted while the rows ran
    end = _loop_rows([("plain", lambda rgb, seq: plain(rgb))], 0.0, frames, args, _no_cloud, progress)[0]
    drift = (end["latency_ms_mean"] / rows[0]["latency_ms_mean"] - 1.0) if rows[0]["latency_ms_mean"] else 0.0
    args.plain_at_end = dict(end, drift=drift)
    notes.append(f"the plain loop again at the end: {end['latency_ms_mean']:.2f} ms mean ({100 * drift:+.1f} %); "
                 "ratios are no steadier than that")
    return rows


def table(rows: Sequence[Dict[str, Any]]) -> str:
    headers = ("row", "xi", "frames", "mean ms", "p95 ms", "mean x", "p95 x", "core ms", "outside ms", "fps",
               "fps x", "CPU ms/frame", "CPU x")
    body = [(r["row"], r["xi"], r["frames"], r["latency_ms_mean"], r["latency_ms_p95"], r.get("latency_mean_x"),
             r.get("latency_p95_x"), r.get("core_ms_mean"), r.get("outside_core_ms_mean"), r["throughput_fps"],
             r.get("throughput_x"), r["cpu_ms_per_frame"], r.get("cpu_x")) for r in rows]
    return format_table(body, headers, floatfmt=("", ".2f", "", ".2f", ".2f", ".3f", ".3f", ".2f", ".2f", ".2f",
                                                 ".3f", ".2f", ".3f"))


@cli_main(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    xis, wanted = _check(args)
    # DDS stays on this machine unless the caller says otherwise (as dvfo-pipeline)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "SHM")
    notes: List[str] = []
    ros2_env = None
    if "launched" in wanted:
        from dvfo_ros.cli.bench_overhead_ros import ros2_environment
        ros2_env, why = ros2_environment(args.ros2_ws)
        if why:
            notes.append(why)
    load_before = os.getloadavg()
    t0 = time.time()
    rows = measure(args, xis, wanted, ros2_env, notes)
    from dvfo_ros.core.inference.overhead import add_ratios
    add_ratios(rows, rows[0])
    import torch
    config = {"model": args.model, "input_size": args.input_size, "num_classes": args.num_classes,
              "frames": args.frames, "warmup": args.warmup, "fps": args.fps, "unthrottled_fps": args.unthrottled_fps,
              "xi": xis, "threads": args.threads, "seed": args.seed, "policy": "static", "timing": "measured",
              "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
              "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg()),
              "plain_at_end": getattr(args, "plain_at_end", None),
              "wall_s": round(time.time() - t0, 1), "command": [PROG] + list(sys.argv[1:] if argv is None else argv)}
    print(f"{args.model} {args.input_size} px, {args.frames} frames per row (+{args.warmup} warm-up), "
          f"{args.threads} torch thread(s), latency at {args.fps:g} fps, throughput at {args.unthrottled_fps:g} fps, "
          f"load average {load_before[0]:.2f} -> {config['load_avg_after'][0]:.2f}")
    print(table(rows))
    print("x = row / plain loop (latency and CPU: > 1 costs more; fps: < 1 is slower); latency = camera stamp -> "
          "result; core ms = the edge core's own time for the frame (the executor's total_ms; plain: the whole "
          "loop), outside ms = latency - core ms (camera, DDS, callbacks, conversion, publishing, waiting); "
          "CPU = user + system time of every process of the row")
    for note in notes:
        print(note)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"config": config, "rows": rows, "notes": notes}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
