"""dvfo-train and dvfo-bench as a user runs them: files written, one table, clear errors."""
import json

import pytest

from dvfo_ros.cli import bench, train
from dvfo_ros.core.agents import load_policy

TINY = ["--steps", "300", "--learning-starts", "64", "--batch-size", "32", "--exploration-steps", "200",
        "--hidden", "32", "--eval-frames", "60", "--time-scale", "0"]


def test_train_writes_checkpoint_curve_and_summary(tmp_path, capsys):
    out = tmp_path / "p.pt"
    rc = train.main(TINY + ["--out", str(out), "--json", str(tmp_path / "s.json"), "--policy", "dvfo_sequential"])
    assert rc == 0
    assert out.is_file() and (tmp_path / "p.png").stat().st_size > 1000
    policy = load_policy(str(out))
    assert policy.name == "dvfo_sequential"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["runs"]["dvfo_sequential"]["updates"] > 0 and "oracle_reward_mean" in summary["eval"]
    text = capsys.readouterr().out
    assert "vs oracle" in text and "checkpoint:" in text


def test_bench_prints_one_table_and_writes_json_and_pareto(tmp_path, capsys):
    ck = tmp_path / "p.pt"
    assert train.main(TINY + ["--out", str(ck), "--eval-frames", "0", "--eta", "0.8"]) == 0
    capsys.readouterr()
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    rc = bench.main(["--policies", "oracle,dvfo,edge_only,cloud_only,ondemand", "--checkpoint", str(ck),
                     "--frames", "60", "--json", str(js), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    for name in ("oracle", "dvfo", "edge_only", "cloud_only", "ondemand"):
        assert f"\n{name} " in text
    report = json.loads(js.read_text())
    # every row is scored with the reward the checkpoint was trained on, not the bench's defaults
    assert report["reward"] == load_policy(str(ck)).load(str(ck))["meta"]["reward"]
    assert report["reward"]["eta"] == 0.8 and "eta 0.8" in text
    data = report["policies"]
    keys = {"energy_j_per_frame", "latency_ms_mean", "latency_ms_p95", "accuracy", "reward_mean", "slo_violations",
            "decision_ms_p50", "decision_ms_p99"}
    assert set(data) == {"oracle", "dvfo", "edge_only", "cloud_only", "ondemand"}
    assert all(keys <= set(row) for row in data.values())
    assert all(data[n]["reward_mean"] <= data["oracle"]["reward_mean"] + 1e-9 for n in data)
    assert data["cloud_only"]["latency_ms_p95"] > data["edge_only"]["latency_ms_p95"]
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("argv, needle", [
    (["--policies", "edge_only,warp_drive"], "unknown policy warp_drive"),
    (["--policies", "edge_only", "--device", "pentium"], "unknown profile"),
    (["--policies", "edge_only", "--trace", "/nonexistent/trace.csv"], "trace"),
])
def test_bench_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    assert bench.main(argv + ["--frames", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_bench_refuses_a_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert bench.main(["--policies", "dvfo", "--checkpoint", str(bad), "--frames", "5"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_train_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--steps", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        train.main(["--eta", "2"])
    assert e.value.code == 2
    assert train.main(["--device", "pentium", "--steps", "5"]) == 2
    assert "unknown profile" in capsys.readouterr().err


def test_dvfo_train_with_bag_trains_offline_and_refuses_a_missing_bag(tmp_path, capsys):
    """`dvfo-train --bag` is the offline path: a missing bag is one clear error and writes nothing."""
    from dvfo_ros.cli.train import main
    out = tmp_path / "policy.pt"
    assert main(["--bag", str(tmp_path / "missing.mcap"), "--out", str(out), "--steps", "10"]) == 1
    assert "missing.mcap" in capsys.readouterr().err
    assert not out.exists()
