"""Whole-layer partitions (Neurosurgeon's decision, DvfoAction.split_index) in the twin and over real
ZeroMQ: every cut answers as the all-local network, a refused or dead server still gets the frame
answered, and the twin prices each cut from the same stages."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from dvfo_ros.cloud.tail import make_tail_runner
from dvfo_ros.cloud.server import CloudServer
from dvfo_ros.core.inference.collab import CollaborativeModel
from dvfo_ros.core.inference.edge import EdgeInference
from dvfo_ros.core.mdp import ActionExtras, SimEnv
from dvfo_ros.core.twin import partition_points, partition_workload
from dvfo_ros.core.wire import codec
from dvfo_ros.core.wire.link import CloudLink


@pytest.fixture(scope="module")
def served():
    model = CollaborativeModel.from_zoo("resnet18", None, 10, 32)
    runner, accept = make_tail_runner(model, "cpu")
    server = CloudServer("tcp://127.0.0.1:*", runner, accept=accept)
    server.start_in_thread()
    link = CloudLink(server.endpoint)
    yield model, server, link
    link.close()
    server.stop()


def _frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)


def test_every_cut_answers_as_the_all_local_network(served):
    model, server, link = served
    edge = EdgeInference(model, link, deadline_ms=5000.0)
    rgb = _frame()
    with torch.inference_mode():
        local = torch.softmax(model.run_stages(edge._input(rgb), 0, model.num_stages)[0], 0)
    n = model.num_stages
    assert n == len(partition_points("resnet18")) - 1
    for k in range(n + 1):
        out = edge.process_partition(rgb, seq=k, split=k)
        assert out.split_index == k and not out.fallback, (k, out.fallback_reason)
        assert out.cloud_used == (k < n) and (out.bytes_sent > 0) == (k < n)
        assert out.top_classes[0] == int(local.argmax())
        assert abs(out.top_scores[0] - float(local.max())) < 0.02      # the int8 map's only loss
    assert server.stats["answered"] >= n


def test_a_map_that_is_not_the_cuts_is_refused_and_serving_goes_on(served):
    model, server, link = served
    errors = server.stats["errors"]
    wrong = np.ones((128, 4, 4), np.float32)                # layer2's map sent as the cut after layer1
    frames = codec.encode_features(wrong, np.arange(128), model="resnet18", split=5, seq=100,
                                   deadline=time.time() + 5, total_channels=128,
                                   artifact_id=str(model.meta["artifact_id"]), kind="partition")
    assert link.submit(frames, 100)
    reply = link.wait(100, 5.0)
    assert reply is not None and reply.logits is None and "partition 5 takes the whole 64x8x8 map" in reply.error
    assert server.stats["errors"] == errors + 1
    out = EdgeInference(model, link, deadline_ms=5000.0).process_partition(_frame(1), seq=101, split=5)
    assert out.cloud_used and not out.fallback


def test_a_dead_server_means_the_rest_runs_here():
    model = CollaborativeModel.from_zoo("resnet18", None, 10, 32)
    link = CloudLink("tcp://127.0.0.1:1")          # nothing listens there
    try:
        out = EdgeInference(model, link, deadline_ms=150.0).process_partition(_frame(2), seq=1, split=5)
    finally:
        link.close()
    assert out.fallback and not out.cloud_used and out.top_classes and out.split_index == 5


def test_a_cut_s_workload_is_the_one_counted_for_that_split():
    from dvfo_ros.core.twin import model_workload
    for k in range(1, len(model_workload("resnet18").layers)):
        a, b = model_workload("resnet18", k), partition_workload("resnet18", k)
        assert (a.head_flops, a.tail_flops, a.tail_bytes, a.feature_shape) == \
            (b.head_flops, b.tail_flops, b.tail_bytes, b.feature_shape), k


def test_the_twin_prices_a_cut_from_the_same_stages():
    env = SimEnv("nano", "resnet18", "dvfo", seed=0)
    n = len(env.workload.layers)
    full = env.action_space.max_action(1.0)
    local = partition_workload("resnet18", n)
    raw = partition_workload("resnet18", 0)
    assert local.head_flops == raw.tail_flops == env.workload.total_flops and raw.feature_shape == (3, 224, 224)
    env.reset(0)
    _, _, _, at_local = env.step(full, extras=ActionExtras(split_index=n))
    assert at_local["bytes_sent"] == 0 and at_local["split_index"] == n and at_local["command"]["offload_ratio"] == 0
    _, _, _, at_raw = env.step(full, extras=ActionExtras(split_index=0))
    assert at_raw["bytes_sent"] > 0 and at_raw["edge_ms"] < at_local["edge_ms"] and at_raw["accuracy_loss"] == 0
    with pytest.raises(ValueError, match="split_index"):
        env.step(full, extras=ActionExtras(split_index=n + 1))
