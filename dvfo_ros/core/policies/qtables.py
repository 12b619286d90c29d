"""The DVFO agent's parts: the xi-conditioned joint Q-table network, the shared replay buffer and the
count of training frames per network condition and offload ratio (and joint action) that guards offloading
at deployment.

The math is in ``dvfo.py``'s docstring; this file only holds the data structures.
"""
from __future__ import annotations

import itertools
import threading
from typing import Iterable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
import torch
from torch import nn

from dvfo_ros.core.mdp import STATE_NAMES

_Array = TypeVar("_Array", torch.Tensor, np.ndarray)
_NET = (STATE_NAMES.index("bandwidth_mbps"), STATE_NAMES.index("rtt_ms"))
# what the last frame left in the state: the clocks in force and commanded, its action, its measured outcomes
LAST_FRAME = ("cpu_level", "gpu_level", "emc_level", "cpu_util", "gpu_util", "emc_util", "last_latency_ms",
              "last_energy_j", "prev_cpu_level", "prev_gpu_level", "prev_emc_level", "prev_offload_ratio",
              "time_since_action_ms", "decision_ms")


def input_mask(last_frame: bool) -> np.ndarray:
    """1 for each state feature the Q-network reads, 0 for one it is blind to (``LAST_FRAME``'s unless
    ``last_frame``)."""
    return np.array([0.0 if not last_frame and n in LAST_FRAME else 1.0 for n in STATE_NAMES], np.float32)


def _layout(branches: Sequence[int], head: str = "xi") -> List[Tuple[Tuple[int, ...], int, int, Tuple[int, ...]]]:
    """Where each table sits in the head's output: (dims, start, stop, broadcast shape). ``head="xi"``:
    xi alone, then each clock branch and each pair of clock branches, every one with xi as its last
    dim (xi is the last branch); ``"pairwise"``: each branch and each pair of branches."""
    n = [int(b) for b in branches]
    xi = len(n) - 1
    clocks = list(range(xi))
    tables: List[Tuple[int, ...]] = [(xi,)] + [(d, xi) for d in clocks] + \
        [(d, e, xi) for d, e in itertools.combinations(clocks, 2)]
    if head == "pairwise":
        tables = [(d,) for d in range(len(n))] + list(itertools.combinations(range(len(n)), 2))
    out: List[Tuple[Tuple[int, ...], int, int, Tuple[int, ...]]] = []
    lo = 1
    for dims in tables:
        size = int(np.prod([n[d] for d in dims]))
        shape = tuple(n[d] if d in dims else 1 for d in range(len(n)))
        out.append((dims, lo, lo + size, shape))
        lo += size
    return out


def mask_network(s: _Array) -> _Array:
    """``s`` (a tensor or array) with its network features (bandwidth, RTT) set to 0: what the local
    slice reads."""
    out = s.clone() if isinstance(s, torch.Tensor) else np.array(s, copy=True)
    out[..., list(_NET)] = 0.0
    return out


