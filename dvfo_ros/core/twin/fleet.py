"""Many robots, one server: each robot picks a model version and a partition point; the server's compute
and uplink are shared among the robots that offload (MCIA's setting).

A robot's options (``robot_options``) are every (version, cut) of its versions: cut 0 sends the image,
cut S runs all on the robot, between them the whole map after that many stages travels (int8 codec,
xi = 1); an option another beats in edge time, bytes and server work at the same accuracy is dropped.
Each option is priced once on the robot's own board twin at top clocks: edge ms, bytes, the server's
MACs, and the version's accuracy (torchvision's published top-1).

Given everyone's option and the shares, robot i's frame takes::

    latency_i = edge_i + 8 bytes_i / min(link_i, y_i * uplink) + rtt_i + macs_i / (x_i * server rate)

and its utility (MCIA weighs accuracy against latency by whether a task is accuracy- or latency-
sensitive; the form and the numbers are ours)::

    U_i = w_i * accuracy_i - (1 - w_i) * latency_i / slo_i        (w_i: 0.8 accuracy-, 0.2 latency-sensitive)

``allocate`` gives the shares exactly for fixed options: the latency-weighted sum of a/x + b/y under
x, y summing to 1 is convex, and its KKT conditions give x_i proportional to sqrt(c_i a_i) and y_i the
same, water-filled under each robot's own link cap (a share beyond what its radio carries is useless).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from dvfo_ros.core.twin.device import DeviceTwin, FrameCost, bytes_per_value_at
from dvfo_ros.core.twin.workload import Workload, partition_points, partition_workload, published_accuracy

ACCURACY_SENSITIVE, LATENCY_SENSITIVE = 0.8, 0.2
Floats = Union[Sequence[float], np.ndarray]


@dataclass(frozen=True)
class Option:
    version: str
    cut: int
    local: bool
    edge_ms: float
    bytes: int
    server_gmac: float
    accuracy: float

    @property
    def label(self) -> str:
        return f"{self.version}@{'local' if self.local else self.cut}"


@functools.lru_cache(maxsize=8)
def _board(profile: str) -> DeviceTwin:
    return DeviceTwin(profile)


def top_clocks(profile: str) -> Tuple[float, float, float]:
    p = _board(profile).profile
    return p.table("cpu")[-1], p.table("gpu")[-1], p.table("emc")[-1]


@functools.lru_cache(maxsize=64)
def robot_options(profile: str, versions: Tuple[str, ...], input_size: int = 224) -> Tuple[Option, ...]:
    twin, clocks = _board(profile), top_clocks(profile)
    out = []
    for v in versions:
        acc = published_accuracy(v)
        points = partition_points(v)
        for k in points:
            w = partition_workload(v, k, input_size)
            local = k == points[-1]
            cost = twin.frame_cost(w, *clocks, offload_ratio=0.0 if local else 1.0, bandwidth_mbps=1e9, rtt_ms=0.0,
                                   cloud_gflops=1e12)
            c, h, wd = w.feature_shape
            nbytes = 0 if local else int(round(c * h * wd * bytes_per_value_at(1.0)))
            out.append(Option(v, k, local, cost.total_ms if local else cost.edge_ms, nbytes,
                              0.0 if local else w.tail_flops / 1e9, acc))
    return tuple(o for o in out if not any(_dominates(q, o) for q in out))


def _dominates(q: Option, o: Option) -> bool:
    """q is as accurate and no worse in edge time, bytes and server work, and better in one: o never pays."""
    if q is o or q.accuracy < o.accuracy or q.local != o.local and not q.local and o.local:
        return False
    le = (q.edge_ms <= o.edge_ms, q.bytes <= o.bytes, q.server_gmac <= o.server_gmac)
    lt = (q.edge_ms < o.edge_ms, q.bytes < o.bytes, q.server_gmac < o.server_gmac)
    return all(le) and any(lt)


@dataclass
class Robot:
    profile: str = "xavier_nx"
    versions: Tuple[str, ...] = ("resnet50", "resnet18", "mobilenet_v3_large", "efficientnet_b0")
    weight: float = LATENCY_SENSITIVE
    slo_ms: float = 100.0
    input_size: int = 224

    @property
    def options(self) -> Tuple[Option, ...]:
        return robot_options(self.profile, tuple(self.versions), self.input_size)


@dataclass
class Server:
    gmacs_per_s: float = 2000.0      # the server's rate on the tails (a desktop GPU's sustained fp32, derated)
    uplink_mbps: float = 100.0       # its ingress, shared by the robots that offload


def _waterfill(need: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """y maximising nothing but solving min sum need_i / y_i, sum y = 1, 0 <= y_i <= cap_i (need >= 0)."""
    y = np.zeros_like(need)
    active = need > 0
    if not active.any():
        return y
    if cap[active].sum() <= 1.0:
        y[active] = cap[active]
        return y
    free = active.copy()
    budget = 1.0
    while True:
        root = np.sqrt(need * free)
        y_try = budget * root / root.sum()
        over = free & (y_try > cap)
        if not over.any():
            y[free] = y_try[free]
            return y
        y[over] = cap[over]
        budget -= cap[over].sum()
        free &= ~over


def allocate(robots: Sequence[Robot], choices: Sequence[Option], links_mbps: Floats,
             server: Server) -> Tuple[np.ndarray, np.ndarray]:
    """The exact (compute x, uplink y) shares for these options: each sums to 1 over the offloading robots."""
    c = np.array([(1.0 - r.weight) / r.slo_ms for r in robots])
    a = np.array([1e3 * o.server_gmac / server.gmacs_per_s for o in choices])          # ms at the whole server
    b = np.array([8.0 * o.bytes / (server.uplink_mbps * 1e3) for o in choices])          # ms at the whole uplink
    cap = np.array([min(1.0, float(m) / server.uplink_mbps) for m in links_mbps])
    return _waterfill(c * a, np.full(len(robots), 1.0)), _waterfill(c * b, cap)


def latencies(choices: Sequence[Option], x: np.ndarray, y: np.ndarray, links_mbps: Floats,
              rtts_ms: Floats, server: Server) -> np.ndarray:
    out = []
    for o, xi, yi, link, rtt in zip(choices, x, y, links_mbps, rtts_ms):
        if o.local:
            out.append(o.edge_ms)
            continue
        rate = min(float(link), yi * server.uplink_mbps)
        transfer = 8.0 * o.bytes / (max(rate, 1e-6) * 1e3) + float(rtt)
        compute = 1e3 * o.server_gmac / (max(xi, 1e-9) * server.gmacs_per_s)
        out.append(o.edge_ms + transfer + compute)
    return np.array(out)


@functools.lru_cache(maxsize=256)
def option_workload(version: str, cut: int, input_size: int = 224) -> Workload:
    return partition_workload(version, cut, input_size)


def priced(profile: str, work: Workload, clocks: Sequence[float], xi: float, x: float, y: float, link_mbps: float,
           rtt_ms: float, server: Server) -> FrameCost:
    """One robot's frame on its board twin at compute share ``x`` and uplink share ``y``: its radio carries
    min(link, y * uplink) and the server runs at x of its rate. For an option (xi 1 at its cut, or 0) the
    latency is ``latencies``'s; a share xi of one split's channels (DVFO) overlaps the local tail with the
    transfer and the server's part, as the twin does. ``energy_j``: the board's energy over the frame."""
    bw = min(float(link_mbps), y * server.uplink_mbps) if xi > 0 else float(link_mbps)
    cpu, gpu, emc = clocks
    return _board(profile).frame_cost(work, cpu, gpu, emc, offload_ratio=xi, bandwidth_mbps=max(bw, 1e-6),
                                      rtt_ms=rtt_ms, cloud_gflops=max(x, 1e-9) * server.gmacs_per_s)


def option_cost(robot: Robot, o: Option, x: float, y: float, link_mbps: float, rtt_ms: float,
                server: Server) -> FrameCost:
    """``priced`` for one of the robot's options at top clocks."""
    return priced(robot.profile, option_workload(o.version, o.cut, robot.input_size), top_clocks(robot.profile),
                  0.0 if o.local else 1.0, x, y, link_mbps, rtt_ms, server)


