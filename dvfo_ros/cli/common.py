"""What every console script shares: option groups, the progress bar, the table formatter, and one
way to turn a user-facing error into ``prog: error: <one line>`` on stderr and an exit code.

    @cli_main("dvfo-bench")
    def main(argv=None) -> int: ...           # a DvfoError / ValueError / OSError -> one line, exit 2
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Any, Callable, Optional, Tuple, Type, Union

from dvfo_ros.core.errors import DvfoError, one_line
from dvfo_ros.core.io.tables import format_table  # noqa: F401 - the one table formatter, re-exported

# What a command reports as one line instead of a traceback (DvfoError: ours; the rest: files, numbers).
USER_ERRORS: Tuple[Type[BaseException], ...] = (DvfoError, ValueError, OSError)


def error(prog: str, problem: Union[str, BaseException], code: int = 2, context: str = "") -> int:
    """Print ``prog: error: [context: ]<one line>`` on stderr; returns ``code`` for ``main`` to return."""
    text = problem if isinstance(problem, str) else one_line(problem, limit=None)
    print(f"{prog}: error: {context + ': ' if context else ''}{text}", file=sys.stderr)
    return code


def cli_main(prog: str, errors: Tuple[Type[BaseException], ...] = USER_ERRORS,
             code: int = 2) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a ``main(argv)``: any of ``errors`` it raises becomes ``error(prog, exc, code)``."""
    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args: Any, **kw: Any) -> int:
            try:
                return main(*args, **kw)
            except errors as exc:
                return error(prog, exc, code)
        return run
    return wrap


def tqdm_progress(disable: bool = False) -> Callable[[str, Optional[int], str], Any]:
    """The ``progress`` factory the core's experiments take: tqdm bars on stderr."""
    def open_bar(desc: str, total: Optional[int], unit: str) -> Any:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, mininterval=0.5)
    return open_bar


def add_env_args(p: argparse.ArgumentParser) -> None:
    """Options shared by dvfo-train and dvfo-bench: what device, model, network and reward (a TwinSetup)."""
    from dvfo_ros.core.policies.experiments import TwinSetup
    d = TwinSetup()
    p.add_argument("--device", default=d.device, help="twin profile name (nano, tx2, xavier_nx, orin_nx) or YAML")
    p.add_argument("--model", default=d.model, help="zoo model (resnet18, mobilenet_v2, efficientnet_b0) or, in the "
                                                    "twin only, resnet50, mobilenet_v3_large, vit_b_16")
    p.add_argument("--trace", default=d.trace,
                   help="network trace: dvfo | lte | mix (a trace drawn per episode: train across networks) | "
                        "a shipped name (heldout_drive_lte, ...) | CSV (time_s,bandwidth_mbps,rtt_ms)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the env and the agent")
    p.add_argument("--fps", type=float, default=d.fps, help="camera frame rate; the default SLO is one frame period")
    p.add_argument("--episode-frames", type=int, default=d.episode_frames, help="frames per episode")
    p.add_argument("--eta", type=float, default=d.eta, help="reward weight of energy (1-eta weighs latency)")
    p.add_argument("--latency-slo-ms", type=float, default=d.latency_slo_ms, help="latency SLO (default 1000/fps)")
    p.add_argument("--accuracy-bound", type=float, default=d.accuracy_bound,
                   help="tolerated accuracy loss (fraction)")
    p.add_argument("--slo-penalty", type=float, default=d.slo_penalty, help="penalty weight for an SLO violation")
    p.add_argument("--accuracy-penalty", type=float, default=d.accuracy_penalty,
                   help="penalty weight for accuracy loss over bound")
    p.add_argument("--noise", type=float, default=d.noise, help="relative latency/power noise of the twin")
    p.add_argument("--input-size", type=int, default=d.input_size,
                   help="the network's input side in px (a 32-px artifact: 32); the twin counts its work at this size")
    p.add_argument("--num-classes", type=int, default=d.num_classes, help="classes of the network's head")
    p.add_argument("--corunner", type=_pair(float), default=d.corunner, metavar="LO,HI",
                   help="co-running processes' CPU and GPU share, each drawn per episode in [LO, HI] (interference)")
    p.add_argument("--edge-server", action="store_true",
                   help="a LAN edge server for target 'edge' (4 TFLOPS, 50 Mbps, 3 ms; without it the cloud serves it)")
    p.add_argument("--edge-users", type=_pair(int), default=d.edge_users, metavar="LO,HI",
                   help="other robots sharing the LAN edge server, drawn per episode in [LO, HI]")
    p.add_argument("--accuracy-bounds", type=lambda t: tuple(float(v) for v in t.split(",")), default=None,
                   metavar="B,B,...", help="accuracy requirements (loss bounds) an episode draws one of")
    p.add_argument("--variants", type=lambda t: tuple(v for v in t.split(",") if v), default=(),
                   metavar="M,M,...", help="zoo models a policy may run instead of --model (e2e_rl's versions)")
    p.add_argument("--switch-cost", default=d.switch_cost, choices=("profile", "none", "kang2026"),
                   help="what a clock change costs a frame: the profile's own (the shipped ones: free), none, or "
                        "kang2026 (Orin Nano: <= 100 us stall, old clock for 1/5/8 ms on CPU/GPU/EMC)")


def _pair(kind: type) -> Any:
    """argparse type of a 'LO,HI' range (one value: LO = HI)."""
    def parse(text: str) -> Tuple[Any, Any]:
        try:
            parts = [kind(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected LO,HI numbers, got '{text}'") from None
        if len(parts) == 1:
            parts *= 2
        if len(parts) != 2 or parts[0] > parts[1]:
            raise argparse.ArgumentTypeError(f"expected LO,HI with LO <= HI, got '{text}'")
        return parts[0], parts[1]
    return parse


def add_agent_args(p: argparse.ArgumentParser, show: bool = True) -> None:
    """The learnt policies' hyperparameters (an AgentOptions); ``show=False`` keeps them out of --help."""
    from dvfo_ros.core.policies.experiments import AgentOptions
    d = AgentOptions()
    helps = {"gamma": "discount; 0: a frame's cost depends on its own action only (in the twin temperature does "
                      "not feed back into cost); with --switch-cost today's clocks shape the next frame's cost, "
                      "and gamma > 0 (e.g. 0.9) values that",
             "lr": "Adam learning rate", "batch_size": "replay minibatch",
             "exploration_steps": "frames over which epsilon decays to its end",
             "learning_starts": "frames collected before learning", "hidden": "width of the Q-network trunk",
             "replay_ratio": "max learner updates per frame (concurrent)"}
    for name, text in helps.items():
        default = getattr(d, name)
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                       help=text if show else argparse.SUPPRESS)
