"""The edge's CloudLink over real ZeroMQ on 127.0.0.1: replies matched by seq, late replies discarded,
non-blocking sends when the cloud is gone, and recovery after the server dies and comes back."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zmq
from torch import nn

from dvfo_ros.cloud.server import CloudServer
from dvfo_ros.core.wire import codec
from dvfo_ros.core.wire.link import CloudLink

C = 8
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tail_runner(delays: dict | None = None):
    """A real nn.Sequential tail; delays {seq: seconds} make chosen requests slow."""
    torch.manual_seed(0)
    tail = nn.Sequential(nn.Conv2d(C, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 4)).eval()

    def run(header, feat, idx):
        time.sleep((delays or {}).get(header["seq"], 0.0))
        x = torch.zeros(1, C, *feat.shape[1:])
        x[0, torch.from_numpy(idx)] = torch.from_numpy(feat)
        with torch.no_grad():
            return tail(x)[0].numpy() + header["seq"]  # the seq is visible in the result itself
    return run


def frames_for(seq: int):
    feat = np.maximum(np.random.default_rng(seq).normal(size=(3, 5, 5)), 0).astype(np.float32)
    return codec.encode_features(feat, np.array([0, 3, 6]), model="tiny", split=2, seq=seq,
                                 deadline=time.time() + 10.0, total_channels=C)


def free_endpoint() -> str:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind("tcp://127.0.0.1:*")
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close(0)
    return endpoint


@pytest.fixture
def slow_server():
    srv = CloudServer("tcp://127.0.0.1:*", tail_runner({1: 0.4}))
    srv.start_in_thread()
    yield srv
    srv.stop()


def test_late_reply_is_discarded_by_seq_never_mismatched(slow_server):
    with CloudLink(slow_server.endpoint) as link:
        assert link.wait_connected(3.0)
        link.submit(frames_for(1), 1)
        t0 = time.monotonic()
        assert link.wait(1, 0.1) is None                  # frame 1 gives up at its deadline...
        assert 0.09 <= time.monotonic() - t0 < 0.5
        link.submit(frames_for(2), 2)
        reply = link.wait(2, 3.0)                         # ...and frame 2 gets ITS answer, after 1's arrives
        assert reply.seq == 2 and reply.logits is not None
        assert reply.logits.mean() > 1.0                  # result carries +seq: 2, not 1's leftover
        assert link.stats["timeouts"] == 1 and link.stats["late_discarded"] == 1
        assert link.wait(1, 0.0) is None                  # a given-up seq stays given up


def test_replies_for_pipelined_frames_can_be_collected_in_any_order():
    srv = CloudServer("tcp://127.0.0.1:*", tail_runner())
    srv.start_in_thread()
    try:
        with CloudLink(srv.endpoint) as link:
            assert link.wait_connected(3.0)
            for seq in (10, 11, 12):
                assert link.submit(frames_for(seq), seq) > 0
            assert link.wait(12, 3.0).seq == 12
            assert link.wait(10, 3.0).seq == 10
            assert link.wait(11, 0.0).seq == 11           # already buffered: no wait at all
            assert link.stats["answered"] == 3 and link.stats["late_discarded"] == 0
    finally:
        srv.stop()


def test_wait_for_a_seq_never_sent_returns_at_once():
    with CloudLink(free_endpoint()) as link:
        t0 = time.monotonic()
        assert link.wait(42, 5.0) is None
        assert time.monotonic() - t0 < 0.05


def test_submit_never_blocks_when_the_cloud_is_gone():
    with CloudLink(free_endpoint()) as link:  # nothing listens there
        t0 = time.monotonic()
        sent = [link.submit(frames_for(seq), seq) for seq in range(200)]
        elapsed = time.monotonic() - t0
        assert sent == [0] * 200 and link.stats["dropped"] == 200
        assert elapsed < 0.5, f"200 submits took {elapsed:.3f} s"
        assert not link.ping(0.2)


def test_link_recovers_after_the_server_restarts_on_the_same_port():
    first = CloudServer("tcp://127.0.0.1:*", tail_runner())
    endpoint = first.endpoint
    first.start_in_thread()
    with CloudLink(endpoint, heartbeat_ms=100, reconnect_ms=50) as link:
        assert link.ping(3.0)
        first.stop()
        time.sleep(0.3)
        assert link.submit(frames_for(1), 1) == 0          # down: dropped, not queued for later
        assert link.wait(1, 0.1) is None
        second = CloudServer(endpoint, tail_runner())
        second.start_in_thread()
        t0 = time.monotonic()
        try:
            assert link.ping(3.0)
            recovery_s = time.monotonic() - t0
            print(f"link recovery after server restart: {recovery_s * 1000:.0f} ms")
            assert recovery_s < 1.0
            link.submit(frames_for(2), 2)
            assert link.wait(2, 3.0).seq == 2
            assert link.stats["reconnects"] >= 1 and link.stats["disconnects"] >= 1
        finally:
            second.stop()


SERVER_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, {repo!r})
from dvfo_ros.cloud.server import CloudServer
sys.path.insert(0, {test_dir!r})
from test_link import tail_runner
srv = CloudServer({endpoint!r}, tail_runner())
print("ready", flush=True)
srv.serve_forever()
"""


def _spawn_server(endpoint: str) -> subprocess.Popen:
    script = SERVER_SCRIPT.format(repo=REPO, test_dir=os.path.join(REPO, "test"), endpoint=endpoint)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_link_recovers_after_the_server_process_is_killed():
    endpoint = free_endpoint()
    proc = _spawn_server(endpoint)
    try:
        with CloudLink(endpoint, heartbeat_ms=100, reconnect_ms=50) as link:
            assert link.ping(5.0)
            link.submit(frames_for(1), 1)
            assert link.wait(1, 5.0).seq == 1
            proc.send_signal(signal.SIGKILL)                 # no goodbye: the process just vanishes
            proc.wait(5.0)
            link.submit(frames_for(2), 2)
            assert link.wait(2, 0.3) is None                 # frame falls back, nothing hangs
            proc = _spawn_server(endpoint)
            t0 = time.monotonic()
            assert link.ping(3.0)
            print(f"link recovery after kill -9 + restart: {(time.monotonic() - t0) * 1000:.0f} ms after ready")
            link.submit(frames_for(3), 3)
            reply = link.wait(3, 3.0)
            assert reply is not None and reply.seq == 3
    finally:
        proc.kill()
        proc.wait(5.0)


def test_heartbeat_notices_a_dead_server_and_ping_says_so():
    srv = CloudServer("tcp://127.0.0.1:*", tail_runner())
    srv.start_in_thread()
    with CloudLink(srv.endpoint, heartbeat_ms=100) as link:
        assert link.ping(3.0) and link.is_connected()
        srv.stop()
        deadline = time.monotonic() + 2.0
        while link.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not link.is_connected()
        assert not link.ping(0.2)


def test_close_is_idempotent_and_fast():
    link = CloudLink(free_endpoint())
    t0 = time.monotonic()
    link.close()
    link.close()
    assert time.monotonic() - t0 < 0.5
