"""dvfo: branching dueling double DQN over (CPU, GPU, EMC, xi) with thinking-while-moving concurrency.

Network (Tavakoli et al., "Action Branching Architectures", AAAI 2018)::

    h = trunk(s);  Q_d(s, a_d) = V(h) + A_d(h, a_d) - mean_a A_d(h, a)       for branch d in cpu/gpu/emc/xi

TD target, one for all branches (the BDQ mean operator, double-DQN selection)::

    y = r + gamma * (1 - done) * mean_d Q_d^target(s', argmax_a Q_d(s', a))
    loss = mean_d Huber(Q_d(s, a_d) - y)

Concurrency (DVFO, after Xiao et al., "Thinking While Moving", ICLR 2020): acting and learning
never wait for each other. ``act`` runs a NumPy copy of the trunk and the branch advantage heads
(V and the mean do not change an argmax), published by the learner; ``observe`` only appends to
the shared replay buffer; a learner thread trains while frames run. The state carries the
previous action, the time since it was chosen and the action-selection latency. With
``concurrent=False`` (policy ``dvfo_sequential``, the ablation) learning happens inline in
``observe``, so its time sits on the frame's critical path and each frame gets
``updates_per_step`` updates, no more.

Exploration: ``independent`` (BDQ's own: each branch flips its own epsilon coin) or ``branch``
(one branch at a time, and a branch learns only from frames where no other branch explored,
which removes the other branches' exploration noise from its targets but can stall in a
coordinate-wise optimum, e.g. raising the GPU clock alone does not help while the EMC clock
holds a layer memory-bound).
"""
from __future__ import annotations

import atexit
import threading
import time
import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dvfo_ros.core.agents.base import Policy, register
from dvfo_ros.core.env import BRANCH_NAMES, STATE_DIM, ActionSpace


_LIVE_AGENTS: "weakref.WeakSet[DvfoAgent]" = weakref.WeakSet()


@atexit.register
def _stop_learners() -> None:
    """Join learner threads before the interpreter (and torch) tear down."""
    for agent in list(_LIVE_AGENTS):
        agent.close()


