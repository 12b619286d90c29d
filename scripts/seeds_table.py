#!/usr/bin/env python3
"""Print the README's seed-systems table from `make bench-seeds`' JSON files (out/seeds_<device>.json).

    python scripts/seeds_table.py out/seeds_xavier_nx.json out/seeds_nano.json

One row per policy; per device and trace: energy per frame, mean latency, the common reward (higher is better)
and the frames that missed the SLO / the accuracy requirement.
"""
import json
import sys


def main(paths):
    columns, rows = [], {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
        for trace, r in (report.get("traces") or {report["trace"]: report}).items():
            columns.append(f"{r['device']} / {trace.replace('heldout_', '')}")
            for name, p in r["policies"].items():
                rows.setdefault(name, []).append(
                    f"{p['energy_j_per_frame']:.2f} J · {p['latency_ms_mean']:.0f} ms · {p['reward_mean']:.2f} · "
                    f"{p['slo_violations']}/{p.get('accuracy_violations', 0)}")
    print("| policy | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
