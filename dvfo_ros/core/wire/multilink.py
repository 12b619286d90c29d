"""Several cloud fronts for one robot: requests spread over them, failover when one dies.

``cloud_endpoint: "tcp://a:5555,tcp://b:5555"`` gives the executor a ``MultiLink``: one ``CloudLink`` (its
own DEALER, heartbeats and reconnection) per front, behind the same interface. This is the client side of
the ZeroMQ guide's reliability chapter, in our words: like its "freelance" client the robot knows every
front and needs no broker; like its "lazy pirate" client it resends a request it has given up on, but to
another front and only while the frame's deadline allows, so a frame still never waits past it.

- ``submit`` sends to the next connected front in turn (round robin); a front whose send fails (down,
  or its high-water mark full) is skipped, and only when every front refuses is the frame dropped (0).
- ``wait`` waits on the front holding the request in short slices. If that front's ZMTP session drops
  (its heartbeat or TCP says so) before the answer, the same frames (same seq) go to a connected front
  not tried yet and the wait goes on there, within the one timeout. ``stats["failovers"]`` counts them.
- A front that comes back is used again: its CloudLink reconnects on its own, and round robin finds it.
"""
from __future__ import annotations

import time
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple, Union

from dvfo_ros.core.wire.codec import Reply
from dvfo_ros.core.wire.link import CloudLink

_SLICE_S = 0.05            # how often a waiting frame looks at its front's connection
_SCHEMES = ("tcp://", "ipc://", "inproc://")
_MAX_HELD = 256


class MultiLink:
    """CloudLink's interface over several fronts (one executor thread plus a watcher, as CloudLink)."""

    def __init__(self, endpoints: Sequence[str], **link_kwargs: Any) -> None:
        if not endpoints:
            raise ValueError("MultiLink needs at least one endpoint")
        self.links: List[CloudLink] = [CloudLink(e, **link_kwargs) for e in endpoints]
        self.endpoint = ",".join(endpoints)
        self._next = 0
        self._held: Dict[int, Tuple[int, List[bytes]]] = {}   # seq -> (front index, frames)
        self._failovers = 0

    # ------------------------------------------------------------------ state
    @property
    def stats(self) -> Dict[str, int]:
        total: Dict[str, int] = {}
        for link in self.links:
            for k, v in link.stats.items():
                total[k] = total.get(k, 0) + v
        total["failovers"] = self._failovers
        total["fronts_up"] = sum(1 for link in self.links if link.connected)
        return total

    @property
    def connected(self) -> bool:
        return any(link.connected for link in self.links)

    def is_connected(self) -> bool:
        return any([link.is_connected() for link in self.links])    # every monitor drained, not the first only

    def wait_connected(self, timeout_s: float) -> bool:
        """True once any front's session is up (start-up), False after timeout_s."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if self.is_connected():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    # ------------------------------------------------------------------ requests
    def _order(self) -> List[int]:
        """Fronts to try: connected ones in round-robin order, then the rest (a send to those fails fast)."""
        n = len(self.links)
        ring = [(self._next + i) % n for i in range(n)]
        up = [i for i in ring if self.links[i].is_connected()]
        return up + [i for i in ring if i not in up]

    def _send(self, frames: List[bytes], seq: int, skip: Collection[int] = ()) -> Tuple[int, int]:
        """(bytes, front) of the first front (not in skip) that takes the frames, (0, -1) if none does."""
        for i in self._order():
            if i in skip:
                continue
            n = self.links[i].submit(frames, seq)
            if n:
                self._next = (i + 1) % len(self.links)
                return n, i
        return 0, -1

    def submit(self, frames: List[bytes], seq: int) -> int:
        n, front = self._send(frames, seq)
        if n:
            self._held[seq] = (front, frames)
            while len(self._held) > _MAX_HELD:
                self._held.pop(next(iter(self._held)))
        return n

    def wait(self, seq: int, timeout_s: float) -> Optional[Reply]:
        """The reply for that seq from whichever front holds it, or None by the deadline."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        held = self._held.pop(seq, None)
        if held is None:
            return None                       # never sent, or already waited for
        front, frames = held
        tried = {front}                       # each front gets the request once: no ping-pong between two
        while True:
            link = self.links[front]
            left = deadline - time.monotonic()
            last = left <= _SLICE_S
            slice_end = time.monotonic() + min(_SLICE_S, left)
            reply = link.wait_slice(seq, max(0.0, min(_SLICE_S, left)), final=last)
            if reply is not None:
                return reply
            if last:
                return None
            if time.monotonic() < slice_end - 0.005:
                return None                   # back before its slice: the front no longer holds seq (evicted)
            if not link.is_connected():
                n, other = self._send(frames, seq, skip=tried)
                if n:
                    link.forget(seq)
                    front = other
                    tried.add(other)
                    self._failovers += 1

    def ping(self, timeout_s: float) -> bool:
        """True when any front answers a ping within timeout_s."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            for link in self.links:
                if link.is_connected() and link.ping(min(0.2, max(0.0, deadline - time.monotonic()))):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def close(self) -> None:
        for link in self.links:
            link.close()

    def __enter__(self) -> "MultiLink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_endpoints(text: str) -> List[str]:
    """The endpoints in a comma-separated parameter; a ValueError (one line) on one ZeroMQ cannot connect to."""
    endpoints = [e.strip() for e in text.split(",") if e.strip()]
    for e in endpoints:
        if not e.startswith(_SCHEMES):
            raise ValueError(f"cloud endpoint {e!r}: expected tcp://HOST:PORT (or ipc://, inproc://)")
    return endpoints


def open_link(text: str, **link_kwargs: Any) -> Union[None, CloudLink, MultiLink]:
    """None for '', a CloudLink for one endpoint, a MultiLink for a comma-separated list."""
    endpoints = split_endpoints(text)
    if not endpoints:
        return None
    if len(endpoints) == 1:
        return CloudLink(endpoints[0], **link_kwargs)
    return MultiLink(endpoints, **link_kwargs)
