"""Many robots sharing one server (MCIA's setting): exact shares, choices that follow the links, mcia against
the exhaustive oracle, and dvfo-bench --robots."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize

from dvfo_ros.core.policies.fleet import fleet, run_fleet, train_mcia
from dvfo_ros.core.twin.fleet import (ACCURACY_SENSITIVE, Robot, Server, _waterfill, allocate, best_joint,
                                      equal_shares, evaluate)


def _weighted(x: np.ndarray, need: np.ndarray) -> float:
    return float((need / np.maximum(x, 1e-9)).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_shares_match_a_numeric_optimiser_and_beat_equal_shares(seed):
    rng = np.random.default_rng(seed)
    need = rng.uniform(0.1, 5.0, 3)
    cap = np.array([1.0, rng.uniform(0.1, 0.3), 1.0])              # one robot's radio carries little
    exact = _waterfill(need, cap)
    cons = [{"type": "eq", "fun": lambda x: x.sum() - 1.0}]
    num = minimize(lambda x: _weighted(x, need), np.full(3, 1 / 3), bounds=[(1e-4, c) for c in cap],
                   constraints=cons, method="SLSQP")
    assert exact.sum() == pytest.approx(1.0) and np.all(exact <= cap + 1e-12)
    assert _weighted(exact, need) <= num.fun * (1 + 1e-4)
    equal = np.minimum(np.full(3, 1 / 3), cap)
    equal = equal / equal.sum() if equal.sum() > 1 else equal
    assert _weighted(exact, need) < _weighted(equal, need)


def test_a_robot_whose_link_drops_goes_local_and_its_share_moves_to_the_others():
    robots = [Robot("nano", weight=ACCURACY_SENSITIVE) for _ in range(3)]
    server = Server(gmacs_per_s=4000.0, uplink_mbps=200.0)
    rtt = [5.0, 5.0, 5.0]
    fast, _ = best_joint(robots, [80.0, 80.0, 80.0], rtt, server)
    slow, _ = best_joint(robots, [0.5, 80.0, 80.0], rtt, server)
    assert not any(o.local for o in fast)                            # all three offload on a good link
    assert slow[0].local and not slow[1].local and not slow[2].local
    x_fast, y_fast = allocate(robots, fast, [80.0] * 3, server)
    x_slow, y_slow = allocate(robots, slow, [0.5, 80.0, 80.0], server)
    assert x_slow[0] == 0 and y_slow[0] == 0
    assert x_slow[1] > x_fast[1] and y_slow[1] > y_fast[1]
    u_exact, _ = evaluate(robots, fast, [80.0] * 3, rtt, server)
    u_equal, _ = evaluate(robots, fast, [80.0] * 3, rtt, server, equal_shares(fast))
    assert u_exact.mean() >= u_equal.mean() - 1e-12


@pytest.fixture(scope="module")
def mcia():
    return train_mcia(3000, seed=0)


@pytest.mark.parametrize("n", [2, 3])
def test_mcia_is_within_5_percent_of_the_exhaustive_oracle_and_beats_the_simple_policies(mcia, n):
    robots, server = fleet(n), Server()
    rows = {p: run_fleet(p, robots, 20, server, agent=mcia) for p in ("mcia", "oracle", "neurosurgeon", "all_local")}
    oracle = rows["oracle"]["utility"]
    assert rows["mcia"]["utility"] >= oracle - 0.05 * abs(oracle)
    assert rows["mcia"]["utility"] > rows["neurosurgeon"]["utility"] > rows["all_local"]["utility"]
    assert rows["mcia"]["deadline_misses"] == 0


def test_mcia_sends_an_accuracy_sensitive_nano_to_the_server_only_while_its_link_carries_it(mcia):
    robot = Robot("nano", weight=ACCURACY_SENSITIVE)
    good = robot.options[mcia.choose([robot], [60.0], [5.0], None)[0]]
    bad = robot.options[mcia.choose([robot], [0.5], [5.0], None)[0]]
    assert not good.local and good.version == "resnet50" and bad.local


def test_bench_robots_prints_every_policy_and_refuses_a_bad_one(tmp_path, capsys):
    from dvfo_ros.cli.bench import main
    out = tmp_path / "f.json"
    assert main(["--robots", "2", "--train-episodes", "200", "--steps", "5", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["policy"] for r in rows] == ["mcia", "neurosurgeon", "all_local", "all_upload", "oracle"]
    assert all(len(r["latency_ms_p95"]) == 2 for r in rows)
    assert main(["--robots", "2", "--policies", "mcia,fastest"]) == 2
    assert "fastest" in capsys.readouterr().err.strip().splitlines()[-1]
