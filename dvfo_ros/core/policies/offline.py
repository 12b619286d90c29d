"""Offline (batch) RL of the DVFO agent from recorded Transition messages, optionally mixed with twin rollouts.

Pipeline: bags --(stream, chunk by chunk)--> TransitionChunk --> ReservoirBuffer (a uniform sample of
at most ``capacity`` transitions, however long the bags) --> minibatches --> ``OfflineTrainer``.

The loss is the DVFO agent's own (branching dueling double DQN, BDQ mean operator) plus a
conservative term (discrete CQL, Kumar et al. 2020) per branch::

    y    = r + gamma * (1 - done) * mean_d Q_d^target(s', argmax_a Q_d(s', a))
    loss = mean_d Huber(Q_d(s, a_d) - y)  +  alpha * mean_d [logsumexp_a Q_d(s, a) - Q_d(s, a_d)]

Why the second term: data from ``ondemand`` or ``max_freq`` covers few actions; plain DQN then
trusts Q of actions it never saw (extrapolation error) and the greedy policy picks them. CQL
pushes those down, so the learnt policy stays where the data says something (alpha=0: plain DQN).
The trainer drives the agent's own networks and optimiser (``agent.q``, ``q_target``, ``opt``), so
the checkpoint is an ordinary ``dvfo`` checkpoint the policy node loads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from dvfo_ros.core.errors import DvfoError
from dvfo_ros.core.io.bags import BagError, BagReader, Warn, log
from dvfo_ros.core.mdp import STATE_DIM, STATE_NAMES, ActionSpace, snap_indices

TRANSITION_TYPE = "dvfo_ros/msg/Transition"


class OfflineError(DvfoError):
    """Nothing to train on, or a setting that cannot work (one-line message for the CLI)."""


@dataclass
class TransitionChunk:
    """A block of transitions as arrays (what one read of a bag hands the buffer)."""

    s: np.ndarray          # [n, STATE_DIM] float32
    a: np.ndarray          # [n, 4] int64 levels in the training action space
    r: np.ndarray          # [n] float32
    s2: np.ndarray         # [n, STATE_DIM] float32
    done: np.ndarray       # [n] float32
    policy: List[str] = field(default_factory=list)
    eta: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.r.shape[0])


@dataclass
class ReadStats:
    """What reading the bags found; the CLI prints it and the checkpoint's meta keeps it."""

    bags: int = 0
    messages: int = 0
    transitions: int = 0
    skipped_nan: int = 0
    skipped_bad: int = 0
    renamed_states: int = 0
    policies: Dict[str, int] = field(default_factory=dict)
    etas: Dict[float, int] = field(default_factory=dict)


class _StateMapper:
    """Puts a message's state vector into STATE_NAMES order, by name (bags from other versions)."""

    def __init__(self) -> None:
        self._cache: Dict[Tuple[str, ...], Optional[np.ndarray]] = {}

    def index(self, names: Sequence[str]) -> Optional[np.ndarray]:
        """None: names already are STATE_NAMES; else the source index of each STATE_NAMES entry (-1 = 0.0)."""
        key = tuple(names)
        if key not in self._cache:
            if list(key) == STATE_NAMES or not key:
                self._cache[key] = None
            else:
                pos = {n: i for i, n in enumerate(key)}
                self._cache[key] = np.asarray([pos.get(n, -1) for n in STATE_NAMES], np.int64)
        return self._cache[key]


def _remap(vec: np.ndarray, idx: Optional[np.ndarray]) -> np.ndarray:
    if idx is None:
        return vec
    out = np.zeros(STATE_DIM, np.float32)
    ok = idx >= 0
    out[ok] = vec[idx[ok]]
    return out


def _levels(values: np.ndarray, space: ActionSpace) -> np.ndarray:
    """[n, 4] commands in units (Hz, Hz, Hz, xi) -> levels of ``space`` by the one snapping rule
    (vectorised ``from_command``: the level a governor would apply for that command)."""
    out = np.empty(values.shape, np.int64)
    tables: Tuple[Sequence[float], ...] = space.tables()
    for d, table in enumerate(tables):
        out[:, d] = snap_indices(values[:, d], table)
    return out


