"""Every node run as its own process (as `ros2 launch` runs it) exits 0 on SIGINT and on SIGTERM,
also when Ctrl-C reaches it twice (the terminal's process group, then launch's own signal)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY = {"camera": "publishing", "policy": "policy static", "governor": "backend sim", "executor": "split"}


def _start(node: str) -> subprocess.Popen:
    args = [sys.executable, "-m", f"dvfo_ros.nodes.{node}", "--ros-args", "-p", "source:=synthetic"] \
        if node == "camera" else [sys.executable, "-m", f"dvfo_ros.nodes.{node}", "--ros-args"]
    if node == "governor":
        args += ["-p", "backend:=sim"]
    if node == "executor":
        args += ["-p", "cloud_endpoint:=''", "-p", "artifact:=none", "-p", "input_size:=32", "-p", "num_classes:=10"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        seen += line
        if READY[node] in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"{node} did not start: {seen[-2000:]}")


@pytest.mark.parametrize("node", ["camera", "policy", "governor", "executor"])
@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)],
                         ids=["sigint", "double-sigint", "sigterm"])
def test_node_exits_0_on_stop_signals(node, signals):
    proc = _start(node)
    time.sleep(0.5)
    for s in signals:
        proc.send_signal(s)
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, f"{node} exit {proc.returncode} after {signals}: {out[-3000:]}"


def _node_whose_callback_fails(shutdown_after_s):
    """A node whose first timer callback raises the RuntimeError rclpy's C++ take raises when a SIGINT
    lands inside it; ``shutdown_after_s`` plays rclpy's signal handler shutting the context down."""
    import threading

    import rclpy
    from rclpy.node import Node

    def make():
        node = Node("spin_race")

        def fail():
            if shutdown_after_s is not None:
                threading.Timer(shutdown_after_s, rclpy.try_shutdown).start()
            raise RuntimeError("Unable to convert call argument '0' to Python object")
        node.create_timer(0.01, fail)
        return node
    return make


@pytest.fixture
def sigint_restored():
    """run() ignores SIGINT once a node stops (right for a node's process, which then exits); in this
    process every later subprocess (ros2 launch, dvfo-record) would inherit SIG_IGN and never stop."""
    before = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, before)


def test_an_error_as_the_context_goes_down_is_a_stop_not_a_crash(sigint_restored):
    from dvfo_ros.nodes.spin import run
    assert run(_node_whose_callback_fails(shutdown_after_s=0.2), args=[]) == 0


def test_an_error_while_the_context_stays_up_still_crashes(sigint_restored):
    from dvfo_ros.nodes.spin import run
    with pytest.raises(RuntimeError, match="Unable to convert"):
        run(_node_whose_callback_fails(shutdown_after_s=None), args=[])
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN      # what the fixture puts back


def test_the_suite_leaves_sigint_to_its_subprocesses():
    """After the in-process run() tests, a subprocess still stops on SIGINT (it inherits the disposition)."""
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
