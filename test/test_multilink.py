"""Several cloud fronts for one robot (cloud_endpoint: a comma-separated list) over real ZeroMQ and real
CloudServers on 127.0.0.1: requests spread over the fronts, a front that dies mid-request is failed over
within the frame's deadline, all fronts dead never hangs a frame, a front that comes back is used again,
and the robot's engine gets cloud answers with its first front dead."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import List, Tuple

import numpy as np
import pytest

from dvfo_ros.cloud.server import CloudServer
from dvfo_ros.core.wire.link import CloudLink
from dvfo_ros.core.wire.multilink import MultiLink, open_link
from test_link import REPO, frames_for, free_endpoint, tail_runner


def serve(endpoint: str = "tcp://127.0.0.1:*", delay_s: float = 0.0) -> CloudServer:
    srv = CloudServer(endpoint, tail_runner({s: delay_s for s in range(1, 200)} if delay_s else None))
    srv.start_in_thread()
    return srv


FRONT_SCRIPT = """
import sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from dvfo_ros.cloud.server import CloudServer

def run(header, feat, idx):          # a slow tail without torch: the process starts in a tenth of a second
    time.sleep({delay_s!r})
    return np.full(4, float(feat.mean()) + header["seq"], dtype=np.float32)

srv = CloudServer({endpoint!r}, run)
print("ready", flush=True)
srv.serve_forever()
"""


def spawn_fronts(n: int, delay_s: float) -> List[Tuple[subprocess.Popen, str]]:
    """n slow fronts, each a CloudServer in its own process (started side by side), to kill -9 mid-request:
    a crash sends no reply, where stop() lets the running tail finish and may still send it."""
    fronts = []
    for _ in range(n):
        endpoint = free_endpoint()
        script = FRONT_SCRIPT.format(repo=REPO, endpoint=endpoint, delay_s=delay_s)
        fronts.append((subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True),
                       endpoint))
    for proc, _ in fronts:
        assert proc.stdout.readline().strip() == "ready"
    return fronts


def kill(front: Tuple[subprocess.Popen, str]) -> None:
    front[0].send_signal(signal.SIGKILL)
    front[0].wait(5.0)


@pytest.fixture
def two_fronts():
    servers = [serve(), serve()]
    yield servers
    for s in servers:
        s.stop()


def _all_up(link: MultiLink, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while link.stats["fronts_up"] < len(link.links) and time.monotonic() < deadline:
        link.is_connected()
        time.sleep(0.02)
    assert link.stats["fronts_up"] == len(link.links)


def test_requests_spread_over_every_front(two_fronts):
    with MultiLink([s.endpoint for s in two_fronts]) as link:
        _all_up(link)
        for seq in range(1, 21):
            assert link.submit(frames_for(seq), seq)
            reply = link.wait(seq, 3.0)
            assert reply is not None and reply.kind == "result" and reply.seq == seq
        answered = [s.stats["answered"] for s in two_fronts]
        assert sum(answered) == 20 and min(answered) >= 5, answered
        assert link.stats["answered"] == 20 and link.stats["failovers"] == 0


def test_a_front_that_dies_mid_request_is_failed_over_in_time():
    fronts = spawn_fronts(2, delay_s=0.3)
    try:
        with MultiLink([e for _, e in fronts]) as link:
            _all_up(link)
            assert link.submit(frames_for(7), 7)
            holder = link._held[7][0]
            time.sleep(0.05)
            kill(fronts[holder])                            # dies (kill -9) with the request in its tail
            t0 = time.monotonic()
            reply = link.wait(7, 3.0)
            waited = time.monotonic() - t0
            assert reply is not None and reply.kind == "result" and reply.seq == 7
            assert link.stats["failovers"] == 1 and link.links[1 - holder].stats["answered"] == 1
            assert waited < 3.0
            print(f"failover: answered {waited * 1000:.0f} ms after the front died")
    finally:
        for proc, _ in fronts:
            proc.kill()
            proc.wait(5.0)


def test_all_fronts_dead_never_hangs_a_frame():
    with MultiLink([free_endpoint(), free_endpoint()], heartbeat_ms=100) as link:
        t0 = time.monotonic()
        sent = link.submit(frames_for(1), 1)
        reply = link.wait(1, 0.3)
        assert sent == 0 and reply is None
        assert time.monotonic() - t0 < 0.6
        assert not link.ping(0.2)


def test_every_front_dying_after_the_send_ends_the_wait_at_its_deadline():
    fronts = spawn_fronts(2, delay_s=0.3)
    try:
        with MultiLink([e for _, e in fronts], heartbeat_ms=100) as link:
            _all_up(link)
            assert link.submit(frames_for(3), 3)
            for front in fronts:
                kill(front)
            t0 = time.monotonic()
            assert link.wait(3, 0.5) is None
            assert time.monotonic() - t0 < 0.5 + 0.3
            assert link.stats["timeouts"] == 1 and link.stats["fronts_up"] == 0
    finally:
        for proc, _ in fronts:
            proc.kill()
            proc.wait(5.0)


def test_a_second_front_dying_too_fails_over_to_a_third():
    fronts = spawn_fronts(2, delay_s=0.3)
    third = serve(delay_s=0.3)
    try:
        with MultiLink([e for _, e in fronts] + [third.endpoint]) as link:
            _all_up(link)
            assert link.submit(frames_for(9), 9)
            assert link._held[9][0] == 0                     # all up: round robin starts at the first front
            kill(fronts[0])
            box = {}
            waiter = threading.Thread(target=lambda: box.update(reply=link.wait(9, 3.0)))
            waiter.start()
            deadline = time.monotonic() + 2.0
            while link.stats["failovers"] < 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            kill(fronts[1])                                  # the front it failed over to (the next) dies too
            waiter.join(5.0)
            assert box["reply"] is not None and box["reply"].seq == 9
            assert link.stats["failovers"] == 2 and third.stats["answered"] == 1
    finally:
        third.stop()
        for proc, _ in fronts:
            proc.kill()
            proc.wait(5.0)


def test_a_front_that_comes_back_is_used_again(two_fronts):
    endpoint = two_fronts[0].endpoint
    with MultiLink([s.endpoint for s in two_fronts], heartbeat_ms=100) as link:
        _all_up(link)
        two_fronts[0].stop()
        time.sleep(0.3)
        for seq in range(1, 5):                              # the live front answers everything meanwhile
            assert link.submit(frames_for(seq), seq)
            assert link.wait(seq, 2.0) is not None
        back = serve(endpoint)
        two_fronts[0] = back
        _all_up(link)
        for seq in range(5, 15):
            assert link.submit(frames_for(seq), seq)
            assert link.wait(seq, 2.0) is not None
        assert back.stats["answered"] >= 3


def test_open_link_reads_the_parameter():
    assert open_link("") is None and open_link(" , ") is None
    one = open_link("tcp://127.0.0.1:1")
    many = open_link("tcp://127.0.0.1:1, tcp://127.0.0.1:2")
    try:
        assert isinstance(one, CloudLink)
        assert isinstance(many, MultiLink) and many.endpoint == "tcp://127.0.0.1:1,tcp://127.0.0.1:2"
    finally:
        one.close()
        many.close()
    with pytest.raises(ValueError, match="http://x"):
        open_link("tcp://127.0.0.1:1,http://x")


def test_the_robot_gets_cloud_answers_with_its_first_front_dead():
    from dvfo_ros.cloud.tail import make_tail_runner
    from dvfo_ros.core.inference.edge import EdgeInference
    from dvfo_ros.core.inference.spec import ModelSpec
    model = ModelSpec(model="resnet18", input_size=32, num_classes=10, artifact="none").load()
    runner, accept = make_tail_runner(model, "cpu")
    srv = CloudServer("tcp://127.0.0.1:*", runner, accept=accept)
    srv.start_in_thread()
    try:
        with MultiLink([free_endpoint(), srv.endpoint]) as link:
            assert link.wait_connected(5.0)
            engine = EdgeInference(model, link, deadline_ms=2000.0)
            rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
            for seq in range(1, 6):
                out = engine.process(rgb, seq, offload_ratio=1.0)
                assert out.cloud_used and not out.fallback, out.fallback_reason
        assert srv.stats["answered"] == 5
    finally:
        srv.stop()


def test_the_pipeline_starts_no_local_server_for_several_fronts():
    from dvfo_ros.cli.pipeline import ensure_cloud
    said = []
    child = ensure_cloud({"executor": {"cloud_endpoint": "tcp://127.0.0.1:1,tcp://127.0.0.1:2"}}, said.append)
    assert child is None and "several fronts" in said[0]
