"""Policies behind one interface: valid actions, the oracle bound, learning, checkpoints."""
import time

import numpy as np
import pytest
import torch

from dvfo_ros.core.policies import (POLICIES, CheckpointError, load_policy, make_policy, policy_names, rollout,
                                   twin_options)
from dvfo_ros.core.mdp import BRANCH_NAMES, STATE_DIM, STATE_NAMES, SimEnv, build_state

torch.set_num_threads(1)
FIXED = ["edge_only", "cloud_only", "max_freq", "ondemand", "static"]
DESIGN_NAMES = {"dvfo", "static", "edge_only", "cloud_only", "max_freq", "ondemand", "dvfs_only", "offload_only",
                "oracle", "autoscale", "neurosurgeon"}
XI = BRANCH_NAMES.index("xi")
SMALL = dict(learning_starts=64, batch_size=32, exploration_steps=300, hidden=32)


def test_registry_has_the_design_names_and_rejects_others():
    assert DESIGN_NAMES <= set(policy_names())
    env = SimEnv(seed=0)
    with pytest.raises(ValueError, match="choose one of.*edge_only"):
        make_policy("fastest", env.action_space)
    with pytest.raises(ValueError, match="needs the simulated env"):
        make_policy("oracle", env.action_space)


@pytest.mark.parametrize("name", FIXED + ["dvfo", "dvfs_only", "offload_only", "oracle", "autoscale",
                                          "neurosurgeon"])
def test_every_policy_acts_inside_the_table(name):
    env = SimEnv(seed=1, episode_frames=20)
    kw = {"env": env} if POLICIES[name].needs_env else {}
    policy = make_policy(name, env.action_space, **kw)
    log = rollout(env, policy, 25)
    branches = np.asarray(env.action_space.branches)
    acts = np.asarray(log.actions)
    assert acts.shape == (25, 4) and np.all(acts >= 0) and np.all(acts < branches)
    for a in acts[:3]:
        cmd = env.action_space.to_command(a)
        assert cmd["cpu_freq_hz"] in env.action_space.cpu_hz and 0.0 <= cmd["offload_ratio"] <= 1.0
    policy.close()


def test_fixed_baselines_do_what_their_names_say():
    env = SimEnv(seed=2)
    s = env.reset()
    top = env.action_space.branches
    assert list(make_policy("edge_only", env.action_space).act(s)) == [top[0] - 1, top[1] - 1, top[2] - 1, 0]
    assert make_policy("cloud_only", env.action_space).act(s)[3] == top[3] - 1
    static = make_policy("static", env.action_space, command={"gpu_freq_hz": env.action_space.gpu_hz[2],
                                                              "offload_ratio": 0.3})
    assert env.action_space.to_command(static.act(s))["gpu_freq_hz"] == env.action_space.gpu_hz[2]
    assert env.action_space.to_command(static.act(s))["offload_ratio"] == pytest.approx(0.3)
    # ondemand: an idle device steps down, a busy one jumps to the top
    idle = build_state({"cpu_util": 0.05, "gpu_util": 0.05, "emc_util": 0.05, "last_latency_ms": 10,
                        "time_since_action_ms": 33})
    busy = build_state({"cpu_util": 1.0, "gpu_util": 1.0, "emc_util": 1.0, "last_latency_ms": 33,
                        "time_since_action_ms": 33})
    ondemand = make_policy("ondemand", env.action_space)
    assert np.all(ondemand.act(idle)[:3] == 0) and list(ondemand.act(busy)[:3]) == [t - 1 for t in top[:3]]