def iter_transitions(paths: Sequence[str], space: ActionSpace, warn: Optional[Warn] = None,
                     topic: Optional[str] = None, chunk_size: int = 4096,
                     stats: Optional[ReadStats] = None) -> Iterator[TransitionChunk]:
    """Stream every usable Transition of every bag as chunks; problems are warned about and skipped.

    Actions come from ``action_values`` (Hz and xi) snapped to ``space``'s levels, so bags
    recorded with another level grid still train this one; bags without them use the raw levels.
    """
    warn = warn or log.warning
    stats = stats if stats is not None else ReadStats()
    mapper = _StateMapper()
    branches = np.asarray(space.branches)
    for path in paths:
        try:
            reader = BagReader(path, warn=warn)
        except BagError as e:
            warn(f"{e}; bag skipped")
            continue
        with reader:
            infos = reader.topics()
            names = [t for t, i in infos.items() if (topic is None and i.msgtype == TRANSITION_TYPE) or t == topic]
            if not names:
                listing = ", ".join(sorted(infos)) or "none"
                warn(f"{path}: no {topic or TRANSITION_TYPE} topic (topics: {listing}); record /dvfo/transition "
                     f"while the policy node runs; bag skipped")
                continue
            stats.bags += 1
            nan_here = bad_here = 0
            buf: Dict[str, list] = {k: [] for k in ("s", "s2", "r", "done", "av", "lv", "pol", "eta")}
            for m in reader.messages(topics=names):
                stats.messages += 1
                msg = m.msg
                try:
                    state = np.asarray(getattr(msg, "state"), np.float32)
                    nxt = np.asarray(getattr(msg, "next_state"), np.float32)
                    reward = float(getattr(msg, "reward"))
                    snames = list(getattr(msg, "state_names", []) or [])
                except (AttributeError, TypeError, ValueError):
                    bad_here += 1
                    continue
                if snames and (len(snames) != state.size or len(snames) != nxt.size):
                    bad_here += 1
                    continue
                if not snames and state.size != STATE_DIM:
                    bad_here += 1
                    continue
                if not np.isfinite(reward) or not np.all(np.isfinite(state)) or not np.all(np.isfinite(nxt)):
                    nan_here += 1
                    continue
                idx = mapper.index(snames)
                if idx is not None:
                    stats.renamed_states += 1
                av = np.asarray(getattr(msg, "action_values", []), np.float64)
                lv = np.asarray(getattr(msg, "action", []), np.int64)
                if av.size == 4 and np.all(np.isfinite(av)):
                    buf["av"].append(av)
                    buf["lv"].append(None)
                elif lv.size == 4 and np.all(lv >= 0) and np.all(lv < branches):
                    buf["av"].append(None)
                    buf["lv"].append(lv)
                else:
                    bad_here += 1
                    continue
                buf["s"].append(_remap(state, idx))
                buf["s2"].append(_remap(nxt, idx))
                buf["r"].append(reward)
                buf["done"].append(float(bool(getattr(msg, "done", False))))
                pol = str(getattr(msg, "policy", "") or "unknown")
                buf["pol"].append(pol)
                buf["eta"].append(float(getattr(msg, "eta", float("nan"))))
                if len(buf["r"]) >= chunk_size:
                    yield _flush(buf, space, stats)
            if buf["r"]:
                yield _flush(buf, space, stats)
            if nan_here:
                warn(f"{path} topic {', '.join(names)}: {nan_here} transitions with NaN/inf reward or state skipped")
            if bad_here:
                warn(f"{path} topic {', '.join(names)}: {bad_here} malformed transitions skipped "
                     f"(state length, action levels outside {tuple(space.branches)}, or missing fields)")
            stats.skipped_nan += nan_here
            stats.skipped_bad += bad_here


def _flush(buf: Dict[str, list], space: ActionSpace, stats: ReadStats) -> TransitionChunk:
    n = len(buf["r"])
    a = np.empty((n, 4), np.int64)
    with_values = [i for i, v in enumerate(buf["av"]) if v is not None]
    if with_values:
        a[with_values] = _levels(np.stack([buf["av"][i] for i in with_values]), space)
    for i, lv in enumerate(buf["lv"]):
        if lv is not None:
            a[i] = lv
    eta = np.asarray(buf["eta"], np.float32)
    chunk = TransitionChunk(np.stack(buf["s"]), a, np.asarray(buf["r"], np.float32), np.stack(buf["s2"]),
                            np.asarray(buf["done"], np.float32), list(buf["pol"]), eta)
    stats.transitions += n
    for p in set(chunk.policy):
        stats.policies[p] = stats.policies.get(p, 0) + chunk.policy.count(p)
    for e in np.unique(eta):
        if np.isfinite(e):
            stats.etas[round(float(e), 4)] = stats.etas.get(round(float(e), 4), 0) + int(np.sum(eta == e))
    for v in buf.values():
        v.clear()
    return chunk


