"""Small helpers for tests that run real rclpy nodes over Fast DDS (shared memory, localhost)."""
from __future__ import annotations

import socket
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import rclpy
from rclpy.executors import SingleThreadedExecutor


@contextmanager
def ros_context() -> Iterator[rclpy.Context]:
    ctx = rclpy.Context()
    rclpy.init(args=[], context=ctx)
    try:
        yield ctx
    finally:
        rclpy.shutdown(context=ctx)


def spin_until(ctx: rclpy.Context, nodes, cond: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    ex = SingleThreadedExecutor(context=ctx)
    for n in nodes:
        ex.add_node(n)
    t_end = time.monotonic() + timeout_s
    try:
        while time.monotonic() < t_end:
            if cond():
                return True
            ex.spin_once(timeout_sec=0.05)
        return cond()
    finally:
        for n in nodes:
            ex.remove_node(n)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
