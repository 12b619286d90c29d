"""dvfo-record: record the DVFO topics into a rosbag2 bag (mcap or sqlite3) without rosbag2 installed.

    dvfo-record                                   # the five DVFO topics into ./dvfo_bag_<date>_<time> (mcap)
    dvfo-record -o run1 --storage sqlite3 --duration 600
    dvfo-record -o cam /camera/image_raw /dvfo/inference

Ctrl-C (SIGINT) or SIGTERM stops it cleanly: the bag is finished and metadata.yaml written, so
``ros2 bag info run1`` / ``ros2 bag play run1`` on a robot and ``dvfo-bag info run1`` read it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

from dvfo_ros.core.io.bags import STORAGES
from dvfo_ros.core.io.bagtypes import DEFAULT_TOPICS
from dvfo_ros.core.signals import install_handlers, restore_handlers


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvfo-record", description="Record DVFO topics into a rosbag2 bag "
                                "(mcap or sqlite3), for machines without rosbag2.")
    p.add_argument("topics", nargs="*", default=list(DEFAULT_TOPICS),
                   help=f"topics to record (default: {' '.join(DEFAULT_TOPICS)})")
    p.add_argument("-o", "--output", default=None,
                   help="bag directory to create (default: dvfo_bag_<YYYYmmdd_HHMMSS>); must not exist")
    p.add_argument("--storage", choices=STORAGES, default="mcap", help="rosbag2 storage plugin (default mcap)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default 0: until Ctrl-C)")
    p.add_argument("--flush-period", type=float, default=2.0,
                   help="write buffered messages to disk this often, seconds (default 2)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.duration < 0 or args.flush_period <= 0:
        build_parser().error("--duration must be >= 0 and --flush-period > 0")
    out = args.output or time.strftime("dvfo_bag_%Y%m%d_%H%M%S")
    if os.path.exists(out):
        print(f"dvfo-record: error: {out} already exists; choose another -o", file=sys.stderr)
        return 2
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    from dvfo_ros.core.io.bags import BagError
    from dvfo_ros.nodes.recorder import RecorderNode

    stop = {"flag": False}

    def on_signal(signum, frame) -> None:  # noqa: ARG001
        stop["flag"] = True

    context = rclpy.Context()
    rclpy.init(args=[], context=context, signal_handler_options=SignalHandlerOptions.NO)
    old = install_handlers(lambda _sig, _previous: on_signal)     # SIGINT, SIGTERM (an ignored one stays ignored)
    node = None
    try:
        try:
            node = RecorderNode(out, args.storage, [t for t in args.topics], context=context,
                                parameter_overrides=[Parameter("flush_period_s", value=float(args.flush_period))])
        except BagError as e:
            print(f"dvfo-record: error: {e}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        end = time.monotonic() + args.duration if args.duration > 0 else None
        print(f"dvfo-record: recording {' '.join(node.pending)} to {out} ({args.storage}); Ctrl-C to stop",
              file=sys.stderr, flush=True)
        try:
            while not stop["flag"] and (end is None or time.monotonic() < end):
                executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass
        node.close()
        counts = ", ".join(f"{t} {n}" for t, n in node.received.items())
        print(f"dvfo-record: wrote {out}: {counts}", flush=True)
        return 0
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        restore_handlers(old)
        rclpy.shutdown(context=context)


if __name__ == "__main__":
    sys.exit(main())
