"""Short versions of the reliability figures (`python -m dvfo_ros.testing.reliability`), asserting
what a user relies on:
traffic on the wire is unreadable with CurveZMQ, the executor's key parameters work, the composed
pipeline loses no frame when the cloud dies and comes back, N robots are all served, and a pipeline
run leaves no socket behind. Real processes, real sockets on 127.0.0.1, real DDS; no mocks.
test_link.py / test_cloud_server.py / test_pipeline.py already cover the link-level pieces
(late replies, link recovery, refused keys, a kill without restart); these are the compositions.
"""
from __future__ import annotations

import time

import pytest

from dvfo_ros.core.wire.link import CloudLink, load_keypair
from dvfo_ros.testing import fuzz
from dvfo_ros.testing.reliability.common import CloudProcess, Relay, cloud_args, free_port, model_settings


@pytest.fixture
def keys(tmp_path):
    import zmq.auth
    zmq.auth.create_certificates(tmp_path, "cloud")
    (tmp_path / "robots").mkdir()
    zmq.auth.create_certificates(tmp_path / "robots", "robot1")
    zmq.auth.create_certificates(tmp_path, "intruder")
    return tmp_path


def _capture(server, link_kwargs) -> bytes:
    """Bytes a packet capture between edge and cloud sees while one real request is answered."""
    server.start_in_thread()
    relay = Relay(int(server.endpoint.rsplit(":", 1)[1]))
    try:
        with CloudLink(relay.endpoint, **link_kwargs) as link:
            assert link.ping(5.0)
            link.submit(fuzz.seed_requests(5)[0], 5)
            reply = link.wait(5, 5.0)
            assert reply is not None and reply.kind == "result"
        time.sleep(0.1)
        return bytes(relay.captured)
    finally:
        relay.close()
        server.stop()


def test_curve_traffic_captured_on_loopback_is_not_plaintext(keys):
    request = fuzz.seed_requests(5)[0]
    plain = _capture(fuzz.make_fuzz_server(), {})
    assert b'"model"' in plain and request[1][:16] in plain       # without CURVE: header and payload readable
    public, secret = load_keypair(str(keys / "cloud.key_secret"))
    robot_public, robot_secret = load_keypair(str(keys / "robots" / "robot1.key_secret"))
    secure = _capture(fuzz.make_fuzz_server(curve_public=public, curve_secret=secret,
                                            curve_clients_dir=str(keys / "robots")),
                      dict(curve_server_public=public, curve_public=robot_public, curve_secret=robot_secret))
    assert len(secure) > len(request[1])                           # the request did cross the relay...
    assert b'"model"' not in secure and b"fuzz" not in secure      # ...but neither header...
    assert request[1][:16] not in secure                           # ...nor payload is readable


def _pipeline_params(ms, endpoint, **executor):
    from dvfo_ros.testing.reliability.runs import pipeline_params
    p = pipeline_params(ms, endpoint, fps=30.0, deadline_ms=300.0)
    p["executor"].update(executor)
    return p


@pytest.mark.ros
def test_executor_takes_its_curve_keys_from_parameters(keys):
    """A listed robot key is served through the whole pipeline; an unlisted one falls back on every frame."""
    from dvfo_ros.cli.pipeline import run
    ms = model_settings()
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    cloud = CloudProcess(endpoint, cloud_args(ms) + ["--curve-secret", str(keys / "cloud.key_secret"),
                                                     "--curve-clients", str(keys / "robots")])
    try:
        allowed = run(_pipeline_params(ms, endpoint, curve_server_key=str(keys / "cloud.key"),
                                       curve_client_key=str(keys / "robots" / "robot1.key_secret")),
                      frames=30, timeout_s=120, log=lambda *_: None)
        refused = run(_pipeline_params(ms, endpoint, curve_server_key=str(keys / "cloud.key"),
                                       curve_client_key=str(keys / "intruder.key_secret")),
                      frames=30, timeout_s=120, log=lambda *_: None)
        assert cloud.proc.poll() is None
    finally:
        cloud.kill()
    assert allowed["results_out"] == allowed["frames_in"] == 30
    assert allowed["cloud_used"] >= 25, allowed        # a few first frames may go before the handshake
    assert refused["results_out"] == refused["frames_in"] == 30
    assert refused["cloud_used"] == 0 and refused["fallbacks"] == 30
    assert refused["link"]["answered"] == 0 and refused["link"]["sent"] == 0   # nothing ever left the robot


@pytest.mark.slow   # ~50 s: two dvfo-cloud start-ups; test_link + test_pipeline cover the parts in the default run
@pytest.mark.ros
def test_cloud_killed_and_restarted_under_the_pipeline_loses_no_frame_and_recovers():
    from dvfo_ros.testing.reliability.runs import restart_figure
    r = restart_figure(seconds=30.0, fps=30.0, kill_at_s=3.0, down_s=0.5, log=lambda *_: None)
    assert r["killed"] and r["restarted"], r
    assert r["frames_lost"] == 0 and r["results_out"] == 900
    assert r["fallbacks_while_down"] > 0, "frames after the kill fell back to edge-only"
    assert r["kill_to_first_fallback_s"] < 1.0                  # the edge never blocks on a dead cloud
    assert r["recovery_s"] is not None and r["recovery_s"] < 2.0, r   # figure target 1 s; slack for a loaded CI
    assert r["fallbacks_after_recovery"] <= 3, r
    assert r["link"]["reconnects"] >= 1


@pytest.mark.slow
def test_four_robots_at_30_fps_are_all_answered():
    from dvfo_ros.testing.reliability.runs import load_figure
    r = load_figure(clients=4, seconds=5.0, fps=30.0, deadline_ms=200.0, log=lambda *_: None)
    assert r["frames"] == 4 * 150 and r["cloud_alive_at_end"]
    assert r["answered_pct"] >= 90.0, r
    assert min(r["answered_pct_per_client"]) >= 80.0, r       # no robot starves


@pytest.mark.ros
def test_a_pipeline_run_leaves_no_socket_behind_and_memory_flat():
    from dvfo_ros.testing.reliability.runs import soak_figure
    # A first run opens the process-wide sockets that live as long as the process (ZeroMQ's and DDS's
    # singletons); leaks are what a second run leaves beyond them.
    soak_figure(seconds=2.0, fps=30.0, sample_s=0.5, log=lambda *_: None)
    r = soak_figure(seconds=10.0, fps=30.0, sample_s=0.5, log=lambda *_: None)
    assert r["frames_lost"] == 0 and r["cloud_alive_at_end"]
    assert r["sockets_during"][0] == r["sockets_during"][1], r
    assert r["cloud_sockets_during"][0] == r["cloud_sockets_during"][1], r
    assert r["sockets_after_run"] == r["sockets_before_run"], r
    assert r["rss_growth_pct"] < 5.0 and r["cloud_rss_growth_pct"] < 5.0, r
