"""The cloud server over real ZeroMQ on 127.0.0.1 with a real torch tail: correct results, every bad
frame answered with an error while serving goes on, deadlines, fairness, CurveZMQ."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import zmq
from torch import nn

from dvfo_ros.cloud.server import CloudServer
from dvfo_ros.core.wire import codec
from dvfo_ros.core.wire.link import CloudLink, load_keypair

C, H, W, K = 8, 6, 6, 5


def make_tail() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(C, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, K)).eval()


class TailRunner:
    """The tail run on the received channels (the others zero), the way a channel-sliced tail sees them."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.tail = make_tail()
        self.delay_s = delay_s
        self.calls: list = []

    def __call__(self, header, feat, idx):
        self.calls.append((header["model"], header["seq"]))
        time.sleep(self.delay_s)
        return local_tail(self.tail, feat, idx)


def local_tail(tail: nn.Module, feat: np.ndarray, idx: np.ndarray) -> np.ndarray:
    x = torch.zeros(1, C, *feat.shape[1:])
    x[0, torch.from_numpy(np.asarray(idx, np.int64))] = torch.from_numpy(np.asarray(feat, np.float32))
    with torch.no_grad():
        return tail(x)[0].numpy()


def request(seq: int, feat=None, idx=None, **kw):
    rng = np.random.default_rng(seq)
    feat = np.maximum(rng.normal(size=(4, H, W)), 0).astype(np.float32) if feat is None else feat
    idx = np.array([1, 2, 5, 7]) if idx is None else idx
    args = dict(model="tiny", split=3, seq=seq, deadline=time.time() + 5.0, total_channels=C, artifact_id="a1")
    args.update(kw)
    return feat, idx, codec.encode_features(feat, idx, **args)


@pytest.fixture
def server():
    runner = TailRunner()
    srv = CloudServer("tcp://127.0.0.1:*", runner,
                      accept={"model": "tiny", "split": 3, "artifact_id": "a1", "total_channels": C})
    srv.runner_obj = runner
    srv.start_in_thread()
    yield srv
    srv.stop()


