"""Hardware backends behind one interface, the factory that picks one, and the safety helpers.

``open_backend("auto")`` tries jetson -> linux -> sim and logs ONE line saying what it chose
and why the others were skipped. ``install_restore_handlers`` makes a killed process put the
clocks back (``restoring`` does it for one block of code); ``thermal_cap`` is the
backend-independent thermal guard the governor applies.
"""
from __future__ import annotations

import atexit
import contextlib
import signal
from typing import Any, Callable, Dict, Iterator, List, Optional

from dvfo_ros.core.errors import one_line
from dvfo_ros.core.hardware.base import (DOMAINS, ApplyResult, FrequencyTable, HardwareBackend,  # noqa: F401
                                         HardwareError, LogFn, Reading, clamp_to_table)
from dvfo_ros.core.signals import chain, handling_signals, install_handlers

BACKENDS = ("auto", "jetson", "linux", "nvml", "sim")

__all__ = ["BACKENDS", "ApplyResult", "FrequencyTable", "HardwareBackend", "HardwareError", "Reading",
           "clamp_to_table", "open_backend", "install_restore_handlers", "restoring", "thermal_cap",
           "guard_clocks", "recover_leftover_clocks"]


def _open_sim(profile: str) -> HardwareBackend:
    from dvfo_ros.core.hardware.sim import SimBackend
    return SimBackend(profile=profile)


def _open_one(name: str, root: str, profile: str, log: Optional[LogFn],
              profile_given: bool) -> HardwareBackend:
    if name == "jetson":
        from dvfo_ros.core.hardware.jetson import JetsonBackend
        return JetsonBackend(root=root, profile=profile if profile_given else None, log=log)
    if name == "linux":
        from dvfo_ros.core.hardware.linux import LinuxBackend
        return LinuxBackend(root=root, log=log)
    if name == "nvml":
        from dvfo_ros.core.hardware.nvml import NvmlBackend
        return NvmlBackend(log=log)
    if name == "sim":
        return _open_sim(profile)
    raise HardwareError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")


def open_backend(name: str = "auto", root: str = "/", profile: str = "xavier_nx",
                 log: Optional[LogFn] = None,
                 profile_given: Optional[bool] = None) -> HardwareBackend:
    """Open a backend by name; ``auto`` = first that works of jetson -> linux -> sim.

    ``profile`` is the twin profile for ``sim`` (and the EMC level fallback for a Nano);
    on a Jetson the board is detected unless ``profile_given`` says the user named it.
    linux is only chosen by ``auto`` when it can set CPU clocks (else the sim is more useful).
    """
    say = log or (lambda msg: None)
    given = profile_given if profile_given is not None else profile != "xavier_nx"
    if name != "auto":
        backend = _open_one(name, root, profile, log, given)
        say(f"hardware backend: {name} ({_describe(backend)})")
        return backend
    skipped: List[str] = []
    for candidate in ("jetson", "linux"):
        quiet: List[str] = []
        try:
            backend = _open_one(candidate, root, profile, quiet.append, given)
        except Exception as e:   # noqa: BLE001 - any failure just moves auto to the next one
            skipped.append(f"{candidate}: {one_line(e)}")
            continue
        if candidate == "linux" and not getattr(backend, "can_set", lambda: True)():
            skipped.append(f"linux: {_describe(backend)}; nothing settable")
            backend.close()
            continue
        extra = f"; {'; '.join(quiet)}" if quiet else ""
        say(f"hardware backend: {candidate} ({_describe(backend)}){extra}"
            + (f"; skipped {'; '.join(skipped)}" if skipped else ""))
        return backend
    backend = _open_sim(profile)
    say(f"hardware backend: sim (profile {profile}); skipped {'; '.join(skipped)}")
    return backend


def _describe(backend: HardwareBackend) -> str:
    describe = getattr(backend, "describe", None)
    return describe() if callable(describe) else getattr(backend, "profile", "") or backend.name


# --- restore on exit ---------------------------------------------------------------------------

