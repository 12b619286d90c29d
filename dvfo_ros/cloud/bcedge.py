"""BCEdge (Zhang et al., 2023): the cloud server's scheduler, co-choosing batch size and concurrent instances.

What the paper states and we follow: a maximum-entropy DRL agent (SAC) picks, for the server's
model, the batch size and the number of concurrently executing instances, to maximise a utility of
throughput against latency under per-request SLOs.

state   queue length, arrival rate, least slack, utilisation, and the setting in force
        (``dvfo_ros.core.mdp.scheduler_env.OBS_NAMES``; the real server builds the same vector).
action  one of 16: B in {1, 2, 4, 8} x c in {1, 2, 3, 4} (``ACTIONS``), held for one interval (0.5 s).
reward  the utility of that interval (``scheduler_env.utility``: goodput share - 0.5 x latency / budget).
algo    discrete SAC (Christodoulou 2019, the form for a finite action set): a softmax actor, two
        Q heads over all actions with Polyak-averaged targets, the soft value taken as the exact
        expectation over the actor's distribution, and the temperature alpha tuned so the policy's
        entropy tracks ``target_entropy`` (a fraction of log 16).

Our choices where the paper is silent here: the utility's form and weight (above), two hidden
layers of 64, gamma 0.5 (an interval's choice pays within about a second; at 0.9 the settings' Q
values differed by ~0.3 % of their size, and over 5 training seeds 4 of 5 (3000 intervals) and 2
of 5 (6000) lost more than 5 % to the best fixed setting at some load; at 0.5 none did), target entropy
0.3 x log 16 (0.98 x log |A|, the discrete-SAC paper's, keeps the policy near uniform on 16
actions), and deployment by the actor's most probable action. Trained in the server twin, whose run
times are this machine's measured tail (``dvfo-profile cloud``); ``dvfo-cloud --scheduler bcedge``
loads the checkpoint and decides on the live queue.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dvfo_ros.core.mdp.scheduler_env import ACTIONS, OBS_NAMES, SchedulerEnv

CHECKPOINT_KIND = "dvfo_ros.bcedge/1"


def _mlp(n_in: int, n_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class BCEdge:
    """Discrete SAC over (batch size, instances); ``act(obs)`` -> an index into ``ACTIONS``."""

    name = "bcedge"

    def __init__(self, hidden: int = 64, lr: float = 1e-3, gamma: float = 0.5, tau: float = 0.01,
                 batch_size: int = 128, buffer: int = 50000, target_entropy_frac: float = 0.3,
                 warmup: int = 500, seed: int = 0) -> None:
        self.hp: Dict[str, Any] = dict(hidden=hidden, lr=lr, gamma=gamma, tau=tau, batch_size=batch_size,
                                       buffer=buffer, target_entropy_frac=target_entropy_frac, warmup=warmup,
                                       seed=seed)
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        n_obs, n_act = len(OBS_NAMES), len(ACTIONS)
        self.actor = _mlp(n_obs, n_act, hidden)
        self.q1, self.q2 = _mlp(n_obs, n_act, hidden), _mlp(n_obs, n_act, hidden)
        self.q1_t, self.q2_t = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.target_entropy = float(target_entropy_frac) * float(np.log(n_act))
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.opt_q = torch.optim.Adam(list(self.q1.parameters()) + list(self.q2.parameters()), lr=lr)
        self.opt_alpha = torch.optim.Adam([self.log_alpha], lr=lr)
        self.buf_s = np.zeros((buffer, n_obs), np.float32)
        self.buf_a = np.zeros(buffer, np.int64)
        self.buf_r = np.zeros(buffer, np.float32)
        self.buf_s2 = np.zeros((buffer, n_obs), np.float32)
        self.n = 0
        self.history: Dict[str, List[float]] = {"alpha": [], "entropy": [], "utility": []}

    # ------------------------------------------------------------------ acting
    def probs(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(self.actor(torch.as_tensor(obs, dtype=torch.float32).view(1, -1)), -1)[0].numpy()

    def act(self, obs: np.ndarray, explore: bool = False) -> int:
        p = self.probs(obs)
        return int(self.rng.choice(len(p), p=p / p.sum())) if explore else int(np.argmax(p))

    def decide(self, obs: np.ndarray) -> tuple:
        """(batch size, instances) for the next interval."""
        return ACTIONS[self.act(obs)]

    # ------------------------------------------------------------------ learning
    def remember(self, s: np.ndarray, a: int, r: float, s2: np.ndarray) -> None:
        i = self.n % len(self.buf_a)
        self.buf_s[i], self.buf_a[i], self.buf_r[i], self.buf_s2[i] = s, a, r, s2
        self.n += 1

    def update(self) -> Dict[str, float]:
        size = min(self.n, len(self.buf_a))
        idx = self.rng.integers(0, size, self.hp["batch_size"])
        s, a = torch.as_tensor(self.buf_s[idx]), torch.as_tensor(self.buf_a[idx])
        r, s2 = torch.as_tensor(self.buf_r[idx]), torch.as_tensor(self.buf_s2[idx])
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            logp2 = F.log_softmax(self.actor(s2), -1)
            v2 = (logp2.exp() * (torch.min(self.q1_t(s2), self.q2_t(s2)) - alpha * logp2)).sum(-1)
            y = r + self.hp["gamma"] * v2           # a continuing task: no terminal states
        q_loss = (F.mse_loss(self.q1(s).gather(1, a[:, None])[:, 0], y)
                  + F.mse_loss(self.q2(s).gather(1, a[:, None])[:, 0], y))
        self.opt_q.zero_grad()
        q_loss.backward()
        self.opt_q.step()
        logp = F.log_softmax(self.actor(s), -1)
        p = logp.exp()
        with torch.no_grad():
            q = torch.min(self.q1(s), self.q2(s))
        actor_loss = (p * (alpha * logp - q)).sum(-1).mean()
        self.opt_actor.zero_grad()
        actor_loss.backward()
        self.opt_actor.step()
        entropy = -(p.detach() * logp.detach()).sum(-1).mean()
        alpha_loss = self.log_alpha * (entropy - self.target_entropy)   # alpha rises when entropy falls below
        self.opt_alpha.zero_grad()
        alpha_loss.backward()
        self.opt_alpha.step()
        tau = self.hp["tau"]
        with torch.no_grad():
            for net, tgt in ((self.q1, self.q1_t), (self.q2, self.q2_t)):
                for w, wt in zip(net.parameters(), tgt.parameters()):
                    wt.mul_(1 - tau).add_(tau * w)
        return {"q_loss": float(q_loss.detach()), "entropy": float(entropy), "alpha": float(alpha)}

    def train(self, env: SchedulerEnv, steps: int, progress: bool = False) -> Dict[str, Any]:
        """``steps`` intervals in the server twin, one SAC update per interval after ``warmup``."""
        from tqdm import tqdm

        obs, _ = env.reset()
        bar = tqdm(range(steps), desc="train bcedge", unit="interval", disable=not progress, leave=False)
        stats: Dict[str, float] = {}
        for t in bar:
            a = int(self.rng.integers(len(ACTIONS))) if self.n < self.hp["warmup"] else self.act(obs, explore=True)
            obs2, u, _, truncated, _ = env.step(a)
            self.remember(obs, a, u, obs2)
            obs = obs2
            if truncated:
                obs, _ = env.reset()
            if self.n >= self.hp["warmup"]:
                stats = self.update()
                if t % 50 == 0:
                    self.history["alpha"].append(stats["alpha"])
                    self.history["entropy"].append(stats["entropy"])
            if t % 50 == 0:
                self.history["utility"].append(u)
        return {"steps": steps, **stats}

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> Dict[str, Any]:
        return {"kind": CHECKPOINT_KIND, "hp": dict(self.hp), "actor": self.actor.state_dict(),
                "q1": self.q1.state_dict(), "q2": self.q2.state_dict(),
                "log_alpha": float(self.log_alpha.detach()), "history": self.history}

    def save(self, path: str) -> None:
        import os
        tmp = f"{path}.tmp"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "BCEdge":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear line
            raise ValueError(f"{path}: not a readable bcedge checkpoint ({type(exc).__name__})") from None
        if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"{path}: not a bcedge checkpoint (dvfo-bench cloud --save writes one)")
        agent = cls(**state["hp"])
        agent.actor.load_state_dict(state["actor"])
        agent.q1.load_state_dict(state["q1"])
        agent.q2.load_state_dict(state["q2"])
        with torch.no_grad():
            agent.log_alpha.fill_(float(state["log_alpha"]))
        agent.history = dict(state.get("history") or agent.history)
        return agent


def cached_bcedge(profile: str = "cpu_resnet18", steps: int = 6000, seed: int = 0, progress: bool = True) -> BCEdge:
    """BCEdge for a server profile: loaded from the per-user cache, else trained in the twin once and cached
    (``dvfo-cloud --scheduler bcedge`` with no checkpoint; 6000 intervals take about 30 s of one core)."""
    import os

    from dvfo_ros.core.inference.collab import user_artifact_dir
    from dvfo_ros.core.twin.server import load_server_profile

    prof = load_server_profile(profile)
    path = os.path.join(user_artifact_dir(), "schedulers", f"bcedge_{prof.name}_{steps}_{seed}.pt")
    if os.path.isfile(path):
        try:
            return BCEdge.load(path)
        except ValueError:
            pass                                   # unreadable cache: train again and replace it
    agent = BCEdge(seed=seed)
    agent.train(SchedulerEnv(prof, seed=seed), steps, progress=progress)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        agent.save(path)
    except OSError:
        pass                                       # a read-only home: it is simply trained again next time
    return agent