@pytest.fixture
def raw_client(server):
    """A plain DEALER that can put any bytes on the wire (what a buggy or hostile edge sends)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)

    def call(frames, timeout_ms=3000):
        sock.send_multipart(frames)
        assert sock.poll(timeout_ms), "server did not answer"
        return codec.decode_reply(sock.recv_multipart())
    yield call
    sock.close(0)
    ctx.term()


def test_cloud_result_equals_the_same_tail_run_locally(server):
    tail = make_tail()
    with CloudLink(server.endpoint) as link:
        assert link.wait_connected(3.0)
        for seq in range(1, 6):
            feat, idx, frames = request(seq)
            assert link.submit(frames, seq) > 0
            reply = link.wait(seq, 5.0)
            assert reply is not None and reply.kind == "result" and reply.seq == seq
            _, deq, _ = codec.decode_features(frames)
            assert np.allclose(reply.logits, local_tail(tail, deq, idx), atol=1e-5)   # same computation
            assert np.allclose(reply.logits, local_tail(tail, feat, idx), atol=2e-2)  # within int8 error
            assert reply.cloud_ms > 0
    assert server.stats["answered"] == 5 and server.stats["errors"] == 0


BAD = {
    "garbage-header": lambda: [b"\x00garbage", b"x"],
    "one-frame": lambda: [b'{"v":1}'],
    "three-frames": lambda: request(1)[2] + [b"extra"],
    "wrong-version": lambda: [json.dumps({**json.loads(request(11)[2][0]), "v": 99}).encode(), request(11)[2][1]],
    "unknown-model": lambda: request(12, model="vgg16")[2],
    "wrong-split": lambda: request(13, split=4)[2],
    "wrong-artifact": lambda: request(14, artifact_id="other")[2],
    "wrong-channels": lambda: request(15, total_channels=16)[2],
    "short-payload": lambda: [request(16)[2][0], request(16)[2][1][:10]],
    "oversized": lambda: [request(17)[2][0], b"\x00" * ((16 << 20) + 1)],
    "corrupt-payload": lambda: [request(18)[2][0], bytes(len(request(18)[2][1]))],
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_frame_gets_an_error_reply_and_serving_goes_on(server, raw_client, name):
    reply = raw_client(BAD[name]())
    assert reply.kind == "error" and reply.logits is None and reply.error
    assert "\n" not in reply.error
    seq = json.loads(BAD[name]()[0]).get("seq", -1) if name not in ("garbage-header",) else -1
    assert reply.seq == seq  # the edge can match the refusal to its frame and fall back at once
    good = raw_client(request(20)[2])
    assert good.kind == "result" and good.seq == 20
    assert server.runner_obj.calls == [("tiny", 20)], "the tail ran on a refused frame"


def test_refusal_names_the_reason(server, raw_client):
    assert "wire version 99" in raw_client(BAD["wrong-version"]()).error
    assert "vgg16" in raw_client(BAD["unknown-model"]()).error
    assert "artifact_id" in raw_client(BAD["wrong-artifact"]()).error
    assert "exceeds limit" in raw_client(BAD["oversized"]()).error


def test_expired_request_is_refused_without_running_the_tail(server, raw_client):
    reply = raw_client(request(30, deadline=time.time() - 5.0)[2])
    assert reply.kind == "error" and "deadline passed" in reply.error
    assert server.runner_obj.calls == [] and server.stats["expired"] == 1


def test_a_failing_tail_is_an_error_reply_not_a_dead_server():
    def broken(header, feat, idx):
        if header["seq"] == 1:
            raise RuntimeError("CUDA out of memory")
        return local_tail(make_tail(), feat, idx)
    srv = CloudServer("tcp://127.0.0.1:*", broken)
    srv.start_in_thread()
    try:
        with CloudLink(srv.endpoint) as link:
            assert link.wait_connected(3.0)
            link.submit(request(1)[2], 1)
            bad = link.wait(1, 5.0)
            assert bad.kind == "error" and "CUDA out of memory" in bad.error
            link.submit(request(2)[2], 2)
            assert link.wait(2, 5.0).kind == "result"
            assert link.stats["errors"] == 1 and link.stats["answered"] == 1
    finally:
        srv.stop()


def test_ping_is_answered_without_running_the_tail(server):
    with CloudLink(server.endpoint) as link:
        assert link.ping(3.0)
    assert server.stats["pings"] == 1 and server.runner_obj.calls == []


def test_concurrent_clients_are_served_round_robin():
    runner = TailRunner(delay_s=0.002)
    srv = CloudServer("tcp://127.0.0.1:*", runner)
    links = [CloudLink(srv.endpoint, send_hwm=100) for _ in range(3)]
    try:
        assert all(link.wait_connected(3.0) for link in links)
        for n, link in enumerate(links):   # all queued before the server serves anything
            for seq in range(30):
                _, _, frames = request(seq, model=f"client{n}")
                assert link.submit(frames, seq) > 0
        time.sleep(0.2)
        srv.start_in_thread()
        for n, link in enumerate(links):
            for seq in range(30):
                assert link.wait(seq, 5.0).kind == "result"
    finally:
        srv.stop()
        for link in links:
            link.close()
    served = [model for model, _ in runner.calls]
    first = served[:30]
    for n in range(3):
        assert 8 <= first.count(f"client{n}") <= 12, first  # no client starves behind another's burst
    assert len(srv.stats["by_client"]) == 3 and sorted(srv.stats["by_client"].values()) == [30, 30, 30]


# ----------------------------------------------------------------------------- CurveZMQ

@pytest.fixture
def curve_server(tmp_path):
    import zmq.auth
    zmq.auth.create_certificates(tmp_path, "server")
    (tmp_path / "clients").mkdir()
    zmq.auth.create_certificates(tmp_path / "clients", "robot")
    zmq.auth.create_certificates(tmp_path, "intruder")
    public, secret = load_keypair(str(tmp_path / "server.key_secret"))
    srv = CloudServer("tcp://127.0.0.1:*", TailRunner(), curve_public=public, curve_secret=secret,
                      curve_clients_dir=str(tmp_path / "clients"))
    srv.start_in_thread()
    yield srv, tmp_path
    srv.stop()


def test_curve_client_with_an_allowed_key_is_served(curve_server):
    srv, keys = curve_server
    server_public, _ = load_keypair(str(keys / "server.key"))
    public, secret = load_keypair(str(keys / "clients" / "robot.key_secret"))
    with CloudLink(srv.endpoint, curve_server_public=server_public, curve_public=public, curve_secret=secret) as link:
        assert link.ping(5.0)
        link.submit(request(1)[2], 1)
        assert link.wait(1, 5.0).kind == "result"
    assert list(srv.stats["by_client"]) == [public.decode()]  # clients are named by their key


@pytest.mark.parametrize("who", ["unknown-key", "no-curve", "wrong-server-key"])
def test_curve_client_without_the_right_key_gets_nothing(curve_server, who):
    srv, keys = curve_server
    server_public, _ = load_keypair(str(keys / "server.key"))
    intruder_public, intruder_secret = load_keypair(str(keys / "intruder.key_secret"))
    kwargs = {"unknown-key": dict(curve_server_public=server_public, curve_public=intruder_public,
                                  curve_secret=intruder_secret),
              "no-curve": {},
              "wrong-server-key": dict(curve_server_public=intruder_public)}[who]
    with CloudLink(srv.endpoint, **kwargs) as link:
        assert not link.ping(1.0)
        assert link.submit(request(1)[2], 1) == 0   # never connected: dropped at once, not queued
        assert link.wait(1, 0.5) is None
    assert srv.stats["requests"] == 0


def test_curve_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="public key"):
        CloudServer("tcp://127.0.0.1:*", TailRunner(), curve_secret=zmq.curve_keypair()[1])
    with pytest.raises(ValueError, match="secret key"):
        CloudServer("tcp://127.0.0.1:*", TailRunner(), curve_clients_dir=str(tmp_path))
    with pytest.raises(OSError, match="cannot bind"):
        CloudServer("tcp://256.0.0.1:1", TailRunner())


def test_stop_returns_promptly_and_frees_the_port():
    srv = CloudServer("tcp://127.0.0.1:*", TailRunner())
    endpoint = srv.endpoint
    thread = srv.start_in_thread()
    t0 = time.monotonic()
    srv.stop()
    assert not thread.is_alive() and time.monotonic() - t0 < 1.0
    again = CloudServer(endpoint, TailRunner())   # same port binds again at once
    assert again.endpoint == endpoint
    again.stop()


# ----------------------------------------------------------------------------- dvfo-cloud, dvfo-keygen

@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> str:
    """One artifact file for both sides, as on a robot (independent of what setup trained)."""
    from dvfo_ros.core.inference.collab import CollaborativeModel
    path = str(tmp_path_factory.mktemp("artifact") / "resnet18_test.pt")
    CollaborativeModel.from_zoo("resnet18", None, 10, 64, seed=3).save_artifact(path)
    return path


def _start_cli(endpoint: str, *extra: str):
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "dvfo_ros.cli.cloud", "--bind", endpoint, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "dvfo-cloud ready on" not in line:
        proc.kill()
        raise AssertionError(f"no ready line: {line!r} {proc.stderr.read()}")
    return proc, line


def _free_endpoint() -> str:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind("tcp://127.0.0.1:*")
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close(0)
    return endpoint


def test_dvfo_cloud_serves_the_collab_cloud_tail_and_stops_on_ctrl_c(capsys, caplog, artifact):
    """In-process main(): the executor's model on the edge, dvfo-cloud's on the cloud, SIGINT to stop."""
    import logging
    import os
    import signal
    from dvfo_ros.cli import cloud
    caplog.set_level(logging.INFO, logger="dvfo_ros.cloud")
    from dvfo_ros.core.inference.collab import CollaborativeModel
    endpoint = _free_endpoint()
    edge = CollaborativeModel.from_artifact(artifact)  # what the executor loads
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feat = edge.head(x)
        _, off = edge.split_channels(feat, 0.5)
        local = edge.cloud_tail(feat[:, off], off)[0].numpy()
    meta = edge.meta

    def encode(seq, artifact_id):
        return codec.encode_features(feat[0, off].numpy(), off.numpy(), model="resnet18", split=meta["split"],
                                     seq=seq, deadline=time.time() + 5, total_channels=edge.channels,
                                     artifact_id=artifact_id)
    replies = {}

    def robot():
        try:
            with CloudLink(endpoint) as link:
                if not link.ping(30.0):
                    return
                for seq, artifact_id in ((1, meta["artifact_id"]), (2, "resnet18-s6-0123456789ab")):
                    link.submit(encode(seq, artifact_id), seq)
                    replies[seq] = link.wait(seq, 10.0)
        finally:
            os.kill(os.getpid(), signal.SIGINT)
    import threading
    helper = threading.Thread(target=robot)
    helper.start()
    code = cloud.main(["--bind", endpoint, "--artifact", artifact])
    helper.join(10.0)
    assert code == 0
    out = capsys.readouterr().out
    assert f"dvfo-cloud ready on {endpoint} (resnet18, split 6, cpu, batch<=8)" in out
    assert replies[1].kind == "result", replies[1].error
    assert np.allclose(replies[1].logits, local, atol=0.02 * max(1.0, np.abs(local).max()))  # int8 error only
    assert replies[2].kind == "error" and "artifact_id" in replies[2].error
    assert "stopped: requests 3 answered 1 errors 1" in caplog.text


def test_dvfo_cloud_process_prints_ready_and_exits_0_on_sigterm(artifact):
    import signal
    endpoint = _free_endpoint()
    proc, ready = _start_cli(endpoint, "--artifact", artifact, "--max-batch", "1")
    try:
        assert ready.strip() == f"dvfo-cloud ready on {endpoint} (resnet18, split 6, cpu)"
        with CloudLink(endpoint) as link:
            assert link.ping(10.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10.0)
    assert code == 0
    err = proc.stderr.read()
    assert "unencrypted" in err and "stopped: requests 1 answered 0 errors 0" in err


@pytest.mark.parametrize("argv,message", [
    (["--bind", "tcp://0.0.0.0:5555"], "without CurveZMQ"),
    (["--curve-clients", "/tmp"], "needs --curve-secret"),
    (["--threads", "0"], "must be positive"),
    (["--max-batch", "0"], "must be positive"),
    (["--device", "tpu"], "invalid choice"),
])
def test_dvfo_cloud_usage_errors_exit_2_with_one_line(capsys, argv, message):
    from dvfo_ros.cli import cloud
    with pytest.raises(SystemExit) as info:
        cloud.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


def test_dvfo_cloud_bad_artifact_is_one_line_exit_1(capsys, tmp_path):
    from dvfo_ros.cli import cloud
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a torch file")
    assert cloud.main(["--bind", "tcp://127.0.0.1:0", "--artifact", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dvfo-cloud: error:") and str(bad) in err and "\n" not in err
    assert cloud.main(["--bind", "tcp://127.0.0.1:0", "--artifact", str(tmp_path / "missing.pt")]) == 1
    assert "not found" in capsys.readouterr().err


def test_dvfo_cloud_refuses_an_artifact_of_another_model(capsys, artifact):
    from dvfo_ros.cli import cloud
    assert cloud.main(["--bind", "tcp://127.0.0.1:0", "--model", "mobilenet_v2", "--artifact", artifact]) == 1
    assert "holds resnet18, not mobilenet_v2" in capsys.readouterr().err
    assert cloud.main(["--bind", "tcp://127.0.0.1:0", "--artifact", artifact, "--split", "5"]) == 1
    assert "cut at split 6" in capsys.readouterr().err


def test_dvfo_keygen_writes_a_usable_private_key_pair(tmp_path, capsys):
    import os
    import stat
    from dvfo_ros.cli import keygen
    assert keygen.main([str(tmp_path / "keys"), "--name", "robot1"]) == 0
    public, secret = load_keypair(str(tmp_path / "keys" / "robot1.key_secret"))
    assert load_keypair(str(tmp_path / "keys" / "robot1.key")) == (public, None)
    assert len(public) == 40 and len(secret) == 40
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "robot1.key_secret").st_mode) == 0o600
    assert keygen.main([str(tmp_path / "keys"), "--name", "robot1"]) == 1      # never overwrites silently
    assert "already exists" in capsys.readouterr().err
    assert load_keypair(str(tmp_path / "keys" / "robot1.key_secret"))[1] == secret
    assert keygen.main([str(tmp_path / "keys"), "--name", "robot1", "--force"]) == 0
    assert load_keypair(str(tmp_path / "keys" / "robot1.key_secret"))[1] != secret
    with pytest.raises(SystemExit) as info:
        keygen.main([str(tmp_path), "--name", "../escape"])
    assert info.value.code == 2


def test_dvfo_cloud_artifact_none_is_the_untrained_zoo_model_the_executor_builds():
    from dvfo_ros.cli import cloud
    args = cloud.build_parser().parse_args(["--artifact", "none", "--num-classes", "10", "--input-size", "32"])
    model = cloud.load_collab_model(args)
    assert model.meta["artifact_id"] == "zoo:resnet18:6:10:0" and model.feature_shape == (128, 4, 4)