def utilities(robots: Sequence[Robot], choices: Sequence[Option], lat: np.ndarray) -> np.ndarray:
    return np.array([r.weight * o.accuracy - (1.0 - r.weight) * ms / r.slo_ms for r, o, ms in zip(robots, choices,
                                                                                                   lat)])


def evaluate(robots: Sequence[Robot], choices: Sequence[Option], links_mbps: Floats,
             rtts_ms: Floats, server: Server, shares: Optional[Tuple[np.ndarray, np.ndarray]] = None
             ) -> Tuple[np.ndarray, np.ndarray]:
    """(utility per robot, latency per robot) under ``shares`` (default: ``allocate``'s exact ones)."""
    x, y = shares if shares is not None else allocate(robots, choices, links_mbps, server)
    lat = latencies(choices, x, y, links_mbps, rtts_ms, server)
    return utilities(robots, choices, lat), lat


def equal_shares(choices: Sequence[Option]) -> Tuple[np.ndarray, np.ndarray]:
    off = np.array([0.0 if o.local else 1.0 for o in choices])
    n = max(1.0, off.sum())
    return off / n, off / n


def jain(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=float)
    return float(v.sum() ** 2 / (len(v) * (v ** 2).sum())) if len(v) and (v ** 2).sum() > 0 else 1.0


