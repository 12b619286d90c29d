"""neurosurgeon (Kang et al., ASPLOS 2017): cut the DNN between device and server at the layer
boundary that a latency (or mobile-energy) prediction says is best.

What the paper does, and what this file keeps:
- Offline, once per device: per-layer-type regression models of latency and power, fitted to
  measurements of many layer configurations, not of the network it will serve. ``fit_predictor``
  times every stage of the twin's OTHER zoo models at two input sizes on the device twin with
  measurement noise (``DeviceTwin.measure_stage``: what ``dvfo-profile`` does on a board) and fits,
  per stage kind (conv, attention, fc, elementwise), least squares of latency and of energy on (MACs, bytes
  moved, kernel launches, 1). The twin's exact cost never decides anything: it only scores the
  predictor (``predictor_error``: mean |predicted - true| / true over the served model's stages).
- At run time, for every partition point k (``twin.partition_points``: 0 = send the image, S = all
  on the device): latency = the device's stages before k + the map at k over the bandwidth estimate
  (+ RTT) + the server's stages; mobile energy = the device stages' energy + the board's waiting
  power over transfer and server time. It picks the k with the lowest predicted objective.
- Clocks stay at their maximum (Neurosurgeon does no DVFS) and the whole map at k travels (xi = 1).

Our choices where the paper is silent or its setting differs:
- Granularity: the twin and the executor cut between stages (a resnet block, a ``features[i]`` group,
  a ViT encoder block), so the regressions are per stage kind rather than per single layer.
- Server load: the paper scales server time by its load; our state carries no load signal (the
  multi-robot issue adds one), so server time is the tail's MACs at the server's nominal rate.
- Bandwidth: the state's estimate (what the last offloaded frames measured), never the coming truth.
  Before any frame was offloaded a robot has no estimate (0): then ``prior_bandwidth_mbps`` stands in
  (8 Mbps, a modest Wi-Fi uplink), so the first cuts that pay off at that rate are tried and measured.
  There is no probing after that: a link measured slow stays believed slow until a frame is offloaded.
- The map at k travels through the project's int8 codec (bytes per value as measured at xi = 1).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Tuple

import numpy as np

from dvfo_ros.core.mdp import ActionExtras, ActionSpace, feature_value
from dvfo_ros.core.policies.base import Policy, register

KINDS = ("conv", "attention", "fc", "elementwise")
FIT_INPUT_SIZES = (224, 128)      # the configurations profiled: every stage of the other models at these sizes
OBJECTIVES = ("latency", "energy")


def stage_kind(name: str) -> str:
    """The regression a stage belongs to, from its name in ``models.backbone_stages``."""
    leaf = name.split(".")[-1]
    if leaf in ("fc", "classifier", "head", "heads"):
        return "fc"
    if "pool" in leaf or leaf in ("flatten", "ln", "relu") or leaf.startswith("bn"):
        return "elementwise"
    if leaf.startswith("encoder_layer"):
        return "attention"
    return "conv"


def _features(layer: Dict[str, Any]) -> np.ndarray:
    return np.array([layer["flops"] / 1e9, layer["bytes"] / 1e9, layer.get("kernels", 1) / 1e2, 1.0])


@dataclass
class StagePredictor:
    """Fitted coefficients per stage kind ('all' = every sample, for a kind with too few of its own)."""

    latency: Dict[str, np.ndarray]
    energy: Dict[str, np.ndarray]
    wait_w: float
    samples: int

    def stage(self, name: str, layer: Dict[str, Any]) -> Tuple[float, float]:
        """Predicted (seconds, joules) of one stage at max clocks."""
        if not (layer["flops"] or layer["bytes"] or layer.get("kernels", 1)):
            return 0.0, 0.0                # a view (flatten): no work, nothing to predict
        kind = stage_kind(name)
        kind = kind if kind in self.latency else "all"
        x = _features(layer)
        return max(float(x @ self.latency[kind]), 1e-7), max(float(x @ self.energy[kind]), 1e-9)


_FITTED: Dict[Tuple[str, str, int, float, int], StagePredictor] = {}


def fit_predictor(profile: Any, exclude: str, seed: int = 0, noise: float = 0.05, repeats: int = 3) -> StagePredictor:
    """Profile the stages of every twin model except ``exclude`` on ``profile`` (a name, YAML path or
    DeviceProfile) at max clocks, with measurement noise, and fit the latency and energy regressions
    (cached per board description and model)."""
    from dvfo_ros.core.twin import load_profile

    board = load_profile(profile)
    key = (json.dumps(asdict(board), sort_keys=True, default=str), exclude, int(seed), float(noise), int(repeats))
    if key not in _FITTED:
        _FITTED[key] = _fit(board, exclude, seed, noise, repeats)
    return _FITTED[key]


def _fit(board: Any, exclude: str, seed: int, noise: float, repeats: int) -> StagePredictor:
    from dvfo_ros.core.inference.models import TWIN_MODELS
    from dvfo_ros.core.twin import DeviceTwin, model_workload

    twin = DeviceTwin(board, seed=seed, noise=noise)
    top = (twin.profile.cpu_hz[-1], twin.profile.gpu_hz[-1], twin.profile.emc_hz[-1])
    rows: Dict[str, List[Tuple[np.ndarray, float, float]]] = {}
    for model in (m for m in TWIN_MODELS if m != exclude):
        for size in FIT_INPUT_SIZES:
            for layer in model_workload(model, None, size).layers:
                for _ in range(repeats if layer["flops"] or layer["bytes"] or layer["kernels"] else 0):
                    t, watts = twin.measure_stage(layer, *top)
                    rows.setdefault(stage_kind(layer["name"]), []).append((_features(layer), t, t * watts))
    everything = [r for kind_rows in rows.values() for r in kind_rows]
    latency: Dict[str, np.ndarray] = {}
    energy: Dict[str, np.ndarray] = {}
    for kind, kind_rows in list(rows.items()) + [("all", everything)]:
        if len(kind_rows) < 8:
            continue
        x = np.stack([r[0] for r in kind_rows])
        for out, col in ((latency, 1), (energy, 2)):
            y = np.array([r[col] for r in kind_rows])
            # relative least squares (each row over its measurement): a 0.1 ms stage counts as much as a 10 ms one
            out[kind] = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)[0]
    idle = twin.idle_power_w(*top)
    wait_w = float(np.mean([idle * twin._jitter() if noise > 0 else idle for _ in range(20)]))
    return StagePredictor(latency, energy, wait_w, len(everything))


@register("neurosurgeon")
class NeurosurgeonPolicy(Policy):
    serves_model = True       # built with the device and the model it serves (profile=, model=, input_size=)
    reads_importance = False  # reads the bandwidth and RTT estimates only
    extras = ("split_index",)

    def __init__(self, action_space: ActionSpace, profile: Any = "xavier_nx", model: str = "resnet18",
                 input_size: int = 224, num_classes: int = 1000, objective: str = "latency",
                 cloud_gflops: float = 30000.0, seed: int = 0, prior_bandwidth_mbps: float = 8.0) -> None:
        super().__init__(action_space)
        from dvfo_ros.core.twin import DeviceTwin, bytes_per_value_at, load_profile, partition_workload
        if objective not in OBJECTIVES:
            raise ValueError(f"neurosurgeon objective must be one of {', '.join(OBJECTIVES)}, got '{objective}'")
        board = load_profile(profile)
        self.objective = objective
        self.model = model
        self.prior_bandwidth_mbps = float(prior_bandwidth_mbps)
        self.predictor = fit_predictor(board, model, int(seed))
        layers = partition_workload(model, 0, int(input_size), int(num_classes)).layers
        n = len(layers)
        predicted = np.array([self.predictor.stage(s["name"], s) for s in layers])
        self._head_s = np.concatenate([[0.0], np.cumsum(predicted[:, 0])])    # device time before cut k
        self._head_j = np.concatenate([[0.0], np.cumsum(predicted[:, 1])])
        flops = np.array([s["flops"] for s in layers], dtype=np.float64)
        self._cloud_s = np.array([flops[k:].sum() for k in range(n + 1)]) / (float(cloud_gflops) * 1e9)
        per_value = bytes_per_value_at(1.0)
        self._bytes = np.array([partition_workload(model, k, int(input_size), int(num_classes)).feature_elems
                                * per_value if k < n else 0.0 for k in range(n + 1)])
        self.points = n + 1
        exact = DeviceTwin(board, noise=0.0)
        top = (board.cpu_hz[-1], board.gpu_hz[-1], board.emc_hz[-1])
        work = [i for i, s in enumerate(layers) if s["flops"] or s["bytes"] or s["kernels"]]
        true = np.array([exact.measure_stage(layers[i], *top) for i in work])
        true_s, true_j = true[:, 0], true[:, 0] * true[:, 1]
        # how far off the regressions are on this model's stages (the twin's exact cost scores, never decides)
        self.predictor_error = {"latency": float(np.mean(np.abs(predicted[work, 0] - true_s) / true_s)),
                                "energy": float(np.mean(np.abs(predicted[work, 1] - true_j) / true_j))}
        self._opts = dict(profile=board.name, model=model, input_size=int(input_size), num_classes=int(num_classes),
                          objective=objective, cloud_gflops=float(cloud_gflops), seed=int(seed),
                          prior_bandwidth_mbps=self.prior_bandwidth_mbps)

    def predict(self, bandwidth_mbps: float, rtt_ms: float) -> Tuple[np.ndarray, np.ndarray]:
        """Predicted (latency s, mobile energy J) at every partition point 0..S."""
        net_s = self._bytes * 8.0 / (max(bandwidth_mbps, 0.05) * 1e6) + max(rtt_ms, 0.0) / 1e3
        away_s = np.where(self._bytes > 0, net_s + self._cloud_s, 0.0)
        away_s[-1] = 0.0                                   # all local: nothing travels, no server
        return self._head_s + away_s, self._head_j + self.predictor.wait_w * away_s

    def decide(self, state: np.ndarray) -> Tuple[np.ndarray, ActionExtras]:
        bandwidth = feature_value(state, "bandwidth_mbps")
        latency, energy = self.predict(bandwidth if bandwidth > 0 else self.prior_bandwidth_mbps,
                                       feature_value(state, "rtt_ms"))
        k = int(np.argmin(latency if self.objective == "latency" else energy))
        levels = self.action_space.max_action(1.0 if k < self.points - 1 else 0.0)
        return levels, ActionExtras(split_index=k)

    def act(self, state: np.ndarray) -> np.ndarray:
        return self.decide(state)[0]

    def config(self) -> Dict[str, Any]:
        return dict(self._opts)
