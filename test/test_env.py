"""The MDP: state vector, action space, reward signs, and the twin as an env."""
import numpy as np
import pytest

from dvfo_ros.core.mdp import (DEFAULT_ACCURACY_TABLE, STATE_DIM, STATE_NAMES, ActionSpace, RewardConfig, SimEnv,
                               build_state, feature_value, reward)
from dvfo_ros.core.twin import load_profile


@pytest.fixture(scope="module")
def space():
    return ActionSpace.from_profile(load_profile("xavier_nx"))


def test_state_vector_is_named_float32_and_missing_reads_zero():
    s = build_state({"bandwidth_mbps": 5.0, "gpu_util": 0.7, "not_a_feature": 3.0})
    assert s.shape == (len(STATE_NAMES),) == (STATE_DIM,) and s.dtype == np.float32
    # network features are log-scaled: 5 Mbps sits at log(6)/log(101) of the way to 100 Mbps
    assert s[STATE_NAMES.index("bandwidth_mbps")] == pytest.approx(np.log1p(5.0) / np.log1p(100.0))
    assert s[STATE_NAMES.index("gpu_util")] == pytest.approx(0.7)
    assert np.count_nonzero(s) == 2
    assert not np.any(np.isnan(build_state({"rtt_ms": float("nan"), "cpu_util": "x"})))


def test_feature_value_reads_a_state_back_in_its_units():
    obs = {"bandwidth_mbps": 0.1, "rtt_ms": 600.0, "last_latency_ms": 12.5, "gpu_util": 0.4}
    s = build_state(obs)
    for name, value in obs.items():
        assert feature_value(s, name) == pytest.approx(value, rel=1e-5)
    # a 70 Mbps Wi-Fi link stays near the inputs a 0.5-8 Mbps link gives, not at 7x them
    assert build_state({"bandwidth_mbps": 70.0})[0] < 1.0


def test_state_derives_clock_levels_from_reported_hz(space):
    s = build_state({"gpu_freq_hz": space.gpu_hz[-1], "prev_cpu_freq_hz": space.cpu_hz[0] + 1}, space)
    assert s[STATE_NAMES.index("gpu_level")] == pytest.approx(1.0)
    assert s[STATE_NAMES.index("prev_cpu_level")] == pytest.approx(0.0)


def test_action_space_subsamples_real_tables_keeping_both_ends(space):
    p = load_profile("xavier_nx")
    assert space.branches == (5, 8, 4, 11) and space.size == 5 * 8 * 4 * 11
    for mine, full in zip(space.tables()[:3], (p.cpu_hz, p.gpu_hz, p.emc_hz)):
        assert mine[0] == full[0] and mine[-1] == full[-1] and set(mine) <= set(full)
    assert space.offload_ratios[0] == 0.0 and space.offload_ratios[-1] == 1.0


def test_command_round_trip_for_every_action(space):
    actions = space.all_actions()
    assert actions.shape == (space.size, 4)
    for a in actions[::37]:
        cmd = space.to_command(a)
        assert set(cmd) == {"cpu_freq_hz", "gpu_freq_hz", "emc_freq_hz", "offload_ratio"}
        assert np.array_equal(space.from_command(cmd), a)
    with pytest.raises(ValueError):
        space.to_command([0, 0, 0, 11])
    assert np.array_equal(space.from_command({"gpu_freq_hz": 10 ** 12}), space.max_action(0.0))


def test_reward_signs():
    cfg = RewardConfig(eta=0.5, latency_slo_ms=50, energy_ref_j=0.1, latency_ref_ms=10)
    base = reward(0.1, 10, 0.0, cfg)
    assert base == pytest.approx(-1.0)
    assert reward(0.2, 10, 0.0, cfg) < base and reward(0.1, 20, 0.0, cfg) < base
    assert reward(0.1, 60, 0.0, cfg) < reward(0.1, 49, 0.0, cfg) - 1.0       # SLO penalty on top of the cost
    assert reward(0.1, 10, 0.02, cfg) < reward(0.1, 10, 0.005, cfg) - 1.0    # accuracy bound exceeded
    energy_only = RewardConfig(eta=1.0, energy_ref_j=0.1, latency_ref_ms=10)
    assert reward(0.1, 10, 0, energy_only) == reward(0.1, 30, 0, energy_only)
    with pytest.raises(ValueError):
        RewardConfig(eta=1.5)


def test_env_step_reports_a_frame_and_ends_episodes():
    env = SimEnv(seed=1, episode_frames=5)
    s = env.reset()
    assert s.shape == (STATE_DIM,)
    done, n = False, 0
    while not done:
        s, r, done, info = env.step(env.action_space.max_action(0.0))
        n += 1
        assert info["energy_j"] > 0 and info["latency_ms"] > 0 and r < 0
        assert info["cost"] == pytest.approx(-r)            # no penalty at max clocks edge-only
        assert not info["slo_violation"]
    assert n == 5


def test_lower_gpu_clock_is_slower_and_offload_sends_bytes():
    env = SimEnv(seed=2)
    top = env.action_space.max_action(0.0)
    slow = top.copy()
    slow[1] = 0
    _, _, _, fast_info = env.clone().step(top)
    _, _, _, slow_info = env.clone().step(slow)
    assert slow_info["latency_ms"] > fast_info["latency_ms"]
    _, _, _, off = env.clone().step(env.action_space.max_action(1.0))
    assert off["bytes_sent"] > 0 and off["accuracy_loss"] > 0 and fast_info["bytes_sent"] == 0


