"""The shared server's twin: a request queue in front of a cloud tail that runs batches on concurrent instances.

Many robots send offloaded frames to one server (MCIA, BCEdge). What a request costs there is
its wait in the queue plus its batch's run time, and that run time is *measured*, not assumed:
``dvfo-profile cloud`` times our own cloud tail (the server's real batch runner) at batch sizes
1-8 on 1-4 instances running at once, and ``ServerProfile.fit`` turns the table into::

    run_ms(B, c) = (base_ms + per_item_ms * B) * contention[c]

a line in the batch size (least squares over the one-instance rows) times the slowdown each
instance suffers while c instances run together (the median over B of t(B, c) / t(B, 1)). The
profile keeps the raw table, so the fit's error is on record (``fit_error``).

The queue (``ServerQueue``) is a discrete-event simulation in milliseconds. The scheduler sets the
batch size B and the number of instances c for the next interval; one rule, the real server's,
decides when a free instance starts a batch: at once when B requests wait, or when the oldest has
waited ``window_ms``, or when waiting longer would make the oldest miss its deadline. A request
whose deadline has passed before it runs is dropped unrun, as ``dvfo-cloud`` refuses it. Our
choices where the papers are silent: a batch's run time is fixed when it starts, by the number of
instances running then; lowering c lets running batches finish; arrivals are open-loop (a camera
streams at its rate whether or not the last reply came back).
"""
from __future__ import annotations

import heapq
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from dvfo_ros.core.io.yaml_file import read_yaml

SERVER_PROFILE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles", "servers")
BATCHES: Tuple[int, ...] = (1, 2, 4, 8)
INSTANCES: Tuple[int, ...] = (1, 2, 3, 4)


@dataclass
class ServerProfile:
    """A server's batch run time, fitted from a measured table (``measured``: 'B,c' -> ms)."""

    name: str
    base_ms: float
    per_item_ms: float
    contention: Tuple[float, ...] = (1.0,)
    measured: Dict[str, float] = field(default_factory=dict)
    source: str = ""

    def run_ms(self, batch: int, running: int = 1) -> float:
        c = min(max(1, int(running)), len(self.contention))
        return (self.base_ms + self.per_item_ms * max(1, int(batch))) * self.contention[c - 1]

    def capacity_rps(self, batch: int, instances: int) -> float:
        """Requests per second when every instance runs full batches back to back."""
        return 1000.0 * batch * instances / self.run_ms(batch, instances)

    @classmethod
    def fit(cls, name: str, table: Dict[Tuple[int, int], float], source: str = "") -> "ServerProfile":
        one = sorted((b, ms) for (b, c), ms in table.items() if c == 1)
        if len(one) < 2:
            raise ValueError("the fit needs one-instance times at two batch sizes or more")
        bs = np.array([b for b, _ in one], dtype=float)
        ts = np.array([ms for _, ms in one], dtype=float)
        per_item, base = np.polyfit(bs, ts, 1)
        per_item, base = max(float(per_item), 1e-6), max(float(base), 0.0)
        one_d = dict(one)
        conts = [1.0]
        for c in range(2, 1 + max(c for _, c in table)):
            ratios = [ms / one_d[b] for (b, cc), ms in table.items() if cc == c and b in one_d]
            conts.append(max(conts[-1] * 0.999, float(np.median(ratios))) if ratios else conts[-1])
        return cls(name, base, per_item, tuple(conts), {f"{b},{c}": float(ms) for (b, c), ms in table.items()},
                   source)

    def fit_error(self) -> float:
        """Largest relative error of the fit over the measured table."""
        errs = []
        for key, ms in self.measured.items():
            b, c = (int(v) for v in key.split(","))
            errs.append(abs(self.run_ms(b, c) - ms) / ms)
        return max(errs) if errs else 0.0

    def to_yaml(self, path: str) -> None:
        data = {"name": self.name, "source": self.source, "base_ms": round(self.base_ms, 4),
                "per_item_ms": round(self.per_item_ms, 4), "contention": [round(c, 4) for c in self.contention],
                "measured_ms": {k: round(v, 4) for k, v in self.measured.items()}}
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(data, fh, sort_keys=False, default_flow_style=None)


