"""The grid's numbers: per-cell means with 95 % intervals, DVFO against every baseline, its gap to the
oracle, the oracle's own saving (the bound), and the headline averages stated the way the DVFO paper
states them. Pure functions of ``grid.run_group``'s results; no training, no twin.

Definitions (every change is paired per evaluation seed, since all policies meet the same frames):

- ``energy_change`` / ``latency_change`` vs B: E_dvfo / E_B - 1 (board energy per frame) and the same
  for the mean latency; negative = DVFO uses less / is faster.
- ``dvfo_objective_vs_oracle``: DVFO's objective (-reward: the eta-weighted cost plus the SLO and
  accuracy penalties, what the oracle minimises frame by frame) over the oracle's, minus 1: >= 0 up to
  noise. ``dvfo_cost_vs_oracle``: the same with penalties excluded (dvfo-bench's figure).
- ``oracle_energy_saving_vs_edge_only``: 1 - E_oracle / E_edge_only, the bound at this reward (the
  oracle minimises the objective, not energy alone).
- 95 % intervals: Student t over evaluation seeds (mean +- t * sd / sqrt(n)).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Dict, List, Sequence

import numpy as np

# t_{0.975, df} for df = 1..30; beyond, the normal 1.96
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
FACTORS = ("profile", "model", "workload", "eta", "bandwidth_mbps")
HELP_TOLERANCE = 0.01          # a saving below 1 % is "no saving" in the where-it-does-not-help lists


def stat(values: Any) -> Dict[str, float]:
    """{"mean", "ci95", "n"}: the mean and the half-width of its 95 % Student-t interval."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "ci95": float("nan"), "n": 0}
    half = 0.0
    if n > 1:
        t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
        half = float(t * np.std(v, ddof=1) / math.sqrt(n))
    return {"mean": float(np.mean(v)), "ci95": half, "n": n}


