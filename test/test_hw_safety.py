"""Safety contract: a killed process restores the clocks it changed; the thermal guard caps;
the factory says in one line what it chose and why."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from dvfo_ros.core.hardware import FrequencyTable, open_backend, thermal_cap
from dvfo_ros.core.hardware.jetson import BPMP_EMC
from fake_sysfs import build_jetson_tree, build_linux_tree, read

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from dvfo_ros.core.hardware import open_backend, install_restore_handlers
    b = open_backend("jetson", root={root!r})
    install_restore_handlers(b)
    r = b.apply(cpu_hz=500_000_000, gpu_hz=510_000_000, emc_hz=1)
    print("applied", r.ok, flush=True)
    if {mode!r} == "exception":
        raise RuntimeError("policy crashed")
    time.sleep(60)
""")


@pytest.mark.parametrize("mode,sig", [("sigterm", signal.SIGTERM), ("sigint", signal.SIGINT),
                                      ("exception", None)])
def test_killed_process_leaves_clocks_as_it_found_them(tmp_path, mode, sig):
    root = str(tmp_path)
    info = build_jetson_tree(root, "xavier_nx")
    watched = [f"{info['cpu0']}/scaling_min_freq", f"{info['cpu0']}/scaling_max_freq",
               f"{info['gpu_dir']}/min_freq", f"{info['gpu_dir']}/max_freq",
               f"{BPMP_EMC}/rate", f"{BPMP_EMC}/mrq_rate_locked"]
    before = {p: read(root, p) for p in watched}
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=REPO, root=root, mode=mode)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "applied True", proc.stderr.read()
        if sig is not None:
            during = {p: read(root, p) for p in watched}
            assert all(during[p] != before[p] for p in watched), during   # everything was changed
            proc.send_signal(sig)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert {p: read(root, p) for p in watched} == before
    if sig is signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM        # still dies by the signal, as before
    else:
        assert proc.returncode != 0


def test_restore_handlers_chain_the_previous_handler(tmp_path):
    """A handler installed before (rclpy's shutdown, say) still runs after the restore."""
    root = str(tmp_path)
    info = build_jetson_tree(root, "orin")
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {REPO!r})
        from dvfo_ros.core.hardware import open_backend, install_restore_handlers
        seen = []
        path = {root!r} + "{info['gpu_dir']}/max_freq"
        signal.signal(signal.SIGTERM, lambda s, f: seen.append(open(path).read().strip()))
        b = open_backend("jetson", root={root!r})
        install_restore_handlers(b)
        b.apply(gpu_hz=1)
        os.kill(os.getpid(), signal.SIGTERM)
        print("previous handler saw max_freq", seen[0])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(str(info["gpu_hz"][-1]))   # restored before it ran


def test_thermal_cap_caps_harder_when_hotter():
    t = FrequencyTable(cpu=[100, 200, 300, 400, 500, 600, 700, 800, 900, 1000],
                       gpu=[100, 500, 1000], emc=[])
    assert thermal_cap(t, 80.0, 85.0) == {}
    assert thermal_cap(t, 85.0, 85.0) == {}
    warm = thermal_cap(t, 86.0, 85.0)
    hot = thermal_cap(t, 95.0, 85.0)
    assert set(warm) == {"cpu", "gpu"}                    # no table, no cap
    assert warm["cpu"] == 600 and hot["cpu"] == 300       # 0.65 x 1000 -> 600; floor 0.3 -> 300
    assert hot["gpu"] == 100                              # never below the lowest level
    assert all(c in t.levels(d) for d, c in hot.items())


def test_auto_falls_back_to_sim_and_says_why_in_one_line(tmp_path):
    lines = []
    b = open_backend("auto", root=str(tmp_path), profile="orin_nx", log=lines.append)
    assert b.name == "sim"
    assert len(lines) == 1
    assert "sim" in lines[0] and "jetson:" in lines[0] and "linux:" in lines[0]


def test_auto_picks_linux_when_cpufreq_is_settable(tmp_path):
    build_linux_tree(str(tmp_path))
    lines = []
    b = open_backend("auto", root=str(tmp_path), log=lines.append)
    assert b.name == "linux" and len(lines) == 1 and "skipped jetson" in lines[0]


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(Exception, match="unknown backend 'tpu'"):
        open_backend("tpu")
