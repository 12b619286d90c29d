"""The clock watchdog: puts a governor's clocks back within about a second of its death.

    python -m dvfo_ros.core.hardware.watchdog --pid <governor pid> --state <state file>

Started by the governor (``state.Watchdog``) with a pipe on stdin whose write end only the governor
holds. Every ``--interval`` s (0.2) it checks: the pipe at EOF or the pid gone (or a zombie) means
the governor is dead. Then, if the state file is still there (a SIGKILL or the OOM killer ran no
handler), it writes the originals back and deletes the file. A governor that exits normally restores
and deletes the file first, so the watchdog just exits. SIGINT/SIGTERM to the terminal's process
group do not stop it (its own session; SIGINT ignored).
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time
from typing import List, Optional

from dvfo_ros.core.hardware.state import pid_alive, restore_state


def watch(pid: int, state_file: str, interval_s: float = 0.2, pipe_fd: Optional[int] = 0) -> List[str]:
    """Block until ``pid`` is dead, then restore from ``state_file`` if it is still there."""
    while True:
        if pipe_fd is not None:
            try:
                ready, _, _ = select.select([pipe_fd], [], [], interval_s)
            except (OSError, ValueError):
                ready, pipe_fd = [], None
            if ready and pipe_fd is not None:
                try:
                    data = os.read(pipe_fd, 4096)
                except OSError:
                    data = b""
                if not data:               # EOF: the governor's end of the pipe is closed (exit or death)
                    break
        else:
            time.sleep(interval_s)
        if not pid_alive(pid):
            break
    if os.path.exists(state_file):
        deadline = time.monotonic() + 0.5
        while pid_alive(pid) and time.monotonic() < deadline:   # a normal exit closing the pipe first
            time.sleep(0.05)
        if os.path.exists(state_file):
            return restore_state(state_file)
    return []


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="dvfo-watchdog", description=__doc__.splitlines()[0])
    p.add_argument("--pid", type=int, required=True, help="the governor process to watch")
    p.add_argument("--state", required=True, help="its state file (originals to write back)")
    p.add_argument("--interval", type=float, default=0.2, help="liveness poll period (s)")
    p.add_argument("--no-pipe", action="store_true", help="poll the pid only (stdin is not the governor's pipe)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    errors = watch(args.pid, args.state, args.interval, None if args.no_pipe else 0)
    for line in errors:
        print(f"dvfo-watchdog: {line}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
