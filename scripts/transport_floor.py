#!/usr/bin/env python3
"""What rclpy and Fast DDS alone cost a camera frame here: the floor under `dvfo-bench overhead`'s "outside ms".

    python scripts/transport_floor.py [--frames 200] [--size 224]

One process, two nodes, each with its own executor thread, as `dvfo-pipeline` composes them. Nothing else
runs. A sensor_msgs/Image of size x size RGB is built the way the camera node builds it
(`core.io.camera.image_fields`) and published on the camera's QoS. A dvfo_ros/InferenceResult with five
classes is published on the result's QoS. The script prints the medians, in microseconds, of building the image,
publishing it, the camera stamp to the subscriber's callback, and the publish to the callback for the result.
The DDS settings are the environment's: run it with the same ROS_* and FASTDDS_* variables as the pipeline.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import List

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--period-s", type=float, default=0.05, help="pause between frames")
    args = ap.parse_args()

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from dvfo_ros.core.io import camera as cam
    from dvfo_ros.msg import InferenceResult
    from dvfo_ros.nodes import qos

    ctx = rclpy.Context()
    rclpy.init(args=[], context=ctx)
    sender = rclpy.create_node("transport_floor_sender", context=ctx)
    receiver = rclpy.create_node("transport_floor_receiver", context=ctx)
    image_pub = qos.publisher(sender, Image, "transport_floor/image", qos.IMAGE_PUB)
    result_pub = sender.create_publisher(InferenceResult, "transport_floor/result", QoSProfile(depth=100))
    image_lat: List[int] = []
    result_lat: List[int] = []

    def stamp_ns(m) -> int:
        return m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec

    receiver.create_subscription(Image, "transport_floor/image",
                                 lambda m: image_lat.append(time.time_ns() - stamp_ns(m)), qos.sensor_sub(10))
    receiver.create_subscription(InferenceResult, "transport_floor/result",
                                 lambda m: result_lat.append(time.time_ns() - stamp_ns(m)), QoSProfile(depth=100))
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(receiver)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    time.sleep(1.0)                       # discovery
    rgb = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    build: List[int] = []
    publish: List[int] = []
    for _ in range(args.frames):
        stamp = time.time_ns()
        t0 = time.perf_counter_ns()
        msg = Image()
        msg.height, msg.width, msg.encoding, msg.step, msg.data = cam.image_fields(rgb, as_array=True)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        t1 = time.perf_counter_ns()
        image_pub.publish(msg)
        build.append(t1 - t0)
        publish.append(time.perf_counter_ns() - t1)
        time.sleep(args.period_s / 2)
        out = InferenceResult()
        out.top_classes, out.top_scores, out.model = [1, 2, 3, 4, 5], [0.2] * 5, "resnet18"
        out.header.stamp.sec, out.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
        result_pub.publish(out)
        time.sleep(args.period_s / 2)
    time.sleep(0.5)
    executor.shutdown()
    spinner.join(timeout=5.0)
    sender.destroy_node()
    receiver.destroy_node()
    rclpy.shutdown(context=ctx)
    med = statistics.median
    print(f"{args.size}x{args.size} rgb8 image, {args.frames} frames (medians, us): build {med(build) / 1e3:.0f}, "
          f"publish {med(publish) / 1e3:.0f}, stamp -> callback {med(image_lat) / 1e3:.0f} "
          f"({len(image_lat)} received); result publish -> callback {med(result_lat) / 1e3:.0f} "
          f"({len(result_lat)} received)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
