"""dvfo-bench grid's heatmaps: one panel per (profile, model), bandwidth across, workload x eta down.

Two PNGs from one report: ``<plot>`` colours DVFO's board-energy saving against ``edge_only`` (%, green =
DVFO uses less), with the oracle's saving (the bound) in each cell's label; ``<stem>_oracle_gap.png``
colours DVFO's gap to the oracle (objective, %; 0 = as good as the bound).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple


def _panels(rep: Dict[str, Any]) -> Tuple[List[str], List[str], List[Tuple[str, float]], List[float]]:
    cfg = rep["config"]
    rows = [(w, float(e)) for w in cfg["workloads"] for e in cfg["etas"]]
    return list(cfg["profiles"]), list(cfg["models"]), rows, [float(b) for b in cfg["bandwidths_mbps"]]


def _figure(rep: Dict[str, Any], path: str, value: str, label: str, title: str, cmap: str,
            vmin: float, vmax: float, note: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    profiles, models, rows, bws = _panels(rep)
    index = {(c["profile"], c["model"], c["workload"], float(c["eta"]), float(c["bandwidth_mbps"])): c
             for c in rep["cells"]}
    size = (max(7.5, 1.4 + 2.3 * len(models)), 1.3 + (0.45 + 0.3 * len(rows)) * len(profiles))
    fig, axes = plt.subplots(len(profiles), len(models), squeeze=False, layout="constrained", figsize=size)
    image = None
    for i, p in enumerate(profiles):
        for j, m in enumerate(models):
            ax = axes[i][j]
            grid = np.full((len(rows), len(bws)), np.nan)
            for r, (w, e) in enumerate(rows):
                for k, b in enumerate(bws):
                    c = index.get((p, m, w, e, b))
                    if c is None:
                        continue
                    grid[r, k] = 100 * c[value]["mean"]
                    text = f"{grid[r, k]:.0f}"
                    if note:
                        text += f"\n({100 * c[note]['mean']:.0f})"
                    ax.text(k, r, text, ha="center", va="center", fontsize=4.5 if note else 5.5)
            image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
            ax.set_xticks(range(len(bws)), [f"{b:g}" for b in bws], fontsize=6)
            ax.set_yticks(range(len(rows)), [f"{'cam' if w == 'camera' else 'b2b'} η{e:g}" for w, e in rows]
                          if j == 0 else [], fontsize=6)
            if i == 0:
                ax.set_title(m, fontsize=8)
            if j == 0:
                ax.set_ylabel(p, fontsize=8)
            if i == len(profiles) - 1:
                ax.set_xlabel("Mbps", fontsize=6)
    fig.suptitle(title, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label=label)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_grid(rep: Dict[str, Any], path: str) -> List[str]:
    """Write both heatmaps; returns their paths."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    stem, ext = os.path.splitext(path)
    gap_path = f"{stem}_oracle_gap{ext or '.png'}"
    cfg = rep["config"]
    sub = (f"{cfg['eval_seeds']} seeds x {cfg['eval_frames']} frames, noise {cfg['noise']:g}, "
           f"{cfg['steps']} training steps; cam = {cfg['fps']:g} fps camera, b2b = back to back")
    _figure(rep, path, "dvfo_energy_saving_vs_edge_only", "energy saving vs edge_only, %",
            f"DVFO's board-energy saving vs edge_only, % (in brackets: the oracle's, the bound)\n{sub}",
            "RdYlGn", -40.0, 40.0, note="oracle_energy_saving_vs_edge_only")
    _figure(rep, gap_path, "dvfo_objective_vs_oracle", "objective over the oracle's, %",
            f"DVFO's gap to the oracle (objective incl. penalties), %\n{sub}", "magma_r", 0.0, 50.0)
    return [path, gap_path]
