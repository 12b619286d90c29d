"""/diagnostics the diagnostic_updater way, for every dvfo_ros node: one shared shell.

Each node adds its tasks (``add("inference", fn)``, fn(now_s) -> core.diag.Status); once a second one
DiagnosticArray goes out with a status per task, named ``"<node>: <task>"`` (``"robot1/executor:
inference"`` under a namespace, so robots sharing /diagnostics stay apart) and ``hardware_id`` = the board
(core.diag.hardware_id: the device-tree model on a Jetson, "<profile> (twin)" on the sim backend). The
windows, frequency and stale checks are core.diag's; nothing here decides a level.
"""
from __future__ import annotations

import time
from typing import Callable, List, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile

from dvfo_ros.core.diag import ERROR, Status, hardware_id
from dvfo_ros.nodes import qos
from dvfo_ros.nodes.params import Param

TOPIC = "/diagnostics"
PERIOD_S = 1.0          # diagnostic_updater's default rate
WINDOW = Param("diagnostic_window_s", 5.0, "/diagnostics look at the last this many seconds (a bad frame ages "
               "out of the status after it)", 0.5, 600.0, read_only=True)

Task = Callable[[float], Status]
monotonic = time.monotonic      # the clock every window runs on: wall time on this machine, not sim time


def status_name(node: Node, task: str) -> str:
    """``"<node>: <task>"``, the node name prefixed with its namespace outside the root namespace."""
    ns = node.get_namespace().strip("/")
    return f"{ns}/{node.get_name()}: {task}" if ns else f"{node.get_name()}: {task}"


class Diagnostics:
    """The tasks of one node and the 1 Hz timer that publishes them."""

    def __init__(self, node: Node, board: str = "", period_s: float = PERIOD_S) -> None:
        self.node = node
        self.hardware_id = board or hardware_id()
        self._tasks: List[Tuple[str, Task]] = []
        self.published = 0
        self.pub = qos.publisher(node, DiagnosticArray, TOPIC, QoSProfile(depth=10))
        self.timer = node.create_timer(period_s, self.publish)

    def add(self, task: str, fn: Task) -> None:
        self._tasks.append((task, fn))

    def on_device_state(self, backend: str, profile: str) -> None:
        """The governor says which board this is: the twin's profile on sim, else the device-tree model."""
        if backend:
            self.hardware_id = hardware_id(backend, profile)

    def follow_device_state(self) -> None:
        """For a node that does not read dvfo/device_state itself (camera): subscribe just for the board."""
        from dvfo_ros.msg import DeviceState
        qos.subscription(self.node, DeviceState, "dvfo/device_state",
                         lambda m: self.on_device_state(m.backend, m.profile), QoSProfile(depth=1))

    def statuses(self, now_s: float) -> List[DiagnosticStatus]:
        out = []
        for task, fn in self._tasks:
            try:
                st = fn(now_s)
            except Exception as e:  # noqa: BLE001 - a broken check is an ERROR status, never a dead timer
                st = Status(ERROR, f"diagnostic task failed: {type(e).__name__}: {e}")
            out.append(DiagnosticStatus(level=bytes([st.level]), name=status_name(self.node, task),
                                        message=st.message, hardware_id=self.hardware_id,
                                        values=[KeyValue(key=k, value=v) for k, v in st.values.items()]))
        return out

    def publish(self) -> None:
        arr = DiagnosticArray(status=self.statuses(time.monotonic()))
        arr.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(arr)
        self.published += 1

