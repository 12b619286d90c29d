"""dvfo: a joint-action Q-learner over (CPU, GPU, EMC, xi) with thinking-while-moving concurrency.

Network: one trunk, ONE linear head emitting a state value and, for every offload ratio xi, a
table per clock branch and a table per pair of clock branches; the Q-value of a JOINT action is
their sum::

    h = trunk(s)
    Q(s, a) = V(h) + X(h)[xi] + sum_d A_d(h)[a_d, xi] + sum_{d<d'} B_dd'(h)[a_d, a_d', xi]

Pairwise clock tables capture the interactions that matter (GPU x EMC clock in a roofline), which a
branch-wise BDQ head cannot. Every clock table is conditioned on xi because the best clocks depend on
it (at xi = 0 top clocks pay, when most channels go to the cloud low clocks do); with clock tables
shared across xi, DVFO lost to ``dvfs_only`` (its own action space at xi = 0) by 6-21 % on held-out
traces; with this head each xi slice is as expressive as ``dvfs_only``'s Q.

Loss on the joint action taken, double-DQN target (gamma = 0 makes it a contextual bandit)::

    y = r + gamma * (1 - done) * Q_target(s', argmax_a' Q(s', a'))
    loss = mean Huber(Q(s, a) - y)          (see "Regression" below)

Greedy action: argmax over every joint action (5 x 8 x 4 x 11 = 1760) by NumPy broadcasting of
the small tables: tens of microseconds, no torch call on the acting path.

Concurrency (DVFO, after Xiao et al., "Thinking While Moving", ICLR 2020): acting and learning
never wait for each other. ``act`` uses a NumPy copy of the network published by the learner;
``observe`` only appends to the shared replay buffer; a learner thread trains while frames run. The
state carries the previous action, the time since it was chosen and the action-selection latency.
The network reads the state's first ``mdp.DVFO_STATE_DIM`` features, the ones DVFO's paper observes;
the context features after them (co-runner load, edge-server users, accuracy requirement) are for the
seed systems that observe them.
``concurrent=False`` (``dvfo_sequential``, the ablation) learns inline in ``observe``, on the
frame's critical path, ``updates_per_step`` updates a frame.

Pacing. On a robot (``pacing="real"``) the learner is that thread, racing the camera. In the twin
(``pacing="sim"``, what ``rollout`` sets for training and benches) time is simulated, so the learner
is given its share of work per simulated frame instead of wall time: after a frame of interval T ms
it takes ``T / learner_step_ms`` gradient steps (carried over as a fraction, capped at
``replay_ratio`` per observed frame, as the thread is), then publishes. The sequential ablation's
inline updates cost ``learner_step_ms`` each on the frame's path, and a decision costs ``act_ms``.
Training is then CPU-bound and, for a seed, the same run twice. ``learner_step_ms`` = 4, ``act_ms``
= 0.1: our assumptions for a Jetson's ARM core (3.1 and 0.09 ms on one x86 core here).

Exploration (epsilon decays linearly over ``exploration_steps``; ``exploration.py``): ``mixed``
(default: a share ``clock_share`` = 0.8 of the exploratory frames draw random clocks at the greedy xi,
the rest a random joint action that runs locally with probability ``local_share`` = 0.5: with xi
uniform, a policy whose greedy choice offloads left the local slice with 1 % of its frames and then
offloaded into a 0.5 Mbps link), ``joint`` (uniform; 10 in 11 then offload), ``independent`` (each
branch its own coin) or ``branch`` (one random branch moved).

What the network reads (our choice; the paper observes the clocks and, with Thinking While Moving, the
previous action). Where a clock switch is free (the shipped twin profiles) nothing the last frame left in the
state (``qtables.LAST_FRAME``: clocks in force, utilisations, latency, energy, previous action, time since it)
changes this frame's cost, and a network that reads them fits the noise in them: on the Nano's vit_b_16
groups of the grid its choice cycled (8 distinct actions in 20 frames of one constant link, the best fixed
action's reward -0.591, the cycle's mean -0.719; ``scripts/dvfo_diagnose.py``), and it lost to
``offload_only`` by more than 1 % in 9 of 30 cells, to ``dvfs_only`` in 5. Blind to them (``last_frame``
False): 2 and 0 of 30, mean gap to the oracle +11.5 % -> +5.5 %. Masking only the outcomes and keeping the
clocks and previous action: 7 and 0, +8.6 % (the clocks drive the cycle). So ``twin_options`` turns
``last_frame`` on only where a switch costs (``--switch-cost``, ``twin/switching.py``): there the clocks in
force do shape the frame, and gamma > 0 has something to learn. The network still reads the link, the
frame's attention quantiles and the temperature. Checkpoints from before the option load reading them all.

Deployed weights (our choice). Once training ends the policy acts on a Polyak average of the online
net (``average_tau`` = 0.01, about the last 100 updates), not on its last SGD iterate: on the grid's
budget the last iterate's clock choices ranged +0.5 to +3.8 % over the oracle across three training
seeds for one group, the average's +0.0 to +1.1 %.

Deployment guard (our choice; the paper is silent). A Q-network extrapolates into network regimes it
met rarely: trained on ``--trace mix`` and run on Wi-Fi at 40-70 Mbps and 2-7 ms RTT, it predicted
xi = 0.2 to beat local by 0.004 where it cost 0.42 more (DVFO +4.4 % over the oracle, ``dvfs_only``
+0.0 %). So, once trained, it offloads only at an xi taken at least ``min_support`` (30) times in
training under similar network conditions (``NetworkSupport``: 10 x 10 bins of the log-scaled
bandwidth and RTT features), and only when predicted to beat the best local action by
``offload_margin`` (0.02: 2 % of the edge's cost at top clocks, about the regression's error). xi = 0
is always allowed: the guard can only replace an offload by the best local action. ``min_support``
was 3 until a seed study on ``make bench-seeds``' Nano setup (co-runners, 9000 frames of the mix, the
held-out Wi-Fi trace): 3 of 6 runs lost 2.5-2.8 % to ``dvfs_only``, offloading at low clocks in states the
mix meets rarely; at 30 every run was within 0.15 % of it. Per xi is not enough: of 1600 offload actions
most are never tried in a bin, and untried ones read optimistic (Q - true +1.03 on the grid's Orin NX
vit_b_16 cell at 8 Mbps, -0.03 for those tried 3+ times), so the argmax found them (+35 % over the
oracle). So it also offloads only at a JOINT action taken ``joint_support`` (3) times in the bin: the
Orin's vit_b_16 groups then lose to a subset policy in 1 cell of 30 (was 2; max gap +35 -> +3.2 %), the
Nano's in 1 (was 2; mean gap +5.5 -> +5.3 %); 10 left the Nano one cell at +51 %.

Local slice without the link (our choice; the paper is silent). A local frame never touches the
network, so every xi = 0 action is valued on the state with bandwidth and RTT masked (``local_blind``,
``qtables.mask_network``): Q(s, a) = net(mask(s) if xi = 0 else s, a). Reading the link, the local
slice extrapolated on a Wi-Fi trace faster than any in training and chose worse clocks than
``dvfs_only`` (+0.8 % / +1.5 % over the oracle on Xavier NX / TX2, where ``dvfs_only`` was +0.0 %);
blind to it, +0.0 % on both. Checkpoints from before the option load with it off.

Regression (our choices; the paper states a DQN and is silent on these): Huber loss, as in DQN
(Mnih et al., 2015), on rewards floored at ``reward_floor`` = -5 (five times the edge's cost at top
clocks): below it the size of a catastrophe (an offload into a 600 ms dropout costs about -40) says
nothing to the argmax, and its squared error swamped the 0.05 between neighbouring clock levels.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from dvfo_ros.core.policies.base import Policy, register
from dvfo_ros.core.policies.exploration import MODES, explore
from dvfo_ros.core.policies.learner import LearnerThread
from dvfo_ros.core.policies.qtables import NetworkSupport, NumpyQ, PairwiseQNet, ReplayBuffer, adam, input_mask
from dvfo_ros.core.mdp import BRANCH_NAMES, DVFO_STATE_DIM, STATE_DIM, ActionSpace

XI = BRANCH_NAMES.index("xi")
@register("dvfo")
class DvfoAgent(LearnerThread, Policy):
    learns = True
    reads_switch_cost = True      # twin_options: the network reads the last frame where a clock switch costs

    def __init__(self, action_space: ActionSpace, *, concurrent: bool = True, seed: int = 0,
                 hidden: int = 128, gamma: float = 0.0, lr: float = 1e-3,
                 batch_size: int = 128, buffer_size: int = 100_000, learning_starts: int = 500,
                 exploration_steps: int = 4000, eps_start: float = 1.0, eps_end: float = 0.05,
                 tau: float = 0.01, updates_per_step: int = 1, replay_ratio: float = 4.0,
                 publish_every: int = 4, fixed: Optional[Dict[str, int]] = None,
                 exploration: str = "mixed", learner_step_ms: float = 4.0, act_ms: float = 0.1,
                 head: str = "xi", reward_floor: float = -5.0, loss: str = "huber",
                 clock_share: float = 0.8, heads: int = 1, offload_margin: float = 0.02,
                 min_support: int = 30, support_bins: int = 10, local_share: float = 0.5,
                 average_tau: float = 0.01, local_blind: bool = True, last_frame: bool = False,
                 joint_support: int = 3) -> None:
        super().__init__(action_space)
        self.concurrent = bool(concurrent)
        self.hp: Dict[str, Any] = dict(
            concurrent=self.concurrent, seed=int(seed), hidden=int(hidden),
            gamma=float(gamma), lr=float(lr), batch_size=int(batch_size), buffer_size=int(buffer_size),
            learning_starts=int(learning_starts), exploration_steps=int(exploration_steps),
            eps_start=float(eps_start), eps_end=float(eps_end), tau=float(tau),
            updates_per_step=int(updates_per_step), replay_ratio=float(replay_ratio),
            publish_every=int(publish_every), fixed=dict(fixed or {}), exploration=str(exploration),
            learner_step_ms=float(learner_step_ms), act_ms=float(act_ms), head=str(head),
            reward_floor=float(reward_floor), loss=str(loss), clock_share=float(clock_share),
            heads=int(heads), offload_margin=float(offload_margin), min_support=int(min_support),
            support_bins=int(support_bins), local_share=float(local_share), average_tau=float(average_tau),
            local_blind=bool(local_blind), last_frame=bool(last_frame), joint_support=int(joint_support))
        if self.hp["heads"] < 1 or min(self.hp["min_support"], self.hp["joint_support"], offload_margin) < 0:
            raise ValueError("heads must be >= 1, min_support, joint_support and offload_margin >= 0")
        if not (0.0 <= self.hp["local_share"] <= 1.0 and 0.0 < self.hp["average_tau"] <= 1.0):
            raise ValueError("local_share must be in [0, 1] and average_tau in (0, 1]")
        if head not in ("xi", "pairwise"):
            raise ValueError("head must be 'xi' (clock tables per offload ratio) or 'pairwise'")
        if self.hp["learner_step_ms"] <= 0 or self.hp["act_ms"] < 0:
            raise ValueError("learner_step_ms must be > 0 and act_ms >= 0")
        if exploration not in MODES:
            raise ValueError("exploration must be 'joint', 'mixed' (half joint, half clocks at the greedy xi), "
                             "'branch' (one branch at a time) or 'independent'")
        for name, level in self.hp["fixed"].items():
            if name not in BRANCH_NAMES:
                raise ValueError(f"fixed branch '{name}' is not one of {', '.join(BRANCH_NAMES)}")
            if not 0 <= int(level) < action_space.branches[BRANCH_NAMES.index(name)]:
                raise ValueError(f"fixed level {level} outside branch '{name}'")
        self._fixed = {BRANCH_NAMES.index(k): int(v) for k, v in self.hp["fixed"].items()}
        self._learned = [d for d in range(4) if d not in self._fixed]
        net = (DVFO_STATE_DIM, action_space.branches, hidden, head, heads, self.hp["local_blind"],
               self.hp["last_frame"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.q = PairwiseQNet(*net)
        self.q_target = PairwiseQNet(*net)
        self.q_target.load_state_dict(self.q.state_dict())
        self.q_avg = PairwiseQNet(*net)
        self.q_avg.load_state_dict(self.q.state_dict())
        self.opt = adam(self.q.parameters(), lr)
        self.buffer = ReplayBuffer(buffer_size, STATE_DIM, seed=seed)
        self._rng = np.random.default_rng(seed + 7)
        self.support = NetworkSupport(action_space.branches, self.hp["support_bins"])
        self.steps = 0                    # transitions observed
        self.updates = 0                  # gradient steps taken
        self.training = True
        self.last_loss = float("nan")
        self.last_explored = False
        self._publish()
        self._init_learner()
        self._update_lock = threading.Lock()
        self.pacing = "real"
        self._budget = 0.0                # simulated learner time not yet spent, in updates
        self.last_inline_ms = 0.0         # sim pacing: the inline learning time of the last observe

    def set_pacing(self, pacing: str) -> None:
        """"real": the learner thread races wall time (a robot); "sim": ``advance`` gives it its share
        of each simulated frame (the twin: CPU-bound and reproducible)."""
        if pacing not in ("real", "sim"):
            raise ValueError("pacing must be 'real' or 'sim'")
        self.pacing = pacing

    @property
    def sim_decision_ms(self) -> float:
        return float(self.hp["act_ms"])

    def advance(self, frame_ms: float) -> int:
        """Sim pacing: the concurrent learner's gradient steps during a simulated frame of ``frame_ms``
        (module docstring); returns how many it took."""
        if self.pacing != "sim" or not self.concurrent or not self.training \
                or len(self.buffer) < self.hp["learning_starts"]:
            return 0
        self._budget += max(float(frame_ms), 0.0) / self.hp["learner_step_ms"]
        cap = int(self.hp["replay_ratio"] * self.steps) - self.updates
        n = max(0, min(int(self._budget), cap))
        self._budget = min(self._budget - n, 1.0) if n == cap else self._budget - n
        for _ in range(n):
            self.update()
        if n:
            self._publish()
        return n

    # ---- acting ---------------------------------------------------------------------------
    def _publish(self) -> None:
        """Copy the acting net (the online one in training, the averaged one after) to NumPy for
        lock-free acting."""
        self._actor = NumpyQ(self.q if self.training else self.q_avg)

    def q_table(self, state: np.ndarray) -> np.ndarray:
        """Q of every joint action for one state from the published weights, shape = branches."""
        return self._actor(state)

    def greedy(self, state: np.ndarray, fixed: Optional[Dict[int, int]] = None) -> np.ndarray:
        """argmax over every joint action (branches in ``fixed`` held at their level)."""
        q = self.q_table(state)
        if not self.training and self.hp["joint_support"] > 0:
            q = np.where(self.support.seen_joint(state, self.hp["joint_support"]), q, -np.inf)
        pinned = dict(self._fixed)
        pinned.update(fixed or {})
        index = tuple(slice(lvl, lvl + 1) if d in pinned else slice(None) for d, lvl in
                      ((d, pinned.get(d, 0)) for d in range(4)))
        sub = q[index]
        if XI not in pinned and not self.training and self.hp["min_support"] > 0:
            sub = np.where(self.support.seen(state, self.hp["min_support"]), sub, -np.inf)
        margin = self.hp["offload_margin"]
        if XI not in pinned and margin > 0 and sub.shape[XI] > 1 \
                and sub[..., 1:].max() < sub[..., :1].max() + margin:
            sub = sub[..., :1]               # no offload unless it is predicted to pay by the margin
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
        if not self.training:
            return a
        hp = self.hp
        return explore(a, learned, eps=self.epsilon, rng=self._rng, branches=self.action_space.branches,
                       mode=hp["exploration"], clock_share=hp["clock_share"], local_share=hp["local_share"], xi=XI)

    def act(self, state: np.ndarray) -> np.ndarray:
        greedy = self.greedy(state)
        a = self._explore(greedy.copy(), self._learned)
        self.last_explored = bool(np.any(a != greedy))     # training curves keep greedy frames apart
        return a

    def train(self, mode: bool = True) -> "DvfoAgent":
        self.training = bool(mode)
        if not mode:
            self.close()
        self._publish()
        return self

    # ---- learning -------------------------------------------------------------------------
    def observe(self, s: np.ndarray, a: np.ndarray, r: float, s2: np.ndarray, done: bool) -> None:
        if not self.training:
            return
        self.buffer.add(s, a, r, s2, done)
        self.support.add(s, a)
        self.steps += 1
        if len(self.buffer) < self.hp["learning_starts"]:
            return
        if self.concurrent:
            if self.pacing == "real":
                self._start_learner()
        else:
            for _ in range(self.hp["updates_per_step"]):
                self.update()
            self._publish()
            self.last_inline_ms = self.hp["updates_per_step"] * self.hp["learner_step_ms"]

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
        """Polyak steps: the TD target net (``tau``) and the deployed average (``average_tau``, with a
        warm-up so that after k updates it averages about the last k: 1 - decay = max(tau, 1/(k+1)))."""
        avg = max(self.hp["average_tau"], 1.0 / (self.updates + 1))
        with torch.no_grad():
            for p, pt, pa in zip(self.q.parameters(), self.q_target.parameters(), self.q_avg.parameters()):
                pt.mul_(1.0 - self.hp["tau"]).add_(p, alpha=self.hp["tau"])
                pa.mul_(1.0 - avg).add_(p, alpha=avg)

    def update(self) -> float:
        """One gradient step on a replay minibatch (the math in the module docstring)."""
        hp = self.hp
        s, a, r, s2, done, _ = (torch.as_tensor(x) for x in self.buffer.sample(hp["batch_size"]))
        with self._update_lock:
            y = self.td_target(r.clamp(min=hp["reward_floor"]), s2, done)
            q_sa = self.q.q_of(s, a)                              # [batch, heads]: every head regresses y
            y = y.view(-1, 1).expand_as(q_sa)
            loss = nn.functional.smooth_l1_loss(q_sa, y) if hp["loss"] == "huber" else ((q_sa - y) ** 2).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.q.parameters(), 10.0)
            self.opt.step()
            self.soft_update()
            self.updates += 1
        self.last_loss = float(loss.detach())
        return self.last_loss

    def learn_offline(self, transitions: Iterable[Tuple[Any, Any, float, Any, bool]], steps: int) -> float:
        """Batch RL from recorded (s, a, r, s2, done) (e.g. a rosbag's Transition messages)."""
        n = 0
        for s, a, r, s2, done in transitions:
            self.buffer.add(np.asarray(s, np.float32), np.asarray(a, np.int64), float(r),
                            np.asarray(s2, np.float32), bool(done))
            self.support.add(np.asarray(s, np.float32), np.asarray(a, np.int64))
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
                    "q_avg": {k: v.clone() for k, v in self.q_avg.state_dict().items()},
                    "steps": int(self.steps), "updates": int(self.updates),
                    "support": torch.as_tensor(self.support.counts.copy()),
                    "joint_support": torch.as_tensor(self.support.joint.copy()),
                    "local_blind": bool(self.hp["local_blind"]), "last_frame": bool(self.hp["last_frame"])}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        with self._update_lock:
            self.q.load_state_dict(state["q"])
            self.q_target.load_state_dict(state.get("q_target", state["q"]))
            self.q_avg.load_state_dict(state.get("q_avg", state["q"]))   # older checkpoints: the online net
            blind = bool(state.get("local_blind", False))   # older checkpoints: the local slice saw the link
            self.hp["local_blind"] = blind
            # older checkpoints: the network read the last frame's features
            self.hp["last_frame"] = bool(state.get("last_frame", True))
            mask = torch.as_tensor(input_mask(self.hp["last_frame"])[:DVFO_STATE_DIM])
            for net in (self.q, self.q_target, self.q_avg):
                net.local_blind = blind
                net.mask.copy_(mask)
            self.steps = int(state.get("steps", 0))
            self.updates = int(state.get("updates", 0))
            if "support" in state and tuple(state["support"].shape) == self.support.counts.shape:
                self.support.counts = np.asarray(state["support"], np.int64).copy()
            else:                            # a checkpoint from before the guard: no guard
                self.support.counts[...] = max(self.hp["min_support"], 1)
            if "joint_support" in state and tuple(state["joint_support"].shape) == self.support.joint.shape:
                self.support.joint = np.asarray(state["joint_support"], np.int32).copy()
            else:                            # a checkpoint from before the joint guard: no joint guard
                self.support.joint[...] = max(self.hp["joint_support"], 1)
        self._publish()


@register("dvfo_sequential")
class SequentialDvfoAgent(DvfoAgent):
    """The ablation: the same agent with concurrency off (learning inline, decision on the path)."""

    not_live = ("dvfo_sequential is dvfo's concurrency ablation, measured in the twin (a robot's frames "
                "never wait for the policy node); run dvfo")

    def __init__(self, action_space: ActionSpace, **kw: Any) -> None:
        kw["concurrent"] = False
        super().__init__(action_space, **kw)
