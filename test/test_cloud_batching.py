"""BCEdge-style dynamic batching in the cloud server: concurrent requests run as one batch with the
same results as one by one, a failing batch sinks only the bad frame, deadlines close the window,
and a lone robot never waits for a batch."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from dvfo_ros.cloud.batching import BatchPolicy, check_batching, collab_batch_runner, verify_batching
from dvfo_ros.cloud.server import CloudServer
from dvfo_ros.core.wire import codec
from dvfo_ros.core.wire.link import CloudLink

C, H, W = 8, 6, 6


class ScatterTail:
    """A real nn.Sequential tail fed the received channels scattered into C zeros; batched or not."""

    def __init__(self, fail_seq: int = -1) -> None:
        torch.manual_seed(0)
        self.tail = nn.Sequential(nn.Conv2d(C, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(16, 4)).eval()
        self.batch_sizes: list = []
        self.fail_seq = fail_seq

    def one(self, header, feat, idx):
        return self.batch([(header, feat, idx)])[0]

    def batch(self, items):
        self.batch_sizes.append(len(items))
        if any(h["seq"] == self.fail_seq for h, _, _ in items):
            raise RuntimeError(f"frame {self.fail_seq} is poison")
        x = torch.zeros(len(items), C, H, W)
        for b, (_, feat, idx) in enumerate(items):
            x[b, torch.from_numpy(idx)] = torch.from_numpy(feat)
        with torch.no_grad():
            return list(self.tail(x).numpy())


def frames_for(seq: int, deadline_s: float = 5.0):
    rng = np.random.default_rng(seq)
    feat = np.maximum(rng.normal(size=(4, H, W)), 0).astype(np.float32)
    idx = rng.permutation(C)[:4]  # every frame offloads a different channel subset
    return feat, idx, codec.encode_features(feat, idx, model="tiny", split=2, seq=seq,
                                            deadline=time.time() + deadline_s, total_channels=C)


def _batched_server(tail: ScatterTail, **kw) -> CloudServer:
    return CloudServer("tcp://127.0.0.1:*", tail.one, batch_runner=tail.batch, max_batch=8, **kw)


def test_queued_requests_from_several_robots_run_as_batches_with_identical_results():
    tail = ScatterTail()
    srv = _batched_server(tail)
    links = [CloudLink(srv.endpoint, send_hwm=50) for _ in range(4)]
    try:
        assert all(link.wait_connected(3.0) for link in links)
        sent = {}
        for n, link in enumerate(links):
            for i in range(4):
                seq = 100 * n + i
                feat, idx, frames = frames_for(seq)
                sent[seq] = (feat, idx)
                assert link.submit(frames, seq) > 0
        time.sleep(0.2)                     # 16 requests wait in the queue: the server drains them
        srv.start_in_thread()
        reference = ScatterTail()
        for n, link in enumerate(links):
            for i in range(4):
                seq = 100 * n + i
                reply = link.wait(seq, 5.0)
                assert reply.kind == "result" and reply.seq == seq
                _, deq, deq_idx = codec.decode_features(frames_for(seq)[2])
                assert sorted(deq_idx) == sorted(sent[seq][1])
                assert np.allclose(reply.logits, reference.one({"seq": seq}, deq, deq_idx), atol=1e-5)
    finally:
        srv.stop()
        for link in links:
            link.close()
    assert srv.stats["max_batch_seen"] == 8 and srv.stats["batches"] == 2
    assert srv.stats["answered"] == 16


def test_a_poison_frame_in_a_batch_fails_alone():
    tail = ScatterTail(fail_seq=3)
    srv = _batched_server(tail)
    try:
        with CloudLink(srv.endpoint, send_hwm=50) as link:
            assert link.wait_connected(3.0)
            for seq in range(1, 6):
                link.submit(frames_for(seq)[2], seq)
            time.sleep(0.2)
            srv.start_in_thread()
            kinds = {seq: link.wait(seq, 5.0).kind for seq in range(1, 6)}
    finally:
        srv.stop()
    assert kinds == {1: "result", 2: "result", 3: "error", 4: "result", 5: "result"}
    assert tail.batch_sizes[0] == 5 and tail.batch_sizes[1:] == [1] * 5


def test_a_lone_robot_never_waits_for_a_batch_window():
    tail = ScatterTail()
    srv = _batched_server(tail, batch_window_ms=1000.0)
    srv.start_in_thread()
    try:
        with CloudLink(srv.endpoint) as link:
            assert link.wait_connected(3.0)
            for seq in range(5):
                t0 = time.monotonic()
                link.submit(frames_for(seq)[2], seq)
                assert link.wait(seq, 5.0).kind == "result"
                assert time.monotonic() - t0 < 0.5, "a single client waited for the batch window"
                time.sleep(0.05)
    finally:
        srv.stop()
    assert set(tail.batch_sizes) == {1}


def test_window_closes_before_the_earliest_deadline():
    policy = BatchPolicy(max_batch=8, window_s=0.5)
    policy.record(1, 0.02)
    now_wall, now_mono = 1000.0, 50.0
    close = policy.close_by(opened_at=now_mono, earliest_deadline_wall=now_wall + 0.1, now_wall=now_wall,
                            now_mono=now_mono, size=1)
    assert close == pytest.approx(now_mono + 0.1 - 0.04)      # deadline minus the run of a batch of 2
    assert policy.close_by(now_mono, now_wall + 10.0, now_wall, now_mono, 1) == pytest.approx(now_mono + 0.5)
    for i in range(10):
        policy.note_arrival(now_mono, "robot-a")
        now_mono += 0.001
    assert not policy.worth_waiting(now_mono)                   # one robot, however fast: never wait
    for i in range(10):
        policy.note_arrival(now_mono, ("robot-a", "robot-b")[i % 2])
        now_mono += 0.001
    assert policy.worth_waiting(now_mono)                       # two robots 1 ms apart: batch them
    for _ in range(5):
        now_mono += 1.0
        policy.note_arrival(now_mono, "robot-b")
    assert not policy.worth_waiting(now_mono)                   # one frame a second: do not wait


@pytest.mark.parametrize("model", ["resnet18", "mobilenet_v2"])
def test_collab_batched_cloud_tail_equals_per_frame_cloud_tail(model):
    from dvfo_ros.core.inference.collab import CollaborativeModel
    m = CollaborativeModel.from_zoo(model, None, 10, 64)
    for xi in (0.125, 0.5, 1.0):
        assert verify_batching(m, "cpu", batch=3, offload_ratio=xi) < 1e-4
    assert check_batching(m, "cpu") is None
    runner, key = collab_batch_runner(m, "cpu")
    c, h, w = m.feature_shape
    idx = np.arange(c // 2)
    feat = np.ones((c // 2, h, w), np.float32)
    with torch.no_grad():
        direct = m.cloud_tail(torch.from_numpy(feat)[None], torch.from_numpy(idx))[0].numpy()
    assert np.allclose(runner([({}, feat, idx)])[0], direct, atol=1e-5)


def test_window_gathers_two_robots_sending_at_the_same_time():
    import threading
    tail = ScatterTail()
    srv = _batched_server(tail, batch_window_ms=100.0)
    srv.start_in_thread()
    barrier = threading.Barrier(2)
    failures: list = []

    def robot(n: int) -> None:
        with CloudLink(srv.endpoint) as link:
            link.wait_connected(3.0)
            for i in range(12):
                barrier.wait(5.0)
                time.sleep(0.01 * n)        # robot 1 is 10 ms behind robot 0: no natural queueing
                seq = 100 * n + i
                link.submit(frames_for(seq)[2], seq)
                reply = link.wait(seq, 5.0)
                if reply is None or reply.kind != "result":
                    failures.append(seq)
    threads = [threading.Thread(target=robot, args=(n,)) for n in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30.0)
    finally:
        srv.stop()
    assert not failures
    assert tail.batch_sizes.count(2) >= 6, tail.batch_sizes   # once both are seen, pairs run together
