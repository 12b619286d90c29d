"""Status over a sliding window: what one task of a node reports to /diagnostics.

    win = EventWindow(window_s=5.0)          # the last 5 s of frames
    win.add(now, "failed")                   # one event, with the kinds it counts as
    win.count(now, "failed")                 # how many of those are still in the window
    freq = FrequencyCheck(expected_hz=10.0, tolerance=0.1)   # diagnostic_updater's FrequencyStatus idea
    freq.status(win, now)                    # OK inside [f (1 - tol), f (1 + tol)], WARN outside
    StaleCheck(timeout_s=2.0).status(last_event_s, now)      # WARN: nothing yet; ERROR: stopped

Levels are diagnostic_msgs/DiagnosticStatus's (OK 0, WARN 1, ERROR 2, STALE 3); ``merge`` is the
summary rule of diagnostic_updater's wrapper: the worst level wins, its messages lead.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, FrozenSet, Iterable, Optional, Tuple

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}


@dataclass
class Status:
    """One task's status: level, one-line message, key/value details (strings on the wire)."""

    level: int = OK
    message: str = ""
    values: Dict[str, str] = field(default_factory=dict)

    def add(self, **values: object) -> "Status":
        self.values.update({k: str(v) for k, v in values.items()})
        return self


def merge(parts: Iterable[Status]) -> Status:
    """One status from several checks: the worst level; the messages of the checks at that level first."""
    parts = list(parts)
    if not parts:
        return Status(OK, "")
    worst = max(p.level for p in parts)
    lead = [p.message for p in parts if p.level == worst and p.message]
    rest = [p.message for p in parts if p.level != worst and p.message and p.level > OK]
    out = Status(worst, "; ".join(lead + rest))
    for p in parts:
        out.values.update(p.values)
    return out


class EventWindow:
    """Events of the last ``window_s`` seconds (at most ``max_events``), each tagged with the kinds it
    counts as ("failed", "fallback", ...). Old events drop out, so one bad frame ages away."""

    def __init__(self, window_s: float = 5.0, max_events: int = 100000) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = float(window_s)
        self._events: Deque[Tuple[float, FrozenSet[str]]] = deque(maxlen=max_events)
        self.total = 0
        self.last_s: Optional[float] = None
        self.last_reason: Dict[str, str] = {}

    def add(self, now_s: float, *kinds: str, reason: str = "") -> None:
        self._events.append((float(now_s), frozenset(kinds)))
        self.total += 1
        self.last_s = float(now_s)
        for k in kinds:
            if reason:
                self.last_reason[k] = reason

    def restart(self) -> None:
        """Forget the events in the window (the expectation changed: old-rate events say nothing about it);
        the totals and the time of the last event stay."""
        self._events.clear()

    def prune(self, now_s: float) -> None:
        while self._events and self._events[0][0] < now_s - self.window_s:
            self._events.popleft()

    def count(self, now_s: float, kind: Optional[str] = None) -> int:
        self.prune(now_s)
        if kind is None:
            return len(self._events)
        return sum(1 for _, kinds in self._events if kind in kinds)

    def rate_hz(self, now_s: float) -> Optional[float]:
        """Events per second between the first and the last event in the window (None below 2 events)."""
        self.prune(now_s)
        if len(self._events) < 2:
            return None
        span = self._events[-1][0] - self._events[0][0]
        return (len(self._events) - 1) / span if span > 0 else None


@dataclass
class FrequencyCheck:
    """Rate against an expected one: OK within [expected (1 - tolerance), expected (1 + tolerance)]."""

    expected_hz: float
    tolerance: float = 0.1

    def status(self, window: EventWindow, now_s: float, what: str = "events") -> Status:
        rate = window.rate_hz(now_s)
        st = Status(OK, "").add(expected_hz=round(self.expected_hz, 3),
                                rate_hz="-" if rate is None else round(rate, 2))
        if self.expected_hz <= 0 or rate is None:
            return st          # nothing to compare yet (no or one event): the stale check speaks for that
        low, high = self.expected_hz * (1 - self.tolerance), self.expected_hz * (1 + self.tolerance)
        if rate < low:
            st.level, st.message = WARN, f"{what} at {rate:.1f} Hz, expected {self.expected_hz:g} Hz: too low"
        elif rate > high:
            st.level, st.message = WARN, f"{what} at {rate:.1f} Hz, expected {self.expected_hz:g} Hz: too high"
        return st


@dataclass
class StaleCheck:
    """Input that never came (WARN) or stopped (ERROR: no event for ``timeout_s``)."""

    timeout_s: float = 2.0

    def status(self, last_s: Optional[float], now_s: float, what: str = "input") -> Status:
        if last_s is None:
            return Status(WARN, f"no {what} received yet")
        age = now_s - last_s
        st = Status(OK, "").add(last_age_s=round(age, 2))
        if age > self.timeout_s:
            st.level, st.message = ERROR, f"stale {what}: last one {age:.1f} s ago (timeout {self.timeout_s:g} s)"
        return st


class StreamHealth:
    """A stream of events over a sliding window (frames in, frames out, decisions): how many, how many of
    each kind (``failed`` -> ERROR, ``fallback`` -> WARN), the rate against the expected one and whether it
    stopped. ``kinds_status`` and ``input_status`` are the two halves a node reports."""

    def __init__(self, window_s: float = 5.0, expected_hz: float = 0.0, tolerance: float = 0.1,
                 timeout_s: float = 2.0, what: str = "frames") -> None:
        self.window = EventWindow(window_s)
        self.freq = FrequencyCheck(expected_hz, tolerance)
        self.stale = StaleCheck(timeout_s)
        self.what = what

    def add(self, now_s: float, *kinds: str, reason: str = "") -> None:
        self.window.add(now_s, *kinds, reason=reason)

    def kinds_status(self, now_s: float, error_kind: str = "failed", warn_kind: str = "fallback",
                     idle_level: int = WARN) -> Status:
        """ERROR while an ``error_kind`` event is in the window, WARN for ``warn_kind``, ``idle_level`` with no
        events at all in the window, else OK; the counts in the window are the values."""
        w, span = self.window, f"{self.window.window_s:g} s"
        n, bad, warn = w.count(now_s), w.count(now_s, error_kind), w.count(now_s, warn_kind)
        st = Status(OK, f"{n} {self.what} in the last {span}")
        st.add(window_s=w.window_s, **{f"window_{self.what}": n, f"window_{error_kind}": bad,
                                       f"window_{warn_kind}": warn})
        if bad:
            st.level, st.message = ERROR, (f"{bad} of {n} {self.what} {error_kind} in the last {span}: "
                                           f"{w.last_reason.get(error_kind, '')}")
        elif warn:
            st.level, st.message = WARN, (f"{warn} of {n} {self.what} {warn_kind} in the last {span}: "
                                          f"{w.last_reason.get(warn_kind, '')}")
        elif n == 0:
            st.level, st.message = idle_level, f"no {self.what} in the last {span}"
        return st

    def input_status(self, now_s: float) -> Status:
        """Stale (never came: WARN; stopped for timeout_s: ERROR) merged with the frequency check."""
        st = merge([self.stale.status(self.window.last_s, now_s, self.what),
                    self.freq.status(self.window, now_s, self.what)])
        if st.level == OK:
            rate = self.window.rate_hz(now_s)
            st.message = f"{self.what} at {rate:.1f} Hz" if rate is not None else f"{self.what} arriving"
        return st.add(**{f"total_{self.what}": self.window.total})
