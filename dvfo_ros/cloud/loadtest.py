"""A real load test on loopback: N robot clients stream real codec frames to one dvfo-cloud process.

Each robot is its own ZeroMQ DEALER (its own identity, as a robot's executor is), sending open-loop at
``fps`` with its own phase and a server-side budget drawn as the twin's ``RobotLoad`` draws it; one
thread drives them all with a poller, so the clients cost the server as little CPU as they can. The
replies become the twin's ``Served`` record (a refused or unanswered request counts as dropped), so
``summarise`` and ``utility`` give the same figures as ``dvfo-bench cloud`` in the twin: that is the
check of the twin's server model against the real server.
"""
from __future__ import annotations

import heapq
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import zmq

from dvfo_ros.core.mdp.scheduler_env import utility
from dvfo_ros.core.twin.server import RobotLoad, Served, summarise
from dvfo_ros.core.wire.codec import decode_reply, encode_features


def template_frames(meta: Dict[str, Any], feature_shape: Sequence[int], offload_ratio: float = 0.5,
                    seed: int = 0) -> List[bytes]:
    """One request as the edge encodes it for this model's split (a random half of the channels)."""
    rng = np.random.default_rng(seed)
    c, h, w = (int(v) for v in feature_shape)
    k = max(1, int(round(offload_ratio * c)))
    idx = np.sort(rng.permutation(c)[:k])
    feat = np.maximum(rng.standard_normal((k, h, w)), 0).astype(np.float32)
    return encode_features(feat, idx, model=meta["model"], split=int(meta["split"]), seq=0, deadline=0.0,
                           total_channels=c, artifact_id=str(meta.get("artifact_id", "")))


def _with(frames: List[bytes], seq: int, deadline: float) -> List[bytes]:
    header = json.loads(frames[0])
    header["seq"], header["deadline"] = seq, deadline
    return [json.dumps(header, separators=(",", ":")).encode(), frames[1]]


def run_load(endpoint: str, frames: List[bytes], robots: int, seconds: float, fps: float = 15.0,
             budget_ms: Sequence[float] = (40.0, 100.0), seed: int = 0, interval_s: float = 0.5,
             event: Optional[Tuple[float, Callable[[], None]]] = None,
             answer_margin_ms: float = 100.0) -> Dict[str, Any]:
    """Stream for ``seconds`` and wait one budget more for the stragglers; the twin's figures, plus
    ``unanswered``: requests that got no reply at all (result or refusal) by their deadline plus
    ``answer_margin_ms``. ``event`` = (seconds, fn): fn runs once that far into the stream (a fault)."""
    ctx: Any = zmq.Context.instance()
    socks = []
    run = os.urandom(4).hex()          # fresh identities each run: a ROUTER ignores a reused one still known to it
    for r in range(robots):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IDENTITY, f"robot-{r}-{run}".encode())
        s.connect(endpoint)
        socks.append(s)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    load = RobotLoad(fps, (float(budget_ms[0]), float(budget_ms[1])), jitter_ms=0.0, seed=seed)
    plan = load.arrivals(robots, 0.0, 1000.0 * seconds)          # (ms, deadline ms, robot)
    sent: Dict[int, tuple] = {}
    got: Dict[int, tuple] = {}
    time.sleep(0.3)                                               # let the DEALERs connect
    t0_wall, t0 = time.time(), time.perf_counter()
    heap = [(t, i) for i, (t, _, _) in enumerate(plan)]
    heapq.heapify(heap)
    end = 1000.0 * seconds + float(budget_ms[1]) + 200.0
    while True:
        now = 1000.0 * (time.perf_counter() - t0)
        if event is not None and now >= 1000.0 * event[0]:
            event[1]()
            event = None
        while heap and heap[0][0] <= now:
            t, i = heapq.heappop(heap)
            _, deadline, r = plan[i]
            budget = deadline - t
            sent[i] = (now, budget, r)
            socks[r].send_multipart(_with(frames, i, t0_wall + (now + budget) / 1000.0))
        if now >= end or (not heap and len(got) == len(sent)):
            break
        wait = max(0.0, min(heap[0][0] - now if heap else 50.0, end - now))
        for sock, _ in poller.poll(max(0, int(wait))):
            while True:
                try:
                    reply = decode_reply(sock.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
                except Exception:  # noqa: BLE001 - a malformed reply is a dropped request
                    continue
                if reply.seq in sent and reply.seq not in got:
                    got[reply.seq] = (1000.0 * (time.perf_counter() - t0), reply.kind)
    for s in socks:
        s.close(0)
    served = _as_served(sent, got, interval_s, seconds)
    row = summarise(served, interval_s, robots)
    row["utility"] = float(np.mean([utility(s) for s in served])) if served else 0.0
    row["sent"], row["answered"] = len(sent), sum(1 for _, k in got.values() if k == "result")
    row["unanswered"] = sum(1 for i, (t, budget, _) in sent.items()
                            if i not in got or got[i][0] - t > budget + answer_margin_ms)
    return row


def _as_served(sent: Dict[int, tuple], got: Dict[int, tuple], interval_s: float, seconds: float) -> List[Served]:
    n = max(1, int(round(seconds / interval_s)))
    out = [Served() for _ in range(n)]
    for i, (t, budget, r) in sent.items():
        s = out[min(n - 1, int(t / (1000.0 * interval_s)))]
        s.arrived += 1
        reply = got.get(i)
        if reply is None or reply[1] != "result":
            s.dropped += 1
            continue
        lat = reply[0] - t
        s.latency_ms.append(lat)
        s.budget_ms.append(budget)
        s.robot.append(r)
        s.met += int(lat <= budget)
    return out


def start_cloud(args: Sequence[str], timeout_s: float = 60.0) -> subprocess.Popen:
    """A real ``dvfo-cloud`` process (``python -m dvfo_ros.cli.cloud ARGS``), returned once it says ready."""
    proc = subprocess.Popen([sys.executable, "-m", "dvfo_ros.cli.cloud", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout_s
    lines: List[str] = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if "dvfo-cloud ready" in line:
            threading.Thread(target=_drain, args=(proc,), daemon=True).start()   # its log must never block it
            return proc
    stop_cloud(proc)
    raise RuntimeError("dvfo-cloud did not start: " + " | ".join(lines[-3:]))


def _drain(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    for _ in proc.stdout:
        pass


def stop_cloud(proc: subprocess.Popen, timeout_s: float = 10.0) -> Optional[int]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
