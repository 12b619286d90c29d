"""dvfo-train and dvfo-bench as a user runs them: files written, one table, clear errors."""
import json

import pytest

from dvfo_ros.cli import bench, train
from dvfo_ros.core.policies import load_policy

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
    # evaluated on the shipped traces held out from training, too: the figure for a robot's own network
    assert set(summary["eval_heldout"]) == {"heldout_congested_uplink", "heldout_drive_lte", "heldout_wifi_dropouts"}
    assert "held-out trace heldout_wifi_dropouts: cost" in text


def test_bench_trains_learnt_rivals_as_long_as_and_on_the_networks_of_the_checkpoint(tmp_path, capsys):
    ck = tmp_path / "mix.pt"
    assert train.main(TINY + ["--out", str(ck), "--trace", "mix", "--eval-traces", "none"]) == 0
    capsys.readouterr()
    js = tmp_path / "b.json"
    held = ["heldout_drive_lte", "heldout_congested_uplink"]
    assert bench.main(["--policies", "oracle,dvfo,dvfs_only", "--checkpoint", str(ck), "--trace", ",".join(held),
                       "--frames", "30", "--learning-starts", "64", "--batch-size", "32", "--hidden", "32",
                       "--exploration-steps", "200", "--json", str(js)]) == 0
    report = json.loads(js.read_text())["traces"]
    assert list(report) == held                                   # one report per trace, rivals trained once
    for trace in held:
        rows = report[trace]["policies"]
        assert rows["dvfs_only"]["source"] == "trained 300 frames on mix"
        assert rows["dvfo"]["source"].startswith("checkpoint")
        assert "cost_vs_oracle" in report[trace]["targets"]
    text = capsys.readouterr().out
    assert all(f"trace {t} /" in text for t in held)


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
    # the SoC-rail share is the board energy minus what no clock changes: smaller, still positive
    assert all(0 < row["soc_energy_j_per_frame"] < row["energy_j_per_frame"] for row in data.values())
    t = report["targets"]
    assert t["energy_baseline"] in ("edge_only", "cloud_only", "ondemand") and "cost_vs_oracle" in t
    assert "cost vs oracle" in text and "SoC rails" in text
    assert png.stat().st_size > 1000


def _row(e, soc, p95, cost=1.0):
    return {"energy_j_per_frame": e, "soc_energy_j_per_frame": soc, "latency_ms_p95": p95,
            "cost_mean": cost, "decision_ms_p99": 0.1}


def test_bench_targets_compare_energy_only_against_policies_at_least_as_slow():
    rows = {"oracle": _row(0.10, 0.04, 20.0, 0.8), "dvfo": _row(0.12, 0.05, 20.0, 0.84),
            "edge_only": _row(0.20, 0.10, 7.0), "ondemand": _row(0.15, 0.075, 30.0)}
    t = bench.targets(rows)
    # edge_only has less energy saved by dvfo but is faster: the fair rival is ondemand (slower)
    assert t["energy_baseline"] == "ondemand" and t["p95_equal_or_better"]
    assert t["energy_saving"] == pytest.approx(0.2) and t["soc_energy_saving"] == pytest.approx(1 / 3)
    assert t["oracle_soc_energy_saving"] == pytest.approx(1 - 0.04 / 0.075)
    assert t["cost_vs_oracle"] == pytest.approx(0.05)
    rows["ondemand"]["latency_ms_p95"] = 10.0          # now every rival is faster: say so
    t = bench.targets(rows)
    assert t["energy_baseline"] == "ondemand" and not t["p95_equal_or_better"]
    assert any("WORSE" in line for line in bench.ratios(rows))
    assert bench.targets({"oracle": rows["oracle"]}) == {}


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


def test_energy_bound_script_prints_the_ceiling_any_policy_can_reach(capsys):
    import importlib.util
    import os
    import re
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "energy_bound.py")
    spec = importlib.util.spec_from_file_location("energy_bound", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--device", "tx2", "--model", "mobilenet_v2", "--bandwidths", "4"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    board_eq, soc_eq, board_slo, soc_slo = (float(v) for v in re.findall(r"(-?\d+\.\d)%", row))
    # relaxing the latency limit to the SLO can only widen the choice, and DVFS saves a larger share
    # of the SoC rails than of the whole board (whose static power no clock changes)
    assert 0 <= board_eq <= board_slo and board_slo < soc_slo