class ReservoirBuffer:
    """At most ``capacity`` transitions, a uniform random sample of everything offered (Algorithm R),
    so memory stays fixed however many hours of bags stream through."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise OfflineError("buffer capacity must be >= 1")
        self.capacity = int(capacity)
        self.s = np.zeros((self.capacity, STATE_DIM), np.float32)
        self.s2 = np.zeros((self.capacity, STATE_DIM), np.float32)
        self.a = np.zeros((self.capacity, 4), np.int64)
        self.r = np.zeros(self.capacity, np.float32)
        self.done = np.zeros(self.capacity, np.float32)
        self.size = 0
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add(self, c: TransitionChunk) -> None:
        n = len(c)
        free = min(max(self.capacity - self.size, 0), n)
        slots = np.full(n, -1, np.int64)
        slots[:free] = np.arange(self.size, self.size + free)
        if free < n:   # item k (0-based overall) replaces a random slot with probability capacity / (k + 1)
            k = self.seen + np.arange(free, n)
            j = (self.rng.random(n - free) * (k + 1)).astype(np.int64)
            slots[free:] = np.where(j < self.capacity, j, -1)
        keep = slots >= 0
        dst = slots[keep]
        self.s[dst], self.a[dst], self.r[dst] = c.s[keep], c.a[keep], c.r[keep]
        self.s2[dst], self.done[dst] = c.s2[keep], c.done[keep]
        self.size += free
        self.seen += n

    def sample(self, batch: int) -> Tuple[np.ndarray, ...]:
        idx = self.rng.integers(0, self.size, size=batch)
        return self.s[idx], self.a[idx], self.r[idx], self.s2[idx], self.done[idx]

    def all(self) -> Tuple[np.ndarray, ...]:
        n = self.size
        return self.s[:n], self.a[:n], self.r[:n], self.s2[:n], self.done[:n]

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in (self.s, self.s2, self.a, self.r, self.done))


class OfflineTrainer:
    """Gradient steps on the DVFO agent's networks from fixed data (see the module docstring)."""

    def __init__(self, agent: Any, cql_alpha: float = 1.0) -> None:
        for attr in ("q", "q_target", "opt", "hp", "soft_update"):
            if not hasattr(agent, attr):
                raise OfflineError(f"policy '{getattr(agent, 'name', agent)}' has no Q-network to train offline")
        self.agent = agent
        self.alpha = float(cql_alpha)
        self.branches = [d for d in range(4) if d not in getattr(agent, "_fixed", {})]

    def _losses(self, batch: Tuple[np.ndarray, ...]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TD loss on the joint action taken, plus CQL's logsumexp over every joint action."""
        ag = self.agent
        s, a, r, s2, done = (torch.as_tensor(x) for x in batch)
        y = ag.td_target(r, s2, done)
        q_data = ag.q.q_of(s, a)                     # [batch, heads]: every head regresses y
        td = F.smooth_l1_loss(q_data, y.view(-1, 1).expand_as(q_data))
        # CQL's term over all joint actions: with alpha 0 it is only reported, so no gradient flows through it
        with torch.set_grad_enabled(self.alpha > 0 and torch.is_grad_enabled()):
            cql = (torch.logsumexp(ag.joint_q(ag.q, s), 1) - q_data.mean(1)).mean()
        return td + self.alpha * cql, td, cql

    def step(self, batch: Tuple[np.ndarray, ...]) -> Dict[str, float]:
        """One gradient step; the agent's Polyak updates (``soft_update``)."""
        ag = self.agent
        loss, td, cql = self._losses(batch)
        ag.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ag.q.parameters(), 10.0)
        ag.opt.step()
        ag.soft_update()                    # the TD target and the average the policy deploys
        ag.updates = int(getattr(ag, "updates", 0)) + 1
        return {"loss": float(loss.detach()), "td": float(td.detach()), "cql": float(cql.detach())}

    @torch.no_grad()
    def evaluate(self, data: Tuple[np.ndarray, ...], batch: int = 4096) -> Dict[str, float]:
        """Held-out TD error, how often the greedy policy agrees with the recorded action, mean Q."""
        n = int(data[2].shape[0])
        if n == 0:
            return {}
        td_sum = agree = q_sum = 0.0
        for i in range(0, n, batch):
            part = tuple(x[i:i + batch] for x in data)
            _, td, _ = self._losses(part)
            st = torch.as_tensor(part[0])
            q_all = self.agent.joint_q(self.agent.q, st)
            shape = [n for d, n in enumerate(self.agent.action_space.branches) if d not in self.agent._fixed]
            greedy = torch.stack(torch.unravel_index(q_all.argmax(1), shape), 1)
            data_a = torch.as_tensor(part[1])[:, self.branches]
            agree += float((greedy == data_a).float().mean(1).sum())
            q_sum += float(q_all.max(1).values.sum())
            td_sum += float(td) * len(part[2])
        return {"val_td": td_sum / n, "val_agreement": agree / n, "val_q": q_sum / n}


