"""Shared pieces of the reliability figures: real dvfo-cloud processes, the model both sides load,
a recording TCP relay on 127.0.0.1, and process RSS / socket counts from /proc.

Kept apart from the figures (`python -m dvfo_ros.testing.reliability`) so test/test_reliability.py
can use the same machinery.
"""
from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

# the source checkout (out/ and test/ live there): dvfo_ros/testing/reliability/common.py -> 4 up
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_settings() -> Dict[str, Any]:
    """The light model both edge and cloud load: the trained 32-px resnet18 artifact if present,
    else the untrained resnet18 at 32 px (same seed on both sides). 30 fps needs it on 2 cores.
    {"spec": ModelSpec (artifact pinned), "label": what the figures print}."""
    from dvfo_ros.core.inference.spec import ModelSpec
    spec = ModelSpec("resnet18").pinned()
    if spec.artifact != "none":
        return {"spec": spec, "label": f"resnet18 artifact {os.path.basename(spec.artifact)} (32 px)"}
    return {"spec": ModelSpec("resnet18", artifact="none", num_classes=10, input_size=32),
            "label": "resnet18 untrained, 32 px, 10 classes"}


def cloud_args(ms: Dict[str, Any]) -> List[str]:
    return ms["spec"].cloud_args()


def executor_params(ms: Dict[str, Any]) -> Dict[str, Any]:
    return ms["spec"].params()


def load_model(ms: Dict[str, Any]):
    """The CollaborativeModel the executor would load for these settings."""
    return ms["spec"].load()


class CloudProcess:
    """A real `python -m dvfo_ros.cli.cloud` child; its output is drained so it never blocks."""

    def __init__(self, endpoint: str, args: List[str], timeout_s: float = 120.0) -> None:
        self.endpoint = endpoint
        cmd = [sys.executable, "-m", "dvfo_ros.cli.cloud", "--bind", endpoint, "--max-batch", "8"] + args
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.t_spawn = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=REPO, env=env)
        self.lines: "collections.deque[str]" = collections.deque(maxlen=200)
        self.t_ready: Optional[float] = None
        ready = threading.Event()

        def drain() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                if self.t_ready is None and "ready on" in line:
                    self.t_ready = time.monotonic()
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(timeout_s) or self.t_ready is None:
            self.kill()
            raise RuntimeError(f"dvfo-cloud did not start: {' | '.join(list(self.lines)[-3:])}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Relay:
    """A man-in-the-middle TCP relay on 127.0.0.1 that records every byte both ways: what a
    packet capture on the link would see."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.captured = bytearray()
        self._lock = threading.Lock()
        self._stop = False
        self._socks: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    self.captured += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        for s in self._socks:
            s.close()


def proc_stats(pid: Optional[int] = None) -> Tuple[int, int]:
    """(RSS bytes, open socket descriptors) of a process from /proc (this one by default)."""
    base = f"/proc/{pid or 'self'}"
    rss = 0
    with open(f"{base}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    sockets = 0
    for fd in os.listdir(f"{base}/fd"):
        try:
            if os.readlink(f"{base}/fd/{fd}").startswith("socket:"):
                sockets += 1
        except OSError:
            pass
    return rss, sockets


def percentile(values: List[float], q: float) -> float:
    import numpy as np
    return float(np.percentile(values, q)) if values else 0.0
