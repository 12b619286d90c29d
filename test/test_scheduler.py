"""The shared server: its twin (a measured batch-time fit and a queue), BCEdge's scheduler trained on it,
and the real dvfo-cloud serving under a scheduler on concurrent tail instances."""
from __future__ import annotations


import numpy as np
import pytest

from dvfo_ros.cloud.bcedge import BCEdge
from dvfo_ros.cloud.schedulers import FixedScheduler, best_fixed, evaluate, make_scheduler
from dvfo_ros.core.mdp.scheduler_env import ACTIONS, SchedulerEnv, scheduler_obs, utility
from dvfo_ros.core.twin.server import (RobotLoad, ServerProfile, ServerQueue, list_server_profiles,
                                       load_server_profile)

PROFILE = "cpu_resnet18"


def test_the_fit_recovers_a_known_server_and_the_bundled_one_is_measured():
    truth = ServerProfile("t", 6.0, 2.5, (1.0, 1.3, 1.9))
    table = {(b, c): truth.run_ms(b, c) for b in range(1, 9) for c in (1, 2, 3)}
    fit = ServerProfile.fit("fit", table)
    assert fit.base_ms == pytest.approx(6.0, rel=1e-3) and fit.per_item_ms == pytest.approx(2.5, rel=1e-3)
    assert fit.contention == pytest.approx((1.0, 1.3, 1.9), rel=1e-3) and fit.fit_error() < 1e-3
    bundled = load_server_profile(PROFILE)
    assert PROFILE in list_server_profiles() and "dvfo-profile cloud" in bundled.source
    assert len(bundled.measured) >= 16 and bundled.fit_error() < 0.35      # the raw table is on record
    assert bundled.run_ms(8, 1) / 8 < bundled.run_ms(1, 1)                 # a batch is cheaper per request
    with pytest.raises(ValueError, match="no server profile"):
        load_server_profile("no_such_server")


