"""Many robots on one server, policy against policy (``dvfo-bench --robots N``).

Every multi-robot policy meets the same robots (boards, weights) and the same links (each robot its own
draw of the trace, seeded), step after step (one step = one decision of every robot):

  mcia           learnt version x cut per robot (``mcia.py``), shares solved exactly
  neurosurgeon   each robot's default version at the cut with the least latency for it alone at equal
                 shares of the server (Neurosurgeon knows neither the others nor the allocation)
  all_local      each robot's default version on the robot
  all_upload     each robot sends the image for its default version; shares solved exactly
  oracle         the best joint choice with exact shares, by trying every one (N <= 3)
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from dvfo_ros.core.policies.mcia import Mcia
from dvfo_ros.core.twin.fleet import (ACCURACY_SENSITIVE, LATENCY_SENSITIVE, Option, Robot, Server, best_joint,
                                      equal_shares, evaluate, jain)

FLEET_POLICIES = ("mcia", "neurosurgeon", "all_local", "all_upload", "oracle")


def link_sampler(trace: str = "mix") -> Any:
    """(rng, n, steps) -> [steps] arrays of (Mbps, RTT ms) per robot, one step a second, each robot its own draw."""
    from dvfo_ros.core.io.traces import NetworkTrace, load_trace
    src = load_trace(trace)

    def sample(rng: np.random.Generator, n: int, steps: int) -> List[np.ndarray]:
        per_robot = []
        for _ in range(n):
            tr = src if isinstance(src, NetworkTrace) else src.sample(rng)
            t0 = float(rng.uniform(0, tr.duration_s))
            per_robot.append([tr.at(t0 + t) for t in range(steps)])
        return [np.array([per_robot[i][t] for i in range(n)], dtype=float) for t in range(steps)]
    return sample


def robot_sampler(profiles: Sequence[str] = ("nano", "xavier_nx"), max_robots: int = 4) -> Any:
    def sample(rng: np.random.Generator) -> List[Robot]:
        n = int(rng.integers(1, max_robots + 1))
        return [Robot(profile=str(rng.choice(list(profiles))),
                      weight=ACCURACY_SENSITIVE if rng.random() < 0.5 else LATENCY_SENSITIVE) for _ in range(n)]
    return sample


def fleet(n: int, profiles: Sequence[str] = ("nano", "nano", "xavier_nx")) -> List[Robot]:
    """The bench's N robots: boards cycle through ``profiles``, every other task accuracy-sensitive (the first)."""
    return [Robot(profile=profiles[i % len(profiles)], weight=LATENCY_SENSITIVE if i % 2 else ACCURACY_SENSITIVE)
            for i in range(n)]


def train_mcia(episodes: int = 3000, server: Optional[Server] = None, trace: str = "mix", seed: int = 0,
               max_robots: int = 4, profiles: Sequence[str] = ("nano", "xavier_nx"), progress: Any = None) -> Mcia:
    agent = Mcia(seed=seed)
    agent.train(episodes, server or Server(), link_sampler(trace), robot_sampler(profiles, max_robots),
                progress=progress)
    return agent


def _default(r: Robot) -> List[Option]:
    return [o for o in r.options if o.version == r.versions[0]]


def decide(policy: str, robots: Sequence[Robot], mbps: np.ndarray, rtt: np.ndarray, server: Server,
           agent: Optional[Mcia], last: Optional[List[Option]]) -> List[Option]:
    if policy == "mcia":
        assert agent is not None
        return [r.options[a] for r, a in zip(robots, agent.choose(robots, mbps, rtt, last))]
    if policy == "all_local":
        return [next(o for o in _default(r) if o.local) for r in robots]
    if policy == "all_upload":
        return [next(o for o in _default(r) if o.cut == 0) for r in robots]
    if policy == "neurosurgeon":
        out = []
        for i, r in enumerate(robots):
            share = 1.0 / len(robots)
            def lat(o: Option) -> float:
                return float(evaluate([r], [o], [mbps[i]], [rtt[i]], server,
                                      (np.array([share]), np.array([share])))[1][0])
            out.append(min(_default(r), key=lat))
        return out
    if policy == "oracle":
        return best_joint(robots, mbps, rtt, server)[0]
    raise ValueError(f"unknown fleet policy {policy!r}; choose from {', '.join(FLEET_POLICIES)}")


def run_fleet(policy: str, robots: Sequence[Robot], steps: int, server: Server, trace: str = "heldout_wifi_dropouts",
              seed: int = 1000, agent: Optional[Mcia] = None) -> Dict[str, Any]:
    rng = np.random.default_rng(seed)
    links = link_sampler(trace)(rng, len(robots), steps)
    us, lats, accs = [], [], []
    last: Optional[List[Option]] = None
    for t in range(steps):
        mbps, rtt = links[t][:, 0], links[t][:, 1]
        choice = decide(policy, robots, mbps, rtt, server, agent, last)
        shares = equal_shares(choice) if policy == "neurosurgeon" else None
        u, lat = evaluate(robots, choice, mbps, rtt, server, shares)
        us.append(u)
        lats.append(lat)
        accs.append([o.accuracy for o in choice])
        last = choice
    u_arr, lat_arr = np.array(us), np.array(lats)
    slo = np.array([r.slo_ms for r in robots])
    return {"policy": policy, "robots": len(robots), "utility": float(u_arr.mean()),
            "latency_ms_mean": [float(v) for v in lat_arr.mean(0)],
            "latency_ms_p95": [float(v) for v in np.percentile(lat_arr, 95, axis=0)],
            "accuracy": float(np.mean(accs)), "deadline_misses": int((lat_arr > slo).sum()),
            "frames": int(lat_arr.size), "jain": jain(lat_arr.mean(0))}
