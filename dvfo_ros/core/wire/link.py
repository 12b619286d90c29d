"""The edge's ZeroMQ client to the cloud server: non-blocking sends, per-seq waits, reconnection.

Why these socket options: a robot must never stall a frame on a dead link. IMMEDIATE=1 keeps
messages off a connection that is not up (the send fails at once and the frame falls back to
edge-only instead of queueing stale feature maps for a server that may come back minutes later);
a small send high-water mark bounds memory; ZMTP heartbeats notice a silently dead peer (cable
pulled, NAT dropped) without waiting for TCP; reconnection is ZeroMQ's own, at a fixed interval.
Replies are matched by seq, so a reply that arrives after its frame gave up can never be taken
for the current frame's answer.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple, TypedDict

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from dvfo_ros.core.wire.codec import CodecError, Limits, Reply, decode_reply, encode_ping, wire_bytes

_PING_SEQ_BASE = 1 << 62  # pings live far above frame seqs so the two can never be confused
_MAX_OUTSTANDING = 256
_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class CurveKeys(TypedDict, total=False):
    """CloudLink's CurveZMQ keyword arguments (none given: plaintext)."""

    curve_server_public: Optional[bytes]
    curve_public: Optional[bytes]
    curve_secret: Optional[bytes]


def load_keypair(path: str) -> Tuple[bytes, Optional[bytes]]:
    """(public, secret-or-None) z85 keys from a file written by dvfo-keygen / zmq.auth."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read CurveZMQ key file {path}: {exc}") from None
    return public, secret


class CloudLink:
    """DEALER socket to the cloud's ROUTER; thread-safe for one executor thread plus a watcher."""

    def __init__(self, endpoint: str, *, curve_server_public: Optional[bytes] = None,
                 curve_public: Optional[bytes] = None, curve_secret: Optional[bytes] = None,
                 heartbeat_ms: int = 500, reconnect_ms: int = 100, send_hwm: int = 8,
                 limits: Limits = Limits()) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.stats: Dict[str, int] = {"sent": 0, "answered": 0, "timeouts": 0, "late_discarded": 0,
                                      "errors": 0, "reconnects": 0, "dropped": 0, "bytes_sent": 0,
                                      "disconnects": 0, "handshake_failures": 0}
        self._lock = threading.RLock()
        self._outstanding: "OrderedDict[int, float]" = OrderedDict()  # seq -> monotonic send time
        self._ready: Dict[int, Reply] = {}  # replies for outstanding seqs not waited on yet
        self._ping_seq = _PING_SEQ_BASE
        self._handshakes = 0
        self.connected = False
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, max(1, send_hwm))
        sock.setsockopt(zmq.RCVHWM, 256)
        sock.setsockopt(zmq.RECONNECT_IVL, max(1, reconnect_ms))
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 0)  # fixed interval: recover within reconnect_ms
        sock.setsockopt(zmq.CONNECT_TIMEOUT, max(100, 4 * heartbeat_ms))
        if heartbeat_ms > 0:
            sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * heartbeat_ms)
            sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * heartbeat_ms)
        if curve_server_public is not None:
            if curve_public is None or curve_secret is None:
                curve_public, curve_secret = zmq.curve_keypair()  # encrypted, anonymous client
            sock.curve_serverkey = curve_server_public
            sock.curve_publickey = curve_public
            sock.curve_secretkey = curve_secret
        self._monitor = sock.get_monitor_socket(_EVENTS)
        self._sock = sock
        sock.connect(endpoint)

    # ------------------------------------------------------------------ connection state
    def _drain_monitor(self) -> None:
        while self._monitor.poll(0):
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshakes += 1
                if self._handshakes > 1:
                    self.stats["reconnects"] += 1
                self.connected = True
            elif event == zmq.EVENT_DISCONNECTED:
                if self.connected:
                    self.stats["disconnects"] += 1
                self.connected = False
            else:
                self.stats["handshake_failures"] += 1

    def is_connected(self) -> bool:
        """Whether a ZMTP session to the server is up right now (as of the last monitor event)."""
        with self._lock:
            self._drain_monitor()
            return self.connected

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the ZMTP session is up (True) or timeout_s passes (False); for start-up."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            with self._lock:
                self._drain_monitor()
                if self.connected:
                    return True
                remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
                if remaining_ms <= 0:
                    return False
                self._monitor.poll(min(remaining_ms, 50))

    # ------------------------------------------------------------------ requests
    def submit(self, frames: List[bytes], seq: int) -> int:
        """Queue one request without blocking; bytes handed to ZeroMQ, 0 if dropped (no link/HWM)."""
        with self._lock:
            self._drain_monitor()
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.stats["dropped"] += 1
                return 0
            n = wire_bytes(frames)
            self.stats["sent"] += 1
            self.stats["bytes_sent"] += n
            self._outstanding[seq] = time.monotonic()
            while len(self._outstanding) > _MAX_OUTSTANDING:
                old, _ = self._outstanding.popitem(last=False)
                self._ready.pop(old, None)
            return n

    def wait(self, seq: int, timeout_s: float) -> Optional[Reply]:
        """The reply for THAT seq, or None by the deadline; older replies are discarded by seq."""
        return self.wait_slice(seq, timeout_s, final=True)

    def forget(self, seq: int) -> None:
        """Stop waiting for seq without counting a timeout (it went to another front: MultiLink)."""
        with self._lock:
            self._outstanding.pop(seq, None)
            self._ready.pop(seq, None)

    def wait_slice(self, seq: int, timeout_s: float, final: bool = True) -> Optional[Reply]:
        """``wait`` for at most timeout_s; with final False a miss keeps seq outstanding (and is no timeout)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            if seq in self._ready:
                self._outstanding.pop(seq, None)
                return self._count(self._ready.pop(seq))
            if seq not in self._outstanding:
                return None  # never sent (dropped at submit) or already given up on
            while True:
                reply = self._receive(deadline)
                if reply is None:
                    if final:
                        self._outstanding.pop(seq, None)
                        self.stats["timeouts"] += 1
                    return None
                if reply.kind == "pong":
                    continue
                if reply.seq == seq:
                    self._outstanding.pop(seq, None)
                    return self._count(reply)
                if reply.seq in self._outstanding:
                    self._ready[reply.seq] = reply
                elif reply.seq < 0:
                    self.stats["errors"] += 1  # server could not read some request of ours
                else:
                    self.stats["late_discarded"] += 1

    def _count(self, reply: Reply) -> Reply:
        self.stats["errors" if reply.kind == "error" else "answered"] += 1
        return reply

    def _receive(self, deadline: float) -> Optional[Reply]:
        """Next well-formed reply before the deadline, or None; malformed replies are counted."""
        while True:
            remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000 + 0.999)
            if not self._sock.poll(remaining_ms, zmq.POLLIN):
                self._drain_monitor()
                return None
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            try:
                return decode_reply(frames, self.limits)
            except CodecError:
                self.stats["errors"] += 1

    def ping(self, timeout_s: float) -> bool:
        """True if the server answers a ping within timeout_s (waits for the link to come up)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            self._ping_seq += 1
            frames = encode_ping(self._ping_seq)
            while True:
                self._drain_monitor()
                try:
                    self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
                    break
                except zmq.Again:
                    if time.monotonic() >= deadline:
                        return False
                    time.sleep(0.005)
            while True:
                reply = self._receive(deadline)
                if reply is None:
                    return False
                if reply.kind == "pong":
                    if reply.seq == self._ping_seq:
                        return True
                elif reply.seq in self._outstanding:
                    self._ready[reply.seq] = reply
                else:
                    self.stats["late_discarded"] += 1

    def close(self) -> None:
        """Close the socket at once (LINGER 0: unsent requests are dropped, not flushed)."""
        with self._lock:
            if self._ctx.closed:
                return
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
            self._sock.close(0)
            self._ctx.term()

    def __enter__(self) -> "CloudLink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
