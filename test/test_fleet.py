"""Many robots sharing one server (MCIA's setting): exact shares, choices that follow the links, mcia against
the exhaustive oracle, and dvfo-bench --robots."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize

from dvfo_ros.core.mdp import ActionSpace
from dvfo_ros.core.twin import load_profile
from dvfo_ros.core.policies import make_policy
from dvfo_ros.core.policies.fleet import DvfoRobots, fleet, link_sampler, run_fleet, train_mcia
from dvfo_ros.core.twin.fleet import (ACCURACY_SENSITIVE, Robot, Server, _waterfill, allocate, best_joint,
                                      equal_shares, evaluate, option_cost)


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
    assert main(["--robots", "2", "--train-episodes", "200", "--dvfo-steps", "600", "--steps", "5",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["policy"] for r in rows] == ["mcia", "neurosurgeon", "dvfo", "all_local", "all_upload", "oracle"]
    assert all(len(r["latency_ms_p95"]) == 2 and len(r["energy_j_per_frame"]) == 2 for r in rows)
    assert "dvfo" in capsys.readouterr().out
    assert main(["--robots", "2", "--policies", "mcia,fastest"]) == 2
    assert "fastest" in capsys.readouterr().err.strip().splitlines()[-1]


def test_every_row_is_priced_by_the_board_twin_the_options_were_priced_on():
    robots, server = fleet(3), Server(gmacs_per_s=4000.0, uplink_mbps=200.0)
    links, rtt = [60.0, 5.0, 60.0], [5.0, 5.0, 5.0]
    choice = best_joint(robots, links, rtt, server)[0]
    x, y = allocate(robots, choice, links, server)
    lat = evaluate(robots, choice, links, rtt, server)[1]
    costs = [option_cost(r, o, x[i], y[i], links[i], rtt[i], server) for i, (r, o) in enumerate(zip(robots, choice))]
    assert [c.total_ms for c in costs] == pytest.approx(list(lat), rel=1e-6)
    assert all(c.energy_j > 0 for c in costs)


def _fixed(name, robots):
    return {(r.profile, r.versions[0], r.slo_ms, r.input_size):
            make_policy(name, ActionSpace.from_profile(load_profile(r.profile))) for r in robots}


def test_dvfo_robots_pay_for_the_server_they_share():
    """DVFO's row prices each robot's clocks and xi on its board at equal shares: kept local at top clocks it
    is all_local; sending every channel, three robots wait longer for a third of the server than one does."""
    server = Server(gmacs_per_s=500.0)
    robots = fleet(3)
    local = run_fleet("dvfo", robots, 5, server, dvfo_agents=_fixed("edge_only", robots))
    assert local["latency_ms_mean"] == pytest.approx(run_fleet("all_local", robots, 5, server)["latency_ms_mean"],
                                                     rel=1e-6)
    links = link_sampler("heldout_wifi_dropouts")(np.random.default_rng(0), 3, 4)
    one = DvfoRobots(robots[:1], _fixed("cloud_only", robots), links, server, seed=0)
    three = DvfoRobots(robots, _fixed("cloud_only", robots), links, server, seed=0)
    steady = [np.array([60.0] * 3), np.array([5.0] * 3)]
    lat1, joules1, _ = one.step(steady[0][:1], steady[1][:1])
    lat3, joules3, top1 = three.step(*steady)
    assert lat3[0] > lat1[0] and joules3[0] > joules1[0]
    assert np.all(top1 < 0.8086) and np.all(top1 > 0.75)     # resnet50's top-1 less the loss of sending every channel
