"""dvfo-bench: policies side by side on one device / model / network trace / seed, in the twin.

    dvfo-bench --device xavier_nx --model resnet18 --trace dvfo \\
               --policies oracle,dvfo,edge_only,cloud_only,max_freq,ondemand --checkpoint dvfo.pt

Every policy meets the same frames (same seed). Learnt policies without a checkpoint are trained
first for ``--train-steps`` frames on other frames (seed + 1). Prints one table, writes ``--json``
({"policies": {name: {...}}}) and a Pareto PNG (energy per frame vs p95 latency).

    dvfo-bench overhead --model resnet18 --input-size 224 --frames 200 --json out/overhead.json

measures what the pipeline costs over running the network yourself (dvfo_ros.cli.bench_overhead).

    dvfo-bench grid [--quick] --json out/grid.json --plot out/grid.png

runs the DVFO paper's grid (profiles x models x bandwidths x workloads x eta) in the twin and says
where DVFO saves energy and how much (dvfo_ros.cli.bench_grid).

    dvfo-bench cloud --robots 1,4,8,16 --json out/cloud.json

puts the shared server's schedulers (heuristic, fixed:B, bcedge) side by side (dvfo_ros.cli.bench_cloud;
``--cloud`` says the same), and

    dvfo-bench --robots 3 --json out/fleet3.json

many robots sharing one server: mcia, neurosurgeon, all_local, all_upload, oracle (dvfo_ros.cli.bench_fleet).

    dvfo-bench serve --replicas 1,2,4 --robots 4,8 --json out/serve.json

the fleet load test: real robot clients against dvfo-cloud with Ray Serve behind its ZeroMQ front at 1, 2
and 4 replicas, one replica killed halfway, beside the in-process server (dvfo_ros.cli.bench_serve).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, Optional, Sequence

from dvfo_ros.cli.common import add_agent_args, add_env_args, cli_main, error, tqdm_progress
from dvfo_ros.cli.common import format_table as _table
# The bench's computations live in the core; re-exported here for callers of dvfo_ros.cli.bench.
from dvfo_ros.core.policies.experiments import NO_CLOCK_TUNING, ratios, run_bench, run_bench_traces, targets  # noqa: F401


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvfo-bench", description=__doc__.split("\n\n")[0],
                                epilog="dvfo-bench overhead --help: the pipeline's cost over the plain network; "
                                       "dvfo-bench grid --help: the paper's grid")
    add_env_args(p)
    p.add_argument("--policies", default="oracle,dvfo,edge_only,cloud_only,max_freq,ondemand",
                   help="comma-separated policy_mode names")
    p.add_argument("--checkpoint", default=None, help="checkpoint for the learnt policy it was trained as")
    p.add_argument("--frames", type=int, default=1000, help="frames per policy")
    p.add_argument("--train-steps", type=int, default=None,
                   help="training frames for learnt policies without a checkpoint (default: as many as the "
                        "checkpoint's policy was trained for, else 20000)")
    p.add_argument("--train-trace", default=None,
                   help="trace those policies train on (default: the checkpoint's training trace, else --trace)")
    p.add_argument("--time-scale", type=float, default=0.0, help="pacing of in-bench training (see dvfo-train)")
    p.add_argument("--static", default=None, help='command for "static", JSON, e.g. {"gpu_freq_hz": 6e8}')
    p.add_argument("--json", default=None, help="write results here")
    p.add_argument("--plot", default=None, help="Pareto PNG (energy J/frame vs p95 latency)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_agent_args(p, show=False)
    return p


def format_table(results: Dict[str, Dict[str, Any]]) -> str:
    """One row per policy: energy (board, SoC rails), latency, accuracy loss, reward, cost, SLO misses,
    decision time."""
    headers = ("policy", "J/frame", "SoC J", "lat ms", "p95 ms", "acc loss %", "reward", "cost", "SLO viol",
               "acc viol", "dec p50 ms", "dec p99 ms")
    rows = [(name, r["energy_j_per_frame"], r["soc_energy_j_per_frame"], r["latency_ms_mean"], r["latency_ms_p95"],
             100 * r["accuracy_loss"], r["reward_mean"], r["cost_mean"], r["slo_violations"],
             r.get("accuracy_violations", 0), r["decision_ms_p50"], r["decision_ms_p99"])
            for name, r in results.items()]
    return _table(rows, headers, floatfmt=("", ".4f", ".4f", ".1f", ".1f", ".2f", ".3f", ".3f", "", "", ".3f", ".3f"))


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


@cli_main("dvfo-bench")
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["overhead"]:
        from dvfo_ros.cli.bench_overhead import main as overhead
        return overhead(argv[1:])
    if argv[:1] == ["serve"]:
        from dvfo_ros.cli.bench_serve import main as serve
        return serve(argv[1:])
    if argv[:1] == ["cloud"] or "--cloud" in argv:
        from dvfo_ros.cli.bench_cloud import main as cloud
        return cloud([a for a in argv if a not in ("cloud", "--cloud")])
    if any(a == "--robots" or a.startswith("--robots=") for a in argv):
        from dvfo_ros.cli.bench_fleet import main as fleet
        return fleet(argv)
    if argv[:1] == ["grid"]:
        from dvfo_ros.cli.bench_grid import main as grid
        return grid(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames < 1 or (args.train_steps is not None and args.train_steps < 1):
        parser.error("--frames and --train-steps must be positive")
    import torch
    torch.set_num_threads(max(1, args.threads))
    from dvfo_ros.core.policies import policy_names
    from dvfo_ros.core.policies.experiments import AgentOptions, TwinSetup
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    valid = policy_names()
    unknown = [n for n in names if n not in valid]
    if not names or unknown:
        return error("dvfo-bench", f"unknown policy {', '.join(unknown) or '(none given)'}; "
                                   f"choose from {', '.join(valid)}")
    static = None
    if args.static:
        try:
            static = json.loads(args.static)
            if not isinstance(static, dict):
                raise ValueError
        except ValueError:
            return error("dvfo-bench", "--static must be a JSON object")
    traces = [t.strip() for t in args.trace.split(",") if t.strip()]
    if not traces:
        parser.error("--trace needs at least one trace")
    setup = TwinSetup.from_options(args)
    setup.trace = traces[0]
    by_trace, cfg = run_bench_traces(setup, names, traces, args.frames, args.checkpoint, args.train_steps,
                                     AgentOptions.from_options(args), args.time_scale, static,
                                     progress=tqdm_progress(), train_trace=args.train_trace)
    report: Dict[str, Any] = {}
    for trace, results in by_trace.items():
        print(f"{args.device} / {args.model} / trace {trace} / seed {args.seed} / {args.frames} frames / "
              f"eta {cfg.get('eta', args.eta)} / E_ref {cfg.get('energy_ref_j', 0):.4f} J / "
              f"T_ref {cfg.get('latency_ref_ms', 0):.2f} ms / SLO {cfg.get('latency_slo_ms', 0):.1f} ms")
        print(format_table(results))
        for line in ratios(results):
            print(line)
        report[trace] = {"device": args.device, "model": args.model, "trace": trace, "seed": args.seed,
                         "frames": args.frames, "reward": cfg, "policies": results, "targets": targets(results)}
        if args.plot:
            path = args.plot if len(traces) == 1 else f"{os.path.splitext(args.plot)[0]}_{trace}.png"
            plot_pareto(results, path, f"{args.device} / {args.model} / {trace}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            # one trace: that trace's report; several: {"traces": {trace: report}}
            json.dump(report[traces[0]] if len(traces) == 1 else {"traces": report}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