def test_decision_time_on_the_critical_path_costs_latency():
    env = SimEnv(seed=3)
    a = env.action_space.max_action(0.0)
    _, _, _, hidden = env.clone().step(a, decision_ms=5.0, decision_on_path=False)
    _, _, _, paid = env.clone().step(a, decision_ms=5.0)
    assert paid["latency_ms"] == pytest.approx(hidden["latency_ms"] + 5.0)
    # inside the camera period the board idles either way: same energy per frame ...
    assert paid["energy_j"] == pytest.approx(hidden["energy_j"])
    # ... but a decision that pushes the frame past the period makes the board pay for the overrun
    _, _, _, late = env.clone().step(a, decision_ms=60.0)
    assert late["interval_ms"] > 1000.0 / env.fps and late["energy_j"] > hidden["energy_j"]


def test_energy_covers_the_whole_camera_period():
    """Racing to idle at max clocks is not free: the idle power is paid until the next frame."""
    env = SimEnv(seed=3)
    a = env.action_space.max_action(0.0)
    cmd = env.action_space.to_command(a)
    _, _, _, info = env.clone().step(a)
    busy = env.twin.frame_cost(env.workload, cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"],
                               0.0, 8.0, 20.0).energy_j
    idle_w = env.twin.idle_power_w(cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"])
    assert info["latency_ms"] < 1000.0 / env.fps
    assert info["energy_j"] == pytest.approx(busy + idle_w * (1000.0 / env.fps - info["latency_ms"]) / 1e3)
    assert env.reference_cost()[0] == pytest.approx(info["energy_j"])
    # the clock-driven rails' share: the board minus its static power over the camera period
    static_j = env.profile.static_w / env.fps
    assert info["soc_energy_j"] == pytest.approx(info["energy_j"] - static_j)


def test_lower_clocks_save_soc_rail_energy_while_the_slo_holds():
    env = SimEnv(seed=3)
    top = env.action_space.max_action(0.0)
    low = top.copy()
    low[1] = max(0, low[1] - 3)           # a few GPU levels down
    _, _, _, fast = env.clone().step(top)
    _, _, _, slow = env.clone().step(low)
    assert slow["latency_ms"] > fast["latency_ms"] and not slow["slo_violation"]
    assert slow["soc_energy_j"] < fast["soc_energy_j"]


def test_same_seed_same_frames_whatever_the_actions():
    a, b = SimEnv(seed=4), SimEnv(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(40):
        a.step(a.action_space.sample(rng))
        b.step(b.action_space.max_action(0.0))
    assert a.network_now() == b.network_now() and a.importance == b.importance


def test_oracle_view_matches_the_step(space):
    env = SimEnv(seed=5)
    rewards = env.rewards_of_all_actions()
    best = env.action_space.all_actions()[int(np.argmax(rewards))]
    _, r, _, _ = env.clone().step(best, decision_on_path=False)
    assert r == pytest.approx(float(rewards.max()))


def test_default_accuracy_table_grows_with_offload():
    vals = [DEFAULT_ACCURACY_TABLE[k] for k in sorted(DEFAULT_ACCURACY_TABLE)]
    assert vals[0] == 0 and all(b >= a for a, b in zip(vals, vals[1:]))
    env = SimEnv(seed=6, accuracy_table={0.0: 0.0, 1.0: 0.5})
    assert float(env.accuracy_loss(1.0)) == pytest.approx(0.5)


def test_an_answer_due_after_the_executors_deadline_is_not_waited_for():
    """On a dropout (0.1 Mbps, 600 ms RTT) the robot's executor stops waiting at its deadline: the twin's frame
    ends there too, answered from the channels it kept (an accuracy violation), or, when every channel went,
    with the whole tail run here after the wait; the oracle prices the same frame the same way."""
    from dvfo_ros.core.io.traces import NetworkTrace
    from dvfo_ros.core.mdp.context import CLOUD_DEADLINE_MS
    dropout = NetworkTrace(np.array([0.0]), np.array([0.1]), np.array([600.0]))
    env, patient = SimEnv(trace=dropout, seed=4), SimEnv(trace=dropout, seed=4, cloud_deadline_ms=None)
    local = env.clone().step(env.action_space.max_action(0.0))[3]
    latency = {}
    for xi in (0.3, 1.0):
        a = env.action_space.max_action(xi)
        _, r, _, info = env.clone().step(a, decision_on_path=False)
        waited = patient.clone().step(a)[3]
        assert info["fallback"] and not waited["fallback"] and waited["latency_ms"] > 600.0
        assert CLOUD_DEADLINE_MS <= info["latency_ms"] < CLOUD_DEADLINE_MS + local["latency_ms"]
        assert info["accuracy_violation"] == (xi < 1.0)
        i = next(j for j, b in enumerate(env.action_space.all_actions()) if np.array_equal(b, a))
        assert env.rewards_of_all_actions()[i] == pytest.approx(r)
        latency[xi] = info["latency_ms"]
    assert latency[1.0] > latency[0.3]             # nothing of the tail had run: it runs after the wait
