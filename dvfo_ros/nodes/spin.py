"""The one way every dvfo_ros node runs as its own process: spin until SIGINT/SIGTERM, exit 0.

Under ``ros2 launch`` a Ctrl-C reaches a node twice: the terminal sends SIGINT to the whole process
group, then launch sends its own. The second one used to land while the node was cleaning up (or
while Python was finalising) and killed it with exit code -2, which launch reports as a crash. After
the first signal, further SIGINTs are ignored until the process has exited; SIGTERM keeps its
handler, so launch can still escalate.
"""
from __future__ import annotations

import signal
import time
from typing import Callable, List, Optional, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

N = TypeVar("N", bound=Node)


def _ignore_further_sigint() -> None:
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):      # not the main thread: nothing to protect
        pass


def _context_goes_down(within_s: float) -> bool:
    """True when the default context is (or, within ``within_s``, becomes) shut down: rclpy's signal
    handler shuts it down a moment after the interrupt reaches Python."""
    deadline = time.monotonic() + within_s
    while rclpy.ok():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def run(make_node: Callable[[], N], args: Optional[List[str]] = None,
        cleanup: Optional[Callable[[N], object]] = None) -> int:
    """rclpy.init, build the node, spin; a SIGINT/SIGTERM is a clean stop. ``cleanup(node)`` runs on
    every exit (before the context shuts down when possible). Returns the process exit code (0)."""
    node: Optional[N] = None
    try:
        with rclpy.init(args=args):
            try:
                node = make_node()
                rclpy.spin(node)
            except (KeyboardInterrupt, ExternalShutdownException):
                raise
            except Exception:
                # a callback that was publishing when SIGTERM shut the context down ("publisher's
                # context is invalid"), or a SIGINT that landed inside rclpy's C++ take and came out as
                # "Unable to convert call argument" just before rclpy shut the context down. A stop,
                # not a crash; anything while the context stays up is real.
                if not _context_goes_down(within_s=1.0):
                    raise
            finally:
                _ignore_further_sigint()
                if node is not None and cleanup is not None:
                    cleanup(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        _ignore_further_sigint()
    return 0
