"""dvfo: a joint-action Q-learner over (CPU, GPU, EMC, xi) with thinking-while-moving concurrency.

Network: one trunk, ONE linear head emitting a state value, a table per branch and a table per
pair of branches; the Q-value of a JOINT action is their sum::

    h = trunk(s)
    Q(s, a) = V(h) + sum_d A_d(h)[a_d] + sum_{d<d'} B_dd'(h)[a_d, a_d']

Pairwise tables capture the interactions that matter (GPU x EMC clock in a roofline, xi x
clocks), which a branch-wise BDQ head cannot: there each branch's value was swamped by the other
branches' exploration noise (a random xi costs 5-8 reward, neighbouring clock levels 0.05).

Loss on the joint action taken, double-DQN target (gamma = 0 makes it a contextual bandit)::

    y = r + gamma * (1 - done) * Q_target(s', argmax_a' Q(s', a'))
    loss = mean (Q(s, a) - y)^2

Greedy action: argmax over every joint action (5 x 8 x 4 x 11 = 1760) by NumPy broadcasting of
the small tables: tens of microseconds, no torch call on the acting path.

Concurrency (DVFO, after Xiao et al., "Thinking While Moving", ICLR 2020): acting and learning
never wait for each other. ``act`` uses a NumPy copy of the network published by the learner;
``observe`` only appends to the shared replay buffer; a learner thread trains while frames run.
The state carries the previous action, the time since it was chosen and the action-selection
latency. With ``concurrent=False`` (policy ``dvfo_sequential``, the ablation) learning happens
inline in ``observe``, so its time sits on the frame's critical path and each frame gets
``updates_per_step`` updates, no more.

Exploration (epsilon decays linearly over ``exploration_steps``): ``joint`` (default; a uniformly
random joint action), ``independent`` (each branch flips its own coin) or ``branch`` (one
random branch moved, the others greedy).
"""
from __future__ import annotations

import atexit
import itertools
import threading
import time
import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, cast

import numpy as np
import torch
from torch import nn

from dvfo_ros.core.policies.base import Policy, register
from dvfo_ros.core.mdp import BRANCH_NAMES, STATE_DIM, ActionSpace


_LIVE_AGENTS: "weakref.WeakSet[DvfoAgent]" = weakref.WeakSet()


@atexit.register
def _stop_learners() -> None:
    """Join learner threads before the interpreter (and torch) tear down."""
    for agent in list(_LIVE_AGENTS):
        agent.close()


def _layout(branches: Sequence[int]) -> List[Tuple[Tuple[int, ...], int, int, Tuple[int, ...]]]:
    """Where each table sits in the head's output: (dims, start, stop, broadcast shape)."""
    n = [int(b) for b in branches]
    out: List[Tuple[Tuple[int, ...], int, int, Tuple[int, ...]]] = []
    lo = 1
    tables: List[Tuple[int, ...]] = [(d,) for d in range(len(n))]
    for dims in tables + list(itertools.combinations(range(len(n)), 2)):
        size = int(np.prod([n[d] for d in dims]))
        shape = tuple(n[d] if d in dims else 1 for d in range(len(n)))
        out.append((dims, lo, lo + size, shape))
        lo += size
    return out


