#!/usr/bin/env python3
"""Measure offline training on a bag equivalent to 1 hour at 30 Hz (108,000 transitions), as the README reports.

    .venv/bin/python scripts/bag_benchmark.py [--frames 108000] [--storage mcap] [--steps 2000] [--keep DIR]

Writes the bag with `dvfo-bag synth` (the pipeline's five topics, ~4.3 messages per frame), then runs
`dvfo-train --bag` in a fresh process so its peak RSS is the training run's alone. Prints one JSON line.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=108_000,
                    help="transitions in the bag (default 108000 = 1 h at 30 Hz)")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default mcap)")
    ap.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    ap.add_argument("--keep", default=None, help="write the bag and checkpoint here instead of a temp dir")
    args = ap.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="dvfo_bagbench_")
    os.makedirs(work, exist_ok=True)
    bag = os.path.join(work, f"hour_{args.storage}")
    py = sys.executable
    t0 = time.perf_counter()
    if not os.path.exists(bag):
        subprocess.run([py, "-m", "dvfo_ros.cli.bag", "synth", bag, "--frames", str(args.frames), "--storage",
                        args.storage, "--explore", "0.3"], check=True, stderr=subprocess.DEVNULL)
    write_s = time.perf_counter() - t0
    size = sum(os.path.getsize(os.path.join(bag, f)) for f in os.listdir(bag))
    t1 = time.perf_counter()
    subprocess.run([py, "-m", "dvfo_ros.cli.bag", "info", bag], check=True, stdout=subprocess.DEVNULL)
    info_s = time.perf_counter() - t1
    out = os.path.join(work, "hour.pt")
    report = os.path.join(work, "train.json")
    subprocess.run([py, "-m", "dvfo_ros.cli.train_offline", "--bag", bag, "--out", out, "--steps", str(args.steps),
                    "--eval-every", str(args.steps), "--no-progress", "--json", report], check=True)
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    r = json.load(open(report))
    print(json.dumps({"frames": args.frames, "storage": args.storage, "bag_mib": round(size / 2**20, 1),
                      "synth_s": round(write_s, 1), "info_s": round(info_s, 1),
                      "read_s": round(r["read_s"], 1), "read_transitions_per_s": round(r["read_transitions_per_s"]),
                      "steps": r["steps"], "train_s": round(r["train_s"], 1), "steps_per_s": round(r["steps_per_s"], 1),
                      "trained_transitions_per_s": round(r["trained_transitions_per_s"]),
                      "buffer_mib": round(r["buffer_mb"], 1), "peak_rss_mib": round(r["peak_rss_mb"]),
                      "max_child_rss_mib": round(child_rss), "cql_alpha": r["cql_alpha"],
                      "work_dir": work}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
