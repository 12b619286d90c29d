"""What an experiment in the twin is run on (``TwinSetup``: device, model, network, reward, the episode's
conditions) and with (``AgentOptions``: the learnt policies' hyperparameters). dvfo-train and dvfo-bench
parse their flags into these; ``experiments`` and ``grid`` run them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple


def _from_options(cls: Any, options: Any) -> Any:
    """An options dataclass from any object with those attributes (an argparse Namespace)."""
    return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(cls) if hasattr(options, f.name)})


@dataclass
class TwinSetup:
    """What the twin simulates and how frames are scored: one device / model / network trace / seed."""

    device: str = "xavier_nx"            # twin profile name (nano, tx2, xavier_nx, orin_nx) or YAML path
    model: str = "resnet18"              # zoo model
    trace: Any = "dvfo"                  # network trace: dvfo | lte | mix | CSV path, or a NetworkTrace object
    seed: int = 0                        # seed of the env and of the agent
    fps: float = 30.0                    # camera frame rate; the default SLO is one frame period
    arrival: str = "camera"              # camera (frames at fps) | back_to_back (needs latency_slo_ms)
    episode_frames: int = 300
    eta: float = 0.5                     # reward weight of energy (1 - eta weighs latency)
    latency_slo_ms: Optional[float] = None   # default 1000 / fps (camera); back_to_back: required
    accuracy_bound: float = 0.01         # tolerated accuracy loss (fraction)
    slo_penalty: float = 1.0
    accuracy_penalty: float = 1.0
    noise: float = 0.0                   # relative latency/power noise of the twin
    input_size: int = 224                # the network's input side (px): what the twin's workload counts
    num_classes: int = 1000
    corunner: Tuple[float, float] = (0.0, 0.0)   # co-runners' CPU/GPU share, drawn per episode in this range
    edge_server: bool = False                    # a LAN edge server (context.EdgeServer's defaults) for target edge
    edge_users: Tuple[int, int] = (0, 0)         # other robots on it, drawn per episode
    accuracy_bounds: Optional[Tuple[float, ...]] = None   # accuracy requirements an episode draws one of
    variants: Tuple[str, ...] = ()               # zoo models a policy may run instead (model_variant)
    cloud_gflops: float = 30000.0                # the cloud's rate on the offloaded tail (the twin's FLOP count/s)
    switch_cost: str = "profile"                 # what a clock change costs: the profile's own | none | kang2026

    @classmethod
    def from_options(cls, options: Any) -> "TwinSetup":
        return _from_options(cls, options)

    def make_env(self, seed: Optional[int] = None) -> Any:
        """The twin env at ``seed`` (default: this setup's), its reward referenced to the device's own
        edge-only cost at max clocks (E_ref, T_ref)."""
        from dvfo_ros.core.mdp import RewardConfig, SimEnv
        env = SimEnv(self.device, self.model, self.trace, seed=self.seed if seed is None else seed, fps=self.fps,
                     episode_frames=self.episode_frames, noise=self.noise, input_size=self.input_size,
                     num_classes=self.num_classes, arrival=self.arrival, latency_slo_ms=self.latency_slo_ms,
                     conditions={"corunner": tuple(self.corunner), "edge_users": tuple(self.edge_users),
                                 "edge_server": bool(self.edge_server),
                                 "accuracy_bounds": list(self.accuracy_bounds) if self.accuracy_bounds else None},
                     variants=tuple(self.variants), cloud_gflops=self.cloud_gflops,
                     switch_cost=None if self.switch_cost == "profile" else self.switch_cost)
        e_ref, t_ref = env.reference_cost()
        env.reward_cfg = RewardConfig(eta=self.eta, latency_slo_ms=self.latency_slo_ms or 1000.0 / self.fps,
                                      accuracy_loss_bound=self.accuracy_bound, energy_ref_j=e_ref,
                                      latency_ref_ms=t_ref, slo_penalty=self.slo_penalty,
                                      accuracy_penalty=self.accuracy_penalty)
        return env


@dataclass
class AgentOptions:
    """Hyperparameters of the learnt policies (dvfo-train's flags of the same names)."""

    gamma: float = 0.0                   # 0: a frame's cost depends on its own action only (in the twin)
    lr: float = 1e-3
    batch_size: int = 128
    exploration_steps: int = 4000
    learning_starts: int = 500
    hidden: int = 128
    replay_ratio: float = 4.0

    @classmethod
    def from_options(cls, options: Any) -> "AgentOptions":
        return _from_options(cls, options)

    def policy_kwargs(self, seed: int) -> Dict[str, Any]:
        return dict(seed=seed, **dataclasses.asdict(self))