def action_coverage(a: np.ndarray, space: ActionSpace) -> float:
    """How evenly the recorded actions cover every level: min over branches and levels of
    (share of samples at that level) x (levels in the branch). 1 = uniform, 0 = some level never tried.
    ``ondemand``/``max_freq`` data without exploration scores 0 (xi never changes); 30 % random actions ~0.3."""
    if a.shape[0] == 0:
        return 0.0
    cov = []
    for d, n in enumerate(space.branches):
        if n > 1:
            counts = np.bincount(a[:, d], minlength=n)[:n]
            cov.append(float(counts.min()) / a.shape[0] * n)
    return min(cov) if cov else 1.0


AUTO_COVERAGE = 0.1


def auto_cql_alpha(coverage: float) -> float:
    """Measured on the twin (README_bags): with coverage >= 0.1 plain double DQN (alpha 0) came within 3 % of
    the oracle while any alpha >= 0.1 only copied the behaviour policy; with coverage 0 (pure ondemand data)
    alpha 0 extrapolated to a policy 4x worse than the behaviour and alpha 1 matched it."""
    return 0.0 if coverage >= AUTO_COVERAGE else 1.0


def twin_transitions(profile: str, frames: int, seed: int = 0, eta: float = 0.5,
                     chunk_size: int = 4096) -> Iterator[TransitionChunk]:
    """Transitions from the device twin under a uniformly random behaviour policy (covers every action).

    The reward uses the policy node's RewardConfig (only eta from the bags), so twin and bag rewards
    share one scale and can be mixed in a minibatch.
    """
    from dvfo_ros.core.mdp import RewardConfig, SimEnv
    env = SimEnv(profile, seed=seed, reward_cfg=RewardConfig(eta=float(eta)))
    rng = np.random.default_rng(seed + 99)
    s = env.reset()
    rows: Dict[str, list] = {k: [] for k in ("s", "a", "r", "s2", "d")}
    for _ in range(int(frames)):
        a = env.action_space.sample(rng)
        s2, r, done, _ = env.step(a)
        for k, v in zip(("s", "a", "r", "s2", "d"), (s, a, r, s2, float(done))):
            rows[k].append(v)
        s = env.reset() if done else s2
        if len(rows["r"]) >= chunk_size:
            yield _twin_chunk(rows)
    if rows["r"]:
        yield _twin_chunk(rows)


def _twin_chunk(rows: Dict[str, list]) -> TransitionChunk:
    c = TransitionChunk(np.stack(rows["s"]).astype(np.float32), np.stack(rows["a"]).astype(np.int64),
                        np.asarray(rows["r"], np.float32), np.stack(rows["s2"]).astype(np.float32),
                        np.asarray(rows["d"], np.float32), ["twin"] * len(rows["r"]))
    for v in rows.values():
        v.clear()
    return c


def load_all(chunks: Iterable[TransitionChunk], capacity: int, seed: int = 0,
             on_chunk: Optional[Callable[[int], None]] = None) -> ReservoirBuffer:
    """Stream chunks into a reservoir buffer (the only place transitions are held)."""
    buf = ReservoirBuffer(capacity, seed)
    for c in chunks:
        buf.add(c)
        if on_chunk is not None:
            on_chunk(len(c))
    return buf
