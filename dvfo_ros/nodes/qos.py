"""QoS of every dvfo_ros topic, per REP 2003, and rclpy's QoS overriding options on all of them.

Images: drivers publish reliable with the system default history (``IMAGE_PUB``), image consumers
subscribe best-effort (``sensor_sub``) so they match both reliable and best-effort drivers. Every
publisher and subscription accepts ``qos_overrides.<topic>.<publisher|subscription>.<policy>`` read-only
parameters (history, depth, reliability, durability), settable in a params file or with --ros-args -p.
"""
from __future__ import annotations

from typing import Any

from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data, qos_profile_system_default)
from rclpy.qos_overriding_options import QoSOverridingOptions

# a camera's images: reliable, system default history and depth (REP 2003 "publishers: system default")
IMAGE_PUB = QoSProfile(history=qos_profile_system_default.history, depth=qos_profile_system_default.depth,
                       reliability=ReliabilityPolicy.RELIABLE, durability=qos_profile_system_default.durability)
# latched topics (vision_msgs/LabelInfo): a subscriber that joins late still gets the last message
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def sensor_sub(depth: int) -> QoSProfile:
    """Image subscriptions: sensor data QoS (best effort, volatile) keeping ``depth`` frames."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=qos_profile_sensor_data.reliability,
                      durability=qos_profile_sensor_data.durability)


def overridable() -> QoSOverridingOptions:
    return QoSOverridingOptions.with_default_policies()


def publisher(node: Node, msg_type: Any, topic: str, qos: QoSProfile, **kwargs: Any):
    """``node.create_publisher`` with the QoS overriding options."""
    return node.create_publisher(msg_type, topic, qos, qos_overriding_options=overridable(), **kwargs)


def subscription(node: Node, msg_type: Any, topic: str, callback: Any, qos: QoSProfile, **kwargs: Any):
    """``node.create_subscription`` with the QoS overriding options."""
    return node.create_subscription(msg_type, topic, callback, qos, qos_overriding_options=overridable(), **kwargs)
