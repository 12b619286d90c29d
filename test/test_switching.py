"""A clock change costs the next frame (twin/switching.py): opt-in, priced the same by a step and the oracle."""
import argparse
import dataclasses

import numpy as np
import pytest
import yaml

from dvfo_ros.cli.common import add_env_args
from dvfo_ros.core.mdp import SimEnv
from dvfo_ros.core.policies.setup import TwinSetup
from dvfo_ros.core.twin import load_profile
from dvfo_ros.core.twin.profile import ProfileError
from dvfo_ros.core.twin.switching import KANG_2026, SwitchCost, settle


def _env(switch_cost=None, **kw):
    return SimEnv("nano", "resnet18", "dvfo", seed=3, switch_cost=switch_cost, **kw)


def test_a_frame_after_raising_the_clocks_is_slower_than_one_already_at_them():
    env = _env("kang2026")
    low, top = np.zeros(4, np.int64), env.action_space.max_action(0.0)
    env.step(low)                                     # the clocks in force are now the lowest
    _, _, _, after_switch = env.step(top)
    _, _, _, settled = env.step(top)                  # the same command again: nothing moves
    extra = after_switch["latency_ms"] - settled["latency_ms"]
    # slower for up to the longest settle (EMC, 8 ms) plus the stalls, never more
    assert 0.5 < extra <= 8.0 + 0.3
    assert after_switch["energy_j"] != pytest.approx(settled["energy_j"])


def test_without_a_switch_cost_the_last_frames_clocks_change_nothing():
    free, paid = _env("none"), _env(None)             # the shipped profiles leave switching free
    for env in (free, paid):
        env.step(np.zeros(4, np.int64))
    a = free.action_space.max_action(0.0)
    assert free.step(a)[1] == pytest.approx(paid.step(a)[1])
    assert np.allclose(free.rewards_of_all_actions(), paid.rewards_of_all_actions())


@pytest.mark.parametrize("arrival,slo", [("camera", None), ("back_to_back", 100.0)])
def test_the_oracle_prices_a_switch_as_the_step_does(arrival, slo):
    env = _env("kang2026", arrival=arrival, latency_slo_ms=slo)
    env.step(np.array([1, 3, 1, 0]))
    table = env.rewards_of_all_actions()
    acts = env.action_space.all_actions()
    for i in (0, 77, 500, len(acts) - 1):
        # (the table prices the link rounded to 1e-6 Mbps, its cache key)
        assert env.clone().step(acts[i])[1] == pytest.approx(table[i], rel=1e-6)


def test_a_frame_shorter_than_the_settle_time_runs_at_the_old_clock_throughout():
    # old point: 2 ms per frame; new: 1 ms; the clock settles after 5 ms
    t, e = settle([5.0], [2.0, 1.0], [0.2, 0.3])
    assert (t, e) == pytest.approx((2.0, 0.2))
    t, e = settle([1.0], [2.0, 1.0], [0.2, 0.3])      # half the work at the old point, half at the new
    assert (t, e) == pytest.approx((1.5, 0.1 + 0.15))


def test_a_profile_carries_its_switch_cost_and_a_bad_one_is_one_line(tmp_path):
    data = dataclasses.asdict(load_profile("nano"))
    data["switch_cost"] = KANG_2026.to_dict()
    good = tmp_path / "measured.yaml"
    good.write_text(yaml.safe_dump(data))
    env = SimEnv(str(good), "resnet18", "dvfo", seed=0)
    assert env.switch_cost == KANG_2026
    data["switch_cost"] = {"settle_ms": {"npu": 3}}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match="unknown domains npu") as err:
        load_profile(str(bad))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=">= 0"):
        SwitchCost.from_dict({"stall_us": {"cpu": -1}})


def test_dvfo_train_and_bench_take_the_switch_cost_by_name():
    p = argparse.ArgumentParser()
    add_env_args(p)
    setup = TwinSetup.from_options(p.parse_args(["--device", "nano", "--switch-cost", "kang2026"]))
    assert setup.make_env().switch_cost == KANG_2026
    assert TwinSetup(device="nano").make_env().switch_cost.free
    with pytest.raises(SystemExit):
        p.parse_args(["--switch-cost", "fast"])


def test_dvfo_reads_the_last_frames_clocks_only_where_a_switch_costs():
    from dvfo_ros.core.mdp import STATE_NAMES
    from dvfo_ros.core.policies import make_policy, twin_options
    free, paid = _env("none"), _env("kang2026")
    assert twin_options("dvfo", free) == {"last_frame": False}
    assert twin_options("dvfs_only", paid) == {"last_frame": True}
    blind = make_policy("dvfo", free.action_space, **twin_options("dvfo", free))
    reads = make_policy("dvfo", paid.action_space, **twin_options("dvfo", paid))
    state = free.reset(0)
    other = state.copy()
    for name in ("cpu_level", "prev_gpu_level", "last_latency_ms", "prev_offload_ratio"):
        other[STATE_NAMES.index(name)] += 0.5            # a different last frame, the same link and frame
    assert np.array_equal(blind.q_table(state), blind.q_table(other))
    assert not np.array_equal(reads.q_table(state), reads.q_table(other))
    other[STATE_NAMES.index("bandwidth_mbps")] += 0.2    # the link it always reads
    assert not np.array_equal(blind.q_table(state), blind.q_table(other))