class BranchingQNet(nn.Module):
    """Shared trunk, then ONE linear layer emitting V and every branch's advantages (few ops: fast on a CPU)."""

    def __init__(self, state_dim: int, branches: Sequence[int], hidden: int = 128) -> None:
        super().__init__()
        self.branches = [int(n) for n in branches]
        self.trunk = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 1 + sum(self.branches))

    def forward(self, s: torch.Tensor) -> List[torch.Tensor]:
        z = self.out(self.trunk(s))
        v, advs = z[:, :1], torch.split(z[:, 1:], self.branches, dim=1)
        return [v + adv - adv.mean(dim=1, keepdim=True) for adv in advs]


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
                 exploration: str = "independent") -> None:
        super().__init__(action_space)
        self.concurrent = bool(concurrent)
        self.hp: Dict[str, Any] = dict(
            concurrent=self.concurrent, seed=int(seed), hidden=int(hidden),
            gamma=float(gamma), lr=float(lr), batch_size=int(batch_size), buffer_size=int(buffer_size),
            learning_starts=int(learning_starts), exploration_steps=int(exploration_steps),
            eps_start=float(eps_start), eps_end=float(eps_end), tau=float(tau),
            updates_per_step=int(updates_per_step), replay_ratio=float(replay_ratio),
            publish_every=int(publish_every), fixed=dict(fixed or {}), exploration=str(exploration))
        if exploration not in ("branch", "independent"):
            raise ValueError("exploration must be 'branch' (one branch at a time) or 'independent'")
        for name, level in self.hp["fixed"].items():
            if name not in BRANCH_NAMES:
                raise ValueError(f"fixed branch '{name}' is not one of {', '.join(BRANCH_NAMES)}")
            if not 0 <= int(level) < action_space.branches[BRANCH_NAMES.index(name)]:
                raise ValueError(f"fixed level {level} outside branch '{name}'")
        self._fixed = {BRANCH_NAMES.index(k): int(v) for k, v in self.hp["fixed"].items()}
        self._learned = [d for d in range(4) if d not in self._fixed]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.q = BranchingQNet(STATE_DIM, action_space.branches, hidden)
        self.q_target = BranchingQNet(STATE_DIM, action_space.branches, hidden)
        self.q_target.load_state_dict(self.q.state_dict())
        self.opt = torch.optim.Adam(self.q.parameters(), lr=lr)
        self.buffer = ReplayBuffer(buffer_size, STATE_DIM, seed=seed)
        self._rng = np.random.default_rng(seed + 7)
        self.steps = 0                    # transitions observed
        self.updates = 0                  # gradient steps taken
        self.training = True
        self.last_loss = float("nan")
        self._actor: Tuple[np.ndarray, ...] = ()
        self._publish()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._update_lock = threading.Lock()

    # ---- acting ---------------------------------------------------------------------------
    def _publish(self) -> None:
        """Copy the online net's trunk and advantage heads to NumPy for lock-free acting."""
        with torch.no_grad():
            t = self.q.trunk
            self._actor = (t[0].weight.numpy().T.copy(), t[0].bias.numpy().copy(),
                           t[2].weight.numpy().T.copy(), t[2].bias.numpy().copy(),
                           self.q.out.weight.numpy()[1:].T.copy(), self.q.out.bias.numpy()[1:].copy())

    def greedy(self, state: np.ndarray) -> np.ndarray:
        """argmax_a Q_d(s, a) per branch from the last published weights (a few microseconds)."""
        w1, b1, w2, b2, wa, ba = self._actor
        h = np.maximum(np.asarray(state, np.float32) @ w1 + b1, 0.0)
        adv = np.maximum(h @ w2 + b2, 0.0) @ wa + ba
        out = np.empty(4, np.int64)
        lo = 0
        for d, n in enumerate(self.action_space.branches):
            out[d] = int(np.argmax(adv[lo:lo + n]))
            lo += n
        for d, level in self._fixed.items():
            out[d] = level
        return out

    @property
    def epsilon(self) -> float:
        hp = self.hp
        frac = min(1.0, self.steps / max(hp["exploration_steps"], 1))
        return hp["eps_start"] + frac * (hp["eps_end"] - hp["eps_start"])

    def act(self, state: np.ndarray) -> np.ndarray:
        a = self.greedy(state)
        if self.training and self._learned:
            eps = self.epsilon
            if self.hp["exploration"] == "independent":      # classic BDQ: every branch on its own coin
                for d in self._learned:
                    if self._rng.random() < eps:
                        a[d] = self._rng.integers(self.action_space.branches[d])
            elif self._rng.random() < eps:                    # one branch at a time, the others greedy
                d = self._learned[int(self._rng.integers(len(self._learned)))]
                a[d] = self._rng.integers(self.action_space.branches[d])
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
        explored = None
        if self.hp["exploration"] == "branch":
            explored = (np.asarray(a) != self.greedy(s)).astype(np.float32)
        self.buffer.add(s, a, r, s2, done, explored)
        self.steps += 1
        if len(self.buffer) < self.hp["learning_starts"]:
            return
        if self.concurrent:
            self._start_learner()
        else:
            for _ in range(self.hp["updates_per_step"]):
                self.update()
            self._publish()

    def update(self) -> float:
        """One gradient step on a replay minibatch (the math in the module docstring)."""
        hp = self.hp
        s, a, r, s2, done, explored = (torch.as_tensor(x) for x in self.buffer.sample(hp["batch_size"]))
        with self._update_lock:
            both = self.q(torch.cat([s, s2], 0))           # one pass: Q(s) with grad, Q(s') for selection
            n = s.shape[0]
            qs = [q[:n] for q in both]
            with torch.no_grad():
                next_target = self.q_target(s2)
                nxt = torch.stack([next_target[d].gather(1, both[d][n:].argmax(1, keepdim=True)).squeeze(1)
                                   for d in self._learned], 0).mean(0)
                y = r + hp["gamma"] * (1.0 - done) * nxt
            losses = []
            for d in self._learned:
                err = F.smooth_l1_loss(qs[d].gather(1, a[:, d:d + 1]).squeeze(1), y, reduction="none")
                if hp["exploration"] == "branch":
                    # Branch d learns only from frames where no OTHER branch explored: its values are
                    # then "given the others play greedy", without their exploration noise.
                    others = explored.sum(1) - explored[:, d]
                    w = (others == 0).float()
                    losses.append((w * err).sum() / w.sum().clamp(min=1.0))
                else:
                    losses.append(err.mean())
            loss = torch.stack(losses).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.q.parameters(), 10.0)
            self.opt.step()
            with torch.no_grad():
                for p, pt in zip(self.q.parameters(), self.q_target.parameters()):
                    pt.mul_(1.0 - hp["tau"]).add_(p, alpha=hp["tau"])
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

    def __init__(self, action_space: ActionSpace, **kw: Any) -> None:
        kw["concurrent"] = False
        super().__init__(action_space, **kw)
