"""The DVFO agent's concurrent learner thread ("thinking while moving", ``dvfo.py``'s docstring).

``LearnerThread`` is a mixin: the agent supplies ``update`` (one gradient step), ``_publish`` (hand
the acting net to the actor), ``updates``, ``steps`` and ``hp["replay_ratio"/"publish_every"]``.
"""
from __future__ import annotations

import atexit
import threading
import time
import weakref
from typing import Any, Dict, Optional

_LIVE: "weakref.WeakSet[LearnerThread]" = weakref.WeakSet()


@atexit.register
def _stop_learners() -> None:
    """Join learner threads before the interpreter (and torch) tear down."""
    for agent in list(_LIVE):
        agent.close()


class LearnerThread:
    hp: Dict[str, Any]
    updates: int
    steps: int

    def _init_learner(self) -> None:
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def update(self) -> float:
        raise NotImplementedError

    def _publish(self) -> None:
        raise NotImplementedError

    def _start_learner(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._learner_loop, name="dvfo-learner", daemon=True)
            _LIVE.add(self)
            self._thread.start()

    def _learner_loop(self) -> None:
        """Train whenever there is data, capped at ``replay_ratio`` updates per observed frame."""
        while not self._stop.is_set():
            if self.updates >= self.hp["replay_ratio"] * self.steps:
                time.sleep(0.0002)
                continue
            self.update()
            if self.updates % self.hp["publish_every"] == 0:
                self._publish()
        self._publish()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            self._thread = None

    def wait_for_learner(self, timeout_s: float = 5.0) -> None:
        """Let the learner catch up to its replay-ratio cap (tests and end-of-training only)."""
        end = time.monotonic() + timeout_s
        while self._thread is not None and self.updates < self.hp["replay_ratio"] * self.steps \
                and time.monotonic() < end:
            time.sleep(0.001)