def _waterfill_batch(need: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """``_waterfill`` for M option combinations at once: need [M, N], cap [N] -> shares [M, N]."""
    m, n = need.shape
    y = np.zeros_like(need)
    free: np.ndarray = np.asarray(need > 0)
    budget = np.ones(m)
    capm = np.broadcast_to(cap, need.shape)
    for _ in range(n + 1):
        root = np.sqrt(need * free)
        tot = root.sum(1, keepdims=True)
        y_try = np.where(tot > 0, budget[:, None] * root / np.where(tot > 0, tot, 1.0), 0.0)
        over = free & (y_try > capm)
        done: np.ndarray = np.asarray(~over.any(1))
        y = np.where(free & done[:, None], y_try, y)
        y = np.where(over, capm, y)
        budget = budget - (over * capm).sum(1)
        free = free & ~over & ~done[:, None]
        if not free.any():
            break
    return y


def best_joint(robots: Sequence[Robot], links_mbps: Floats, rtts_ms: Floats,
               server: Server) -> Tuple[List[Option], float]:
    """The exhaustive optimum: every joint option with its exact shares, all at once (N <= 3)."""
    if len(robots) > 3:
        raise ValueError("the exhaustive search is for 3 robots or fewer")
    import itertools
    grids = [r.options for r in robots]
    idx = np.array(list(itertools.product(*[range(len(g)) for g in grids])))          # [M, N]
    def col(f: Any) -> np.ndarray:
        return np.stack([np.array([f(o) for o in g])[idx[:, i]] for i, g in enumerate(grids)], 1)
    edge, nbytes, gmac = col(lambda o: o.edge_ms), col(lambda o: o.bytes), col(lambda o: o.server_gmac)
    acc = col(lambda o: o.accuracy)
    local: np.ndarray = np.asarray(col(lambda o: float(o.local)) > 0)
    w = np.array([r.weight for r in robots])
    slo = np.array([r.slo_ms for r in robots])
    c = (1.0 - w) / slo
    a = 1e3 * gmac / server.gmacs_per_s
    b = 8.0 * nbytes / (server.uplink_mbps * 1e3)
    links = np.asarray(links_mbps, dtype=float)
    cap = np.minimum(1.0, links / server.uplink_mbps)
    x = _waterfill_batch(c * a, np.ones(len(robots)))
    y = _waterfill_batch(c * b, cap)
    rate = np.minimum(links, y * server.uplink_mbps)
    lat = np.where(local, edge, edge + 8.0 * nbytes / (np.maximum(rate, 1e-6) * 1e3) + np.asarray(rtts_ms)
                   + a / np.maximum(x, 1e-9))
    u = (w * acc - (1.0 - w) * lat / slo).mean(1)
    best = int(np.argmax(u))
    return [grids[i][int(j)] for i, j in enumerate(idx[best])], float(u[best])
