"""Standard results: vision_msgs/Classification per classified frame and vision_msgs/LabelInfo (latched).

vision_msgs is a distro package (ros-<distro>-vision-msgs); where it is not importable the executor
logs that once and publishes everything else.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from rclpy.node import Node

from dvfo_ros.core.io.labels import hypotheses
from dvfo_ros.nodes import qos

CLASSIFICATION_TOPIC = "dvfo/classification"
LABEL_INFO_TOPIC = "dvfo/label_info"


class VisionOutputs:
    def __init__(self, node: Node, names: Optional[Sequence[str]], num_classes: int, depth: int = 100) -> None:
        self.names = list(names) if names is not None else None
        self.num_classes = num_classes
        self.classification_pub: Any = None
        self.label_info_pub: Any = None
        try:
            from vision_msgs.msg import Classification, LabelInfo, ObjectHypothesis, VisionClass
        except ImportError as e:
            node.get_logger().warning(f"vision_msgs is not installed ({e}): not publishing {CLASSIFICATION_TOPIC} "
                                      f"or {LABEL_INFO_TOPIC} (install ros-<distro>-vision-msgs); "
                                      "dvfo/inference carries the results")
            return
        self._types = (Classification, LabelInfo, ObjectHypothesis, VisionClass)
        from rclpy.qos import QoSProfile
        self.classification_pub = qos.publisher(node, Classification, CLASSIFICATION_TOPIC, QoSProfile(depth=depth))
        self.label_info_pub = qos.publisher(node, LabelInfo, LABEL_INFO_TOPIC, qos.LATCHED)
        info = LabelInfo()
        info.header.stamp = node.get_clock().now().to_msg()
        info.class_map = [VisionClass(class_id=i, class_name=self._name(i)) for i in range(min(num_classes, 65536))]
        info.threshold = 0.0
        self.label_info_pub.publish(info)

    @property
    def available(self) -> bool:
        return self.classification_pub is not None

    def _name(self, i: int) -> str:
        return self.names[i] if self.names is not None and i < len(self.names) else str(i)

    def publish(self, header: Any, classes: Sequence[int], scores: Sequence[float]) -> None:
        if self.classification_pub is None:
            return
        Classification, _, ObjectHypothesis, _ = self._types
        msg = Classification()
        msg.header = header
        msg.results = [ObjectHypothesis(class_id=c, score=s) for c, s in hypotheses(classes, scores, self.names)]
        self.classification_pub.publish(msg)
