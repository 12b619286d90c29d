"""Network traces: the DVFO testbed range, an LTE-like Markov channel, and strict CSV files."""
import numpy as np
import pytest

from dvfo_ros.core.io.traces import (NetworkTrace, TraceError, heldout_trace_names, load_trace, lte_trace,
                                     uniform_trace)


def test_csv_round_trip(tmp_path):
    tr = lte_trace(duration_s=60, seed=2)
    path = tmp_path / "t.csv"
    tr.to_csv(str(path))
    assert path.read_text().splitlines()[0] == "time_s,bandwidth_mbps,rtt_ms"
    back = NetworkTrace.from_csv(str(path))
    np.testing.assert_allclose(back.time_s, tr.time_s)
    np.testing.assert_allclose(back.bandwidth_mbps, tr.bandwidth_mbps, rtol=1e-5)
    np.testing.assert_allclose(back.rtt_ms, tr.rtt_ms, rtol=1e-5)
    assert back.at(12.5) == pytest.approx(tr.at(12.5), rel=1e-5)


def test_columns_in_any_order_and_comments(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("# measured on the lab wifi\nrtt_ms,time_s,bandwidth_mbps\n30,0,5\n40,2,1.5\n")
    tr = NetworkTrace.from_csv(str(path))
    assert tr.at(1.0) == (5.0, 30.0) and tr.at(2.0) == (1.5, 40.0)


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("time_s,bandwidth\n0,1\n", "missing bandwidth_mbps,rtt_ms"),
    ("time_s,bandwidth_mbps,rtt_ms\n", "no rows"),
    ("time_s,bandwidth_mbps,rtt_ms\n0,fast,20\n", "line 2: bandwidth_mbps 'fast' is not a number"),
    ("time_s,bandwidth_mbps,rtt_ms\n0,1,20\n0,2\n", "line 3: expected 3 fields"),
    ("time_s,bandwidth_mbps,rtt_ms\n0,1,20\n0,2,20\n", "strictly increase"),
    ("time_s,bandwidth_mbps,rtt_ms\n0,0,20\n", "bandwidth_mbps must be > 0"),
    ("time_s,bandwidth_mbps,rtt_ms\n0,1,-5\n", "rtt_ms must be >= 0"),
    ("time_s,bandwidth_mbps,rtt_ms\n0,nan,20\n", "must be finite"),
])
def test_bad_csv_is_one_line_trace_error(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as e:
        NetworkTrace.from_csv(str(path))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(path) in str(e.value)


def test_missing_file_and_binary_file(tmp_path):
    with pytest.raises(TraceError, match="cannot read trace"):
        NetworkTrace.from_csv(str(tmp_path / "nope.csv"))
    blob = tmp_path / "blob.csv"
    blob.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(TraceError):
        NetworkTrace.from_csv(str(blob))


def test_at_holds_each_sample_and_loops():
    tr = NetworkTrace(np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]))
    assert tr.duration_s == 3.0
    assert tr.at(0.0) == (1.0, 10.0) and tr.at(0.99) == (1.0, 10.0)
    assert tr.at(2.5) == (3.0, 30.0)
    assert tr.at(3.2) == tr.at(0.2) and tr.at(301.5) == tr.at(1.5)


def test_uniform_trace_spans_the_dvfo_testbed_range():
    tr = uniform_trace(seed=0)
    assert tr.bandwidth_mbps.min() >= 0.5 and tr.bandwidth_mbps.max() <= 8.0
    assert tr.bandwidth_mbps.max() - tr.bandwidth_mbps.min() > 6.0
    assert 3.5 < tr.bandwidth_mbps.mean() < 5.0
    assert np.all(tr.rtt_ms == 20.0) and tr.duration_s == pytest.approx(600.0)
    np.testing.assert_array_equal(tr.bandwidth_mbps, uniform_trace(seed=0).bandwidth_mbps)
    assert not np.array_equal(tr.bandwidth_mbps, uniform_trace(seed=1).bandwidth_mbps)
    with pytest.raises(TraceError):
        uniform_trace(low_mbps=5, high_mbps=1)


def test_lte_trace_is_markov_modulated():
    tr = lte_trace(duration_s=1200, seed=0)
    bw = tr.bandwidth_mbps
    assert np.all(bw > 0) and np.all(tr.rtt_ms > 0)
    assert bw.max() > 10 * np.percentile(bw, 5)        # visits bad and good states
    lag1 = np.corrcoef(np.log(bw[:-1]), np.log(bw[1:]))[0, 1]
    assert lag1 > 0.5                                 # sticky states, not white noise
    # RTT is worse when bandwidth is poor (same state drives both)
    assert np.corrcoef(np.log(bw), tr.rtt_ms)[0, 1] < -0.3
    np.testing.assert_array_equal(bw, lte_trace(duration_s=1200, seed=0).bandwidth_mbps)


def test_load_trace_by_name_and_path(tmp_path):
    assert load_trace("dvfo").name == "dvfo" and load_trace("lte").name == "lte"
    path = tmp_path / "mine.csv"
    uniform_trace(duration_s=10).to_csv(str(path))
    assert len(load_trace(str(path)).time_s) == 10
    with pytest.raises(TraceError, match="unknown trace 'wifi7'"):
        load_trace("wifi7")


def test_shipped_example_trace_loads_by_name():
    tr = load_trace("lte_example")
    assert tr.name == "lte_example" and len(tr.time_s) == 120
    assert tr.at(5.0)[0] > 0


def test_mix_draws_its_own_trace_every_episode_the_same_way_for_a_seed():
    from dvfo_ros.core.mdp import SimEnv

    def medians(seed):
        env = SimEnv(trace="mix", seed=seed)
        out = []
        for _ in range(12):
            env.reset()
            out.append((env.trace.name, round(float(np.median(env.trace.bandwidth_mbps)), 3)))
        return out
    first = medians(5)
    assert first == medians(5) and first != medians(6)
    assert {name for name, _ in first} <= {"dvfo", "lte", "regime"}
    assert len({bw for _, bw in first}) > 6          # the network changes from episode to episode


def test_heldout_traces_ship_load_by_name_and_stay_out_of_the_mix():
    names = heldout_trace_names()
    assert names == ["heldout_congested_uplink", "heldout_drive_lte", "heldout_wifi_dropouts"]
    traces = {n: load_trace(n) for n in names}
    assert traces["heldout_wifi_dropouts"].bandwidth_mbps.max() > 40      # fast Wi-Fi, with dropouts
    assert traces["heldout_wifi_dropouts"].bandwidth_mbps.min() < 0.2
    assert traces["heldout_congested_uplink"].bandwidth_mbps.max() <= 2.0
    mix = load_trace("mix")
    rng = np.random.default_rng(0)
    assert all(mix.sample(rng).name in ("dvfo", "lte", "regime") for _ in range(40))
