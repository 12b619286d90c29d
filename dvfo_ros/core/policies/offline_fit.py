"""The offline fit: recorded rosbags (optionally mixed with twin rollouts) -> an ordinary ``dvfo``
checkpoint, validated and saved as it trains. ROS-free; ``dvfo-train --bag`` parses its options
into ``OfflineOptions``, calls ``fit_offline`` and prints, plots and writes what comes back.

The pieces (streaming reader, reservoir buffer, the CQL-regularised trainer) are in ``offline``;
this module is the loop that joins them::

    bags -> reservoir (capacity) -> held-out split -> [twin rollouts] -> CQL alpha from action coverage
         -> minibatch steps -> every eval_every steps: validate + write the checkpoint (atomically)
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from dvfo_ros.core.errors import one_line
from dvfo_ros.core.policies.experiments import Progress, open_bar
from dvfo_ros.core.policies.offline import (OfflineError, OfflineTrainer, ReadStats, ReservoirBuffer, action_coverage,
                                            auto_cql_alpha, iter_transitions, load_all, twin_transitions)


@dataclass
class OfflineOptions:
    """Everything the fit needs (dvfo-train --bag's flags of the same meaning)."""

    bags: List[str]                      # rosbag2 directories or .mcap/.db3 files to train on
    out: str                             # checkpoint to write
    val_bags: List[str] = field(default_factory=list)   # held-out bags; default: hold out val_fraction
    val_fraction: float = 0.1
    steps: int = 2000                    # gradient steps
    batch_size: int = 256
    lr: float = 1e-3
    gamma: float = 0.5
    cql_alpha: Union[str, float] = "auto"   # "auto": 0 when the data covers every action level, else 1
    capacity: int = 500_000              # most transitions held in memory
    profile: str = ""                    # device profile of the action space ("" = from the bags)
    topic: Optional[str] = None          # Transition topic (None = every Transition topic)
    twin_frames: int = 0                 # random-action twin frames mixed in
    twin_share: float = 0.25             # share of each minibatch from twin rollouts
    eta: Optional[float] = None          # twin rewards' eta (None = the bags' eta)
    init: str = ""                       # start from this dvfo checkpoint
    eval_every: int = 250                # validate (and checkpoint) every N steps
    eval_frames: int = 0                 # also run the greedy policy N frames in the twin at each validation
    seed: int = 0


@dataclass
class OfflineFit:
    """The fit's numbers (what --json writes), validation history and per-step losses (what the PNG plots)."""

    numbers: Dict[str, Any]
    history: List[Dict[str, float]]
    losses: List[Tuple[int, float, float]]


def detect_profile(paths: List[str], warn: Optional[Callable[[str], None]] = None) -> str:
    """The device profile the robot's governor reported (first DeviceState found), else xavier_nx."""
    from dvfo_ros.core.io.bags import BagError, BagReader
    for path in paths:
        try:
            with BagReader(path, warn=lambda _m: None) as r:
                for m in r.messages(msgtypes=["dvfo_ros/msg/DeviceState"]):
                    name = str(getattr(m.msg, "profile", "") or "")
                    if name:
                        return name
                    break
        except BagError:
            continue
    return "xavier_nx"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def hold_out(buf: ReservoirBuffer, fraction: float, seed: int) -> tuple:
    """Hold out a random share of ``buf`` in place: returns the held-out arrays, shrinks ``buf``."""
    n = len(buf)
    k = int(round(n * fraction))
    if k < 1 or n - k < 1:
        return tuple(x[:0] for x in buf.all())
    perm = np.random.default_rng(seed + 5).permutation(n)
    held, kept = perm[:k], perm[k:]
    val = tuple(x[held].copy() for x in buf.all())
    for name in ("s", "a", "r", "s2", "done"):
        arr = getattr(buf, name)
        arr[:n - k] = arr[kept]
    buf.size = n - k
    return val


def fit_offline(opts: OfflineOptions, log: Callable[[str], None] = print,
                progress: Optional[Progress] = None) -> OfflineFit:
    """The whole run; raises OfflineError (one line) when there is nothing to train on."""
    import torch

    from dvfo_ros.core.mdp import ActionSpace
    from dvfo_ros.core.policies import CheckpointError, make_policy
    from dvfo_ros.core.twin import load_profile

    torch.manual_seed(opts.seed)
    warnings: List[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        log(f"warning: {msg}")

    profile = opts.profile or detect_profile(opts.bags, warn)
    try:
        space = ActionSpace.from_profile(load_profile(profile))
    except Exception as e:  # noqa: BLE001 - unknown profile name or bad YAML
        raise OfflineError(one_line(e)) from None
    # The pairwise head (clock tables shared across xi): a bag's thousand transitions, mostly at one xi,
    # leave the per-xi tables of the twin's default head to extrapolate (twin reward -11 against the
    # behaviour's -5 in test_offline); shared tables generalise, and CQL keeps them near the data.
    agent: Any = make_policy("dvfo", space, seed=opts.seed, gamma=opts.gamma, lr=opts.lr, batch_size=opts.batch_size,
                             head="pairwise")
    if opts.init:
        try:
            agent.load(opts.init)
        except CheckpointError as e:
            raise OfflineError(str(e)) from None
    agent.train(True)

    stats = ReadStats()
    bar = open_bar(progress, "reading bags", None, " transitions")
    t0 = time.perf_counter()
    buf = load_all(iter_transitions(opts.bags, space, warn=warn, topic=opts.topic, stats=stats), opts.capacity,
                   seed=opts.seed, on_chunk=bar.update)
    read_s = time.perf_counter() - t0
    bar.close()
    if len(buf) == 0:
        raise OfflineError(f"no usable transitions in {', '.join(opts.bags)} "
                           f"(see the warnings above); nothing written to {opts.out}")
    if opts.val_bags:
        vbuf = load_all(iter_transitions(opts.val_bags, space, warn=warn, topic=opts.topic, stats=ReadStats()),
                        opts.capacity, seed=opts.seed + 1)
        val = vbuf.all()
        if len(vbuf) == 0:
            warn(f"validation bags {', '.join(opts.val_bags)} hold no usable transitions; validating on none")
    else:
        val = hold_out(buf, opts.val_fraction, opts.seed)
    etas = sorted(stats.etas, key=lambda e: -stats.etas[e])
    eta = opts.eta if opts.eta is not None else (etas[0] if etas else 0.5)
    if len(etas) > 1:
        warn(f"bags mix eta values {etas}: rewards trade energy against latency differently; using them as recorded")
    twin_buf: Optional[ReservoirBuffer] = None
    if opts.twin_frames > 0:
        tb = open_bar(progress, "twin rollouts", opts.twin_frames, " frames")
        twin_buf = load_all(twin_transitions(profile, opts.twin_frames, seed=opts.seed, eta=eta),
                            opts.twin_frames, seed=opts.seed + 2, on_chunk=tb.update)
        tb.close()

    coverage = action_coverage(buf.a[:len(buf)], space)
    if twin_buf is not None:
        coverage = max(coverage, opts.twin_share * action_coverage(twin_buf.a[:len(twin_buf)], space))
    alpha = auto_cql_alpha(coverage) if opts.cql_alpha == "auto" else float(opts.cql_alpha)
    log(f"action coverage {coverage:.3f} -> CQL alpha {alpha:g}" +
        (" (the data never tries some levels: the policy stays close to the recorded one)" if alpha > 0 else ""))
    trainer = OfflineTrainer(agent, cql_alpha=alpha)
    n_twin = int(round(opts.batch_size * opts.twin_share)) if twin_buf is not None else 0
    history: List[Dict[str, float]] = []
    losses: List[Tuple[int, float, float]] = []

    def validate(step: int) -> None:
        h: Dict[str, float] = {"step": float(step)}
        h.update(trainer.evaluate(val))
        if opts.eval_frames > 0:
            from dvfo_ros.core.mdp import RewardConfig, SimEnv
            from dvfo_ros.core.policies import rollout
            agent.load_state_dict(agent.state_dict())   # publish the current weights to the actor
            agent.training = False
            env = SimEnv(profile, seed=opts.seed + 1000, reward_cfg=RewardConfig(eta=float(eta)))
            h["twin_reward"] = rollout(env, agent, opts.eval_frames).summary()["reward_mean"]
            agent.training = True
        history.append(h)
        save(step)

    def save(step: int) -> None:
        agent.steps = max(int(agent.steps), int(agent.hp["exploration_steps"]), len(buf))  # exploit from the start
        agent.save(opts.out, meta={"trained": "offline", "bags": list(opts.bags), "val_bags": list(opts.val_bags),
                                   "steps": step, "transitions": len(buf), "profile": profile,
                                   "cql_alpha": alpha, "coverage": coverage, "history": list(history)})

    bar = open_bar(progress, "training", opts.steps, " steps")
    t1 = time.perf_counter()
    try:
        for step in range(1, opts.steps + 1):
            batch = buf.sample(opts.batch_size - n_twin)
            if n_twin:
                tw = twin_buf.sample(n_twin)  # type: ignore[union-attr]
                batch = tuple(np.concatenate([x, y]) for x, y in zip(batch, tw))
            out = trainer.step(batch)
            losses.append((step, out["td"], out["cql"]))
            bar.update(1)
            if step % 100 == 0 and hasattr(bar, "set_postfix"):
                bar.set_postfix(td=f"{out['td']:.3f}", cql=f"{out['cql']:.3f}")
            if step % opts.eval_every == 0 or step == opts.steps:
                validate(step)
    finally:
        bar.close()
    train_s = time.perf_counter() - t1
    numbers = {"checkpoint": opts.out, "profile": profile, "bags": len(opts.bags),
               "transitions_read": stats.transitions, "transitions_trained": len(buf),
               "skipped_nan": stats.skipped_nan, "skipped_malformed": stats.skipped_bad,
               "policies": stats.policies, "read_s": read_s,
               "read_transitions_per_s": stats.transitions / max(read_s, 1e-9),
               "cql_alpha": alpha, "coverage": coverage, "steps": opts.steps, "train_s": train_s,
               "steps_per_s": opts.steps / max(train_s, 1e-9),
               "trained_transitions_per_s": opts.steps * opts.batch_size / max(train_s, 1e-9),
               "buffer_mb": buf.nbytes / 2**20, "peak_rss_mb": peak_rss_mb(), "val": history[-1] if history else {},
               "warnings": warnings}
    return OfflineFit(numbers, history, losses)