def test_oracle_is_never_beaten_on_the_same_frames():
    frames = 120
    env = SimEnv(seed=3, episode_frames=60)
    bound = rollout(env, make_policy("oracle", env.action_space, env=env), frames).summary()["reward_mean"]
    env = SimEnv(seed=3, episode_frames=60)
    wider = rollout(env, make_policy("oracle", env.action_space, env=env, partitions=True), frames)
    assert wider.summary()["reward_mean"] >= bound - 1e-9    # more choices: never a worse bound
    rng = np.random.default_rng(0)

    class RandomPolicy:
        concurrent = False

        def act(self, s):
            return env2.action_space.sample(rng)

    for name in FIXED + ["dvfo", "autoscale", "neurosurgeon", "random"]:
        env2 = SimEnv(seed=3, episode_frames=60)
        policy = RandomPolicy() if name == "random" else make_policy(name, env2.action_space)
        got = rollout(env2, policy, frames).summary()["reward_mean"]
        # neurosurgeon cuts whole layers, outside DVFO's space: the bound over the extended space holds it
        assert got <= (wider.summary()["reward_mean"] if name == "neurosurgeon" else bound) + 1e-9, name


def test_short_training_beats_random():
    env = SimEnv(seed=4)
    agent = make_policy("dvfo_sequential", env.action_space, seed=0, **SMALL)
    rollout(env, agent, 1000, learn=True)
    agent.train(False)
    trained = rollout(SimEnv(seed=40), agent, 200).summary()["reward_mean"]
    random_agent = make_policy("dvfo_sequential", env.action_space, seed=0, **SMALL)   # untrained, exploring
    rnd = rollout(SimEnv(seed=40), random_agent, 200).summary()["reward_mean"]
    assert agent.updates > 500
    assert trained > rnd + 1.0


def test_concurrent_learner_trains_in_its_own_thread_and_acting_stays_fast():
    env = SimEnv(seed=5)
    agent = make_policy("dvfo", env.action_space, seed=0, **SMALL)
    log = rollout(env, agent, 400, learn=True, pacing="real", time_scale=0.02)
    agent.wait_for_learner(5.0)
    assert agent._thread is not None and agent._thread.is_alive()
    assert agent.updates > 0
    assert np.median(log.decision_ms) < 1.0
    agent.close()
    assert agent._thread is None


def test_training_in_simulated_time_is_the_same_run_twice_for_a_seed():
    def train(seed):
        env = SimEnv(seed=7, noise=0.05)
        agent = make_policy("dvfo", env.action_space, seed=seed, **SMALL)
        log = rollout(env, agent, 300, learn=True)          # pacing "sim": no thread, no sleep
        assert agent._thread is None and agent.updates > 0
        return log.actions, log.rewards, agent.updates
    first, again, other = train(3), train(3), train(4)
    assert first == again
    assert first[0] != other[0]


def test_concurrent_learner_gets_its_share_of_each_simulated_frame():
    env = SimEnv(seed=8)
    agent = make_policy("dvfo", env.action_space, seed=0, **dict(SMALL, replay_ratio=100.0, learner_step_ms=10.0))
    log = rollout(env, agent, 120, learn=True)
    busy = [i for i in range(len(log.rewards)) if i + 1 >= agent.hp["learning_starts"]]
    # one update per 10 ms of simulated frame (interval = max(camera period, latency)) once learning starts
    expected = sum(max(1000.0 / 30.0, log.latency_ms[i]) for i in busy) / 10.0
    assert abs(agent.updates - expected) <= 2 + 0.1 * expected
    capped = make_policy("dvfo", env.action_space, seed=0, **dict(SMALL, replay_ratio=1.0, learner_step_ms=1.0))
    rollout(SimEnv(seed=8), capped, 120, learn=True)
    assert capped.updates <= capped.steps                    # never past replay_ratio per observed frame


def test_sequential_ablation_pays_its_inline_learning_on_the_frame_path():
    def p95(name):
        env = SimEnv(seed=9)
        agent = make_policy(name, env.action_space, seed=0, **dict(SMALL, learner_step_ms=20.0))
        return np.mean(rollout(env, agent, 150, learn=True).latency_ms[SMALL["learning_starts"]:])
    assert p95("dvfo_sequential") > p95("dvfo") + 10.0