def list_server_profiles() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(SERVER_PROFILE_DIR) if f.endswith(".yaml"))


def load_server_profile(name_or_path: str) -> ServerProfile:
    """A bundled server profile by name (``list_server_profiles()``) or a YAML path from ``dvfo-profile cloud``."""
    path = name_or_path if name_or_path.endswith(".yaml") else os.path.join(SERVER_PROFILE_DIR, name_or_path + ".yaml")
    if not os.path.isfile(path):
        raise ValueError(f"no server profile {name_or_path!r} (bundled: {', '.join(list_server_profiles())})")
    d = read_yaml(path, "server profile", ValueError)
    if not isinstance(d, dict):
        raise ValueError(f"server profile {path} is not a YAML mapping of name, base_ms, per_item_ms, contention")
    try:
        return ServerProfile(str(d["name"]), float(d["base_ms"]), float(d["per_item_ms"]),
                             tuple(float(c) for c in d["contention"]),
                             {str(k): float(v) for k, v in (d.get("measured_ms") or {}).items()},
                             str(d.get("source", "")))
    except KeyError as exc:
        raise ValueError(f"server profile {path} has no {exc.args[0]!r} (name, base_ms, per_item_ms and "
                         f"contention are required)") from None
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"server profile {path}: base_ms, per_item_ms, contention and measured_ms must be "
                         f"numbers (contention a list, measured_ms a mapping)") from None


@dataclass
class Served:
    """What happened to the requests that ran or were dropped in one interval."""

    arrived: int = 0
    latency_ms: List[float] = field(default_factory=list)   # queue wait + run, of those that ran
    met: int = 0                                             # ran and finished by their deadline
    dropped: int = 0                                         # expired in the queue, never ran
    budget_ms: List[float] = field(default_factory=list)     # each one that ran: its deadline - arrival
    robot: List[int] = field(default_factory=list)           # whose request each latency is
    batch_sizes: List[int] = field(default_factory=list)
    busy_ms: float = 0.0                                     # instance-ms of the batches started

    @property
    def done(self) -> int:
        return len(self.latency_ms) + self.dropped


class ServerQueue:
    """FIFO queue + up to ``max(INSTANCES)`` instances; ``run`` advances it to a time under one (B, c)."""

    def __init__(self, profile: ServerProfile, window_ms: float = 3.0, margin_ms: float = 1.0) -> None:
        self.profile = profile
        self.window_ms = float(window_ms)
        self.margin_ms = float(margin_ms)
        self.now = 0.0
        self.queue: Deque[Tuple[float, float, int]] = deque()   # (arrival, deadline, robot)
        self.busy: List[float] = []                              # end times of running batches (heap)

    def running(self, t: float) -> int:
        while self.busy and self.busy[0] <= t:
            heapq.heappop(self.busy)
        return len(self.busy)

    def min_slack_ms(self) -> float:
        return min((d - self.now for _, d, _ in self.queue), default=float("inf"))

    def run(self, arrivals: Sequence[Tuple[float, float, int]], until: float, batch: int, instances: int) -> Served:
        """Admit ``arrivals`` (time-sorted (arrival ms, deadline ms, robot)) and serve until ``until``."""
        out = Served(arrived=len(arrivals))
        pending = deque(arrivals)
        t = self.now
        while True:
            while pending and pending[0][0] <= t:
                self.queue.append(pending.popleft())
            self._start_batches(t, batch, instances, out)
            t_next = min(pending[0][0] if pending else until, self._next_trigger(t, batch, instances))
            if t_next >= until:
                break
            t = max(t_next, t + 1e-6)
        while pending:                     # arrivals exactly at `until` wait for the next interval
            self.queue.append(pending.popleft())
        self.now = until
        return out

    def _start_batches(self, t: float, batch: int, instances: int, out: Served) -> None:
        while self.queue and self.running(t) < instances:
            alone = self.profile.run_ms(1, self.running(t) + 1)
            while self.queue and self.queue[0][1] < t + alone:  # cannot finish in time even alone: refused unrun
                self.queue.popleft()
                out.dropped += 1
            if not self.queue or not self._ready(t, batch, instances):
                return
            size = min(batch, len(self.queue))
            bound = t + self.profile.run_ms(size, self.running(t) + 1)
            take: List[Tuple[float, float, int]] = []
            while self.queue and len(take) < size:      # FIFO, skipping those this batch would make late
                item = self.queue.popleft()
                if item[1] >= bound:
                    take.append(item)
                else:
                    out.dropped += 1
            if not take:
                continue
            run = self.profile.run_ms(len(take), self.running(t) + 1)
            end = t + run
            heapq.heappush(self.busy, end)
            out.busy_ms += run
            out.batch_sizes.append(len(take))
            for arrival, deadline, robot in take:
                out.latency_ms.append(end - arrival)
                out.budget_ms.append(deadline - arrival)
                out.robot.append(robot)
                out.met += int(end <= deadline)

    def _ready(self, t: float, batch: int, instances: int) -> bool:
        arrival, deadline, _ = self.queue[0]
        if len(self.queue) >= batch or t >= arrival + self.window_ms - 1e-9:
            return True
        run = self.profile.run_ms(min(batch, len(self.queue) + 1), self.running(t) + 1)
        return t + run + self.margin_ms >= deadline

    def _next_trigger(self, t: float, batch: int, instances: int) -> float:
        """When the next batch could start with no new arrival: an instance frees up, or the oldest must go."""
        nxt = float("inf")
        if self.running(t) >= instances and self.busy:
            nxt = self.busy[0]
        if self.queue:
            arrival, deadline, _ = self.queue[0]
            run = self.profile.run_ms(min(batch, len(self.queue) + 1), self.running(t) + 1)
            go = min(arrival + self.window_ms, deadline - run - self.margin_ms)
            nxt = min(nxt, max(go, t + 1e-6) if self.running(t) < instances else nxt)
        return nxt


