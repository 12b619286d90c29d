"""dvfo-cloud --backend ray: a real dvfo-cloud process with a private Ray Serve (2 replicas of a real resnet18
tail) behind its ZeroMQ front, driven by real CloudLinks and robot clients on 127.0.0.1.

What a team moving to a fleet would notice: the replicas answer exactly what the in-process tail answers
(DVFO's channel split and a whole-layer partition), the front still refuses another model, nothing listens
beyond loopback, and a replica killed mid-stream leaves no robot waiting past its deadline while Serve
starts a new one. One server for the module (~20 s to start on 2 cores)."""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import time

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the fleet extra (pip install .[fleet]; requirements/dev.txt has it)")

import psutil  # noqa: E402
import torch  # noqa: E402

from dvfo_ros.cloud.loadtest import run_load, start_cloud, stop_cloud, template_frames  # noqa: E402
from dvfo_ros.cloud.ray_backend import replica_pids  # noqa: E402
from dvfo_ros.cloud.tail import make_tail_runner  # noqa: E402
from dvfo_ros.core.inference.spec import ModelSpec  # noqa: E402
from dvfo_ros.core.wire.codec import decode_header, decode_payload, encode_features  # noqa: E402
from dvfo_ros.core.wire.link import CloudLink  # noqa: E402

SIZE = 64
REPLICAS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model():
    return ModelSpec(model="resnet18", input_size=SIZE, artifact="none").load().eval()


@pytest.fixture(scope="module")
def ray_cloud():
    port = _free_port()
    app = f"dvfo-test-{port}"
    proc = start_cloud(["--bind", f"tcp://127.0.0.1:{port}", "--model", "resnet18", "--artifact", "none",
                        "--input-size", str(SIZE), "--device", "cpu", "--deadline-slack-s", "0",
                        "--log-level", "ERROR", "--backend", "ray", "--ray-replicas", str(REPLICAS),
                        "--ray-app", app], timeout_s=240.0)
    try:
        yield {"endpoint": f"tcp://127.0.0.1:{port}", "app": app, "proc": proc}
    finally:
        stop_cloud(proc, timeout_s=60.0)


def _ask(endpoint: str, frames, seq: int, timeout_s: float = 20.0):
    with CloudLink(endpoint) as link:
        assert link.wait_connected(10.0)
        assert link.submit(frames, seq)
        reply = link.wait(seq, timeout_s)
    assert reply is not None, "the Ray-backed front did not answer"
    return reply


def _tail_as_served(runner, frames):
    """The in-process tail on the map as it arrives (8-bit per channel on the wire, dequantised)."""
    header = decode_header(frames)
    return runner(header, *decode_payload(header, frames[1]))


def test_replicas_answer_what_the_inprocess_tail_answers(ray_cloud, model):
    runner, accept = make_tail_runner(model, "cpu")
    rng = np.random.default_rng(3)
    c, h, w = model.feature_shape
    for seq in (1, 2, 3):                       # DVFO's channel split: a random half of the channels
        idx = np.sort(rng.permutation(c)[: c // 2])
        feat = np.maximum(rng.standard_normal((len(idx), h, w)), 0).astype(np.float32)
        frames = encode_features(feat, idx, model="resnet18", split=accept["split"], seq=seq,
                                 deadline=time.time() + 10.0, total_channels=c, artifact_id=accept["artifact_id"])
        reply = _ask(ray_cloud["endpoint"], frames, seq)
        assert reply.kind == "result", reply.error
        want = _tail_as_served(runner, frames)
        np.testing.assert_allclose(reply.logits, want, rtol=1e-4, atol=1e-4)
    k = 1                                        # a whole-layer partition after stage 1 (Neurosurgeon's cut)
    with torch.inference_mode():
        x = model.run_stages(torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)), 0, k)
    wire = x[0].numpy()
    frames = encode_features(wire, np.arange(wire.shape[0]), model="resnet18", split=k, seq=9,
                             deadline=time.time() + 10.0, total_channels=wire.shape[0],
                             artifact_id=accept["artifact_id"], kind="partition")
    reply = _ask(ray_cloud["endpoint"], frames, 9)
    assert reply.kind == "result", reply.error
    np.testing.assert_allclose(reply.logits, _tail_as_served(runner, frames), rtol=1e-4, atol=1e-4)


def test_the_front_still_refuses_another_model(ray_cloud, model):
    c, h, w = model.feature_shape
    feat = np.ones((2, h, w), np.float32)
    frames = encode_features(feat, np.array([0, 1]), model="mobilenet_v2", split=2, seq=5,
                             deadline=time.time() + 10.0, total_channels=c)
    reply = _ask(ray_cloud["endpoint"], frames, 5)
    assert reply.kind == "error" and "model" in reply.error


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)         # ::ffff:127.0.0.1, a dual-stack socket's view
    return bool((mapped or addr).is_loopback)


def test_ray_and_the_front_listen_on_loopback_only(ray_cloud):
    procs = [psutil.Process(ray_cloud["proc"].pid)]
    procs += procs[0].children(recursive=True)
    pids = {p.pid for p in procs}
    assert any("raylet" in " ".join(p.cmdline()) for p in procs if p.is_running()), "no raylet under dvfo-cloud"
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "found no listening sockets of the server's process tree"
    beyond = [(c.pid, c.laddr) for c in listening if not _loopback(c.laddr.ip)]
    assert not beyond, f"listening beyond loopback: {beyond}"


def test_a_killed_replica_leaves_no_robot_waiting_past_its_deadline(ray_cloud, model):
    app = ray_cloud["app"]
    before = replica_pids(app)
    assert len(before) == REPLICAS
    killed = {}

    def kill() -> None:
        killed["pid"] = before[0]
        os.kill(before[0], signal.SIGKILL)

    frames = template_frames(model.meta, model.feature_shape, seed=0)
    row = run_load(ray_cloud["endpoint"], frames, robots=2, seconds=4.0, fps=10.0, budget_ms=(150.0, 300.0),
                   event=(1.5, kill))
    assert killed, "the kill never ran"
    assert row["sent"] >= 60
    assert row["unanswered"] == 0, row          # a result or a refusal each, by its deadline + 100 ms
    assert row["answered"] > row["sent"] // 2, row   # the other replica kept serving
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        now = replica_pids(app)
        if len(now) == REPLICAS and killed["pid"] not in now:
            break
        time.sleep(0.5)
    assert len(now) == REPLICAS and killed["pid"] not in now, f"Serve did not restart the replica: {now}"


def test_bad_ray_options_are_one_line_errors(capsys):
    from dvfo_ros.cli.cloud import main
    rc = main(["--bind", "tcp://127.0.0.1:1", "--model", "resnet18", "--artifact", "none", "--input-size", "32",
               "--backend", "ray", "--ray-autoscale", "3,1"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "--ray-autoscale" in err and len(err.splitlines()) == 1
    rc = main(["--bind", "tcp://127.0.0.1:1", "--model", "resnet18", "--artifact", "none", "--input-size", "32",
               "--backend", "ray", "--ray-batching", "serve", "--scheduler", "fixed:2"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "@serve.batch" not in err and "--scheduler" in err and len(err.splitlines()) == 1