def test_checkpoint_round_trip(tmp_path):
    env = SimEnv(seed=6)
    agent = make_policy("dvfo_sequential", env.action_space, seed=1, **SMALL)
    rollout(env, agent, 200, learn=True)
    agent.train(False)
    path = str(tmp_path / "p.pt")
    agent.save(path, meta={"device": "xavier_nx"})
    again = load_policy(path)
    fresh = make_policy("dvfo_sequential", env.action_space, seed=99, checkpoint=path, **SMALL)
    states = np.random.default_rng(0).uniform(0, 1, (50, STATE_DIM)).astype(np.float32)
    again.train(False)
    fresh.train(False)
    for s in states:
        assert np.array_equal(again.act(s), agent.act(s)) and np.array_equal(fresh.act(s), agent.act(s))
    assert again.config() == agent.config()


def test_corrupt_or_foreign_checkpoint_is_refused_clearly(tmp_path):
    env = SimEnv(seed=7)
    agent = make_policy("dvfo", env.action_space, **SMALL)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupt") as err:
        agent.load(str(bad))
    assert "\n" not in str(err.value)
    good = tmp_path / "good.pt"
    agent.save(str(good))
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError):
        agent.load(str(tmp_path / "cut.pt"))
    with pytest.raises(CheckpointError, match="not found"):
        agent.load(str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="'dvfo' policy, not 'dvfs_only'"):
        make_policy("dvfs_only", env.action_space, **SMALL).load(str(good))
    torch.save({"weights": torch.zeros(3)}, str(tmp_path / "other.pt"))
    with pytest.raises(CheckpointError, match="not a dvfo_ros policy checkpoint"):
        load_policy(str(tmp_path / "other.pt"))


def test_dvfs_only_never_offloads_and_offload_only_follows_ondemand_clocks():
    env = SimEnv(seed=8)
    dvfs = make_policy("dvfs_only", env.action_space, **SMALL)
    log = rollout(env, dvfs, 150, learn=True)
    dvfs.close()
    assert all(a[3] == 0 for a in log.actions)
    env = SimEnv(seed=8)
    off, od = make_policy("offload_only", env.action_space, **SMALL), make_policy("ondemand", env.action_space)
    s = env.reset()
    for _ in range(30):
        a = off.act(s)
        assert np.array_equal(a[:3], od.act(s)[:3])
        s, _, _, _ = env.step(a)


def test_neurosurgeon_cuts_nearer_the_device_end_as_bandwidth_falls_and_reports_its_error():
    env = SimEnv("nano", "vit_b_16", seed=10)     # a slow edge GPU, a network whose image is cheap to send
    ns = make_policy("neurosurgeon", env.action_space, **twin_options("neurosurgeon", env))
    n = len(env.workload.layers)
    splits = []
    for bw in (1000.0, 30.0, 8.0, 2.0, 0.5):
        levels, extras = ns.decide(build_state({"bandwidth_mbps": bw, "rtt_ms": 5.0}))
        assert list(levels[:3]) == [b - 1 for b in env.action_space.branches[:3]]     # no DVFS: max clocks
        assert levels[3] == (0 if extras.split_index == n else env.action_space.branches[3] - 1)
        splits.append(extras.split_index)
    assert splits == sorted(splits) and splits[0] == 0 and splits[-1] == n      # image up ... all local
    # its regressions were fitted on the other models' stages: honest, non-zero, bounded error
    assert 0.01 < ns.predictor_error["latency"] < 0.6 and 0.01 < ns.predictor_error["energy"] < 0.6
    energy = make_policy("neurosurgeon", env.action_space, objective="energy", **twin_options("neurosurgeon", env))
    assert energy.decide(build_state({"bandwidth_mbps": 2.0, "rtt_ms": 5.0}))[1].split_index <= splits[3]
    with pytest.raises(ValueError, match="objective"):
        make_policy("neurosurgeon", env.action_space, objective="speed")


