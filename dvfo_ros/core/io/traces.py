"""Network traces between the robot and the cloud: uplink bandwidth and round-trip time over time.

The offload decision is only interesting when the link changes under the policy's feet, so the
simulated environment and ``dvfo-bench`` replay one of these traces. Two generators ship:

- ``uniform_trace``: the DVFO testbed's range. The paper's evaluation throttled the edge-cloud
  link between 0.5 and 8 Mbps (DVFO, Zhang et al., TMC 2024, arXiv 2306.01811; the authors'
  IEEE DataPort set 10.21227/2gxq-nz15 lists "network bandwidth (0.5~8Mbps)" set with Linux
  trickle). A value is drawn uniformly in that range and held for ``hold_s`` seconds.
- ``lte_trace``: a Markov-modulated channel with LTE-like uplink states (bad/fair/good/excellent),
  sticky transitions and log-normal fast fading inside a state. The state means are assumptions
  in the range public LTE uplink measurements report (a few to ~20 Mbps, RTT 30-80 ms).

A trace is a CSV with the header ``time_s,bandwidth_mbps,rtt_ms``; each row holds from its
time until the next row's (sample-and-hold), and the trace loops past its end.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from typing import List, Tuple, Union

import numpy as np

from dvfo_ros.core.errors import DvfoError

HEADER = ("time_s", "bandwidth_mbps", "rtt_ms")
# dvfo_ros/traces: dvfo_ros/core/io/traces.py -> 3 up
TRACE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "traces")

# LTE-like uplink states: (name, mean Mbps, log-normal sigma, mean RTT ms). [assumption]
LTE_STATES = (("bad", 1.0, 0.45, 85.0), ("fair", 4.0, 0.35, 55.0),
              ("good", 9.0, 0.30, 40.0), ("excellent", 18.0, 0.25, 30.0))
# Per-second transition matrix: sticky (mean dwell ~10-20 s), moves mostly to a neighbour state.
LTE_TRANSITIONS = np.array([[0.92, 0.07, 0.01, 0.00],
                            [0.04, 0.90, 0.05, 0.01],
                            [0.01, 0.05, 0.90, 0.04],
                            [0.00, 0.02, 0.08, 0.90]])


class TraceError(ValueError, DvfoError):
    """A trace file or name that cannot be used; the message is one line naming the problem."""


@dataclass
class NetworkTrace:
    """Uplink bandwidth (Mbps) and RTT (ms) sampled at ``time_s`` (s, ascending, first >= 0)."""

    time_s: np.ndarray
    bandwidth_mbps: np.ndarray
    rtt_ms: np.ndarray
    name: str = "trace"

    def __post_init__(self) -> None:
        self.time_s = np.asarray(self.time_s, dtype=float)
        self.bandwidth_mbps = np.asarray(self.bandwidth_mbps, dtype=float)
        self.rtt_ms = np.asarray(self.rtt_ms, dtype=float)
        n = len(self.time_s)
        if n == 0:
            raise TraceError(f"trace {self.name}: no samples")
        if len(self.bandwidth_mbps) != n or len(self.rtt_ms) != n:
            raise TraceError(f"trace {self.name}: columns have different lengths")
        if not (np.all(np.isfinite(self.time_s)) and np.all(np.isfinite(self.bandwidth_mbps))
                and np.all(np.isfinite(self.rtt_ms))):
            raise TraceError(f"trace {self.name}: values must be finite numbers")
        if self.time_s[0] < 0 or np.any(np.diff(self.time_s) <= 0):
            raise TraceError(f"trace {self.name}: time_s must start >= 0 and strictly increase")
        if np.any(self.bandwidth_mbps <= 0):
            raise TraceError(f"trace {self.name}: bandwidth_mbps must be > 0")
        if np.any(self.rtt_ms < 0):
            raise TraceError(f"trace {self.name}: rtt_ms must be >= 0")

    @property
    def duration_s(self) -> float:
        """Length of one loop: last sample time plus the last step (or 1 s for one sample)."""
        step = float(self.time_s[-1] - self.time_s[-2]) if len(self.time_s) > 1 else 1.0
        return float(self.time_s[-1]) + step

    def at(self, t_s: float) -> Tuple[float, float]:
        """(bandwidth_mbps, rtt_ms) in force at time ``t_s``; loops past the end."""
        t = float(t_s) % self.duration_s
        if t < self.time_s[0]:
            i = len(self.time_s) - 1  # before the first sample: the previous loop's last value
        else:
            i = int(np.searchsorted(self.time_s, t, side="right")) - 1
        return float(self.bandwidth_mbps[i]), float(self.rtt_ms[i])

    def to_csv(self, path: str) -> None:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(HEADER)
            for t, b, r in zip(self.time_s, self.bandwidth_mbps, self.rtt_ms):
                w.writerow([f"{t:.6g}", f"{b:.6g}", f"{r:.6g}"])

    @classmethod
    def from_csv(cls, path: str) -> "NetworkTrace":
        """Read a ``time_s,bandwidth_mbps,rtt_ms`` CSV; any defect is a one-line TraceError."""
        name = os.path.splitext(os.path.basename(str(path)))[0]
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except OSError as exc:
            raise TraceError(f"cannot read trace {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise TraceError(f"trace {path} is not a text CSV") from None
        rows = [r for r in rows if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
        if not rows:
            raise TraceError(f"trace {path} is empty; expected header {','.join(HEADER)}")
        header = [c.strip() for c in rows[0]]
        missing = [h for h in HEADER if h not in header]
        if missing:
            raise TraceError(f"trace {path}: header must contain {','.join(HEADER)} "
                             f"(missing {','.join(missing)})")
        idx = [header.index(h) for h in HEADER]
        cols: List[List[float]] = [[], [], []]
        for lineno, row in enumerate(rows[1:], start=2):
            if len(row) < len(header):
                raise TraceError(f"trace {path} line {lineno}: expected {len(header)} fields, got {len(row)}")
            for k, i in enumerate(idx):
                try:
                    value = float(row[i])
                except ValueError:
                    raise TraceError(f"trace {path} line {lineno}: {HEADER[k]} '{row[i].strip()}' "
                                     "is not a number") from None
                if not math.isfinite(value):
                    raise TraceError(f"trace {path} line {lineno}: {HEADER[k]} must be finite")
                cols[k].append(value)
        if not cols[0]:
            raise TraceError(f"trace {path} has a header but no rows")
        try:
            return cls(np.array(cols[0]), np.array(cols[1]), np.array(cols[2]), name=name)
        except TraceError as exc:
            raise TraceError(str(exc).replace(f"trace {name}", f"trace {path}")) from None


def uniform_trace(low_mbps: float = 0.5, high_mbps: float = 8.0, duration_s: float = 600,
                  step_s: float = 1.0, rtt_ms: float = 20.0, seed: int = 0,
                  hold_s: float = 5.0, log: bool = False) -> NetworkTrace:
    """The DVFO testbed range: bandwidth uniform in [low, high] Mbps (``log``: uniform in log
    bandwidth, each octave the same share of time), redrawn every ``hold_s``."""
    if not 0 < low_mbps <= high_mbps:
        raise TraceError(f"need 0 < low_mbps <= high_mbps, got {low_mbps}, {high_mbps}")
    if step_s <= 0 or duration_s < step_s:
        raise TraceError("need step_s > 0 and duration_s >= step_s")
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, float(duration_s), float(step_s))
    hold = max(1, int(round(hold_s / step_s)))
    size = len(t) // hold + 1
    draws = np.exp(rng.uniform(np.log(low_mbps), np.log(high_mbps), size=size)) if log \
        else rng.uniform(low_mbps, high_mbps, size=size)
    bw = np.repeat(draws, hold)[: len(t)]
    rtt = np.full(len(t), float(rtt_ms))
    return NetworkTrace(t, bw, rtt, name="dvfo")


def lte_trace(duration_s: float = 600, step_s: float = 1.0, seed: int = 0) -> NetworkTrace:
    """Markov-modulated LTE-like uplink: sticky states, log-normal fading, RTT per state."""
    if step_s <= 0 or duration_s < step_s:
        raise TraceError("need step_s > 0 and duration_s >= step_s")
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, float(duration_s), float(step_s))
    # the matrix is per second: a step of n seconds moves by its n-th power (sub-second steps
    # use it per step, i.e. slower state dynamics, which keeps it a valid Markov chain)
    trans = np.linalg.matrix_power(LTE_TRANSITIONS, max(1, int(round(step_s))))
    state = 1
    bw = np.empty(len(t))
    rtt = np.empty(len(t))
    for i in range(len(t)):
        _, mean, sigma, rtt_mean = LTE_STATES[state]
        bw[i] = max(0.05, mean * math.exp(rng.normal(0.0, sigma) - 0.5 * sigma ** 2))
        rtt[i] = max(5.0, rtt_mean * math.exp(rng.normal(0.0, 0.15)))
        state = int(rng.choice(len(LTE_STATES), p=trans[state]))
    return NetworkTrace(t, bw, rtt, name="lte")


def regime_trace(rng: np.random.Generator, duration_s: float = 120.0) -> NetworkTrace:
    """Randomised network regimes back to back, for training across network conditions (domain
    randomisation): a new regime every 2-8 s, so one 10 s episode meets two or three of them.

    Each regime: median uplink log-uniform in 0.2-80 Mbps with log-normal spread (sigma 0.05-0.6)
    redrawn every second; base RTT log-uniform in 2-150 ms with 10 % jitter; one regime in five is a
    dropout (0.05-0.4 Mbps at 250-900 ms RTT). The ranges cover a robot's Wi-Fi, LTE and a throttled
    testbed link; none of the shipped held-out traces comes from this generator.
    """
    n = max(1, int(duration_s))
    bw = np.empty(n)
    rtt = np.empty(n)
    i = 0
    while i < n:
        k = min(int(rng.integers(2, 9)), n - i)
        if rng.random() < 0.2:
            bw[i:i + k] = rng.uniform(0.05, 0.4)
            rtt[i:i + k] = rng.uniform(250.0, 900.0)
        else:
            median = math.exp(rng.uniform(math.log(0.2), math.log(80.0)))
            sigma = rng.uniform(0.05, 0.6)
            bw[i:i + k] = np.maximum(median * np.exp(rng.normal(0.0, sigma, size=k) - 0.5 * sigma ** 2), 0.05)
            base = math.exp(rng.uniform(math.log(2.0), math.log(150.0)))
            rtt[i:i + k] = np.maximum(base * np.exp(rng.normal(0.0, 0.1, size=k)), 0.5)
        i += k
    return NetworkTrace(np.arange(float(n)), bw, rtt, name="regime")


class TraceMix:
    """Training across network conditions: every episode draws its own trace, a fifth of them DVFO's
    0.5-8 Mbps testbed range, a fifth the LTE-like channel, the rest randomised regimes back to back
    (``regime_trace``), each at its own seed. ``--trace mix`` in dvfo-train / dvfo-bench."""

    name = "mix"

    def sample(self, rng: np.random.Generator) -> NetworkTrace:
        u = rng.random()
        seed = int(rng.integers(0, 2 ** 31 - 1))
        if u < 0.2:
            return uniform_trace(duration_s=120, seed=seed)
        if u < 0.4:
            return lte_trace(duration_s=120, seed=seed)
        return regime_trace(np.random.default_rng(seed))


def heldout_trace_names() -> List[str]:
    """The shipped traces kept out of every training mix: evaluate a policy on these (``heldout_*.csv``)."""
    return sorted(f[:-4] for f in os.listdir(TRACE_DIR) if f.startswith("heldout_") and f.endswith(".csv"))


def load_trace(name_or_path: str) -> Union[NetworkTrace, TraceMix]:
    """"dvfo" (uniform 0.5-8 Mbps), "lte" (Markov), "mix" (a trace drawn per episode: ``TraceMix``),
    a shipped trace name (``dvfo_ros/traces/NAME.csv``), or a CSV path."""
    key = str(name_or_path)
    if key == "dvfo":
        return uniform_trace()
    if key == "lte":
        return lte_trace()
    if key == "mix":
        return TraceMix()
    shipped = os.path.join(TRACE_DIR, f"{key}.csv")
    if os.sep not in key and not key.endswith(".csv"):
        if os.path.isfile(shipped):
            return NetworkTrace.from_csv(shipped)
        raise TraceError(f"unknown trace '{key}'; use dvfo, lte, mix, a shipped name "
                         f"({', '.join(heldout_trace_names() + ['lte_example'])}) or a CSV path")
    return NetworkTrace.from_csv(key)
