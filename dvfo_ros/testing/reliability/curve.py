"""The CurveZMQ figure: a client without the right key gets nothing, and the bytes a capture on the
loopback link sees (a recording TCP relay between edge and cloud) are not plaintext with CURVE,
while the same traffic without CURVE shows its JSON header and payload.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

from dvfo_ros.testing.reliability.common import (REPO, CloudProcess, Relay, cloud_args, free_port, load_model,
                                model_settings)

if TYPE_CHECKING:
    from dvfo_ros.core.wire.link import CurveKeys

Log = Callable[[str], None]


def _real_request(model: Any, seq: int, offload: float = 0.5) -> List[bytes]:
    """What the executor sends for one frame: the head's least important channels, int8 on the wire."""
    import numpy as np
    import torch

    from dvfo_ros.core.wire.codec import encode_features
    from dvfo_ros.core.inference.edge import preprocess
    m = model
    rgb = np.random.default_rng(seq).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    with torch.inference_mode():
        feat = m.head(preprocess(rgb, int(m.meta["input_size"])))
        _, off_idx = m.split_channels(feat, offload)
        return encode_features(feat[0, off_idx].numpy(), off_idx.numpy(), model=m.meta["model"],
                               split=int(m.meta["split"]), seq=seq, deadline=time.time() + 30.0,
                               total_channels=int(m.channels), artifact_id=str(m.meta.get("artifact_id", "")))


def _session(endpoint: str, model: Any, n: int, seq0: int, keys: CurveKeys,
             wait_s: float) -> Tuple[int, bool, List[List[bytes]]]:
    """(results received, ping answered, the requests sent) for one client session."""
    from dvfo_ros.core.wire.link import CloudLink
    sent = []
    with CloudLink(endpoint, **keys) as link:
        alive = link.ping(wait_s)
        results = 0
        for seq in range(seq0, seq0 + n):
            frames = _real_request(model, seq)
            if link.submit(frames, seq):
                sent.append(frames)
            reply = link.wait(seq, wait_s if alive else 0.2)
            results += int(reply is not None and reply.kind == "result")
    return results, alive, sent


def _raw_plaintext_probe(endpoint: str, frames: List[bytes], wait_s: float = 2.0) -> int:
    """A plain DEALER (no CURVE at all) sends a valid request: how many replies come back."""
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK)
    except zmq.Again:
        pass
    got = int(bool(sock.poll(int(wait_s * 1000))))
    sock.close(0)
    ctx.term()
    return got


def curve_figure(requests: int = 20, log: Log = print) -> Dict[str, Any]:
    from dvfo_ros.cli import keygen
    from dvfo_ros.core.wire.link import load_keypair
    ms = model_settings()
    model = load_model(ms).eval()
    keys = tempfile.mkdtemp(prefix="dvfo-keys-")
    for sub, name in (("", "cloud"), ("robots", "robot1"), ("others", "intruder")):
        with contextlib.redirect_stdout(io.StringIO()):   # dvfo-keygen says where it wrote; not news here
            assert keygen.main([os.path.join(keys, sub), "--name", name]) == 0
    server_public, _ = load_keypair(os.path.join(keys, "cloud.key"))
    robot_public, robot_secret = load_keypair(os.path.join(keys, "robots", "robot1.key_secret"))
    intruder_public, intruder_secret = load_keypair(os.path.join(keys, "others", "intruder.key_secret"))
    out: Dict[str, Any] = {"model": ms["label"], "requests": requests}
    marker = b'"model"'
    port = free_port()
    secure = CloudProcess(f"tcp://127.0.0.1:{port}", cloud_args(ms) + [
        "--curve-secret", os.path.join(keys, "cloud.key_secret"), "--curve-clients", os.path.join(keys, "robots")])
    relay = Relay(port)
    try:
        robot: CurveKeys = {"curve_server_public": server_public, "curve_public": robot_public,
                            "curve_secret": robot_secret}
        got, alive, sent = _session(relay.endpoint, model, requests, 1, robot, 5.0)
        time.sleep(0.2)
        captured = bytes(relay.captured)
        out["allowed_client"] = {"results": got, "of": requests, "ping": alive}
        out["curve_capture"] = {"bytes": len(captured), "marker_found": marker in captured,
                                "model_name_found": b"resnet18" in captured,
                                "payload_prefix_found": any(f[1][:16] in captured for f in sent)}
        attackers: Dict[str, CurveKeys] = {
            "unknown_key": {"curve_server_public": server_public, "curve_public": intruder_public,
                            "curve_secret": intruder_secret},
            "wrong_server_key": {"curve_server_public": intruder_public},
            "no_curve": {}}
        out["refused_clients"] = {}
        for name, kw in attackers.items():
            got_x, alive_x, _ = _session(secure.endpoint, model, 3, 100, kw, 1.5)
            out["refused_clients"][name] = {"results": got_x, "ping": alive_x}
        out["refused_clients"]["raw_plaintext_dealer"] = {
            "results": _raw_plaintext_probe(secure.endpoint, _real_request(model, 200)), "ping": False}
        out["server_log_says_curve"] = any("curve" in line for line in secure.lines)
        out["secure_server_alive"] = secure.proc.poll() is None
    finally:
        relay.close()
        secure.kill()
    port = free_port()
    plain = CloudProcess(f"tcp://127.0.0.1:{port}", cloud_args(ms))
    relay = Relay(port)
    try:
        got, alive, sent = _session(relay.endpoint, model, requests, 1, {}, 5.0)
        time.sleep(0.2)
        captured = bytes(relay.captured)
        out["plain_client"] = {"results": got, "of": requests}
        out["plain_capture"] = {"bytes": len(captured), "marker_found": marker in captured,
                                "model_name_found": b"resnet18" in captured,
                                "payload_prefix_found": any(f[1][:16] in captured for f in sent)}
        out["plain_server_log_warns"] = any("no CurveZMQ keys" in line and "loopback only" in line
                                            for line in plain.lines)
    finally:
        relay.close()
        plain.kill()
    probe = subprocess.run([sys.executable, "-m", "dvfo_ros.cli.cloud", "--bind", f"tcp://0.0.0.0:{free_port()}"],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
    out["remote_bind_without_keys"] = {"exit_code": probe.returncode,
                                       "message": (probe.stderr.strip().splitlines() or [""])[-1]}
    log(f"curve: allowed {out['allowed_client']}, refused {out['refused_clients']}")
    return out