def test_neurosurgeon_in_the_twin_matches_its_own_prediction_of_the_best_cut():
    from dvfo_ros.core.policies.grid import constant_trace
    for bw, expect_local in ((0.5, True), (100.0, False)):
        env = SimEnv("nano", "vit_b_16", constant_trace(bw, 5.0), seed=0, episode_frames=30)
        ns = make_policy("neurosurgeon", env.action_space, **twin_options("neurosurgeon", env))
        log = rollout(env, ns, 30)
        edge = rollout(SimEnv("nano", "vit_b_16", constant_trace(bw, 5.0), seed=0, episode_frames=30),
                       make_policy("edge_only", env.action_space), 30).summary()
        local = len(env.workload.layers)
        assert set(log.splits) == {local} if expect_local else local not in log.splits
        s = log.summary()
        if not expect_local:      # offloading the network beats running it here, as it predicted
            assert s["latency_ms_mean"] < 0.5 * edge["latency_ms_mean"] and s["accuracy_loss"] == 0.0


def test_autoscale_q_table_round_trips(tmp_path):
    env = SimEnv(seed=11)
    auto = make_policy("autoscale", env.action_space, exploration_steps=100)
    rollout(env, auto, 200, learn=True)
    auto.save(str(tmp_path / "a.pt"))
    again = load_policy(str(tmp_path / "a.pt"))
    assert np.array_equal(again.q, auto.q) and np.any(auto.q != 0)


def test_learn_offline_from_recorded_transitions_changes_the_policy():
    env = SimEnv(seed=9)
    rec = rollout(env, make_policy("max_freq", env.action_space), 1)   # noqa: F841 (env warm)
    agent = make_policy("dvfo", env.action_space, **SMALL)
    rng = np.random.default_rng(0)
    s = env.reset()
    transitions = []
    for _ in range(300):
        a = env.action_space.sample(rng)
        s2, r, done, _ = env.step(a)
        transitions.append((s, a, r, s2, done))
        s = s2
    before = agent.state_dict()["q"]["out.weight"].clone()
    loss = agent.learn_offline(iter(transitions), steps=50)
    assert np.isfinite(loss) and agent.updates == 50
    assert not torch.equal(before, agent.state_dict()["q"]["out.weight"])
    with pytest.raises(ValueError):
        agent.learn_offline([], steps=1)


@pytest.mark.parametrize("heads", [1, 2])
def test_dvfo_greedy_is_the_argmax_over_every_joint_action_and_fast(heads):
    """The published NumPy actor picks the same joint action as brute force over the torch net (with two
    heads: over their minimum)."""
    env = SimEnv(seed=13)
    agent = make_policy("dvfo", env.action_space, seed=3, hidden=32, heads=heads, offload_margin=0.0)
    states = np.random.default_rng(1).uniform(0, 1, (20, STATE_DIM)).astype(np.float32)
    with torch.no_grad():
        q = agent.q(torch.as_tensor(states))                     # [20, *branches]
        a_all = torch.as_tensor(env.action_space.all_actions())
        flat = q.reshape(20, -1)
        per_head = agent.q.q_of(torch.as_tensor(states[:1]).expand(len(a_all), -1), a_all)
        assert per_head.shape == (len(a_all), heads)
        assert torch.allclose(per_head.amin(1), flat[0], atol=1e-4)
    for s, row in zip(states, flat.numpy()):
        assert np.array_equal(agent.greedy(s), env.action_space.all_actions()[int(np.argmax(row))])
    agent.train(False)
    times = []
    for s in states.repeat(25, 0):
        t0 = time.perf_counter()
        agent.act(s)
        times.append((time.perf_counter() - t0) * 1e3)
    assert np.median(times) < 0.5


def test_dvfo_joint_q_learns_near_oracle_from_random_frames():
    """Trained on the JOINT reward of random joint actions, the greedy policy lands near the bound."""
    env = SimEnv(seed=12)
    rng = np.random.default_rng(0)
    s, transitions = env.reset(), []
    for _ in range(3000):
        a = env.action_space.sample(rng)
        s2, r, done, _ = env.step(a)
        transitions.append((s, a, r, s2, done))
        s = env.reset() if done else s2
    agent = make_policy("dvfo", env.action_space, seed=0, hidden=64, batch_size=128)
    agent.learn_offline(iter(transitions), steps=1500)
    agent.train(False)
    ours = rollout(SimEnv(seed=120), agent, 200).summary()["cost_mean"]
    held = SimEnv(seed=120)
    bound = rollout(held, make_policy("oracle", held.action_space, env=held), 200).summary()["cost_mean"]
    rnd = np.mean([c for c in rollout(SimEnv(seed=120), make_policy("dvfo", env.action_space, seed=5), 200).costs])
    assert ours < 1.25 * bound and ours < 0.5 * rnd


