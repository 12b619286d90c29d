"""The one list of nodes in a dvfo_ros pipeline: `pipeline.launch.py` and `dvfo-pipeline` both read it."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Dict, List, Type


@dataclass(frozen=True)
class NodeSpec:
    name: str          # node name = key in config/pipeline.yaml = executable in lib/dvfo_ros
    module: str
    cls: str

    def load(self) -> Type:
        return getattr(importlib.import_module(self.module), self.cls)


NODES: List[NodeSpec] = [
    NodeSpec("camera", "dvfo_ros.nodes.camera", "CameraNode"),
    NodeSpec("governor", "dvfo_ros.nodes.governor", "GovernorNode"),
    NodeSpec("executor", "dvfo_ros.nodes.executor", "ExecutorNode"),
    NodeSpec("policy", "dvfo_ros.nodes.policy", "PolicyNode"),
]

# The cloud server is a ZeroMQ process, not a ROS node: `dvfo-cloud` (executable `cloud`).
CLOUD_EXECUTABLE = "cloud"


def cloud_arguments(endpoint: str, executor: Dict[str, Any]) -> List[str]:
    """dvfo-cloud's command line for a local server: bind the executor's endpoint and load the
    executor's model (its whole ModelSpec, artifact pinned). dvfo-pipeline and the launch file use it."""
    from dvfo_ros.core.inference.spec import ModelSpec
    return ["--bind", endpoint] + ModelSpec.from_params(executor).cloud_args()


def linked_params(camera: Dict[str, Any], executor: Dict[str, Any]) -> Dict[str, Any]:
    """Executor parameters that follow the camera it runs with unless they are set themselves:
    ``expected_fps`` (the rate its /diagnostics checks the input against) = the camera's ``fps``."""
    if "expected_fps" in executor or "fps" not in camera:
        return {}
    return {"expected_fps": float(camera["fps"])}
