"""Many robots on one server, policy against policy (``dvfo-bench --robots N``).

Every multi-robot policy meets the same robots (boards, weights) and the same links (each robot its own
draw of the trace, seeded), step after step (one step = one decision of every robot):

  mcia           learnt version x cut per robot (``mcia.py``), shares solved exactly
  neurosurgeon   each robot's default version at the cut with the least latency for it alone at equal
                 shares of the server (Neurosurgeon knows neither the others nor the allocation)
  all_local      each robot's default version on the robot
  all_upload     each robot sends the image for its default version; shares solved exactly
  oracle         the best joint choice with exact shares, by trying every one (N <= 3)
  dvfo           DVFO on each robot alone (``train_dvfo``): its default version at DVFO's split, its own
                 clocks and share xi of the split's channels, chosen by a DVFO agent trained in the
                 single-robot twin against an equal share of the server; judged at equal shares

Every row is priced the same way (``twin.fleet.priced``: the board twin at the chosen clocks, top clocks but
for dvfo, with the link and the server's rate the shares give), so the board's energy per frame is reported
beside the utility. DVFO minimises its own energy-latency cost, not the fleet's utility, which does not count
energy: the two columns together say what each robot pays for what.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dvfo_ros.core.policies.mcia import Mcia
from dvfo_ros.core.twin import published_accuracy
from dvfo_ros.core.twin.fleet import (ACCURACY_SENSITIVE, LATENCY_SENSITIVE, Option, Robot, Server, allocate,
                                      best_joint, equal_shares, evaluate, jain, option_cost, priced)

FLEET_POLICIES = ("mcia", "neurosurgeon", "all_local", "all_upload", "oracle", "dvfo")
DvfoKey = Tuple[str, str, float, int]        # (board, version, SLO ms, input size): robots that share a DVFO agent


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


def _dvfo_key(r: Robot) -> DvfoKey:
    return (r.profile, r.versions[0], float(r.slo_ms), int(r.input_size))


def dvfo_setup(robot: Robot, server: Server, n_robots: int, trace: Any = "mix", seed: int = 0) -> Any:
    """The single-robot twin a robot's DVFO is trained and run in: its board and default version, a camera at
    one frame per SLO (so the SLO is the frame period), the server at an equal share of its rate (DVFO knows
    neither the other robots nor the allocation), the DVFO reward's defaults (eta 0.5)."""
    from dvfo_ros.core.policies.setup import TwinSetup
    return TwinSetup(device=robot.profile, model=robot.versions[0], trace=trace, seed=seed,
                     fps=1000.0 / robot.slo_ms, input_size=robot.input_size,
                     cloud_gflops=server.gmacs_per_s / max(1, n_robots))