def install_restore_handlers(backend: HardwareBackend,
                             signals: tuple = (signal.SIGTERM, signal.SIGINT)) -> Callable[[], None]:
    """Restore the backend's settings at interpreter exit and on SIGTERM/SIGINT, for the rest of the process.

    Each signal handler restores, then hands over to the handler that was there before (rclpy's,
    Python's KeyboardInterrupt) or, for the default action, re-delivers the signal so the process
    still dies by it. An ignored signal stays ignored (atexit still restores). Returns the restore
    function (idempotent) for explicit use. ``restoring`` is the same for one block of code.
    """
    restore = _restorer(backend)
    atexit.register(restore)
    install_handlers(lambda sig, previous: _restore_then_chain(restore, previous), signals)
    return restore


@contextlib.contextmanager
def restoring(backend: HardwareBackend,
              signals: tuple = (signal.SIGTERM, signal.SIGINT)) -> Iterator[Callable[[], None]]:
    """``with restoring(backend):`` the block's clock changes are undone when it ends, however it ends.

    Inside the block SIGTERM/SIGINT restore first and then chain as ``install_restore_handlers`` does;
    after it the previous handlers are back. Yields the (idempotent) restore function.
    """
    restore = _restorer(backend)
    with handling_signals(lambda signum, frame: restore(), signals, chained=True):
        try:
            yield restore
        finally:
            restore()


def _restorer(backend: HardwareBackend) -> Callable[[], None]:
    def restore() -> None:
        try:
            backend.restore()
        except Exception:   # noqa: BLE001 - exiting anyway; restore reports its own errors
            pass
    return restore


def _restore_then_chain(restore: Callable[[], None], previous: Any) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        restore()
        chain(previous, signum, frame)   # e.g. default_int_handler -> KeyboardInterrupt; SIG_DFL -> die by it
    return handler


# --- restore after a SIGKILL: state file + watchdog (state.py, watchdog.py) -------------------

def guard_clocks(backend: HardwareBackend, root: str = "/", watchdog: bool = True) -> Optional[Any]:
    """For a sysfs backend (jetson, linux): record each original in the state file for ``root``
    BEFORE its first write, and (``watchdog``) start the process that restores from it if this one
    is killed. Returns the state.Watchdog (``stop()`` it after the normal restore), or None."""
    from dvfo_ros.core.hardware import state
    from dvfo_ros.core.hardware.sysfs import SysfsWriter
    writer = getattr(backend, "writer", None)
    if not isinstance(writer, SysfsWriter):
        return None            # sim: nothing to restore; nvml: its restore resets the driver's locks
    writer.persist_to(state.state_path(root), backend.name)
    return state.Watchdog(writer.state_file or state.state_path(root)) if watchdog else None


def recover_leftover_clocks(root: str = "/", log: Optional[LogFn] = None) -> Optional[List[str]]:
    """Restore clocks a killed governor left behind (its state file, its pid gone); None: nothing left."""
    from dvfo_ros.core.hardware import state
    errors = state.recover_leftover(root)
    if errors is not None and log is not None:
        log(f"restored the clocks a killed governor left behind ({state.state_path(root)})"
            + (f"; failed: {'; '.join(errors)}" if errors else ""))
    return errors


# --- thermal guard -----------------------------------------------------------------------------

def thermal_cap(table: FrequencyTable, temperature_c: float, limit_c: float,
                fraction_at_limit: float = 0.7, fraction_per_c: float = 0.05,
                min_fraction: float = 0.3) -> Dict[str, int]:
    """Max frequency per domain allowed at this temperature; {} at or below the limit.

    Above ``limit_c`` each domain is capped at ``fraction_at_limit`` of its top level, 5 %
    lower per degree over the limit, never below ``min_fraction`` (and never below the lowest
    level), so a hotter board is throttled harder whatever the policy asks.
    """
    if temperature_c <= limit_c:
        return {}
    frac = max(min_fraction, min(1.0, fraction_at_limit - fraction_per_c * (temperature_c - limit_c)))
    caps: Dict[str, int] = {}
    for d in DOMAINS:
        levels = table.levels(d)
        if levels:
            caps[d] = clamp_to_table(int(max(levels) * frac), levels)
    return caps