@pytest.mark.parametrize("text, message", [
    ("name: [unclosed\n", "is not valid YAML"),
    ("- just\n- a list\n", "is not a YAML mapping"),
    ("name: t\nbase_ms: 6\ncontention: [1.0]\n", "has no 'per_item_ms'"),
    ("name: t\nbase_ms: fast\nper_item_ms: 2\ncontention: [1.0]\n", "must be numbers"),
])
def test_a_bad_server_profile_file_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_server_profile(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_lone_robot_waits_at_most_the_window_and_overload_drops_unrun_requests():
    prof = ServerProfile("t", 8.0, 3.0, (1.0, 1.4))
    q = ServerQueue(prof, window_ms=3.0)
    served = q.run(RobotLoad(fps=10, jitter_ms=0.0).arrivals(1, 0.0, 1000.0), 1000.0, batch=8, instances=1)
    assert served.met == 10 and max(served.latency_ms) <= prof.run_ms(1) + 3.0 + 1e-6
    q = ServerQueue(prof)
    load = RobotLoad(fps=30, budget_ms=(30.0, 30.0))
    served = q.run(load.arrivals(16, 0.0, 2000.0), 2000.0, batch=1, instances=1)   # 480 rps on ~90 rps
    assert served.dropped > 0 and served.met < served.arrived / 2
    assert utility(served) < 0.5


def test_batching_and_instances_raise_goodput_under_load_but_not_for_one_robot():
    one = {a: evaluate(FixedScheduler(*a), PROFILE, 1, 20)["utility"] for a in ((1, 1), (8, 1))}
    heavy = {a: evaluate(FixedScheduler(*a), PROFILE, 16, 20) for a in ((1, 1), (8, 1), (8, 2))}
    assert one[(1, 1)] >= one[(8, 1)] - 1e-9                       # nothing to batch: no gain, a window lost
    assert heavy[(8, 1)]["throughput_rps"] > 1.2 * heavy[(1, 1)]["throughput_rps"]   # 8 at once: -34 % a request
    assert heavy[(8, 2)]["slo_violation_pct"] <= heavy[(8, 1)]["slo_violation_pct"]


@pytest.fixture(scope="module")
def bcedge():
    agent = BCEdge(seed=0)
    agent.train(SchedulerEnv(PROFILE, seed=0), 3000)
    return agent


def _obs(robots: int, queue: int) -> np.ndarray:
    prof = load_server_profile(PROFILE)
    return scheduler_obs(queue, robots * 15.0, 60.0, 0.8, 1, 1, prof.run_ms(1, 1))


def test_bcedge_batches_more_as_the_arrival_rate_rises_and_its_temperature_moves(bcedge):
    light, heavy = bcedge.decide(_obs(1, 0)), bcedge.decide(_obs(16, 12))
    assert heavy[0] > light[0] or heavy[0] * heavy[1] > light[0] * light[1], (light, heavy)
    alphas = bcedge.history["alpha"]
    assert len(alphas) > 10 and abs(alphas[-1] - alphas[0]) > 0.1 * alphas[0]


@pytest.mark.parametrize("robots", [1, 4, 8, 16])
def test_bcedge_is_within_5_percent_of_the_best_fixed_setting_at_every_load(bcedge, robots):
    sched = make_scheduler("bcedge", bcedge)
    got = evaluate(sched, PROFILE, robots, 40)
    best = best_fixed(PROFILE, robots, 40)
    assert got["utility"] >= best["utility"] - 0.05 * abs(best["utility"]), (got, best["settings"])
    if robots == 8:
        assert got["slo_violation_pct"] <= 5.0


def test_a_bcedge_checkpoint_round_trips_and_a_bad_one_is_one_line(bcedge, tmp_path):
    path = str(tmp_path / "b.pt")
    bcedge.save(path)
    again = BCEdge.load(path)
    for robots, queue in ((1, 0), (4, 2), (16, 12)):
        assert again.decide(_obs(robots, queue)) == bcedge.decide(_obs(robots, queue))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable bcedge checkpoint"):
        make_scheduler(f"bcedge:{bad}")
    for spec in ("fixed:0", "fixed:x", "fixed:4,9", "fastest"):
        with pytest.raises(ValueError, match="--scheduler"):
            make_scheduler(spec)
    assert make_scheduler("fixed:4,2").decide(_obs(1, 0)) == (4, 2) and ACTIONS[-1] == (8, 4)


def test_the_real_server_serves_under_a_scheduler_on_concurrent_instances_with_per_frame_results():
    import time

    import torch

    from dvfo_ros.cloud.tail import make_tail_runner
    from dvfo_ros.cloud.batching import collab_batch_runner
    from dvfo_ros.cloud.instances import InstancePool, sample_items
    from dvfo_ros.cloud.server import CloudServer
    from dvfo_ros.core.inference.collab import CollaborativeModel
    from dvfo_ros.core.wire import codec
    from dvfo_ros.core.wire.link import CloudLink

    model = CollaborativeModel.from_zoo("resnet18", None, 10, 64).eval()
    runner, accept = make_tail_runner(model, "cpu")
    _, key = collab_batch_runner(model, "cpu")
    srv = CloudServer("tcp://127.0.0.1:*", runner, accept=accept, batch_key=key,
                      scheduler=FixedScheduler(4, 2), pool=InstancePool(model, "cpu", 2), schedule_interval_s=0.2)
    links = [CloudLink(srv.endpoint, send_hwm=50) for _ in range(3)]
    items = sample_items(model, 12)
    meta = model.meta
    try:
        assert all(link.wait_connected(3.0) for link in links)
        for seq, (_, feat, idx) in enumerate(items):
            frames = codec.encode_features(feat, idx, model=meta["model"], split=int(meta["split"]), seq=seq,
                                           deadline=time.time() + 10.0, total_channels=int(model.channels),
                                           artifact_id=str(meta.get("artifact_id", "")))
            assert links[seq % 3].submit(frames, seq) > 0
        time.sleep(0.3)                           # twelve requests queue up before the server starts
        srv.start_in_thread()
        for seq, (_, feat, idx) in enumerate(items):
            reply = links[seq % 3].wait(seq, 20.0)
            assert reply is not None and reply.kind == "result", reply
            _, deq, deq_idx = codec.decode_features(codec.encode_features(
                feat, idx, model="m", split=1, seq=seq, deadline=0.0, total_channels=int(model.channels)))
            with torch.inference_mode():
                direct = model.cloud_tail(torch.from_numpy(deq)[None], torch.from_numpy(deq_idx))[0].numpy()
            assert np.allclose(reply.logits, direct, atol=1e-4)
    finally:
        srv.stop()
        for link in links:
            link.close()
    assert srv.stats["answered"] == 12 and 2 <= srv.stats["max_batch_seen"] <= 4
    assert srv.stats["settings"].get("4,2", 0) >= 1


def test_dvfo_cloud_refuses_a_bad_scheduler_in_one_line(capsys):
    from dvfo_ros.cli.cloud import main
    rc = main(["--bind", "tcp://127.0.0.1:0", "--artifact", "none", "--input-size", "64", "--device", "cpu",
               "--scheduler", "fixed:0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "fixed:B" in err[0]


def test_the_plain_server_refuses_what_it_would_answer_too_late_and_serves_the_rest():
    import time

    from dvfo_ros.cloud.server import CloudServer
    from dvfo_ros.core.wire import codec
    from dvfo_ros.core.wire.link import CloudLink

    def tail(items):
        time.sleep(0.05)                                   # a 50 ms batch
        return [np.zeros(4, np.float32) for _ in items]

    srv = CloudServer("tcp://127.0.0.1:*", lambda h, f, i: tail([0])[0], batch_runner=tail, max_batch=8,
                      deadline_slack_s=0.0)
    srv.policy.record(1, 0.05)                             # as measured on earlier batches
    feat, idx = np.ones((2, 3, 3), np.float32), np.arange(2)
    srv.start_in_thread()
    try:
        with CloudLink(srv.endpoint) as link:
            assert link.wait_connected(3.0)
            for seq, budget_s in ((1, 0.02), (2, 1.0)):
                link.submit(codec.encode_features(feat, idx, model="m", split=1, seq=seq,
                                                  deadline=time.time() + budget_s, total_channels=4), seq)
                reply = link.wait(seq, 3.0)
                assert reply is not None
                assert (reply.kind, seq) in (("error", 1), ("result", 2)), (reply.kind, reply.error)
    finally:
        srv.stop()
    assert srv.stats["expired"] == 1 and "cannot finish" in srv.last_error


def test_the_scheduler_twin_is_a_registered_gymnasium_env_that_passes_check_env():
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    import dvfo_ros.core.mdp  # noqa: F401 - registers the environments
    env = gymnasium.make("dvfo_ros/ServerScheduler-v0", profile=PROFILE, episode_intervals=10)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    steps, truncated = 0, False
    while not truncated:
        obs, u, terminated, truncated, info = env.step(env.action_space.sample())
        assert not terminated and env.observation_space.contains(obs) and -2.0 <= u <= 1.0
        steps += 1
    assert steps == 10