@dataclass
class RobotLoad:
    """Robots streaming offloaded frames: each at ``fps`` with its own phase, jitter and server budget."""

    fps: float = 15.0
    budget_ms: Tuple[float, float] = (40.0, 100.0)   # each robot's server-side deadline, drawn once
    jitter_ms: float = 2.0
    seed: int = 0
    rng: np.random.Generator = field(init=False)
    phase: Dict[int, float] = field(default_factory=dict)
    budget: Dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def arrivals(self, robots: int, start: float, end: float) -> List[Tuple[float, float, int]]:
        period = 1000.0 / self.fps
        out = []
        for r in range(robots):
            if r not in self.phase:
                self.phase[r] = float(self.rng.uniform(0, period))
                self.budget[r] = float(self.rng.uniform(*self.budget_ms))
            k0 = int(np.ceil((start - self.phase[r]) / period))
            for k in range(max(k0, 0), int(np.floor((end - self.phase[r]) / period)) + 1):
                t = self.phase[r] + k * period
                if start <= t < end:
                    t = min(max(start, t + float(self.rng.normal(0, self.jitter_ms))), np.nextafter(end, start))
                    out.append((t, t + self.budget[r], r))
        out.sort()
        return out


def summarise(served: Sequence[Served], interval_s: float, robots: Optional[int] = None) -> Dict[str, Any]:
    """Throughput, p95 latency, SLO violations and fairness over many intervals (what ``dvfo-bench cloud`` prints)."""
    lat = np.concatenate([np.asarray(s.latency_ms, dtype=float) for s in served]) if served else np.zeros(0)
    done = sum(s.done for s in served)
    met = sum(s.met for s in served)
    per_robot: Dict[int, List[float]] = {}
    for s in served:
        for r, ms in zip(s.robot, s.latency_ms):
            per_robot.setdefault(r, []).append(ms)
    means = np.array([np.mean(v) for v in per_robot.values()]) if per_robot else np.zeros(0)
    jain = float(means.sum() ** 2 / (len(means) * (means ** 2).sum())) if means.size and means.any() else 1.0
    sizes = [b for s in served for b in s.batch_sizes]
    return {"robots": robots, "throughput_rps": met / (interval_s * max(1, len(served))),
            "p95_ms": float(np.percentile(lat, 95)) if lat.size else 0.0,
            "mean_ms": float(lat.mean()) if lat.size else 0.0,
            "slo_violation_pct": 100.0 * (done - met) / max(1, done),
            "mean_batch": float(np.mean(sizes)) if sizes else 0.0, "jain": jain}