class PairwiseQNet(nn.Module):
    """Shared trunk, then ONE linear layer emitting, for each of ``heads`` heads, V and every
    xi-conditioned table (``_layout``). With several heads the policy's Q is their minimum (clipped
    double Q, as in TD3): where data is thin the heads' extrapolations disagree and the minimum is
    pessimistic, where data is rich they agree.

    ``local_blind``: an action that runs locally (xi = 0, the last branch's level 0) is valued on the
    state with its network features masked (``mask_network``), Q(s, a) = net(mask(s) if xi = 0 else s, a):
    a local frame never touches the link, so the local slice cannot extrapolate in network regimes
    training never met.

    ``last_frame`` False: the features the last frame left (``LAST_FRAME``) are read as 0 (``input_mask``;
    see dvfo.py's "What the network reads")."""

    strides: torch.Tensor                   # buffers (not saved: they follow from the layout)
    offsets: torch.Tensor
    mask: torch.Tensor

    def __init__(self, state_dim: int, branches: Sequence[int], hidden: int = 128, head: str = "xi",
                 heads: int = 1, local_blind: bool = False, last_frame: bool = True) -> None:
        super().__init__()
        self.local_blind = bool(local_blind)
        self.register_buffer("mask", torch.as_tensor(input_mask(last_frame)[:state_dim]), persistent=False)
        self.state_dim = int(state_dim)     # reads the state's first state_dim features (DVFO's own)
        self.branches = [int(n) for n in branches]
        self.layout = _layout(self.branches, head)
        self.heads = int(heads)
        self.size = self.layout[-1][2]
        self.trunk = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, self.heads * self.size)
        # a joint action's row-major index into every table, as one matrix product: a @ strides + offsets
        strides = torch.zeros(len(self.branches), len(self.layout), dtype=torch.int64)
        for j, (dims, _, _, _) in enumerate(self.layout):
            step = 1
            for d in reversed(dims):
                strides[d, j] = step
                step *= self.branches[d]
        self.register_buffer("strides", strides, persistent=False)
        self.register_buffer("offsets", torch.tensor([lo for _, lo, _, _ in self.layout]), persistent=False)

    def _tables(self, s: torch.Tensor) -> torch.Tensor:
        b = s.shape[0]
        z = self.out(self.trunk(s[:, :self.state_dim] * self.mask)).view(b * self.heads, self.size)
        q = z[:, :1].view(b * self.heads, *([1] * len(self.branches)))
        for _, lo, hi, shape in self.layout:
            q = q + z[:, lo:hi].view(b * self.heads, *shape)
        return q.view(b, self.heads, *q.shape[1:]).amin(dim=1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """Q of every joint action (the minimum over heads), shape [batch, n_cpu, n_gpu, n_emc, n_xi]."""
        if not self.local_blind:
            return self._tables(s)
        both = self._tables(torch.cat([s, mask_network(s)]))
        full, local = both.split(s.shape[0])
        return torch.cat([local[..., :1], full[..., 1:]], dim=-1)

    def q_of(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Q(s, a) of the joint actions taken, per head: [batch, heads] (one gather of every table)."""
        b = s.shape[0]
        if self.local_blind:                                    # local actions read the masked state
            s = torch.where((a[:, -1] == 0).unsqueeze(1), mask_network(s), s)
        z = self.out(self.trunk(s[:, :self.state_dim] * self.mask)).view(b, self.heads, self.size)
        idx = a @ self.strides + self.offsets                  # [batch, tables]: each table's flat index
        return z[:, :, 0] + z.gather(2, idx.unsqueeze(1).expand(b, self.heads, idx.shape[1])).sum(2)


class NumpyQ:
    """A NumPy copy of a ``PairwiseQNet``'s weights for lock-free acting (the learner publishes a new
    one; swapping the reference is atomic for readers). Calling it gives the same tables as the net's
    ``forward`` for one state, with no torch call."""

    def __init__(self, net: PairwiseQNet) -> None:
        with torch.no_grad():
            l1, l2 = net.trunk[0], net.trunk[2]
            assert isinstance(l1, nn.Linear) and isinstance(l2, nn.Linear)
            self.weights = (l1.weight.numpy().T.copy(), l1.bias.numpy().copy(), l2.weight.numpy().T.copy(),
                            l2.bias.numpy().copy(), net.out.weight.numpy().T.copy(), net.out.bias.numpy().copy())
            self.mask = net.mask.numpy().copy()
        self.state_dim, self.heads, self.size = net.state_dim, net.heads, net.size
        self.layout, self.branches, self.local_blind = net.layout, tuple(net.branches), net.local_blind

    def _tables(self, state: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2, wo, bo = self.weights
        h = np.maximum((state[..., :self.state_dim] * self.mask) @ w1 + b1, 0.0)
        zs = (np.maximum(h @ w2 + b2, 0.0) @ wo + bo).reshape(self.heads, self.size)
        out: Optional[np.ndarray] = None
        for z in zs:                                            # the minimum over heads
            q = np.full(self.branches, z[0], np.float32)
            for _, lo, hi, shape in self.layout:
                q += z[lo:hi].reshape(shape)
            out = q if out is None else np.minimum(out, q)
        assert out is not None
        return out

    def __call__(self, state: np.ndarray) -> np.ndarray:
        """Q of every joint action for one state, shape = branches."""
        state = np.asarray(state, np.float32)
        out = self._tables(state)
        if self.local_blind:                    # the local slice reads the state without the link
            out[..., 0] = self._tables(mask_network(state))[..., 0]
        return out


def adam(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam, fused where this torch has the fused CPU kernel (half a learner step here), else plain."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):      # an older torch (a Jetson's wheel): no fused CPU Adam
        return torch.optim.Adam(params, lr=lr)


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


class NetworkSupport:
    """Training frames per (bandwidth bin, RTT bin, xi level) and per (bandwidth bin, RTT bin, joint action):
    the state's two log-scaled network features (each in [0, 1]) cut into ``bins`` equal bins. ``seen`` says
    at which xi levels, ``seen_joint`` at which joint actions, the agent has enough experience under a
    state's network conditions (running locally, xi = 0, always)."""

    def __init__(self, branches: Sequence[int], bins: int = 10) -> None:
        if bins < 1:
            raise ValueError("support_bins must be >= 1")
        self.counts = np.zeros((int(bins), int(bins), int(branches[-1])), np.int64)
        self.joint = np.zeros((int(bins), int(bins)) + tuple(int(b) for b in branches), np.int32)

    def cell(self, state: np.ndarray) -> Tuple[int, int]:
        n = self.counts.shape[0]
        bw, rtt = (min(max(int(float(state[i]) * n), 0), n - 1) for i in _NET)
        return bw, rtt

    def add(self, state: np.ndarray, action: "Sequence[int] | np.ndarray") -> None:
        cell = self.cell(state)
        self.counts[cell + (int(action[-1]),)] += 1
        self.joint[cell + tuple(int(x) for x in action)] += 1

    def seen(self, state: np.ndarray, minimum: int) -> np.ndarray:
        ok = self.counts[self.cell(state)] >= int(minimum)
        ok[0] = True
        return ok

    def seen_joint(self, state: np.ndarray, minimum: int) -> np.ndarray:
        ok = self.joint[self.cell(state)] >= int(minimum)
        ok[..., 0] = True
        return ok
