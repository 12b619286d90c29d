"""The cloud side of DVFO: a ZeroMQ ROUTER that runs the model's cloud tail on offloaded channels.

One request is [identity, header, payload]; the header is validated against `Limits` and the
`accept` dict (the model/split/artifact this server serves) before the payload is inflated, and
every refusal is an error reply that names the reason, so the edge falls back to edge-only at once
instead of waiting for its deadline. A request whose deadline has already passed is refused
without running the tail: its edge has given up, and the GPU time belongs to fresher frames.
ROUTER fair-queues input across connected edges, so N robots are served round-robin.
Runs with or without ROS (dvfo-cloud is its command line).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple, Union

import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from dvfo_ros.core.wire.codec import CodecError, Limits, decode_header, decode_payload, encode_reply
from dvfo_ros.cloud.batching import BatchPolicy, BatchRunner, default_batch_key

TailRunner = Callable[[Dict[str, Any], np.ndarray, np.ndarray], np.ndarray]
"""(header, feat float32 [k,h,w], channel_idx int64 [k]) -> logits float32 [K]."""

log = logging.getLogger("dvfo_ros.cloud")
_MAX_CLIENTS_TRACKED = 1024  # without CURVE every reconnect is a new identity; keep stats bounded


def _best_effort_seq(raw_header: bytes) -> int:
    """The request's seq if its header is readable JSON with an int seq, else -1 (for error replies)."""
    try:
        seq = json.loads(bytes(raw_header)[:1 << 18]).get("seq")
    except Exception:  # noqa: BLE001 - any garbage: the seq is simply unknown
        return -1
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 1 << 63 else -1


@dataclass
class _Job:
    identity: bytes
    header: Dict[str, Any]
    feat: np.ndarray
    idx: np.ndarray
    t_recv: float