def _ratio(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    return np.asarray(a, float) / np.maximum(np.asarray(b, float), 1e-12)


def cell(group: Dict[str, Any], bandwidth: str, runs: Dict[str, List[Dict[str, float]]]) -> Dict[str, Any]:
    """One cell's record: every policy's metrics, DVFO against each baseline, the oracle gap and bound."""
    def col(policy: str, key: str) -> List[float]:
        return [r[key] for r in runs[policy]]

    def objective(policy: str) -> List[float]:
        return [-r["reward_mean"] for r in runs[policy]]

    out: Dict[str, Any] = {k: group[k] for k in ("profile", "model", "workload", "eta")}
    out["bandwidth_mbps"] = float(bandwidth)
    out["policies"] = {name: {key: stat([r[key] for r in rs]) for key in rs[0]} for name, rs in runs.items()}
    out["dvfo_vs"] = {}
    for b in runs:
        if b in ("dvfo", "oracle"):
            continue
        out["dvfo_vs"][b] = {
            "energy_change": stat(_ratio(col("dvfo", "energy_j_per_frame"), col(b, "energy_j_per_frame")) - 1),
            "latency_change": stat(_ratio(col("dvfo", "latency_ms_mean"), col(b, "latency_ms_mean")) - 1),
            "p95_change": stat(_ratio(col("dvfo", "latency_ms_p95"), col(b, "latency_ms_p95")) - 1),
            "objective_change": stat(_ratio(objective("dvfo"), objective(b)) - 1)}
    out["dvfo_objective_vs_oracle"] = stat(_ratio(objective("dvfo"), objective("oracle")) - 1)
    out["dvfo_cost_vs_oracle"] = stat(_ratio(col("dvfo", "cost_mean"), col("oracle", "cost_mean")) - 1)
    out["dvfo_energy_saving_vs_edge_only"] = stat(
        1 - _ratio(col("dvfo", "energy_j_per_frame"), col("edge_only", "energy_j_per_frame")))
    out["oracle_energy_saving_vs_edge_only"] = stat(
        1 - _ratio(col("oracle", "energy_j_per_frame"), col("edge_only", "energy_j_per_frame")))
    out["oracle_objective_saving_vs_edge_only"] = stat(1 - _ratio(objective("oracle"), objective("edge_only")))
    return out


def _m(c: Dict[str, Any], *path: str) -> float:
    x: Any = c
    for p in path:
        x = x[p]
    return float(x["mean"])


def _where(cells: List[Dict[str, Any]], keep: Any) -> Dict[str, Any]:
    """How many cells satisfy ``keep``, and the (profile, model, workload) combinations most of them are in."""
    hit = [c for c in cells if keep(c)]
    top = Counter(f"{c['profile']}/{c['model']}/{c['workload']}" for c in hit).most_common(4)
    return {"cells": len(hit), "share": len(hit) / max(len(cells), 1),
            "mostly": [{"where": k, "cells": n} for k, n in top]}


def headline(cells: List[Dict[str, Any]], baselines: Sequence[str]) -> Dict[str, Any]:
    """The grid's averages over cells (a plain mean of the per-cell relative changes), per baseline and
    per factor, the paper-style sentence, and where DVFO does not help."""
    per: Dict[str, Dict[str, float]] = {}
    for b in baselines:
        e = [_m(c, "dvfo_vs", b, "energy_change") for c in cells]
        lat = [_m(c, "dvfo_vs", b, "latency_change") for c in cells]
        per[b] = {"energy_reduction": -float(np.mean(e)), "latency_reduction": -float(np.mean(lat)),
                  "cells_energy_saved": float(np.mean([x < 0 for x in e])),
                  "cells_energy_saved_significant": float(np.mean(
                      [c["dvfo_vs"][b]["energy_change"]["mean"] + c["dvfo_vs"][b]["energy_change"]["ci95"] < 0
                       for c in cells])),
                  "cells_faster": float(np.mean([x < 0 for x in lat]))}
    acc = [_m(c, "policies", "dvfo", "accuracy_loss") for c in cells]
    gap = [_m(c, "dvfo_objective_vs_oracle") for c in cells]
    out: Dict[str, Any] = {
        "cells": len(cells), "baselines": per,
        "energy_reduction_avg": float(np.mean([v["energy_reduction"] for v in per.values()])) if per else 0.0,
        "latency_reduction_range": [min(v["latency_reduction"] for v in per.values()),
                                    max(v["latency_reduction"] for v in per.values())] if per else [0.0, 0.0],
        "accuracy_loss_max": float(np.max(acc)), "accuracy_loss_mean": float(np.mean(acc)),
        "dvfo_objective_vs_oracle": {"mean": float(np.mean(gap)), "median": float(np.median(gap)),
                                     "p90": float(np.percentile(gap, 90)), "max": float(np.max(gap))},
        "dvfo_energy_saving_vs_edge_only_mean": float(np.mean([_m(c, "dvfo_energy_saving_vs_edge_only")
                                                               for c in cells])),
        "oracle_energy_saving_vs_edge_only_mean": float(np.mean([_m(c, "oracle_energy_saving_vs_edge_only")
                                                                 for c in cells])),
        "by": {}}
    for f in FACTORS:
        out["by"][f] = {}
        for v in sorted({c[f] for c in cells}, key=lambda x: (isinstance(x, str), x)):
            sub = [c for c in cells if c[f] == v]
            out["by"][f][str(v)] = {
                "cells": len(sub),
                "dvfo_energy_saving_vs_edge_only": float(np.mean([_m(c, "dvfo_energy_saving_vs_edge_only")
                                                                  for c in sub])),
                "oracle_energy_saving_vs_edge_only": float(np.mean([_m(c, "oracle_energy_saving_vs_edge_only")
                                                                    for c in sub])),
                "dvfo_objective_vs_oracle": float(np.mean([_m(c, "dvfo_objective_vs_oracle") for c in sub])),
                "dvfo_offload_ratio_mean": float(np.mean([_m(c, "policies", "dvfo", "offload_ratio_mean")
                                                          for c in sub]))}
    tol = HELP_TOLERANCE
    out["does_not_help"] = {
        # the bound itself: edge_only at max clocks is already (within 1 %) the best this reward allows
        "nothing_to_save": _where(cells, lambda c: _m(c, "oracle_objective_saving_vs_edge_only") < tol),
        # DVFO's objective worse than edge_only's by more than 1 %
        "worse_than_edge_only": _where(cells, lambda c: _m(c, "dvfo_vs", "edge_only", "objective_change") > tol),
        # the oracle saves >= 5 % of the objective against edge_only, DVFO less than half of that
        "misses_half_the_bound": _where(cells, lambda c: _m(c, "oracle_objective_saving_vs_edge_only") >= 0.05
                                        and -_m(c, "dvfo_vs", "edge_only", "objective_change")
                                        < 0.5 * _m(c, "oracle_objective_saving_vs_edge_only"))}
    out["sentence"] = sentence(out, list(per))
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def sentence(h: Dict[str, Any], baselines: Sequence[str]) -> str:
    """"DVFO reduces energy by X % on average against <baselines> and latency by Y–Z %, at <= W %
    accuracy loss", with the verbs turned round where the numbers are negative."""
    x = h["energy_reduction_avg"]
    lo, hi = h["latency_reduction_range"]
    energy = f"reduces energy by {_pct(x)}" if x >= 0 else f"uses {_pct(-x)} MORE energy"
    if lo >= 0:
        latency = f"latency by {100 * lo:.1f}–{_pct(hi)}"
    elif hi <= 0:
        latency = f"is {100 * -hi:.1f}–{_pct(-lo)} SLOWER"
    else:
        latency = f"changes latency from {_pct(hi)} faster to {_pct(-lo)} slower"
    return (f"DVFO {energy} on average against {', '.join(baselines)} and {latency}, at "
            f"<= {100 * h['accuracy_loss_max']:.2f} % accuracy loss ({h['cells']} cells; plain mean of the per-cell "
            f"relative changes)")


def report(cfg: Any, results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The grid's JSON: config, per-group bookkeeping (trained / loaded from cache, wall times), cells,
    headline."""
    from dvfo_ros.core.policies.grid import BASELINES
    cells = [cell(r["group"], bw, runs) for r in results for bw, runs in r["runs"].items()]
    cells.sort(key=lambda c: (c["profile"], c["model"], c["workload"], c["eta"], c["bandwidth_mbps"]))
    groups = sorted((r["group"] for r in results), key=lambda g: (g["profile"], g["model"], g["workload"], g["eta"]))
    baselines = [b for b in BASELINES if b in cfg.policies]
    return {"config": cfg.to_dict(), "groups": groups, "cells": cells, "headline": headline(cells, baselines)}
