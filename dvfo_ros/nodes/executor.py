"""executor node: runs every camera frame through the collaborative DNN and reports what it cost.

    ros2 run dvfo_ros executor --ros-args -p model:=resnet18 -p cloud_endpoint:=tcp://10.0.0.5:5555
Subscribes camera/image_raw (any encoding of core.io.encodings; best effort) and camera/image_raw/compressed
(JPEG/PNG), camera/label, dvfo/action, dvfo/device_state; publishes dvfo/inference (one InferenceResult for
EVERY frame: edge-only when the cloud misses the deadline, ``error`` when the frame cannot be classified),
dvfo/classification and dvfo/label_info (vision_msgs, where installed) and dvfo/observation (the state the
policy sees). Every topic's QoS can be overridden (qos_overrides.<topic>.* parameters).
The action that arrives while a frame runs applies from the next frame on (DVFO's thinking-while-moving).
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Tuple

from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage, Image

from dvfo_ros.core.io import camera as cam
from dvfo_ros.core.io.labels import class_names
from dvfo_ros.core.diag import WARN, Status, StreamHealth, merge
from dvfo_ros.core.inference.artifacts import untrained_warning
from dvfo_ros.core.inference.device import DEVICES, resolve_device
from dvfo_ros.core.inference.edge import Clocks, EdgeInference, resize_mode
from dvfo_ros.core.inference.models import ZOO
from dvfo_ros.core.inference.spec import ModelSpec
from dvfo_ros.core.mdp.context import CLOUD_DEADLINE_MS, TARGETS
from dvfo_ros.core.mdp.observation import ObservationTracker
from dvfo_ros.core.policies.base import reads_importance
from dvfo_ros.msg import DeviceState, DvfoAction, FrameLabel, InferenceResult, Observation
from dvfo_ros.nodes import bridge, qos
from dvfo_ros.nodes.diagnostics import WINDOW, Diagnostics, monotonic
from dvfo_ros.nodes.params import Param, ParamSet
from dvfo_ros.nodes.spin import run
from dvfo_ros.nodes.vision import VisionOutputs

PARAMS = [
    Param("model", "resnet18", "zoo model", choices=ZOO, read_only=True),
    Param("split_index", -1, "stage index where the model is cut (-1 = the model's default, or the artifact's; "
          "an artifact cut elsewhere is refused)", -1, 64, read_only=True),
    Param("artifact", "", "trained model artifact (.pt); '' = the one trained for model + dataset if any; "
          "'none' = untrained zoo weights",
          read_only=True),
    Param("dataset", "digits", "data set of the default artifact (digits, scenes or an ImageFolder name)",
          read_only=True),
    Param("num_classes", 1000, "classes of an untrained model (ignored with an artifact)", 2, 100000, read_only=True),
    Param("input_size", 224, "input side in pixels of an untrained model (ignored with an artifact)", 16, 1024,
          read_only=True),
    Param("cloud_endpoint", "tcp://127.0.0.1:5555", "ZeroMQ endpoint of the cloud server ('' = edge only); a "
          "comma-separated list of fronts: requests are spread over them and fail over when one dies",
          read_only=True),
    Param("variants", "", "comma-separated zoo models a policy's model_variant may run instead of model (each its "
          "artifact for the dataset, else untrained at the model's size and classes; the cloud serves model only)",
          read_only=True),
    Param("edge_server_endpoint", "", "ZeroMQ endpoint of the LAN edge server a policy's target 'edge' uses "
          "('' = the cloud endpoint serves it too; a comma-separated list fails over as cloud_endpoint does)",
          read_only=True),
    Param("deadline_ms", CLOUD_DEADLINE_MS, "per-frame deadline for the cloud part; later answers are dropped "
          "(the twin the policy trained in waits as long: core.mdp.context.CLOUD_DEADLINE_MS)", 1.0, 10000.0),
    Param("offload_ratio", 0.0, "xi until the policy sends an action", 0.0, 1.0),
    Param("fusion_weight", -1.0, "lambda until the policy sends one (-1 = the model's lambda table)", -1.0, 1.0),
    Param("top_k", 5, "classes reported per frame", 1, 100),
    Param("timing", "auto", "edge time/energy: measured here, or the device twin's (auto: twin on the sim backend)",
          choices=("auto", "measured", "twin")),
    Param("curve_server_key", "", "server public key file (CurveZMQ); '' = no encryption", read_only=True),
    Param("curve_client_key", "", "this client's secret key file (CurveZMQ)", read_only=True),
    Param("threads", 1, "torch CPU threads", 1, 64, read_only=True),
    Param("queue_depth", 10, "camera frames buffered while one is being processed", 1, 1000, read_only=True),
    Param("device", "cpu", "where the edge head, attention and tail run: cpu, cuda, or auto (CUDA when torch "
          "sees a GPU, else CPU); cuda without a GPU is refused at start", choices=DEVICES, read_only=True),
    Param("fp16", False, "half precision on CUDA (on the CPU the network stays fp32; the log says so once)",
          read_only=True),
    Param("keep_aspect", False, "letterbox: scale the long side to input_size, pad the rest (no stretching)"),
    Param("crop", False, "centre-crop the frame to a square before resizing (excludes keep_aspect)"),
    Param("expected_fps", 10.0, "camera rate /diagnostics checks the input against (0 = no frequency check)",
          0.0, 1000.0),
    Param("frequency_tolerance", 0.1, "input rate outside expected_fps x (1 +- this) is a WARN", 0.0, 1.0),
    Param("input_timeout_s", 2.0, "no frame for this long is a stale-input ERROR in /diagnostics", 0.1, 3600.0),
    WINDOW,
    Param("importance", "auto", "attention importance summary in dvfo/observation: always = every frame; auto = "
          "on frames that offload, or while the policy reads it or dvfo/transition is recorded",
          choices=("auto", "always")),
]


class ExecutorNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("executor", **kwargs)
        self.params = ParamSet(self, PARAMS, on_change=self._on_change)
        p = self.params.values
        import torch
        torch.set_num_threads(p["threads"])
        spec = ModelSpec.from_params(p)
        self.model = spec.load()
        # untrained zoo weights are never silent: a WARN at every start and in /diagnostics
        self.untrained = "" if spec.resolve_artifact() else untrained_warning(spec.model, spec.dataset,
                                                                               spec.artifact == "none")
        self.timing_note = "measured on this machine"
        self.link = self._open_link(p, p["cloud_endpoint"])
        # the LAN edge server (target 'edge'); without its own endpoint the cloud's link serves it
        self.edge_link = self._open_link(p, p["edge_server_endpoint"]) if p["edge_server_endpoint"] else self.link
        placement = resolve_device(p["device"], p["fp16"])      # cuda without CUDA: DeviceError, one line
        self.engine = EdgeInference(self.model, self.link, p["deadline_ms"], p["top_k"], placement=placement,
                                    resize=resize_mode(p["keep_aspect"], p["crop"]))
        # the model variants (DvfoAction.model_variant): an engine each, on the same links and device
        self.variants: Dict[str, EdgeInference] = {}
        for name in (v.strip() for v in p["variants"].split(",")):
            if name and name != spec.model:
                vspec = dataclasses.replace(spec, model=name, artifact="", split=-1,
                                            num_classes=int(self.model.meta["num_classes"]),
                                            input_size=int(self.model.meta["input_size"]))
                self.variants[name] = EdgeInference(vspec.load(), self.link, p["deadline_ms"], p["top_k"],
                                                    placement=placement, resize=self.engine.resize)
        self.variant = ""
        self.twin_for: Optional[str] = None
        self.obs = ObservationTracker()
        self.action: Tuple[float, float] = (p["offload_ratio"], p["fusion_weight"])
        self.split = -1        # a policy's whole-layer cut (DvfoAction.split_index); -1 = DVFO's channel split
        self.target = ""       # where a policy runs the frame (DvfoAction.target, mdp.TARGETS); '' = as split says
        self.clocks = Clocks()
        self.device_backend = ""
        self.labels: "OrderedDict[Tuple[int, int], Tuple[int, int]]" = OrderedDict()
        self.recording = True    # something may record dvfo/transition: the graph says, once a second
        self.frames_seen = 0
        self._last_stamp_s = 0.0
        self.result_pub = qos.publisher(self, InferenceResult, "dvfo/inference", QoSProfile(depth=100))
        self.obs_pub = qos.publisher(self, Observation, "dvfo/observation", QoSProfile(depth=10))
        meta = self.model.meta
        self.vision = VisionOutputs(self, class_names(meta), int(meta["num_classes"]))
        self.bridge = bridge.cv_bridge()
        self.counts = {"frames": 0, "fallbacks": 0, "cloud_used": 0, "failed": 0}
        self.health = StreamHealth(p["diagnostic_window_s"], p["expected_fps"], p["frequency_tolerance"],
                                   p["input_timeout_s"], what="frames")
        self.diagnostics = Diagnostics(self)
        self.diagnostics.add("inference", self._inference_status)
        self.diagnostics.add("camera input", lambda now: self.health.input_status(now))
        self.create_timer(1.0, self._check_recording)
        qos.subscription(self, FrameLabel, "camera/label", self._on_label, QoSProfile(depth=50))
        image_topic = self.resolve_topic_name("camera/image_raw")
        qos.subscription(self, Image, image_topic, self._on_image, qos.sensor_sub(p["queue_depth"]))
        qos.subscription(self, CompressedImage, image_topic + "/compressed", self._on_compressed,
                         qos.sensor_sub(p["queue_depth"]))
        qos.subscription(self, DvfoAction, "dvfo/action", self._on_action, QoSProfile(depth=10))
        qos.subscription(self, DeviceState, "dvfo/device_state", self._on_state, QoSProfile(depth=10))
        self.get_logger().info(
            f"{self.model.meta['model']} split {self.model.meta['split']} "
            f"({self.model.meta.get('dataset', 'untrained')}), "
            f"cloud {p['cloud_endpoint'] or 'off'}, deadline {p['deadline_ms']} ms, input {image_topic} "
            f"(+/compressed) via {'cv_bridge' if self.bridge else 'built-in conversion'}; "
            f"edge network on {placement.note}; frames {self.engine.resize}")
        if self.untrained:
            self.get_logger().warning(self.untrained)

    def _open_link(self, p: Dict[str, Any], endpoint: str):
        if not endpoint:
            return None
        from dvfo_ros.core.inference.edge import curve_client_keys
        from dvfo_ros.core.wire.multilink import open_link
        keys = curve_client_keys(p["curve_server_key"], p["curve_client_key"])
        return open_link(endpoint, **keys)     # several fronts, comma-separated: a MultiLink (failover)

    def _on_label(self, msg: FrameLabel) -> None:
        self.labels[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = (int(msg.seq), int(msg.label))
        while len(self.labels) > 256:
            self.labels.popitem(last=False)

    def _on_action(self, msg: DvfoAction) -> None:
        xi, lam, split, target = float(msg.offload_ratio), float(msg.fusion_weight), int(msg.split_index), msg.target
        variant = "" if msg.model_variant == self.model.meta["model"] else msg.model_variant
        stages = (self.variants[variant].model if variant in self.variants else self.model).num_stages
        if not (math.isfinite(xi) and 0.0 <= xi <= 1.0 and math.isfinite(lam) and lam <= 1.0
                and -1 <= split <= stages and target in ("",) + TARGETS and (not variant or variant in self.variants)):
            self.get_logger().warning(f"ignored action {msg.seq} from '{msg.policy}': offload_ratio={xi}, "
                                      f"fusion_weight={lam}, split_index={split}, target='{target}', "
                                      f"model_variant='{variant}' (need xi in [0, 1], lambda <= 1, split_index -1 "
                                      f"or 0..{stages}, target '' or one of {', '.join(TARGETS)}, a variant of "
                                      f"{', '.join(self.variants) or 'none'})", throttle_duration_sec=5.0)
            return
        self.action = (xi, lam)
        self.split = split
        self.target = target or ("gpu" if variant else "")     # a variant runs at a target, as in the twin
        self.variant = variant
        self.obs.on_action(msg.offload_ratio, msg.decision_ms, [msg.cpu_freq_hz, msg.gpu_freq_hz, msg.emc_freq_hz],
                           msg.policy)

    def _on_state(self, msg: DeviceState) -> None:
        self.clocks = Clocks(msg.cpu_freq_hz, msg.gpu_freq_hz, msg.emc_freq_hz, msg.power_w)
        self.obs.on_device_state(msg)
        self.diagnostics.on_device_state(msg.backend, msg.profile)
        self._maybe_use_twin(msg.backend, msg.profile)

    def _maybe_use_twin(self, backend: str, profile: str) -> None:
        mode = self.params["timing"]
        want = mode == "twin" or (mode == "auto" and backend == "sim")
        key = f"{profile}" if want else None
        if key == self.twin_for:
            return
        self.twin_for = key
        if not want:
            self.engine.twin = self.engine.workload = None
            for engine in self.variants.values():
                engine.twin = None
            self.timing_note = "measured on this machine"
            self.get_logger().info(f"timing: measured (backend {backend or '?'}, timing={mode})")
            return
        from dvfo_ros.core.twin import DeviceTwin, load_profile, model_workload
        m = self.model.meta
        self.engine.twin = DeviceTwin(load_profile(profile or "xavier_nx"))
        for engine in self.variants.values():     # a variant's frames are priced at its own stages
            engine.twin = self.engine.twin
        self.engine.workload = model_workload(m["model"], int(m["split"]), int(m["input_size"]),
                                              int(m["num_classes"]))
        self.timing_note = f"twin ({profile or 'xavier_nx'} profile), not measured"
        self.get_logger().info(f"timing: {self.timing_note}: edge ms and J in dvfo/inference are the device "
                               f"twin's (backend {backend or '?'}, timing={mode})")

    def _on_change(self, new: Dict[str, Any]) -> Optional[str]:
        try:
            mode = resize_mode(new["keep_aspect"], new["crop"])
        except ValueError as e:
            return str(e)
        if hasattr(self, "engine"):
            for engine in (self.engine, *self.variants.values()):
                engine.resize = mode
            self.health.freq.expected_hz, self.health.freq.tolerance = new["expected_fps"], new["frequency_tolerance"]
            self.health.stale.timeout_s = new["input_timeout_s"]
        return None

    def _check_recording(self) -> None:
        self.recording = self.count_subscribers("dvfo/transition") > 0

    def _inference_status(self, now: float) -> Status:
        """Failures (ERROR) and cloud fallbacks (WARN) over the sliding window, untrained weights (WARN)."""
        parts = [self.health.kinds_status(now)]
        if self.untrained:
            parts.append(Status(WARN, self.untrained))
        st = merge(parts)
        stats = dict(self.link.stats) if self.link is not None else {}
        st.add(**self.counts, **dict(sorted(stats.items())))
        return st.add(timing=self.timing_note, device=self.engine.placement.note,
                      importance="every frame" if self._wants_importance() else
                      f"offloaded frames only ({self.obs.policy} reads none, nothing records it)",
                      weights="UNTRAINED" if self.untrained else str(self.model.meta.get("artifact_id", "trained")))

    def _publish_result(self, out: InferenceResult) -> None:
        self.counts["frames"] += 1
        self.counts["fallbacks"] += int(out.fallback)
        self.counts["failed"] += int(out.error)
        self.counts["cloud_used"] += int(out.cloud_used)
        kinds = ("failed",) if out.error else ("fallback",) if out.fallback else ()
        self.health.add(monotonic(), *kinds, reason=out.error_reason if out.error else out.fallback_reason)
        self.result_pub.publish(out)

    def _on_image(self, msg: Image) -> None:
        self._on_frame(msg, lambda: bridge.image_to_rgb(self.bridge, msg))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._on_frame(msg, lambda: bridge.compressed_to_rgb(self.bridge, msg))

    def _fail(self, out: InferenceResult, reason: str) -> None:
        """A frame that cannot be classified: an error result for its seq, one throttled log line."""
        self.get_logger().error(f"frame {out.seq}: {reason}", throttle_duration_sec=5.0)
        out.error, out.error_reason = True, reason
        self._publish_result(out)

    def _on_frame(self, msg: Any, to_rgb: Callable[[], Any]) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        seq, label = self.labels.pop(key, (self.frames_seen, -1))
        self.frames_seen += 1
        out = InferenceResult()
        out.header = msg.header
        out.seq = seq
        out.model = str(self.model.meta["model"])
        out.split_index = int(self.model.meta["split"])
        out.label = label
        try:
            rgb = to_rgb()
        except cam.CameraError as e:
            self._fail(out, f"bad frame: {e}")
            return
        except Exception as e:  # noqa: BLE001 - e.g. cv2.error on a frame OpenCV chokes on: still one bad frame
            self._fail(out, f"bad frame: conversion failed ({type(e).__name__}: {e})")
            return
        xi, lam = self.action
        stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        period_ms = (stamp_s - self._last_stamp_s) * 1000.0 if self._last_stamp_s else None
        self._last_stamp_s = stamp_s
        if period_ms is not None and not 0.0 < period_ms < 1000.0:
            period_ms = None   # a gap (source restart, paused bag): no idle energy to attribute
        try:
            if self.target:
                remote = self.target in ("edge", "cloud")
                engine = self.variants.get(self.variant, self.engine)
                r = engine.process_partition(rgb, seq, max(self.split, 0) if remote else engine.model.num_stages,
                                             remote, self.clocks, period_ms, target=self.target,
                                             link=self.edge_link if self.target == "edge" else self.link)
                if self.variant:
                    out.model = self.variant
            elif self.split >= 0:
                r = self.engine.process_partition(rgb, seq, self.split, xi > 0.0, self.clocks, period_ms)
            else:
                r = self.engine.process(rgb, seq, xi, lam, self.clocks, frame_period_ms=period_ms,
                                        importance=self._wants_importance())
        except Exception as e:  # noqa: BLE001 - one bad frame must not stop perception
            self._fail(out, f"inference failed: {e}")
            return
        out.top_classes, out.top_scores = r.top_classes, r.top_scores
        out.correct = label >= 0 and bool(r.top_classes) and r.top_classes[0] == label
        out.edge_ms, out.transfer_ms, out.cloud_ms, out.total_ms = r.edge_ms, r.transfer_ms, r.cloud_ms, r.total_ms
        out.energy_j = r.energy_j
        out.offload_ratio, out.fusion_weight = r.offload_ratio, r.fusion_weight
        out.bytes_sent, out.cloud_used, out.fallback = r.bytes_sent, r.cloud_used, r.fallback
        out.fallback_reason = r.fallback_reason
        if r.split_index >= 0:
            out.split_index = r.split_index
        out.target = r.target
        self._publish_result(out)
        self.vision.publish(msg.header, r.top_classes, r.top_scores)
        names, values = self.obs.on_frame(r, period_ms)
        ob = Observation()
        ob.header = msg.header
        ob.seq = seq
        ob.names, ob.values = names, values
        self.obs_pub.publish(ob)

    def _wants_importance(self) -> bool:
        """The attention's importance summary is in the state the policy sees: worth its cost on a frame
        that offloads nothing only when someone reads it (importance=auto) or always (importance=always)."""
        return self.params["importance"] == "always" or self.recording or reads_importance(self.obs.policy)

    def destroy_node(self) -> None:
        if self.edge_link is not None and self.edge_link is not self.link:
            self.edge_link.close()
        if self.link is not None:
            self.link.close()
        super().destroy_node()


def main(args=None) -> int:
    return run(ExecutorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
