"""Offline training from bags: both storages train a checkpoint the policy node loads; NaN rewards, bags
without transitions and failures never cost the checkpoint already on disk."""
import numpy as np
import pytest

from dvfo_ros.cli.bag import synth
from dvfo_ros.cli.train_offline import main as train_main
from dvfo_ros.core.mdp import STATE_DIM, ActionSpace
from dvfo_ros.core.policies.offline import ReadStats, ReservoirBuffer, TransitionChunk, iter_transitions
from dvfo_ros.core.twin import load_profile


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    d = tmp_path_factory.mktemp("bags")
    synth(str(d / "ondemand_mcap"), 400, policy="ondemand", storage="mcap", explore=0.3, seed=1)
    synth(str(d / "maxfreq_sqlite"), 400, policy="max_freq", storage="sqlite3", explore=0.3, seed=2)
    synth(str(d / "val"), 200, policy="ondemand", storage="mcap", explore=0.3, seed=3)
    return d


def test_train_from_both_storages_and_load_in_policy_runtime(bags, tmp_path, capsys):
    out = tmp_path / "dvfo.pt"
    rc = train_main(["--bag", str(bags / "ondemand_mcap"), "--bag", str(bags / "maxfreq_sqlite"),
                     "--val-bag", str(bags / "val"), "--out", str(out), "--steps", "300", "--eval-every", "100",
                     "--batch-size", "64", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "read 800 transitions from 2 bag(s)" in text and "validation: TD error" in text
    assert out.is_file() and (tmp_path / "dvfo.png").stat().st_size > 10_000
    from dvfo_ros.core.policies import load_checkpoint
    from dvfo_ros.core.policies.runtime import PolicyRuntime
    ck = load_checkpoint(str(out))
    assert ck["policy"] == "dvfo" and ck["meta"]["trained"] == "offline" and ck["meta"]["steps"] == 300
    assert len(ck["meta"]["history"]) == 3
    rt = PolicyRuntime("dvfo", "xavier_nx", checkpoint=str(out))
    step = rt.step({"bandwidth_mbps": 20.0, "rtt_ms": 10.0})
    assert set(step.command) == {"cpu_freq_hz", "gpu_freq_hz", "emc_freq_hz", "offload_ratio"}
    assert rt.policy.epsilon < 0.1     # an offline-trained policy exploits from its first frame


def test_nan_rewards_are_skipped_with_a_warning(tmp_path, capsys):
    bag = tmp_path / "nan"
    synth(str(bag), 100, policy="max_freq", nan_every=4)
    warnings = []
    stats = ReadStats()
    space = ActionSpace.from_profile(load_profile("xavier_nx"))
    n = sum(len(c) for c in iter_transitions([str(bag)], space, warn=warnings.append, stats=stats))
    assert n == 75 and stats.skipped_nan == 25
    assert len(warnings) == 1 and str(bag) in warnings[0] and "/dvfo/transition" in warnings[0] \
        and "NaN" in warnings[0]


def test_bag_without_transitions_fails_cleanly_and_keeps_the_checkpoint(tmp_path, capsys):
    from dvfo_ros.core.io.bags import BagWriter, make_message
    bag = tmp_path / "no_tr"
    with BagWriter(bag, "mcap") as w:
        w.add_topic("/dvfo/inference", "dvfo_ros/msg/InferenceResult")
        w.write("/dvfo/inference", 1, make_message(w.store, "dvfo_ros/msg/InferenceResult", 1, total_ms=5.0))
    out = tmp_path / "keep.pt"
    out.write_bytes(b"previous checkpoint")
    assert train_main(["--bag", str(bag), "--out", str(out), "--steps", "10", "--no-progress"]) == 1
    cap = capsys.readouterr()
    assert f"{bag}: no dvfo_ros/msg/Transition topic (topics: /dvfo/inference)" in cap.out
    assert "no usable transitions" in cap.err and "Traceback" not in cap.err
    assert out.read_bytes() == b"previous checkpoint"
    with pytest.raises(SystemExit) as e:
        train_main(["--bag", str(bag), "--out", str(out), "--steps", "0"])
    assert e.value.code == 2


def test_truncated_bag_still_trains(tmp_path, capsys):
    bag = tmp_path / "cut"
    synth(str(bag), 2000, policy="ondemand", storage="mcap")     # > 1 MiB: more than one mcap chunk
    f = bag / "cut.mcap"
    with open(f, "r+b") as fh:
        fh.truncate(int(f.stat().st_size * 0.7))
    out = tmp_path / "cut.pt"
    assert train_main(["--bag", str(bag), "--out", str(out), "--steps", "20", "--eval-every", "20",
                       "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "truncated" in text and "cut.mcap" in text
    assert out.is_file()


def test_reservoir_keeps_a_uniform_sample_in_fixed_memory():
    buf = ReservoirBuffer(500, seed=0)
    for start in range(0, 20_000, 1000):
        idx = np.arange(start, start + 1000, dtype=np.float32)
        s = np.repeat(idx[:, None], STATE_DIM, 1)
        buf.add(TransitionChunk(s, np.zeros((1000, 4), np.int64), idx, s, np.zeros(1000, np.float32)))
    assert len(buf) == 500 and buf.seen == 20_000
    r = buf.all()[2]
    assert len(np.unique(r)) == 500
    assert 8000 < r.mean() < 12000            # uniform over the whole stream, not just its end
    assert (r < 10_000).mean() == pytest.approx(0.5, abs=0.1)


def _twin_reward(policy, frames=300):
    from dvfo_ros.core.policies import rollout
    from dvfo_ros.core.mdp import RewardConfig, SimEnv
    env = SimEnv("xavier_nx", seed=11, reward_cfg=RewardConfig(eta=0.5))
    return rollout(env, policy, frames).summary()["reward_mean"]


def test_explored_data_trains_a_policy_far_better_than_the_recorded_one(tmp_path, capsys):
    """max_freq with 30 % random actions: coverage is enough for plain double DQN, which finds the cheap clocks."""
    from dvfo_ros.core.policies import load_policy, make_policy
    bag = tmp_path / "mf"
    synth(str(bag), 1200, policy="max_freq", explore=0.3, seed=5)
    out = tmp_path / "mf.pt"
    assert train_main(["--bag", str(bag), "--out", str(out), "--steps", "800", "--eval-every", "800",
                       "--no-progress"]) == 0
    assert "CQL alpha 0" in capsys.readouterr().out
    space = ActionSpace.from_profile(load_profile("xavier_nx"))
    r_learnt = _twin_reward(load_policy(str(out)).train(False))
    r_behaviour = _twin_reward(make_policy("max_freq", space))
    assert r_learnt > r_behaviour + 1.0, (r_learnt, r_behaviour)


def test_governor_data_without_exploration_stays_near_the_governor(tmp_path, capsys):
    """Pure ondemand data never tries xi > 0: the conservative term keeps the policy from extrapolating."""
    from dvfo_ros.core.policies import load_policy, make_policy
    bag = tmp_path / "od"
    synth(str(bag), 800, policy="ondemand", seed=3)
    out = tmp_path / "od.pt"
    assert train_main(["--bag", str(bag), "--out", str(out), "--steps", "400", "--eval-every", "400",
                       "--no-progress"]) == 0
    assert "coverage 0.000 -> CQL alpha 1" in capsys.readouterr().out
    space = ActionSpace.from_profile(load_profile("xavier_nx"))
    r_learnt = _twin_reward(load_policy(str(out)).train(False))
    r_behaviour = _twin_reward(make_policy("ondemand", space))
    assert r_learnt > r_behaviour - 0.5, (r_learnt, r_behaviour)
