"""SIGINT/SIGTERM handlers installed in one way, and put back in one way.

The rule every caller shares: a signal the process inherited as ignored (``SIG_IGN``: started in the
background by a shell script, say) stays ignored, and outside the main thread (where Python refuses
to install handlers) nothing is installed.
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Any, Callable, Dict, Iterator, Sequence

Handler = Callable[[int, Any], None]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_handlers(make_handler: Callable[[int, Any], Handler],
                     signals: Sequence[int] = STOP_SIGNALS) -> Dict[int, Any]:
    """Install ``make_handler(sig, previous)`` for each signal; returns {signal: previous handler} of those
    installed (ignored signals and, off the main thread, all of them are left alone)."""
    previous: Dict[int, Any] = {}
    for sig in signals:
        old = signal.getsignal(sig)
        if old == signal.SIG_IGN:
            continue                     # the process was told to ignore it: so do we
        try:
            signal.signal(sig, make_handler(sig, old))
        except ValueError:               # not the main thread
            continue
        previous[sig] = old
    return previous


def chain(previous: Any, signum: int, frame: Any) -> None:
    """Hand a signal over to the handler that was there before: call it (rclpy's, Python's
    KeyboardInterrupt), or for the default action re-deliver it so the process still dies by it."""
    if callable(previous):
        previous(signum, frame)
    else:                                # SIG_DFL or unknown (None: set outside Python)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def restore_handlers(previous: Dict[int, Any]) -> None:
    """Put back what ``install_handlers`` replaced."""
    for sig, old in previous.items():
        try:
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        except ValueError:
            pass


@contextlib.contextmanager
def handling_signals(handler: Handler, signals: Sequence[int] = STOP_SIGNALS,
                     chained: bool = False) -> Iterator[None]:
    """Run the block with ``handler(signum, frame)`` on these signals (by default SIGINT and SIGTERM),
    then put the previous handlers back. ``chained``: after ``handler``, hand the signal over to the
    previous handler (see ``chain``), so e.g. Ctrl-C still raises KeyboardInterrupt."""
    def make(sig: int, old: Any) -> Handler:
        def on_signal(signum: int, frame: Any) -> None:
            handler(signum, frame)
            if chained:
                chain(old, signum, frame)
        return on_signal

    previous = install_handlers(make, signals)
    try:
        yield
    finally:
        restore_handlers(previous)
