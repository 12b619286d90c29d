"""Clocks that survive a SIGKILL: originals in a state file before the first write; the governor's
watchdog restores them within about a second of its death; the next start and `dvfo-hw --restore` too."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

from dvfo_ros.core.hardware import guard_clocks, open_backend, state
from dvfo_ros.core.hardware.jetson import BPMP_EMC
from fake_sysfs import BOARDS, XAVIER_CPU_KHZ, build_jetson_tree, read
from rosutil import ros_context, spin_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def board(tmp_path, monkeypatch):
    monkeypatch.setenv("DVFO_STATE_DIR", str(tmp_path / "state"))
    root = str(tmp_path / "sys")
    info = build_jetson_tree(root, "xavier_nx")
    watched = [f"{info['cpu0']}/scaling_min_freq", f"{info['cpu0']}/scaling_max_freq",
               f"{info['gpu_dir']}/min_freq", f"{info['gpu_dir']}/max_freq", f"{BPMP_EMC}/rate"]
    return root, info, watched, {p: read(root, p) for p in watched}


def _wait_restored(root, watched, before, path, within_s=2.0):
    t_end = time.monotonic() + within_s
    while time.monotonic() < t_end:
        if {p: read(root, p) for p in watched} == before and not os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def test_sigkilled_governor_is_restored_by_its_watchdog(board):
    from dvfo_ros.msg import DvfoAction
    root, info, watched, before = board
    path = state.state_path(root)
    proc = subprocess.Popen([sys.executable, "-m", "dvfo_ros.nodes.governor", "--ros-args",
                             "-p", "backend:=jetson", "-p", f"sysfs_root:={root}", "-p", "rate_hz:=20.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        a = DvfoAction()
        a.cpu_freq_hz = XAVIER_CPU_KHZ[2] * 1000
        a.gpu_freq_hz = BOARDS["xavier_nx"]["gpu_hz"][1]
        a.emc_freq_hz = BOARDS["xavier_nx"]["emc_hz"][0]
        with ros_context() as ctx:
            probe = Node("probe", context=ctx)
            pub = probe.create_publisher(DvfoAction, "dvfo/action", QoSProfile(depth=10))

            def changed() -> bool:
                pub.publish(a)
                time.sleep(0.05)
                return all(read(root, p) != before[p] for p in watched)
            assert spin_until(ctx, [probe], changed, timeout_s=60.0), "governor never applied the action"
            probe.destroy_node()
        doc = state.read_state(path)
        assert doc is not None and doc["pid"] == proc.pid and doc["backend"] == "jetson"
        assert {os.path.join(root, p.lstrip("/")): before[p] for p in watched}.items() <= doc["originals"].items()
        proc.send_signal(signal.SIGKILL)     # no handler runs: only the watchdog can put the clocks back
        assert _wait_restored(root, watched, before, path), {p: read(root, p) for p in watched}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


DRIVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from dvfo_ros.core.hardware import guard_clocks, open_backend
    b = open_backend("jetson", root={root!r})
    dog = guard_clocks(b, {root!r})
    r = b.apply(cpu_hz=500_000_000, gpu_hz=510_000_000, emc_hz=1)
    print("applied", r.ok, dog.pid, flush=True)
    time.sleep(60)
""")


def test_sigkilled_driver_restored_and_watchdog_exits(board):
    root, _, watched, before = board
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(repo=REPO, root=root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line[:2] == ["applied", "True"], proc.stderr.read()
        dog_pid = int(line[2])
        assert all(read(root, p) != before[p] for p in watched)
        proc.kill()
        assert _wait_restored(root, watched, before, state.state_path(root))
        t_end = time.monotonic() + 2.0
        while state.pid_alive(dog_pid) and time.monotonic() < t_end:
            time.sleep(0.05)
        assert not state.pid_alive(dog_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_normal_restore_removes_the_state_file_and_stops_the_watchdog(board):
    root, _, watched, before = board
    b = open_backend("jetson", root=root)
    dog = guard_clocks(b, root)
    path = state.state_path(root)
    assert not os.path.exists(path)                      # nothing written yet, nothing recorded
    b.apply(cpu_hz=500_000_000, gpu_hz=510_000_000)
    assert os.path.exists(path)
    b.restore()
    assert not os.path.exists(path) and {p: read(root, p) for p in watched} == before
    pid = dog.pid
    dog.stop()
    assert not state.pid_alive(pid)


def _leftover(root, watched, before):
    """A state file as a SIGKILLed governor (pid long gone) leaves it, with the clocks still changed."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    originals = {os.path.join(root, p.lstrip("/")): before[p] for p in watched}
    state.write_state(state.state_path(root), "jetson", root, originals, pid=int(dead.stdout))
    for p in originals:
        with open(p, "w") as fh:
            fh.write("12345\n")


def test_next_governor_start_restores_a_leftover_state_file(board, capfd):
    from dvfo_ros.nodes.governor import GovernorNode
    root, _, watched, before = board
    _leftover(root, watched, before)
    with ros_context() as ctx:
        gov = GovernorNode(context=ctx, parameter_overrides=[
            Parameter("backend", value="jetson"), Parameter("sysfs_root", value=root)])
        assert {p: read(root, p) for p in watched} == before
        assert not os.path.exists(state.state_path(root))
        assert gov.backend.writer.originals[watched[0]] == before[watched[0]]   # the real originals
        gov.destroy_node()
    assert "restored the clocks a killed governor left behind" in capfd.readouterr().err


def test_dvfo_hw_restore_by_hand(board, capsys):
    from dvfo_ros.cli import hw
    root, _, watched, before = board
    assert hw.main(["--restore", "--root", root]) == 0
    assert "nothing to restore" in capsys.readouterr().out
    _leftover(root, watched, before)
    assert hw.main(["--restore", "--root", root]) == 0
    assert f"restored {len(watched)} of {len(watched)}" in capsys.readouterr().out
    assert {p: read(root, p) for p in watched} == before and not os.path.exists(state.state_path(root))


def test_dvfo_hw_restore_refuses_a_live_governor_s_file(board, capsys):
    from dvfo_ros.cli import hw
    root, _, watched, before = board
    state.write_state(state.state_path(root), "jetson", root, {}, pid=os.getppid())
    assert hw.main(["--restore", "--root", root]) == 1
    assert "still runs" in capsys.readouterr().err
