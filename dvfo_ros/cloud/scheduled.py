"""The cloud server's serving loop under a scheduler (``dvfo-cloud --scheduler fixed:B[,C] | bcedge:PATH``).

The loop owns the socket (ZeroMQ sockets stay in one thread): it reads requests into a FIFO, hands
batches to an ``InstancePool`` of concurrent tail copies, and sends the replies the workers hand
back. Every ``interval_s`` it builds the scheduler's observation from its own queue (the same vector
as the server twin's, ``scheduler_obs``) and takes the scheduler's (batch size, instances). When a
free instance starts a batch follows the twin's rule (``ServerQueue``): B requests wait, or the oldest
has waited the window, or waiting longer would make the oldest miss its deadline. Only requests with
the same batch key share a batch; a request that could not finish by its deadline (plus the clock-skew
slack, ``--deadline-slack-s``) even alone is refused unrun, as the twin drops it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, Tuple

import numpy as np
import zmq

from dvfo_ros.cloud.instances import InstancePool
from dvfo_ros.cloud.schedulers import Scheduler
from dvfo_ros.core.mdp.scheduler_env import scheduler_obs

log = logging.getLogger("dvfo_ros.cloud")


class ScheduledLoop:
    def __init__(self, server: Any, pool: InstancePool, scheduler: Scheduler, interval_s: float = 0.5,
                 default_one_ms: float = 10.0, margin_s: float = 0.001) -> None:
        self.server, self.pool, self.scheduler = server, pool, scheduler
        self.interval_s = float(interval_s)
        self.default_one_ms = float(default_one_ms)
        self.margin_s = float(margin_s)
        self.window_s = server.policy.window_s
        self.queue: Deque[Any] = deque()
        self.finished: Deque[Tuple[List[Any], Any, float, int]] = deque()
        self._lock = threading.Lock()
        self.setting = (1, 1)
        self.arrived = 0
        self.busy_s = 0.0
        server.stats["settings"] = {}

    # ------------------------------------------------------------------ decisions
    def _decide(self) -> None:
        srv = self.server
        one_s = srv.policy.run_s.get(1)
        now = time.time()
        slack_ms = min(((j.header["deadline"] - now) * 1000.0 for j in self.queue), default=float("inf"))
        util = self.busy_s / (self.interval_s * self.setting[1])
        obs = scheduler_obs(len(self.queue), self.arrived / self.interval_s, slack_ms, util, *self.setting,
                            one_ms=1000.0 * one_s if one_s else self.default_one_ms)
        b, c = self.scheduler.decide(obs)
        self.setting = (max(1, int(b)), min(max(1, int(c)), self.pool.size))
        key = f"{self.setting[0]},{self.setting[1]}"
        srv.stats["settings"][key] = srv.stats["settings"].get(key, 0) + 1
        self.arrived, self.busy_s = 0, 0.0

    def expected_s(self, size: int) -> float:
        """A batch's run time from the measured ones: the line through them (as the twin's fit), never from
        one stale size alone (a size refused because of its estimate would never be measured again)."""
        known = self.server.policy.run_s
        if not known:
            return 0.0
        if len(known) == 1:
            (b, t), = known.items()
            return t * size / b if size >= b else t
        sizes = sorted(known)
        slope, base = np.polyfit(np.array(sizes, float), np.array([known[b] for b in sizes]), 1)
        return float(max(0.0, base + max(slope, 0.0) * size))

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        srv = self.server
        next_decision = time.monotonic()
        while not srv._stop.is_set():
            now = time.monotonic()
            if now >= next_decision:
                self._decide()
                next_decision = now + self.interval_s
            waiting = bool(self.queue) or self.pool.busy > 0
            timeout_ms = 1 if waiting else max(1, min(100, int((next_decision - now) * 1000)))
            if srv._sock.poll(timeout_ms, zmq.POLLIN):
                for job in srv._receive_ready([], 1024):
                    self.arrived += 1
                    if job.header["kind"] != "infer":     # whole-layer partitions run one by one, at once
                        srv._send(job.identity, srv._run_one(job.header, job.feat, job.idx, job.t_recv))
                    else:
                        self.queue.append(job)
            self._collect()
            self._dispatch()
        self.pool.close()

    def _ready(self, batch: int) -> bool:
        head = self.queue[0]
        if len(self.queue) >= batch or time.perf_counter() - head.t_recv >= self.window_s:
            return True
        run_s = self.expected_s(min(batch, len(self.queue) + 1))
        return time.time() + run_s + self.margin_s >= head.header["deadline"]

    def _dispatch(self) -> None:
        srv = self.server
        batch, instances = self.setting
        while self.queue and self.pool.busy < instances:
            head = self.queue[0]
            alone_s = self.expected_s(1)
            if time.time() + alone_s - head.header["deadline"] > srv.deadline_slack_s:
                self.queue.popleft()
                srv.stats["expired"] += 1
                srv._send(head.identity, srv._error(head.header["seq"], "cannot finish by its deadline; tail not run"))
                continue
            if not self._ready(batch):
                return
            key = srv.batch_key(head.header)
            size = min(batch, len(self.queue))
            bound = time.time() + self.expected_s(size) - srv.deadline_slack_s
            group: List[Any] = []
            for j in list(self.queue):
                if len(group) >= size:
                    break
                if srv.batch_key(j.header) != key:
                    continue
                self.queue.remove(j)
                if j.header["deadline"] >= bound:
                    group.append(j)
                else:                                  # this batch would make it late: refused unrun
                    srv.stats["expired"] += 1
                    srv._send(j.identity, srv._error(j.header["seq"], "cannot finish by its deadline; tail not run"))
            if not group:
                continue
            self.pool.submit([(j.header, j.feat, j.idx) for j in group], self._done_for(group))

    def _done_for(self, group: List[Any], attempt: int = 0) -> Callable[[Any, float], None]:
        def done(out: Any, seconds: float) -> None:      # on the worker's thread
            with self._lock:
                self.finished.append((group, out, seconds, attempt))
        return done

    def _failed(self, group: List[Any], out: Any, attempt: int) -> None:
        """A batch that failed: in-process, each request once more on its own (one bad frame sinks only itself);
        on remote replicas (a replica died), the batch once more while its earliest deadline allows, else an
        error reply each, so its robot falls back at once."""
        srv = self.server
        if not getattr(self.pool, "remote", False):
            for job in group:
                srv._send(job.identity, srv._run_one(job.header, job.feat, job.idx, job.t_recv))
            return
        srv.stats["replica_failures"] = srv.stats.get("replica_failures", 0) + 1
        earliest = min(j.header["deadline"] for j in group)
        if attempt == 0 and time.time() + self.expected_s(len(group)) - srv.deadline_slack_s <= earliest:
            srv.stats["retried"] = srv.stats.get("retried", 0) + 1
            self.pool.submit([(j.header, j.feat, j.idx) for j in group], self._done_for(group, attempt + 1))
            return
        reason = f"{type(out).__name__}: {out}" if isinstance(out, BaseException) else "wrong number of results"
        reason = "cloud replica failed (" + " ".join(reason.split())[:160] + ")"
        for job in group:
            srv._send(job.identity, srv._error(job.header["seq"], reason))

    def _collect(self) -> None:
        srv = self.server
        while True:
            with self._lock:
                if not self.finished:
                    return
                group, out, seconds, attempt = self.finished.popleft()
            self.busy_s += seconds
            if isinstance(out, BaseException) or len(out) != len(group):
                self._failed(group, out, attempt)
                continue
            srv.policy.record(len(group), seconds)
            srv.stats["batches"] += 1
            srv.stats["max_batch_seen"] = max(srv.stats["max_batch_seen"], len(group))
            for job, logits in zip(group, out):
                srv._send(job.identity, srv._result(job.header["seq"], logits, job.t_recv))
