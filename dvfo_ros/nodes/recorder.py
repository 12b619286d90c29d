"""recorder node: writes the DVFO topics into a real rosbag2 bag, for machines without rosbag2.

    ros2 run dvfo_ros recorder --ros-args -p output:=/data/run1 -p storage:=sqlite3
    dvfo-record -o /data/run1 --duration 600          (the same node, from the command line)

Subscriptions are raw (the CDR bytes go to disk untouched, as ``ros2 bag record`` does), stamped
with the time they were received. Types of topics outside the DVFO set are found on the graph
once someone publishes them. The bag is flushed every ``flush_period_s`` so a crash loses at most
that much; a clean stop (SIGINT, end of --duration) writes metadata.yaml, which ``ros2 bag info``
and ``ros2 bag play`` read. /diagnostics once a second ("dvfo_recorder: bag"): ERROR for a topic that cannot
be recorded, WARN while a requested topic's type is not known yet, else OK with the message counts.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from dvfo_ros.core.diag import ERROR, WARN, Status
from dvfo_ros.core.io.bags import BagWriter
from dvfo_ros.core.io.bagtypes import DEFAULT_TOPICS
from dvfo_ros.nodes.diagnostics import Diagnostics
from dvfo_ros.nodes.qos import overridable
from dvfo_ros.nodes.spin import run


def absolute(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


def import_msg_class(msgtype: str) -> Any:
    """'pkg/msg/Name' -> the generated Python class (needed to subscribe, even raw)."""
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class RecorderNode(Node):
    def __init__(self, output: str = "", storage: str = "", topics: Optional[List[str]] = None,
                 **kwargs: Any) -> None:
        super().__init__("dvfo_recorder", **kwargs)
        self.declare_parameter("output", output or "dvfo_bag")
        self.declare_parameter("storage", storage or "mcap")
        self.declare_parameter("topics", list(topics or DEFAULT_TOPICS))
        self.declare_parameter("flush_period_s", 2.0)
        self.declare_parameter("depth", 1000)
        out = str(self.get_parameter("output").value)
        self.writer = BagWriter(out, str(self.get_parameter("storage").value))
        self.pending: Dict[str, Optional[str]] = {absolute(t): DEFAULT_TOPICS.get(absolute(t))
                                                  for t in self.get_parameter("topics").value}
        self.received: Dict[str, int] = {t: 0 for t in self.pending}
        self.depth = int(self.get_parameter("depth").value)
        self._subs: List[Any] = []
        self._handled: set = set()
        self.unrecordable: Dict[str, str] = {}
        self._discover()
        self.diagnostics = Diagnostics(self)
        self.diagnostics.add("bag", self._status)
        self.create_timer(0.5, self._discover)
        self.create_timer(float(self.get_parameter("flush_period_s").value), self.writer.flush)
        self.get_logger().info(f"recording {', '.join(self.pending)} to {out} ({self.writer.storage})")

    def _qos(self, topic: str) -> QoSProfile:
        """Reliable unless every publisher is best-effort (camera topics), as ros2 bag record adapts."""
        qos = QoSProfile(depth=self.depth)
        infos = self.get_publishers_info_by_topic(topic)
        if infos and all(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos):
            qos.reliability = ReliabilityPolicy.BEST_EFFORT
        return qos

    def _discover(self) -> None:
        """Subscribe to every requested topic whose type is known (listed default, or seen on the graph)."""
        waiting = [t for t in self.pending if t not in self._handled]
        if not waiting:
            return
        graph = dict(self.get_topic_names_and_types())
        for topic in waiting:
            seen = graph.get(topic)
            msgtype = self.pending[topic] or (seen[0] if seen else None)
            if msgtype is None:
                continue
            try:
                cls = import_msg_class(msgtype)
                self.writer.add_topic(topic, msgtype)
            except Exception as e:  # noqa: BLE001 - one unusable topic must not stop the others
                self.get_logger().error(f"cannot record {topic} ({msgtype}): {e}")
                self.unrecordable[topic] = f"{msgtype}: {e}"
                self._handled.add(topic)
                continue
            self._handled.add(topic)
            self._subs.append(self.create_subscription(cls, topic, lambda data, t=topic: self._on_message(t, data),
                                                       self._qos(topic), raw=True,
                                                       qos_overriding_options=overridable()))

    def _status(self, now: float) -> Status:
        waiting = [t for t in self.pending if t not in self._handled]
        st = Status(message=f"recording {len(self._handled) - len(self.unrecordable)} topics, "
                            f"{sum(self.received.values())} messages")
        if self.unrecordable:
            st.level, st.message = ERROR, "cannot record " + "; ".join(f"{t} ({why})" for t, why in
                                                                       self.unrecordable.items())
        elif waiting:
            st.level, st.message = WARN, f"{st.message}; type not known yet: {', '.join(waiting)}"
        return st.add(**{t: n for t, n in self.received.items()})

    def _on_message(self, topic: str, data: bytes) -> None:
        self.writer.write_raw(topic, self.get_clock().now().nanoseconds, data)
        self.received[topic] += 1

    def close(self) -> None:
        """Finish the bag (metadata.yaml); safe to call twice."""
        self.writer.close()

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


def main(args=None) -> int:
    return run(RecorderNode, args, cleanup=lambda node: node.close())


if __name__ == "__main__":
    main()