def _offload_favoured(agent, gain):
    """Zero the head's weights and bias the xi table so xi level 2 is ``gain`` better than local (xi = 0),
    every other xi far worse: Q then reads the same for every state."""
    with torch.no_grad():
        for net in (agent.q, agent.q_avg):                    # the online net and the deployed average
            net.out.weight.zero_()
            net.out.bias.zero_()
            _, lo, hi, _ = net.layout[0]                      # the xi table comes first
            net.out.bias[lo:hi] = -1.0
            net.out.bias[lo] = 0.0
            net.out.bias[lo + 2] = gain
    agent._publish()


def test_trained_dvfo_offloads_only_where_it_has_seen_offloading_pay_and_by_a_margin(tmp_path):
    """The deployment guard: a near-tie (inside offload_margin) stays local; once trained, an xi never
    taken under a state's network conditions is not taken there; seen min_support times, it is."""
    env = SimEnv(seed=21)
    agent = make_policy("dvfo", env.action_space, seed=0, hidden=16)
    s = env.reset()
    _offload_favoured(agent, 0.01)
    assert agent.greedy(s)[3] == 0                            # predicted to pay less than the margin
    _offload_favoured(agent, 0.5)
    assert agent.greedy(s)[3] == 2                            # training: the support guard is off
    agent.train(False)
    assert agent.act(s)[3] == 0                               # never offloaded at this bandwidth / RTT
    fast = s.copy()
    fast[0] = 0.95                                            # another bandwidth bin
    for _ in range(agent.hp["min_support"]):
        agent.support.add(s, (0, 0, 0, 2))
    assert agent.act(s)[3] == 2 and agent.act(fast)[3] == 0
    path = str(tmp_path / "g.pt")
    agent.save(path)
    again = load_policy(path)
    again.train(False)
    assert again.act(s)[3] == 2 and again.act(fast)[3] == 0    # the counts travel with the checkpoint
    unguarded = make_policy("dvfo", env.action_space, seed=0, hidden=16, min_support=0, joint_support=0)
    _offload_favoured(unguarded, 0.5)
    unguarded.train(False)
    assert unguarded.act(fast)[3] == 2


def test_trained_dvfo_offloads_only_at_clocks_it_has_tried_with_that_offload(tmp_path):
    """joint_support: an xi taken often enough under these network conditions is not enough; once trained,
    DVFO offloads only at a joint action (clocks and xi) it took joint_support times there."""
    env = SimEnv(seed=21)
    agent = make_policy("dvfo", env.action_space, seed=0, hidden=16, min_support=0, joint_support=3)
    s = env.reset()
    _offload_favoured(agent, 0.5)                             # every clock setting at xi level 2 ties
    agent.train(False)
    assert agent.act(s)[3] == 0                               # no joint action at xi = 2 tried here
    tried = (1, 2, 3, 2)
    for _ in range(2):
        agent.support.add(s, tried)
    assert agent.act(s)[3] == 0                               # twice is not enough
    agent.support.add(s, tried)
    assert tuple(agent.act(s)) == tried                       # the one tried three times, not (0, 0, 0, 2)
    path = str(tmp_path / "j.pt")
    agent.save(path)
    again = load_policy(path)
    again.train(False)
    assert tuple(again.act(s)) == tried                       # the joint counts travel with the checkpoint