class PairwiseQNet(nn.Module):
    """Shared trunk, then ONE linear layer emitting V, every branch table and every pair table."""

    def __init__(self, state_dim: int, branches: Sequence[int], hidden: int = 128) -> None:
        super().__init__()
        self.branches = [int(n) for n in branches]
        self.layout = _layout(self.branches)
        self.trunk = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, self.layout[-1][2])

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """Q of every joint action, shape [batch, n_cpu, n_gpu, n_emc, n_xi]."""
        z = self.out(self.trunk(s))
        b = z.shape[0]
        q = z[:, :1].view(b, 1, 1, 1, 1)
        for _, lo, hi, shape in self.layout:
            q = q + z[:, lo:hi].view(b, *shape)
        return q

    def q_of(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Q(s, a) of the joint actions taken (gathers the tables; no full joint tensor)."""
        z = self.out(self.trunk(s))
        q = z[:, 0]
        n = self.branches
        for dims, lo, _, _ in self.layout:
            idx = a[:, dims[0]] if len(dims) == 1 else a[:, dims[0]] * n[dims[1]] + a[:, dims[1]]
            q = q + z[:, lo:].gather(1, idx.view(-1, 1)).squeeze(1)
        return q


class ReplayBuffer:
    """Fixed-size ring of transitions, shared by the actor (append) and the learner (sample)."""

    def __init__(self, capacity: int, state_dim: int, seed: int = 0) -> None:
        self.capacity = int(capacity)
        self.s = np.zeros((capacity, state_dim), np.float32)
        self.s2 = np.zeros((capacity, state_dim), np.float32)
        self.a = np.zeros((capacity, 4), np.int64)
        self.explored = np.zeros((capacity, 4), np.float32)    # which branches were exploratory
        self.r = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.size = 0
        self._next = 0
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)

    def add(self, s: np.ndarray, a: np.ndarray, r: float, s2: np.ndarray, done: bool,
            explored: Optional[np.ndarray] = None) -> None:
        with self._lock:
            i = self._next
            self.s[i], self.a[i], self.r[i], self.s2[i], self.done[i] = s, a, r, s2, float(done)
            self.explored[i] = 0.0 if explored is None else explored
            self._next = (i + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch: int) -> Tuple[np.ndarray, ...]:
        with self._lock:
            idx = self._rng.integers(0, self.size, size=batch)
            return self.s[idx], self.a[idx], self.r[idx], self.s2[idx], self.done[idx], self.explored[idx]

    def __len__(self) -> int:
        return self.size


@register("dvfo")
class DvfoAgent(Policy):
    learns = True

    def __init__(self, action_space: ActionSpace, *, concurrent: bool = True, seed: int = 0,
                 hidden: int = 128, gamma: float = 0.0, lr: float = 1e-3,
                 batch_size: int = 128, buffer_size: int = 100_000, learning_starts: int = 500,
                 exploration_steps: int = 4000, eps_start: float = 1.0, eps_end: float = 0.05,
                 tau: float = 0.01, updates_per_step: int = 1, replay_ratio: float = 4.0,
                 publish_every: int = 4, fixed: Optional[Dict[str, int]] = None,
                 exploration: str = "joint") -> None:
        super().__init__(action_space)
        self.concurrent = bool(concurrent)
        self.hp: Dict[str, Any] = dict(
            concurrent=self.concurrent, seed=int(seed), hidden=int(hidden),
            gamma=float(gamma), lr=float(lr), batch_size=int(batch_size), buffer_size=int(buffer_size),
            learning_starts=int(learning_starts), exploration_steps=int(exploration_steps),
            eps_start=float(eps_start), eps_end=float(eps_end), tau=float(tau),
            updates_per_step=int(updates_per_step), replay_ratio=float(replay_ratio),
            publish_every=int(publish_every), fixed=dict(fixed or {}), exploration=str(exploration))
        if exploration not in ("joint", "branch", "independent"):
            raise ValueError("exploration must be 'joint', 'branch' (one branch at a time) or 'independent'")
        for name, level in self.hp["fixed"].items():
            if name not in BRANCH_NAMES:
                raise ValueError(f"fixed branch '{name}' is not one of {', '.join(BRANCH_NAMES)}")
            if not 0 <= int(level) < action_space.branches[BRANCH_NAMES.index(name)]:
                raise ValueError(f"fixed level {level} outside branch '{name}'")
        self._fixed = {BRANCH_NAMES.index(k): int(v) for k, v in self.hp["fixed"].items()}
        self._learned = [d for d in range(4) if d not in self._fixed]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.q = PairwiseQNet(STATE_DIM, action_space.branches, hidden)
        self.q_target = PairwiseQNet(STATE_DIM, action_space.branches, hidden)
        self.q_target.load_state_dict(self.q.state_dict())
        self.opt = torch.optim.Adam(self.q.parameters(), lr=lr)
        self.buffer = ReplayBuffer(buffer_size, STATE_DIM, seed=seed)
        self._rng = np.random.default_rng(seed + 7)
        self.steps = 0                    # transitions observed
        self.updates = 0                  # gradient steps taken
        self.training = True
        self.last_loss = float("nan")
        self.last_explored = False
        self._actor: Tuple[np.ndarray, ...] = ()
        self._publish()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._update_lock = threading.Lock()

    # ---- acting ---------------------------------------------------------------------------
    def _publish(self) -> None:
        """Copy the online net to NumPy for lock-free acting (one tuple swap: atomic for readers)."""
        with torch.no_grad():
            t = self.q.trunk
            l1, l2 = cast(nn.Linear, t[0]), cast(nn.Linear, t[2])   # Sequential[i] is typed as Module
            self._actor = (l1.weight.numpy().T.copy(), l1.bias.numpy().copy(),
                           l2.weight.numpy().T.copy(), l2.bias.numpy().copy(),
                           self.q.out.weight.numpy().T.copy(), self.q.out.bias.numpy().copy())

    def q_table(self, state: np.ndarray) -> np.ndarray:
        """Q of every joint action for one state from the published weights, shape = branches."""
        w1, b1, w2, b2, wo, bo = self._actor
        h = np.maximum(np.asarray(state, np.float32) @ w1 + b1, 0.0)
        z = np.maximum(h @ w2 + b2, 0.0) @ wo + bo
        q = np.full(self.action_space.branches, z[0], np.float32)
        for _, lo, hi, shape in self.q.layout:
            q += z[lo:hi].reshape(shape)
        return q

    def greedy(self, state: np.ndarray, fixed: Optional[Dict[int, int]] = None) -> np.ndarray:
        """argmax over every joint action (branches in ``fixed`` held at their level)."""
        q = self.q_table(state)
        pinned = dict(self._fixed)
        pinned.update(fixed or {})
        index = tuple(slice(lvl, lvl + 1) if d in pinned else slice(None) for d, lvl in
                      ((d, pinned.get(d, 0)) for d in range(4)))
        sub = q[index]
        out = np.asarray(np.unravel_index(int(np.argmax(sub)), sub.shape), np.int64)
        for d, level in pinned.items():
            out[d] = level
        return out

    @property
    def epsilon(self) -> float:
        hp = self.hp
        frac = min(1.0, self.steps / max(hp["exploration_steps"], 1))
        return hp["eps_start"] + frac * (hp["eps_end"] - hp["eps_start"])

    def _explore(self, a: np.ndarray, learned: Sequence[int]) -> np.ndarray:
        if not self.training or not learned:
            return a
        eps, rng, n = self.epsilon, self._rng, self.action_space.branches
        mode = self.hp["exploration"]
        if mode == "independent":                             # every branch on its own coin
            for d in learned:
                if rng.random() < eps:
                    a[d] = rng.integers(n[d])
        elif rng.random() < eps:
            if mode == "joint":                               # a uniformly random joint action
                for d in learned:
                    a[d] = rng.integers(n[d])
            else:                                             # one branch moved, the others greedy
                d = learned[int(rng.integers(len(learned)))]
                a[d] = rng.integers(n[d])
        return a

    def act(self, state: np.ndarray) -> np.ndarray:
        greedy = self.greedy(state)
        a = self._explore(greedy.copy(), self._learned)
        self.last_explored = bool(np.any(a != greedy))     # training curves keep greedy frames apart
        return a

    def train(self, mode: bool = True) -> "DvfoAgent":
        self.training = bool(mode)
        if not mode:
            self.close()
        return self

    # ---- learning -------------------------------------------------------------------------
    def observe(self, s: np.ndarray, a: np.ndarray, r: float, s2: np.ndarray, done: bool) -> None:
        if not self.training:
            return
        self.buffer.add(s, a, r, s2, done)
        self.steps += 1
        if len(self.buffer) < self.hp["learning_starts"]:
            return
        if self.concurrent:
            self._start_learner()
        else:
            for _ in range(self.hp["updates_per_step"]):
                self.update()
            self._publish()

    def joint_q(self, net: PairwiseQNet, s: torch.Tensor) -> torch.Tensor:
        """Q of every joint action the policy may take, flattened to [batch, n] (fixed branches pinned)."""
        q = net(s)
        for d, level in self._fixed.items():
            q = q.narrow(d + 1, level, 1)
        return q.reshape(q.shape[0], -1)

    def td_target(self, r: torch.Tensor, s2: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """r + gamma * (1 - done) * Q_target(s', argmax Q(s', .)) (just r when gamma = 0)."""
        gamma = self.hp["gamma"]
        if gamma == 0.0:
            return r
        with torch.no_grad():
            best = self.joint_q(self.q, s2).argmax(1, keepdim=True)
            nxt = self.joint_q(self.q_target, s2).gather(1, best).squeeze(1)
        return r + gamma * (1.0 - done) * nxt

    def soft_update(self) -> None:
        with torch.no_grad():
            for p, pt in zip(self.q.parameters(), self.q_target.parameters()):
                pt.mul_(1.0 - self.hp["tau"]).add_(p, alpha=self.hp["tau"])

    def update(self) -> float:
        """One gradient step on a replay minibatch (the math in the module docstring)."""
        hp = self.hp
        s, a, r, s2, done, _ = (torch.as_tensor(x) for x in self.buffer.sample(hp["batch_size"]))
        with self._update_lock:
            y = self.td_target(r, s2, done)
            loss = ((self.q.q_of(s, a) - y) ** 2).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.q.parameters(), 10.0)
            self.opt.step()
            self.soft_update()
            self.updates += 1
        self.last_loss = float(loss.detach())
        return self.last_loss

    def _start_learner(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._learner_loop, name="dvfo-learner", daemon=True)
            _LIVE_AGENTS.add(self)
            self._thread.start()

    def _learner_loop(self) -> None:
        """Train whenever there is data, capped at ``replay_ratio`` updates per observed frame."""
        while not self._stop.is_set():
            if self.updates >= self.hp["replay_ratio"] * self.steps:
                time.sleep(0.0002)
                continue
            self.update()
            if self.updates % self.hp["publish_every"] == 0:
                self._publish()
        self._publish()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            self._thread = None

    def wait_for_learner(self, timeout_s: float = 5.0) -> None:
        """Let the learner catch up to its replay-ratio cap (tests and end-of-training only)."""
        end = time.monotonic() + timeout_s
        while self._thread is not None and self.updates < self.hp["replay_ratio"] * self.steps \
                and time.monotonic() < end:
            time.sleep(0.001)

    def learn_offline(self, transitions: Iterable[Tuple[Any, Any, float, Any, bool]], steps: int) -> float:
        """Batch RL from recorded (s, a, r, s2, done) (e.g. a rosbag's Transition messages)."""
        n = 0
        for s, a, r, s2, done in transitions:
            self.buffer.add(np.asarray(s, np.float32), np.asarray(a, np.int64), float(r),
                            np.asarray(s2, np.float32), bool(done))
            n += 1
        if n == 0 or len(self.buffer) == 0:
            raise ValueError("learn_offline needs at least one transition")
        loss = float("nan")
        for _ in range(int(steps)):
            loss = self.update()
        self._publish()
        return loss

    # ---- checkpoints ----------------------------------------------------------------------
    def config(self) -> Dict[str, Any]:
        return dict(self.hp)

    def state_dict(self) -> Dict[str, Any]:
        with self._update_lock:
            return {"q": {k: v.clone() for k, v in self.q.state_dict().items()},
                    "q_target": {k: v.clone() for k, v in self.q_target.state_dict().items()},
                    "steps": int(self.steps), "updates": int(self.updates)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        with self._update_lock:
            self.q.load_state_dict(state["q"])
            self.q_target.load_state_dict(state.get("q_target", state["q"]))
            self.steps = int(state.get("steps", 0))
            self.updates = int(state.get("updates", 0))
        self._publish()


@register("dvfo_sequential")
class SequentialDvfoAgent(DvfoAgent):
    """The ablation: the same agent with concurrency off (learning inline, decision on the path)."""

    not_live = ("dvfo_sequential is dvfo's concurrency ablation, measured in the twin (a robot's frames "
                "never wait for the policy node); run dvfo")

    def __init__(self, action_space: ActionSpace, **kw: Any) -> None:
        kw["concurrent"] = False
        super().__init__(action_space, **kw)
