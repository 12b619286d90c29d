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


def executor_probe(ctx: rclpy.Context, executor):
    """A probe node wired to an executor: (probe, results list, image publisher, action publisher), once the
    executor has subscribed to both publishers."""
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from dvfo_ros.msg import DvfoAction, InferenceResult
    probe = Node("probe", context=ctx)
    results: list = []
    probe.create_subscription(InferenceResult, "dvfo/inference", results.append, QoSProfile(depth=50))
    img_pub = probe.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    act_pub = probe.create_publisher(DvfoAction, "dvfo/action", QoSProfile(depth=10))
    assert spin_until(ctx, [executor, probe], lambda: img_pub.get_subscription_count() > 0
                      and act_pub.get_subscription_count() > 0)
    return probe, results, img_pub, act_pub