def test_mixed_exploration_keeps_running_locally_while_the_greedy_policy_offloads():
    """With greedy xi > 0, half the random joint draws still run locally (local_share): the local slice
    the edge falls back on is never starved of data. local_share = 0 offloads every joint draw."""
    env = SimEnv(seed=4)
    s = env.reset()
    shares = {}
    for share in (0.5, 0.0):
        agent = make_policy("dvfo", env.action_space, seed=0, hidden=16, local_share=share)
        _offload_favoured(agent, 0.5)
        assert agent.greedy(s)[3] == 2
        shares[share] = np.mean([agent.act(s)[3] == 0 for _ in range(3000)])      # epsilon = 1 at step 0
    assert 0.07 < shares[0.5] < 0.13 and shares[0.0] == 0.0
    with pytest.raises(ValueError, match="local_share"):
        make_policy("dvfo", env.action_space, local_share=1.5)


def test_a_trained_policy_acts_on_the_average_of_its_recent_weights():
    """Once trained, decisions come from the Polyak average of the online net (less SGD noise in the
    clock choices); while training, from the online net. Offline training moves the average too."""
    env = SimEnv(seed=8)
    agent = make_policy("dvfo_sequential", env.action_space, seed=2, offload_margin=0.0, min_support=0,
                       joint_support=0, **SMALL)
    init = agent.q_avg.out.weight.detach().clone()
    rollout(env, agent, 300, learn=True)
    online, avg = agent.q.out.weight.detach(), agent.q_avg.out.weight.detach()
    assert not torch.equal(online, avg)
    assert (avg - online).norm() < (init - online).norm()          # it follows the online net
    states = np.random.default_rng(1).uniform(0, 1, (40, STATE_DIM)).astype(np.float32)

    def argmax(net, st):
        with torch.no_grad():
            return np.unravel_index(int(net(torch.as_tensor(st[None])).flatten().argmax()), env.action_space.branches)

    agent.train(False)
    assert all(tuple(agent.act(st)) == argmax(agent.q_avg, st) for st in states)
    agent.train(True)
    assert all(tuple(agent.greedy(st)) == argmax(agent.q, st) for st in states)
    off = make_policy("dvfo", env.action_space, seed=3, **SMALL)
    init = off.q_avg.out.weight.detach().clone()
    rng = np.random.default_rng(4)
    transitions = [(st, env.action_space.sample(rng), -1.0, st, False) for st in states]
    off.learn_offline(iter(transitions), steps=30)
    assert (off.q_avg.out.weight - off.q.out.weight).norm() < (init - off.q.out.weight).norm()


def test_local_actions_are_valued_without_the_link_and_old_checkpoints_keep_their_meaning(tmp_path):
    """A local frame never touches the network, so the value of every xi = 0 action must not move with
    the link's bandwidth or RTT (a Wi-Fi link faster than any in training cannot bend the local clock
    choice), while offload actions do read it. A checkpoint saved before the option loads as it was."""
    env = SimEnv(seed=9)
    agent = make_policy("dvfo_sequential", env.action_space, seed=4, **SMALL)
    rollout(env, agent, 200, learn=True)
    agent.train(False)
    bw, rtt = STATE_NAMES.index("bandwidth_mbps"), STATE_NAMES.index("rtt_ms")
    s = np.random.default_rng(2).uniform(0, 1, STATE_DIM).astype(np.float32)
    fast = s.copy()
    fast[bw], fast[rtt] = 0.95, 0.05
    q, q_fast = agent.q_table(s), agent.q_table(fast)
    assert np.array_equal(q[..., 0], q_fast[..., 0]) and not np.allclose(q[..., 1:], q_fast[..., 1:])
    local = agent.greedy(s, fixed={XI: 0})
    assert np.array_equal(agent.greedy(fast, fixed={XI: 0}), local)
    with torch.no_grad():                          # the torch path (training) agrees with the acting path
        assert np.allclose(agent.q_avg(torch.as_tensor(fast[None]))[0].numpy(), q_fast, atol=1e-5)
    state = agent.state_dict()
    del state["local_blind"], state["last_frame"]  # what a checkpoint from before the options holds
    old = make_policy("dvfo_sequential", env.action_space, seed=4, **SMALL)
    old.load_state_dict(state)
    old.train(False)
    assert old.config()["local_blind"] is False
    assert old.config()["last_frame"] is True      # it read the last frame's features, and still does
    assert not np.array_equal(old.q_table(s)[..., 0], old.q_table(fast)[..., 0])
