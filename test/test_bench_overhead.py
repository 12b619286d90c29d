"""dvfo-bench overhead: every row in the JSON, ratios against the plain loop, bad options as one line.

Functional, not timed: a few 32-px frames so it stays short on 2 shared cores; the figures themselves
come from a real run (README, "What the pipeline costs").
"""
from __future__ import annotations

import json

import pytest

from dvfo_ros.cli import bench
from dvfo_ros.core.inference import overhead


def _arrival(seq, stamp_ms, recv_ms, cpu_s, core_ms=15.0):
    return (seq, int(stamp_ms * 1e6), int(recv_ms * 1e6), cpu_s, 0.0, core_ms)


def test_paced_stats_count_the_window_and_its_cpu():
    # warm-up frames 0, 1; counted 2..4 at 10 fps, 20 ms each; 5 ms of CPU per frame
    arrivals = [_arrival(i, 100.0 * i, 100.0 * i + 20.0, 0.005 * (i + 1)) for i in range(5)]
    s = overhead.paced_stats(arrivals, warmup=2, frames=4)          # frame 5 never arrived
    assert s["frames"] == 3 and s["missing"] == 1
    assert s["latency_ms_mean"] == pytest.approx(20.0) and s["latency_ms_p95"] == pytest.approx(20.0)
    assert s["cpu_ms_per_frame"] == pytest.approx(5.0)
    # of the 20 ms, 15 ms were the edge core's own: the other 5 ms are the pipeline's
    assert s["core_ms_mean"] == pytest.approx(15.0) and s["outside_core_ms_mean"] == pytest.approx(5.0)


def test_throughput_counts_arrivals_after_warmup_whatever_their_seq():
    arrivals = [_arrival(seq, 0.0, 25.0 * k, 0.01 * k) for k, seq in enumerate([0, 3, 9, 12, 20])]
    s = overhead.throughput_stats(arrivals, warmup=1)
    assert s["throughput_fps"] == pytest.approx(40.0) and s["cpu_ms_per_frame_unthrottled"] == pytest.approx(10.0)
    assert overhead.throughput_stats(arrivals[:1], warmup=0)["throughput_fps"] is None


def test_run_loop_interleaves_the_rows_on_the_same_frames_each_on_its_own_clock():
    calls = []
    fns = [lambda f, seq: calls.append(("a", seq, int(f[0]))), lambda f, seq: calls.append(("b", seq, int(f[0])))]
    frames = [[i] for i in range(4)]
    for fps in (0.0, 500.0):
        calls.clear()
        a, b = overhead.run_loop(fns, frames, warmup=1, fps=fps)
        assert [c[0] for c in calls] == ["a", "b", "b", "a", "a", "b", "b", "a"]
        assert [c[1:] for c in calls if c[0] == "a"] == [(i, i) for i in range(4)]     # every frame, in order
        assert [x[0] for x in a] == [x[0] for x in b] == [0, 1, 2, 3]
        assert all(x[2] >= x[1] for x in a + b) and a[-1][3] >= a[0][3]              # stamp <= received, CPU


def test_ratios_are_against_the_reference_and_none_without_a_figure():
    ref = {"latency_ms_mean": 10.0, "latency_ms_p95": 20.0, "throughput_fps": 50.0, "cpu_ms_per_frame": 8.0}
    row = {"latency_ms_mean": 11.0, "latency_ms_p95": 22.0, "throughput_fps": 40.0, "cpu_ms_per_frame": None}
    overhead.add_ratios([row], ref)
    assert row["latency_mean_x"] == pytest.approx(1.1) and row["latency_p95_x"] == pytest.approx(1.1)
    assert row["throughput_x"] == pytest.approx(0.8) and row["cpu_x"] is None


@pytest.mark.ros
def test_overhead_json_has_every_row_with_ratios_to_the_plain_loop(tmp_path, monkeypatch, capsys):
    from dvfo_ros.cli import bench_overhead_ros
    monkeypatch.setattr(bench_overhead_ros.shutil, "which", lambda name, *a, **k: None)   # no ros2 here
    out = tmp_path / "overhead.json"
    rc = bench.main(["overhead", "--input-size", "32", "--num-classes", "10", "--frames", "4", "--warmup", "1",
                     "--fps", "40", "--unthrottled-fps", "120", "--xi", "0,0.5", "--ros2-ws", "",
                     "--no-progress", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert [(r["row"], r["xi"]) for r in rows] == [("plain", 0.0), ("core", 0.0), ("composed", 0.0),
                                                   ("core", 0.5), ("composed", 0.5)]
    plain = rows[0]
    for r in rows:
        assert r["frames"] == 4 and r["missing"] == 0, r
        assert 0 < r["core_ms_mean"] <= r["latency_ms_mean"] + 1e-6, r      # the breakdown adds up
        for key, field in overhead.RATIOS:
            assert r[field] is not None and r[field] > 0, (r["row"], field)
            assert r[key] == pytest.approx(r[field] / plain[field]), (r["row"], key)
    assert all(plain[key] == pytest.approx(1.0) for key, _ in overhead.RATIOS)
    offloaded = [r for r in rows if r["xi"] == 0.5]
    assert all(r["cloud_used"] > 0 for r in offloaded), offloaded      # the local cloud answered
    assert [n.split(",")[0] for n in doc["notes"] if n.startswith("launched")] == ["launched: skipped"]
    assert doc["config"]["policy"] == "static" and doc["config"]["unthrottled_fps"] == 120.0
    assert doc["config"]["plain_at_end"]["frames"] == 4 and any("plain loop again" in n for n in doc["notes"])
    printed = capsys.readouterr().out
    assert "composed" in printed and "launched: skipped" in printed


@pytest.mark.parametrize("argv, needle", [
    (["--xi", "0,2"], "--xi"),
    (["--rows", "plain,warp"], "unknown row warp"),
    (["--frames", "x"], "invalid int value"),
    (["--fps", "0"], "--fps"),
    (["--ros2-ws", "/nonexistent/ws"], "no install/setup.bash"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_option_is_one_line_and_exit_2(argv, needle, capsys):
    assert bench.main(["overhead"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and err.startswith("dvfo-bench overhead: error:"), err