class CloudServer:
    """ROUTER socket + a tail runner; serve_forever in any thread, stop() from any other."""

    def __init__(self, bind: str, runner: TailRunner, *, limits: Limits = Limits(),
                 accept: Optional[Dict[str, Any]] = None, curve_secret: Optional[bytes] = None,
                 curve_public: Optional[bytes] = None, curve_clients_dir: Optional[str] = None,
                 deadline_slack_s: float = 0.5, heartbeat_ms: int = 1000,
                 batch_runner: Optional[BatchRunner] = None,
                 batch_key: Callable[[Dict[str, Any]], Hashable] = default_batch_key,
                 max_batch: int = 1, batch_window_ms: float = 3.0,
                 scheduler: Any = None, pool: Any = None, schedule_interval_s: float = 0.5,
                 default_one_ms: float = 10.0) -> None:
        self.runner = runner
        # a scheduler (dvfo_ros.cloud.schedulers) + an InstancePool: batch size x instances chosen per interval
        if scheduler is not None and pool is None:
            raise ValueError("a scheduler needs an InstancePool of the cloud tail")
        self.batch_runner = batch_runner
        self.batch_key = batch_key
        self.batching = batch_runner is not None and max_batch > 1
        self.policy = BatchPolicy(max_batch=max(1, max_batch), window_s=max(0.0, batch_window_ms) / 1000.0)
        self.limits = limits
        self.accept = dict(accept or {})
        self.deadline_slack_s = deadline_slack_s  # tolerate this much edge/cloud clock skew
        self.stats: Dict[str, Any] = {"requests": 0, "answered": 0, "errors": 0, "expired": 0,
                                      "pings": 0, "send_dropped": 0, "batches": 0, "max_batch_seen": 0,
                                      "by_client": {}}
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._serving = False
        self._ctx = zmq.Context()
        self._auth: Optional[ThreadAuthenticator] = None
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.RCVHWM, 1000)
        if heartbeat_ms > 0:
            sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * heartbeat_ms)
        if curve_secret is not None:
            if curve_public is None:
                raise ValueError("CURVE needs the server's public key too (dvfo-keygen writes both)")
            if curve_clients_dir is not None:
                self._auth = ThreadAuthenticator(self._ctx)
                self._auth.start()
                self._auth.configure_curve(domain="*", location=curve_clients_dir)
            sock.curve_secretkey = curve_secret
            sock.curve_publickey = curve_public
            sock.curve_server = True
        elif curve_clients_dir is not None:
            raise ValueError("a CURVE clients directory needs the server's secret key")
        self.secure = curve_secret is not None
        try:
            sock.bind(bind)
        except zmq.ZMQError as exc:
            self._close_now(sock)
            raise OSError(f"cannot bind {bind}: {exc}") from None
        self.endpoint: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        self.scheduled: Any = None
        if scheduler is not None:
            from dvfo_ros.cloud.scheduled import ScheduledLoop
            self.scheduled = ScheduledLoop(self, pool, scheduler, schedule_interval_s, default_one_ms)

    # ------------------------------------------------------------------ lifecycle
    def serve_forever(self) -> None:
        """Answer requests until stop(); never raises on a bad request."""
        self._serving = True
        try:
            if self.scheduled is not None:
                self.scheduled.run()
            while not self._stop.is_set():
                if not self._sock.poll(100, zmq.POLLIN):
                    continue
                jobs = self._receive_ready([], 1 if not self.batching else self.policy.max_batch)
                if self.batching and jobs:
                    jobs = self._fill_batch(jobs)
                if jobs:
                    self._run_jobs(jobs)
        finally:
            self._close_now(self._sock)

    def start_in_thread(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.serve_forever, name="dvfo-cloud", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Stop serving; the serving loop closes the socket itself (sockets stay in one thread)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        elif not self._serving:
            self._close_now(self._sock)

    def _close_now(self, sock: zmq.Socket) -> None:
        if self._closed:
            return
        self._closed = True
        sock.close(0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    # ------------------------------------------------------------------ receiving
    def _client_name(self, frames: List[zmq.Frame]) -> str:
        try:
            user = frames[-1].get("User-Id")  # the client's CURVE public key under authentication
        except (zmq.ZMQError, AttributeError):
            user = None
        return str(user) if user else frames[0].bytes.hex()

    def _receive_ready(self, jobs: List[_Job], cap: int) -> List[_Job]:
        """Read requests already waiting (up to `cap` runnable jobs); refusals are answered at once."""
        while len(jobs) < cap:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            t_recv = time.perf_counter()
            identity = frames[0].bytes
            self.policy.note_arrival(time.monotonic(), identity)
            self.stats["requests"] += 1
            by_client = self.stats["by_client"]
            client = self._client_name(frames)
            if client in by_client or len(by_client) < _MAX_CLIENTS_TRACKED:
                by_client[client] = by_client.get(client, 0) + 1
            prepared = self._prepare([f.bytes for f in frames[1:]])
            if isinstance(prepared, list):
                self._send(identity, prepared)
            else:
                header, feat, idx = prepared
                jobs.append(_Job(identity, header, feat, idx, t_recv))
        return jobs

    def _fill_batch(self, jobs: List[_Job]) -> List[_Job]:
        """Hold the batch open for more requests until the window or the earliest deadline closes it."""
        opened = time.monotonic()
        while len(jobs) < self.policy.max_batch and self.policy.worth_waiting(time.monotonic()):
            earliest = min(j.header["deadline"] for j in jobs)
            close_by = self.policy.close_by(opened, earliest, time.time(), time.monotonic(), len(jobs))
            remaining_ms = (close_by - time.monotonic()) * 1000.0
            if remaining_ms <= 0 or not self._sock.poll(max(1, int(remaining_ms)), zmq.POLLIN):
                break
            jobs = self._receive_ready(jobs, self.policy.max_batch)
        return jobs

    def _send(self, identity: bytes, reply: List[bytes]) -> None:
        try:
            self._sock.send_multipart([identity] + reply, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.stats["send_dropped"] += 1

    # ------------------------------------------------------------------ one request
    def handle(self, body: List[bytes]) -> List[bytes]:
        """Reply frames for one request body [header, payload]; every failure is an error reply."""
        t0 = time.perf_counter()
        prepared = self._prepare(body)
        if isinstance(prepared, list):
            return prepared
        header, feat, idx = prepared
        return self._run_one(header, feat, idx, t0)

    def _prepare(self, body: List[bytes]) -> Union[List[bytes], Tuple[Dict[str, Any], np.ndarray, np.ndarray]]:
        """Validated (header, feat, idx) ready to run, or the reply frames that answer it already."""
        seq = -1
        try:
            header = decode_header(body, self.limits)
            seq = header["seq"]
            if header["kind"] == "ping":
                self.stats["pings"] += 1
                return encode_reply(seq, None, kind="pong")
            self._check_accept(header)
            late_s = time.time() - header["deadline"]
            if late_s > self.deadline_slack_s:
                self.stats["expired"] += 1
                return self._error(seq, f"deadline passed {late_s * 1000:.0f} ms ago; tail not run")
            feat, idx = decode_payload(header, body[1])
        except CodecError as exc:
            if seq < 0 and body:
                seq = _best_effort_seq(body[0])
            return self._error(seq, f"bad request: {exc}")
        return header, feat, idx

    def _result(self, seq: int, logits: Any, t0: float) -> List[bytes]:
        logits = np.asarray(logits, dtype=np.float32).reshape(-1)
        if logits.size == 0 or logits.size > self.limits.max_logits or not np.all(np.isfinite(logits)):
            return self._error(seq, f"cloud tail returned {logits.size} logits, not finite / in range")
        self.stats["answered"] += 1
        return encode_reply(seq, logits, cloud_ms=(time.perf_counter() - t0) * 1000.0)

    def _run_one(self, header: Dict[str, Any], feat: np.ndarray, idx: np.ndarray, t0: float) -> List[bytes]:
        try:
            logits = self.runner(header, feat, idx)
        except Exception as exc:  # noqa: BLE001 - a failing tail must not take the server down
            log.exception("cloud tail failed on seq %d", header["seq"])
            return self._error(header["seq"], f"cloud tail failed: {type(exc).__name__}: {exc}")
        return self._result(header["seq"], logits, t0)

    def _run_jobs(self, jobs: List[_Job]) -> None:
        if not self.batching:
            for job in jobs:
                if job.header["kind"] == "infer" and not self._refuse_late([job]):
                    continue
                t0 = time.perf_counter()
                self._send(job.identity, self._run_one(job.header, job.feat, job.idx, job.t_recv))
                if job.header["kind"] == "infer":
                    self.policy.record(1, time.perf_counter() - t0)
            return
        groups: Dict[Any, List[_Job]] = {}
        for job in jobs:
            if job.header["kind"] != "infer":      # the batch runner runs cloud tails only
                self._send(job.identity, self._run_one(job.header, job.feat, job.idx, job.t_recv))
                continue
            groups.setdefault(self.batch_key(job.header), []).append(job)
        for group in groups.values():
            group = self._refuse_late(group)
            if group:
                self._run_batch(group)

    def _refuse_late(self, group: List[_Job]) -> List[_Job]:
        """Refuse, unrun, the requests this batch would finish after their deadline (+ the skew slack): their
        edge has given up by then, and under overload running them would make every later request late too."""
        finish = time.time() + self.policy.expected_run_s(len(group)) - self.deadline_slack_s
        keep = [j for j in group if j.header["deadline"] >= finish]
        for job in group:
            if job.header["deadline"] < finish:
                self.stats["expired"] += 1
                self._send(job.identity, self._error(job.header["seq"], "cannot finish by its deadline; tail not run"))
        return keep

    def _run_batch(self, group: List[_Job]) -> None:
        assert self.batch_runner is not None
        t0 = time.perf_counter()
        try:
            outputs = self.batch_runner([(j.header, j.feat, j.idx) for j in group])
            if len(outputs) != len(group):
                raise RuntimeError(f"batch runner returned {len(outputs)} results for {len(group)} requests")
        except Exception as exc:  # noqa: BLE001 - retry one by one so one bad frame sinks only itself
            if len(group) > 1:
                for job in group:
                    self._run_batch([job])
                return
            log.exception("cloud tail failed on seq %d", group[0].header["seq"])
            self._send(group[0].identity,
                       self._error(group[0].header["seq"], f"cloud tail failed: {type(exc).__name__}: {exc}"))
            return
        self.policy.record(len(group), time.perf_counter() - t0)
        self.stats["batches"] += 1
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(group))
        for job, logits in zip(group, outputs):
            self._send(job.identity, self._result(job.header["seq"], logits, job.t_recv))

    def _error(self, seq: int, message: str) -> List[bytes]:
        self.stats["errors"] += 1
        self.last_error = message
        log.warning("seq %d refused: %s", seq, message)
        return encode_reply(seq, None, error=message)

    def _check_accept(self, header: Dict[str, Any]) -> None:
        partition = header["kind"] == "partition"
        for key in ("model", "artifact_id") if partition else ("model", "split", "artifact_id", "total_channels"):
            if key in self.accept and header.get(key) != self.accept[key]:
                raise CodecError(f"{key} {header.get(key)!r} not served here (this server serves "
                                 f"{self.accept[key]!r})")
        if partition:
            self._check_partition(header)
            return
        if "hw" in self.accept and list(header["shape"][1:]) != list(self.accept["hw"]):
            raise CodecError(f"feature map {header['shape'][1]}x{header['shape'][2]} does not match "
                             f"the served split's {self.accept['hw'][0]}x{self.accept['hw'][1]}")

    def _check_partition(self, header: Dict[str, Any]) -> None:
        """A whole map after stage `split`: a cut this server can finish, and exactly the map that stage
        makes (every channel, its size); model and artifact are checked by the caller."""
        shapes = self.accept.get("partitions")
        if not shapes:
            raise CodecError("this server runs no whole-layer partitions")
        expected = shapes.get(int(header["split"]))
        if expected is None:
            raise CodecError(f"partition point {header['split']} not served here (0..{max(shapes)})")
        if [header["total_channels"], *header["shape"][1:]] != list(expected) or header["shape"][0] != expected[0]:
            raise CodecError(f"partition {header['split']} takes the whole {'x'.join(map(str, expected))} map, "
                             f"got {'x'.join(map(str, header['shape']))} of {header['total_channels']} channels")

