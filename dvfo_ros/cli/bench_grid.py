"""dvfo-bench grid: where DVFO saves energy, and how much, on the DVFO paper's grid in the twin.

    dvfo-bench grid --json out/grid.json --plot out/grid.png             # the full grid (make bench-grid)
    dvfo-bench grid --quick                                              # a few minutes (make bench-grid-quick)
    dvfo-bench grid --profiles tx2 --models resnet50 --etas 0.8 --workers 2

Profiles x models x bandwidths x workloads (a 30 fps camera; back to back) x eta. Every learnt policy
(dvfo, dvfs_only, offload_only, autoscale) is trained once per (profile, model, workload, eta) for
--steps frames on a uniform trace over the grid's bandwidth range, cached under --cache-dir (a rerun
only evaluates), and then every policy runs --eval-frames frames on a constant-bandwidth trace at each
bandwidth for each of --eval-seeds seeds of the twin's noise (--noise). Prints the headline averages,
DVFO against each baseline, a breakdown per factor and where DVFO does not help; writes --json (every
cell's numbers, with 95 % intervals across evaluation seeds) and --plot (heatmaps).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from dvfo_ros.cli.common import cli_main, format_table, tqdm_progress
from dvfo_ros.core.errors import DvfoError

PROG = "dvfo-bench grid"


class GridError(ValueError, DvfoError):
    """A bad option of dvfo-bench grid (one line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:     # one line, exit 2 (cli_main), not usage + message
        raise GridError(message)


def _names(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str) -> List[float]:
    try:
        return [float(t) for t in _names(text)]
    except ValueError:
        raise GridError(f"expected comma-separated numbers, got '{text}'") from None


def build_parser() -> argparse.ArgumentParser:
    from dvfo_ros.core.policies.grid import GridConfig
    d, q = GridConfig(), GridConfig.quick()
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"the quick subset: {','.join(q.profiles)} x {','.join(q.models)}, eta "
                        f"{','.join(f'{e:g}' for e in q.etas)}, {q.steps} steps, {q.eval_frames} eval frames")
    p.add_argument("--profiles", default=None, help=f"twin profiles (default {','.join(d.profiles)})")
    p.add_argument("--models", default=None, help=f"models (default {','.join(d.models)})")
    p.add_argument("--bandwidths", default=None,
                   help=f"constant bandwidths, Mbps (default {','.join(f'{b:g}' for b in d.bandwidths_mbps)})")
    p.add_argument("--workloads", default=None, help=f"camera and/or back_to_back (default {','.join(d.workloads)})")
    p.add_argument("--etas", default=None,
                   help=f"reward weights of energy (default {','.join(f'{e:g}' for e in d.etas)})")
    p.add_argument("--policies", default=None, help=f"policies (default {','.join(d.policies)})")
    p.add_argument("--steps", type=int, default=None,
                   help=f"training frames of every learnt policy (default {d.steps}; --quick {q.steps})")
    p.add_argument("--replay-ratio", type=float, default=None,
                   help="gradient steps per training frame of every learnt policy (default 0.5: what fits the hour; "
                        "dvfo-train's default is 4)")
    p.add_argument("--eval-frames", type=int, default=None,
                   help=f"frames per policy, cell and seed (default {d.eval_frames}; --quick {q.eval_frames})")
    p.add_argument("--eval-seeds", type=int, default=None, help=f"evaluation seeds per cell (default {d.eval_seeds})")
    p.add_argument("--train-seed", type=int, default=None, help=f"seed of the training runs (default {d.train_seed})")
    p.add_argument("--noise", type=float, default=None, help=f"twin noise, relative sigma (default {d.noise})")
    p.add_argument("--fps", type=float, default=None, help=f"the camera workload's rate (default {d.fps:g})")
    p.add_argument("--back-to-back-slo-ms", type=float, default=None,
                   help=f"the back-to-back workload's latency SLO (default {d.back_to_back_slo_ms:g})")
    p.add_argument("--cache-dir", default=None, help=f"trained checkpoints (default {d.cache_dir})")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (1: in this one)")
    p.add_argument("--json", default=None, help="write every cell's numbers here")
    p.add_argument("--plot", default=None, help="heatmap PNG (DVFO's energy saving vs edge_only; "
                                                "<name>_oracle_gap.png: its gap to the oracle)")
    p.add_argument("--cells", action="store_true", help="print every cell (default: only when there are <= 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    from dvfo_ros.core.policies.grid import GridConfig
    kw: Dict[str, Any] = {}
    for flag, key, conv in (("profiles", "profiles", _names), ("models", "models", _names),
                            ("bandwidths", "bandwidths_mbps", _floats), ("workloads", "workloads", _names),
                            ("etas", "etas", _floats), ("policies", "policies", _names)):
        if getattr(args, flag) is not None:
            kw[key] = tuple(conv(getattr(args, flag)))
    for key in ("steps", "eval_frames", "eval_seeds", "train_seed", "noise", "fps", "back_to_back_slo_ms",
                "cache_dir"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    cfg = GridConfig.quick(**kw) if args.quick else GridConfig(**kw)
    if args.replay_ratio is not None:
        if args.replay_ratio <= 0:
            raise ValueError("--replay-ratio must be > 0")
        assert cfg.agent is not None                      # GridConfig fills it in
        cfg.agent = dataclasses.replace(cfg.agent, replay_ratio=float(args.replay_ratio))
    return cfg


def _pct(x: float, ci: Optional[float] = None) -> str:
    return f"{100 * x:+.1f}" + (f" ±{100 * ci:.1f}" if ci is not None else "")


def summary_lines(rep: Dict[str, Any]) -> List[str]:
    """The printed report: headline sentence, per-baseline table, per-factor breakdown, where DVFO does not help."""
    h = rep["headline"]
    cfg = rep["config"]
    trained = sum(len(g["trained"]) for g in rep["groups"])
    loaded = sum(len(g["loaded"]) for g in rep["groups"])
    out = [f"{len(rep['groups'])} training groups, {h['cells']} cells; learnt policies: {trained} trained "
           f"({cfg['steps']} steps each), {loaded} from the cache ({cfg['cache_dir']}); "
           f"{cfg['eval_seeds']} eval seeds x {cfg['eval_frames']} frames per policy and cell; "
           f"twin noise {cfg['noise']:g}; camera {cfg['fps']:g} fps (SLO one period), back to back SLO "
           f"{cfg['back_to_back_slo_ms']:g} ms (either raised to {cfg['slo_headroom']:g} x edge_only's latency where "
           f"that misses it); "
           f"{rep.get('wall_s', 0):.0f} s on {rep.get('workers', 1)} worker(s)", "",
           h["sentence"], ""]
    rows = [(b, 100 * v["energy_reduction"], 100 * v["latency_reduction"], 100 * v["cells_energy_saved"],
             100 * v["cells_energy_saved_significant"], 100 * v["cells_faster"]) for b, v in h["baselines"].items()]
    out.append(format_table(rows, ("DVFO vs", "energy reduction %", "latency reduction %", "cells less energy %",
                                   "significant %", "cells faster %"),
                            floatfmt=("", ".1f", ".1f", ".0f", ".0f", ".0f")))
    g = h["dvfo_objective_vs_oracle"]
    out += ["", f"DVFO's gap to the oracle (objective incl. penalties): mean {_pct(g['mean'])} %, median "
                f"{_pct(g['median'])} %, p90 {_pct(g['p90'])} %, max {_pct(g['max'])} %; DVFO's energy saving vs "
                f"edge_only {100 * h['dvfo_energy_saving_vs_edge_only_mean']:.1f} % on average, the oracle's "
                f"(the bound) {100 * h['oracle_energy_saving_vs_edge_only_mean']:.1f} %; DVFO's accuracy loss mean "
                f"{100 * h['accuracy_loss_mean']:.2f} %, max {100 * h['accuracy_loss_max']:.2f} %", ""]
    by_rows = [(f, v, s["cells"], f"{100 * s['dvfo_energy_saving_vs_edge_only']:.1f}",
             f"{100 * s['oracle_energy_saving_vs_edge_only']:.1f}", f"{100 * s['dvfo_objective_vs_oracle']:.1f}",
             f"{s['dvfo_offload_ratio_mean']:.2f}") for f, by in h["by"].items() for v, s in by.items()]
    out.append(format_table(by_rows, ("factor", "value", "cells", "DVFO saving vs edge_only %", "oracle saving %",
                                   "DVFO gap to oracle %", "DVFO mean xi"),
                            align=("left", "left", "right", "right", "right", "right", "right"), numparse=False))
    labels = {"nothing_to_save": "nothing to save (the oracle within 1 % of edge_only's objective)",
              "worse_than_edge_only": "DVFO worse than edge_only (objective > +1 %)",
              "misses_half_the_bound": "DVFO gets < half of the oracle's saving (where that is >= 5 %)"}
    out.append("")
    out.append("Where DVFO does not help:")
    for key, text in labels.items():
        w = h["does_not_help"][key]
        mostly = ", ".join(f"{m['where']} ({m['cells']})" for m in w["mostly"]) or "-"
        out.append(f"  {text}: {w['cells']}/{h['cells']} cells ({100 * w['share']:.0f} %); mostly {mostly}")
    return out


def cell_table(cells: Sequence[Dict[str, Any]]) -> str:
    rows = []
    for c in cells:
        d, o = c["policies"]["dvfo"], c["policies"]["oracle"]
        e = c["dvfo_vs"]["edge_only"]
        rows.append((c["profile"], c["model"], c["workload"], f"{c['eta']:g}", f"{c['bandwidth_mbps']:g}",
                     f"{d['energy_j_per_frame']['mean']:.4f}", f"{d['latency_ms_mean']['mean']:.1f}",
                     f"{d['offload_ratio_mean']['mean']:.2f}",
                     _pct(e["energy_change"]["mean"], e["energy_change"]["ci95"]),
                     _pct(e["latency_change"]["mean"], e["latency_change"]["ci95"]),
                     _pct(c["oracle_energy_saving_vs_edge_only"]["mean"]),
                     _pct(c["dvfo_objective_vs_oracle"]["mean"], c["dvfo_objective_vs_oracle"]["ci95"]),
                     f"{o['latency_ms_mean']['mean']:.1f}"))
    return format_table(rows, ("profile", "model", "workload", "eta", "Mbps", "DVFO J", "DVFO ms", "xi",
                               "ΔE vs edge %", "Δlat vs edge %", "oracle saving %", "gap to oracle %", "oracle ms"),
                        align=("left",) * 3 + ("right",) * 10, numparse=False)


@cli_main(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        raise GridError("--workers must be >= 1")
    cfg = config_from_args(args)
    cfg.validate()                              # bad names: one line, before anything runs
    from dvfo_ros.core.policies.grid import run_grid
    rep = run_grid(cfg, workers=args.workers, progress=None if args.no_progress else tqdm_progress())
    rep["command"] = ["dvfo-bench", "grid"] + list(sys.argv[2:] if argv is None else argv)
    if args.cells or len(rep["cells"]) <= 60:
        print(cell_table(rep["cells"]))
        print()
    print("\n".join(summary_lines(rep)))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rep, fh, indent=1)
    if args.plot:
        from dvfo_ros.cli.bench_grid_plot import plot_grid
        for path in plot_grid(rep, args.plot):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
