"""policy node: turns each observation into the next action (clocks + offload share).

    ros2 run dvfo_ros policy --ros-args -p policy_mode:=dvfo -p checkpoint:=/data/dvfo.pt
Subscribes dvfo/observation, dvfo/device_state, dvfo/inference; publishes dvfo/action and, for every
decision, dvfo/transition (state, action, reward, next state) so a rosbag is enough to train on, and
/diagnostics once a second ("policy: decisions": WARN with no observation in the window or untrained weights).
The action is chosen while the next frame already runs and applies at the following frame.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, Optional

from rclpy.node import Node
from rclpy.qos import QoSProfile

from dvfo_ros.core.diag import WARN, Status, StreamHealth, merge
from dvfo_ros.core.mdp import NO_EXTRAS
from dvfo_ros.core.policies.base import live_policy_names, why_not_live
from dvfo_ros.core.policies.runtime import PolicyRuntime
from dvfo_ros.msg import DeviceState, DvfoAction, InferenceResult, Observation, Transition
from dvfo_ros.nodes import qos
from dvfo_ros.nodes.diagnostics import WINDOW, Diagnostics, monotonic
from dvfo_ros.nodes.params import Param, ParamSet
from dvfo_ros.nodes.spin import run

PARAMS = [
    Param("policy_mode", "static", "which policy acts (twin-only ones such as oracle are refused with why)",
          choices=tuple(live_policy_names()), read_only=True, validator=why_not_live),
    Param("profile", "xavier_nx", "device table the actions come from", read_only=True),
    Param("checkpoint", "", "trained policy checkpoint (.pt) for learning policies", read_only=True),
    Param("model", "resnet18", "the zoo model the executor runs (neurosurgeon predicts its stages' cost)",
          read_only=True),
    Param("objective", "latency", "neurosurgeon: what its cut minimises, predicted latency or mobile energy",
          choices=("latency", "energy"), read_only=True),
    Param("input_size", 224, "the executor's input size in px (its artifact's; neurosurgeon's predictions use it)",
          32, 4096, read_only=True),
    Param("variants", "", "comma-separated zoo models the executor also serves (its variants parameter): e2e_rl "
          "picks among them and the model", read_only=True),
    Param("learning", False, "keep learning online from the robot's own transitions"),
    Param("cpu_freq_hz", 0, "static: CPU clock (0 = the table's maximum)", 0, 10**11),
    Param("gpu_freq_hz", 0, "static: GPU clock (0 = the table's maximum)", 0, 10**11),
    Param("emc_freq_hz", 0, "static: memory clock (0 = the table's maximum)", 0, 10**11),
    Param("offload_ratio", 0.5, "static: share xi of feature-map channels sent to the cloud", 0.0, 1.0),
    Param("fusion_weight", -1.0, "lambda for fusing edge and cloud outputs (-1 = the model's table)", -1.0, 1.0),
    Param("eta", 0.5, "reward trade-off: weight of energy against latency", 0.0, 1.0),
    Param("latency_slo_ms", 100.0, "latency service-level objective; slower frames are penalised", 1.0, 10000.0),
    Param("accuracy_loss_bound", 0.01, "accuracy loss above this bound is penalised", 0.0, 1.0),
    Param("startup_period_s", 0.5, "re-send the current action this often until frames flow", 0.05, 10.0),
    WINDOW,
]


class PolicyNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("policy", **kwargs)
        self.params = ParamSet(self, PARAMS, on_change=self._on_change)
        p = self.params.values
        self.runtime = PolicyRuntime(p["policy_mode"], p["profile"], checkpoint=p["checkpoint"],
                                     static=self._static(p), reward=self._reward(p), learning=p["learning"],
                                     model=p["model"], input_size=p["input_size"], objective=p["objective"],
                                     variants=[v.strip() for v in p["variants"].split(",") if v.strip()])
        self.seq = 0
        self.frames = 0
        self.action_pub = qos.publisher(self, DvfoAction, "dvfo/action", QoSProfile(depth=10))
        self.transition_pub = qos.publisher(self, Transition, "dvfo/transition", QoSProfile(depth=100))
        qos.subscription(self, Observation, "dvfo/observation", self._on_observation, QoSProfile(depth=10))
        qos.subscription(self, InferenceResult, "dvfo/inference", self._on_result, QoSProfile(depth=100))
        qos.subscription(self, DeviceState, "dvfo/device_state", self._on_state, QoSProfile(depth=10))
        self.timer = self.create_timer(p["startup_period_s"], self._startup_tick)
        self.get_logger().info(f"policy {p['policy_mode']} on {p['profile']}")
        self.untrained = ""
        self.model_mismatch = ""     # a policy that prices the served model, told another one than the executor's
        if getattr(self.runtime.policy, "learns", False) and not p["checkpoint"]:
            self.untrained = (f"policy {p['policy_mode']} has no checkpoint: it starts untrained; train one "
                              f"with dvfo-train (python3 -m dvfo_ros.cli.train) and set 'checkpoint'")
            self.get_logger().warning(self.untrained)
        self.decisions = StreamHealth(p["diagnostic_window_s"], what="decisions")
        self.decision_ms: Deque[float] = deque(maxlen=100)
        self.diagnostics = Diagnostics(self)
        self.diagnostics.add("decisions", self._decision_status)

    @staticmethod
    def _static(p: Dict[str, Any]) -> Dict[str, float]:
        return {k: p[k] for k in ("cpu_freq_hz", "gpu_freq_hz", "emc_freq_hz", "offload_ratio")}

    @staticmethod
    def _reward(p: Dict[str, Any]) -> Dict[str, float]:
        return {k: p[k] for k in ("eta", "latency_slo_ms", "accuracy_loss_bound")}

    def _on_change(self, new: Dict[str, Any]) -> Optional[str]:
        self.runtime.static = self._static(new)
        self.runtime.set_reward(self._reward(new))
        self.runtime.set_learning(bool(new["learning"]))
        return None

    def _startup_tick(self) -> None:
        if self.frames == 0:
            command, extras = self.runtime.first_decision()
            self._publish(command, 0.0, extras)
        else:
            self.timer.cancel()

    def _on_state(self, msg: DeviceState) -> None:
        self.runtime.on_device_state(msg.temperature_c)
        self.diagnostics.on_device_state(msg.backend, msg.profile)

    def _decision_status(self, now: float) -> Status:
        """One decision per observation: WARN with none in the window (no frames) or untrained weights."""
        parts = [self.decisions.kinds_status(now)]
        if self.untrained:
            parts.append(Status(WARN, self.untrained))
        if self.model_mismatch:
            parts.append(Status(WARN, self.model_mismatch))
        st = merge(parts).add(policy=self.params["policy_mode"], decisions=self.seq, observations=self.frames)
        if self.decision_ms:
            st.add(mean_decision_ms=round(sum(self.decision_ms) / len(self.decision_ms), 3))
        return st

    def _on_result(self, msg: InferenceResult) -> None:
        if msg.model and getattr(self.runtime.policy, "serves_model", False) and msg.model != self.params["model"] \
                and not self.model_mismatch:
            self.model_mismatch = (f"{self.params['policy_mode']} prices {self.params['model']}'s stages but the "
                                   f"executor runs {msg.model}: set the policy's 'model' parameter to {msg.model}")
            self.get_logger().warning(self.model_mismatch)
        if msg.error:      # a frame that was never classified measured nothing: no cost to learn from
            return
        self.runtime.on_result(msg.energy_j, msg.total_ms, msg.fallback)

    def _on_observation(self, msg: Observation) -> None:
        self.frames += 1
        features = dict(zip(msg.names, msg.values))
        step = self.runtime.step(features)
        self.decisions.add(monotonic())
        self.decision_ms.append(float(step.decision_ms))
        self._publish(step.command, step.decision_ms, step.extras)
        if step.transition is not None:
            self._publish_transition(step.transition)

    def _publish(self, cmd: Dict[str, float], decision_ms: float = 0.0, extras: Any = None) -> None:
        a = DvfoAction()
        a.header.stamp = self.get_clock().now().to_msg()
        a.seq = self.seq
        self.seq += 1
        a.policy = self.params["policy_mode"]
        a.cpu_freq_hz, a.gpu_freq_hz, a.emc_freq_hz = (int(cmd["cpu_freq_hz"]), int(cmd["gpu_freq_hz"]),
                                                       int(cmd["emc_freq_hz"]))
        a.offload_ratio = float(cmd["offload_ratio"])
        a.fusion_weight = float(self.params["fusion_weight"])
        extras = extras or NO_EXTRAS
        a.split_index, a.exit_point = int(extras.split_index), int(extras.exit_point)
        a.model_variant, a.target = str(extras.model_variant), str(extras.target)
        a.decision_ms = float(decision_ms)
        self.action_pub.publish(a)

    def _publish_transition(self, t) -> None:
        m = Transition()
        m.header.stamp = self.get_clock().now().to_msg()
        m.step = int(t.step)
        m.policy = self.params["policy_mode"]
        m.eta = float(self.params["eta"])
        m.state_names = list(t.state_names)
        m.state = [float(v) for v in t.state]
        m.action = [int(v) for v in t.action]
        m.action_values = [float(v) for v in t.action_values]
        m.reward = float(t.reward)
        m.next_state = [float(v) for v in t.next_state]
        m.done = bool(t.done)
        self.transition_pub.publish(m)

    def destroy_node(self) -> None:
        runtime = getattr(self, "runtime", None)     # None when a refused parameter stopped __init__
        if runtime is not None:
            runtime.close()
        super().destroy_node()


def main(args=None) -> int:
    return run(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
