"""The composed pipeline over real DDS, real ZeroMQ and a real cloud process: every camera frame
gets exactly one InferenceResult, with and without offloading, and while the cloud dies."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from rosutil import free_port

pytestmark = pytest.mark.ros


def _params(endpoint: str, offload: float, fps: float = 20.0):
    return {
        "camera": {"source": "synthetic", "fps": fps, "width": 64, "height": 64},
        "governor": {"backend": "sim", "profile": "xavier_nx", "rate_hz": 20.0},
        "executor": {"model": "resnet18", "artifact": "", "num_classes": 10, "input_size": 64,
                     "cloud_endpoint": endpoint, "deadline_ms": 300.0, "offload_ratio": offload},
        "policy": {"policy_mode": "static", "offload_ratio": offload},
    }


def _no_default_artifact(monkeypatch):
    from dvfo_ros.core import collab
    monkeypatch.setattr(collab, "default_artifact", lambda *a, **k: None)


def test_every_frame_gets_one_result_edge_only(monkeypatch):
    from dvfo_ros.cli.pipeline import run
    _no_default_artifact(monkeypatch)
    s = run(_params("", 0.0), frames=50, timeout_s=120, log=lambda *_: None)
    assert s["frames_in"] == 50
    assert s["results_out"] == 50
    assert s["fallbacks"] == 0 and s["cloud_used"] == 0
    assert s["energy_j_per_frame"] > 0 and s["latency_ms_p95"] > 0
    assert s["bytes_sent_per_frame"] == 0


def test_offload_uses_the_cloud_process(monkeypatch):
    from dvfo_ros.cli.pipeline import run
    _no_default_artifact(monkeypatch)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    s = run(_params(endpoint, 0.5), frames=50, timeout_s=180, log=lambda *_: None)
    assert s["results_out"] == s["frames_in"] == 50
    assert s["cloud_used"] >= 40, s
    assert s["bytes_sent_per_frame"] > 0
    assert s["offload_ratio_mean"] > 0.3


def test_cloud_killed_mid_run_loses_no_frame(monkeypatch):
    from dvfo_ros.cli.pipeline import run
    _no_default_artifact(monkeypatch)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cloud = subprocess.Popen([sys.executable, "-m", "dvfo_ros.cli.cloud", "--bind", endpoint, "--model", "resnet18",
                              "--num-classes", "10", "--input-size", "64"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.monotonic()
        while "ready" not in (cloud.stdout.readline() or "") and time.monotonic() - t0 < 60:
            assert cloud.poll() is None, "cloud server died at start"
        killer = threading.Timer(4.0, lambda: cloud.send_signal(signal.SIGKILL))
        killer.start()
        s = run(_params(endpoint, 0.5, fps=15.0), frames=90, timeout_s=180, log=lambda *_: None)
        killer.cancel()
    finally:
        cloud.kill()
        cloud.wait()
    assert s["results_out"] == s["frames_in"] == 90
    assert s["cloud_used"] > 0, "the cloud answered before it was killed"
    assert s["fallbacks"] > 0, "frames after the kill fell back to edge-only"
    assert s["cloud_used"] + s["fallbacks"] == 90
