"""Clock settings that survive a SIGKILL: the originals in a state file, restored by plain writes.

A sysfs backend (jetson, linux) with a state file records, BEFORE its first write to a file, that
file's original value here (JSON: {"backend", "root", "pid", "originals": {real path: text}}, in
the order of the first writes). Whoever finds the file with its ``pid`` dead puts the values back
and deletes it: the watchdog process the governor starts (``python -m
dvfo_ros.core.hardware.watchdog``), the governor's next start, or ``dvfo-hw --restore``.
This module imports nothing else of dvfo_ros, so the watchdog stays small.

Location: $DVFO_STATE_DIR, else $XDG_RUNTIME_DIR/dvfo_ros, else /run/dvfo_ros (when writable),
else $XDG_STATE_HOME/dvfo_ros (~/.local/state/dvfo_ros); one file per sysfs root.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional


def state_dir() -> str:
    if os.environ.get("DVFO_STATE_DIR"):
        return os.environ["DVFO_STATE_DIR"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "dvfo_ros")
    if os.path.isdir("/run") and os.access("/run", os.W_OK):
        return "/run/dvfo_ros"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "dvfo_ros")


def state_path(root: str = "/") -> str:
    """The state file for the sysfs tree at ``root`` (fake trees in tests get their own)."""
    real = os.path.realpath(os.path.abspath(root or "/"))
    tag = "board" if real == "/" else hashlib.sha1(real.encode()).hexdigest()[:12]
    return os.path.join(state_dir(), f"clocks-{tag}.json")


def write_state(path: str, backend: str, root: str, originals: Dict[str, str], pid: Optional[int] = None) -> None:
    """Atomically write the state file (originals: real file path -> original text, first write first)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    doc = {"version": 1, "backend": backend, "root": os.path.abspath(root or "/"),
           "pid": os.getpid() if pid is None else int(pid), "originals": dict(originals)}
    fd, tmp = tempfile.mkstemp(prefix=".clocks-", suffix=".tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_state(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("originals"), dict):
        return None
    return doc


def remove_state(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, killed but not yet reaped, counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _write(path: str, value: str) -> Optional[str]:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)      # no O_CREAT: a missing node stays missing
        try:
            os.write(fd, f"{value}\n".encode())
        finally:
            os.close(fd)
        return None
    except OSError as e:
        return f"restore {path} to {value} refused: {e.strerror or e}"


def write_back(changed: List[str], originals: Dict[str, str],
               write: Callable[[str, str], Optional[str]]) -> Dict[str, str]:
    """Write ``originals`` back, last change first, in two passes (a min/max pair can refuse one order);
    ``write(path, value)`` returns an error line or None. Returns {path: error} for what stayed changed.
    The governor's backends and the watchdog restore through this one loop."""
    pending = list(reversed(changed))
    errors: Dict[str, str] = {}
    for _ in range(2):
        retry = []
        for p in pending:
            err = write(p, originals[p])
            if err:
                errors[p] = err
                retry.append(p)
            else:
                errors.pop(p, None)
        pending = retry
        if not pending:
            break
    return errors


def restore_state(path: str, remove: bool = True) -> List[str]:
    """Write every original back (newest first, two passes for min/max ordering); delete the file
    when all went back (else keep it with what is left). Returns one line per failure."""
    doc = read_state(path)
    if doc is None:
        if remove and os.path.exists(path):
            remove_state(path)
        return []
    originals: Dict[str, str] = {str(k): str(v) for k, v in doc["originals"].items()}
    errors = write_back(list(originals), originals, _write)
    if remove:
        if errors:
            write_state(path, str(doc.get("backend", "")), str(doc.get("root", "/")),
                        {p: originals[p] for p in originals if p in errors}, pid=0)
        else:
            remove_state(path)
    return list(errors.values())


def recover_leftover(root: str = "/") -> Optional[List[str]]:
    """If a state file for ``root`` was left by a process that is gone, restore from it.
    Returns None when there was nothing to recover, else the failures (empty: all restored)."""
    path = state_path(root)
    doc = read_state(path)
    if doc is None:
        if os.path.exists(path):
            remove_state(path)      # unreadable: nothing to restore from
        return None
    pid = int(doc.get("pid", 0) or 0)
    if pid and pid != os.getpid() and pid_alive(pid):
        return None                 # its governor still runs and restores itself
    return restore_state(path)


class Watchdog:
    """The separate process that restores from the state file when ``pid`` dies (SIGKILL, OOM).

    It reads a pipe whose write end only this process holds: the kernel closes it when this process
    dies however it dies. ``stop()`` (a normal exit, after restoring) closes the pipe and waits.
    """

    def __init__(self, state_file: str, pid: Optional[int] = None, interval_s: float = 0.2) -> None:
        self.state_file = state_file
        cmd = [sys.executable, "-m", "dvfo_ros.core.hardware.watchdog", "--pid", str(pid or os.getpid()),
               "--state", state_file, "--interval", str(interval_s)]
        self.proc: Optional[subprocess.Popen] = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def stop(self, timeout_s: float = 2.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=timeout_s)