def train_dvfo(robots: Sequence[Robot], server: Server, trace: str = "mix", seed: int = 0, steps: int = 4000,
               progress: Any = None) -> Dict[DvfoKey, Any]:
    """One DVFO agent per kind of robot in ``robots`` (board, version, SLO), trained ``steps`` frames in its
    ``dvfo_setup`` on ``trace`` (half of them exploring), greedy afterwards."""
    from dvfo_ros.core.policies.experiments import train_policy
    from dvfo_ros.core.policies.setup import AgentOptions
    agents: Dict[DvfoKey, Any] = {}
    for r in robots:
        key = _dvfo_key(r)
        if key not in agents:
            run = train_policy(dvfo_setup(r, server, len(robots), trace, seed), "dvfo", steps,
                               AgentOptions(exploration_steps=max(1, steps // 2)), progress=progress)
            agents[key] = run["policy"]
    return agents


class DvfoRobots:
    """The fleet's robots each running its DVFO agent in its own twin, fed the fleet's links frame by frame
    (one decision a second becomes one camera frame; the state's bandwidth is probed just before deciding, as
    mcia and neurosurgeon are told theirs)."""

    def __init__(self, robots: Sequence[Robot], agents: Dict[DvfoKey, Any], links: Sequence[np.ndarray],
                 server: Server, seed: int) -> None:
        from dvfo_ros.core.io.traces import NetworkTrace
        missing = sorted({_dvfo_key(r) for r in robots} - set(agents))
        if missing:
            raise ValueError(f"no DVFO agent for {missing}: train_dvfo(robots, ...) first")
        self.robots, self.server, self.agents = list(robots), server, agents
        self.envs = []
        lk = np.asarray(links, dtype=float)                          # [steps, N, 2]
        for i, r in enumerate(self.robots):
            setup = dvfo_setup(r, server, len(robots), seed=seed + i)
            period_s = 1.0 / setup.fps
            trace = NetworkTrace(np.arange(len(lk)) * period_s, np.maximum(lk[:, i, 0], 1e-3), lk[:, i, 1],
                                 name=f"robot{i}")
            env = dataclasses.replace(setup, trace=trace).make_env()
            env.t_s = 0.0                                            # frame t meets the fleet's step t
            self.envs.append(env)

    def step(self, mbps: np.ndarray, rtt: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(latency ms, board J, top-1) per robot for this step, at equal shares among those offloading."""
        picks = []
        for r, env in zip(self.robots, self.envs):
            action = self.agents[_dvfo_key(r)].act(env.probe())
            info = env.step(action)[3]
            cmd, top1 = info["command"], published_accuracy(r.versions[0]) - float(info["accuracy_loss"])
            picks.append((env.workload, (cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"]),
                          float(cmd["offload_ratio"]), top1))
        off = np.array([1.0 if xi > 0 else 0.0 for _, _, xi, _ in picks])
        share = off / max(1.0, off.sum())
        costs = [priced(r.profile, w, clk, xi, share[i], share[i], float(mbps[i]), float(rtt[i]), self.server)
                 for i, (r, (w, clk, xi, _)) in enumerate(zip(self.robots, picks))]
        return (np.array([c.total_ms for c in costs]), np.array([c.energy_j for c in costs]),
                np.array([acc for *_, acc in picks]))


def run_fleet(policy: str, robots: Sequence[Robot], steps: int, server: Server, trace: str = "heldout_wifi_dropouts",
              seed: int = 1000, agent: Optional[Mcia] = None,
              dvfo_agents: Optional[Dict[DvfoKey, Any]] = None) -> Dict[str, Any]:
    rng = np.random.default_rng(seed)
    links = link_sampler(trace)(rng, len(robots), steps)
    w = np.array([r.weight for r in robots])
    slo = np.array([r.slo_ms for r in robots])
    dvfo = DvfoRobots(robots, dvfo_agents or {}, links, server, seed) if policy == "dvfo" else None
    us, lats, accs, joules = [], [], [], []
    last: Optional[List[Option]] = None
    for t in range(steps):
        mbps, rtt = links[t][:, 0], links[t][:, 1]
        if dvfo is not None:
            lat, energy, acc = dvfo.step(mbps, rtt)
        else:
            choice = decide(policy, robots, mbps, rtt, server, agent, last)
            shares = equal_shares(choice) if policy == "neurosurgeon" else None
            lat = evaluate(robots, choice, mbps, rtt, server, shares)[1]
            x, y = shares if shares is not None else allocate(robots, choice, mbps, server)
            energy = np.array([option_cost(r, o, x[i], y[i], mbps[i], rtt[i], server).energy_j
                               for i, (r, o) in enumerate(zip(robots, choice))])
            acc = np.array([o.accuracy for o in choice])
            last = choice
        us.append(w * acc - (1.0 - w) * lat / slo)
        lats.append(lat)
        accs.append(acc)
        joules.append(energy)
    u_arr, lat_arr = np.array(us), np.array(lats)
    return {"policy": policy, "robots": len(robots), "utility": float(u_arr.mean()),
            "latency_ms_mean": [float(v) for v in lat_arr.mean(0)],
            "latency_ms_p95": [float(v) for v in np.percentile(lat_arr, 95, axis=0)],
            "accuracy": float(np.mean(accs)), "energy_j_per_frame": [float(v) for v in np.mean(joules, 0)],
            "deadline_misses": int((lat_arr > slo).sum()), "frames": int(lat_arr.size), "jain": jain(lat_arr.mean(0))}

