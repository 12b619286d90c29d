"""The composed pipeline over real DDS, real ZeroMQ and a real cloud process: every camera frame
gets exactly one InferenceResult, with and without offloading, and while the cloud dies."""
import signal
import subprocess
import sys
import time

import pytest

from rosutil import free_port

pytestmark = pytest.mark.ros


def _params(endpoint: str, offload: float, fps: float = 20.0):
    return {
        "camera": {"source": "synthetic", "fps": fps, "width": 64, "height": 64},
        "governor": {"backend": "sim", "profile": "xavier_nx", "rate_hz": 20.0},
        "executor": {"model": "resnet18", "artifact": "none", "num_classes": 10, "input_size": 64,
                     "cloud_endpoint": endpoint, "deadline_ms": 300.0, "offload_ratio": offload},
        "policy": {"policy_mode": "static", "offload_ratio": offload},
    }


def test_every_frame_gets_one_result_edge_only():
    from dvfo_ros.cli.pipeline import run
    s = run(_params("", 0.0), frames=50, timeout_s=120, log=lambda *_: None)
    assert s["frames_in"] == 50
    assert s["results_out"] == 50
    assert s["fallbacks"] == 0 and s["cloud_used"] == 0
    assert s["energy_j_per_frame"] > 0 and s["latency_ms_p95"] > 0
    assert s["bytes_sent_per_frame"] == 0


def test_offload_uses_the_cloud_process():
    from dvfo_ros.cli.pipeline import run
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    s = run(_params(endpoint, 0.5), frames=50, timeout_s=180, log=lambda *_: None)
    assert s["results_out"] == s["frames_in"] == 50
    assert s["cloud_used"] >= 40, s
    assert s["bytes_sent_per_frame"] > 0
    assert s["offload_ratio_mean"] > 0.3


def test_neurosurgeon_cuts_whole_layers_live_and_every_frame_is_answered():
    from dvfo_ros.cli.pipeline import run
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    params = _params(endpoint, 0.0)
    params["executor"]["input_size"] = 32      # the demo's size: at the 8 Mbps prior a cut beats all local
    params["policy"] = {"policy_mode": "neurosurgeon", "model": "resnet18", "input_size": 32}
    s = run(params, frames=20, timeout_s=180, log=lambda *_: None)
    assert s["results_out"] == s["frames_in"] == 20 and s["errors"] == 0
    cuts = {int(k): n for k, n in s["splits"].items()}
    # at the 8 Mbps prior it cuts after layer3 and the cloud process finishes the network; what it measures
    # on this loopback then decides (this machine's cloud is slow, so it may go local): no frame is lost
    assert sum(cuts.values()) == 20 and set(cuts) <= set(range(12)) and 7 in cuts, s
    assert s["cloud_used"] >= 1 and s["fallbacks"] == 0 and s["bytes_sent_per_frame"] > 0, s


@pytest.mark.parametrize("mode,target,cloud", [("image_upload", "cloud", True), ("cpu_only", "cpu", False)])
def test_a_policy_s_target_is_where_the_frame_runs_live(mode, target, cloud):
    from dvfo_ros.cli.pipeline import run
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    params = _params(endpoint, 0.0)
    params["executor"]["input_size"] = 32
    params["policy"] = {"policy_mode": mode}
    s = run(params, frames=20, timeout_s=180, log=lambda *_: None)
    assert s["results_out"] == s["frames_in"] == 20 and s["errors"] == 0, s
    # every frame after the policy's first action (the first one or two may come before it) runs there
    assert set(s["targets"]) == {target} and s["targets"][target] >= 15, s
    if cloud:      # the image went up and the cloud process ran the whole network
        assert s["splits"]["0"] == s["targets"][target] and s["cloud_used"] >= 15 and s["bytes_sent_per_frame"] > 0, s
    else:
        assert s["cloud_used"] == 0 and s["bytes_sent_per_frame"] == 0, s


def test_cloud_killed_mid_run_loses_no_frame():
    from dvfo_ros.cli.pipeline import run
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cloud = subprocess.Popen([sys.executable, "-m", "dvfo_ros.cli.cloud", "--bind", endpoint, "--model", "resnet18",
                              "--num-classes", "10", "--input-size", "64", "--artifact", "none"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.monotonic()
        while "ready" not in (cloud.stdout.readline() or "") and time.monotonic() - t0 < 60:
            assert cloud.poll() is None, "cloud server died at start"
        answered = []

        def kill_after_ten_cloud_results(r):
            answered.append(r["cloud_used"])
            if sum(answered) == 10:
                cloud.send_signal(signal.SIGKILL)
        s = run(_params(endpoint, 0.5, fps=15.0), frames=90, timeout_s=180, log=lambda *_: None,
                on_result=kill_after_ten_cloud_results)
    finally:
        cloud.kill()
        cloud.wait()
    assert s["results_out"] == s["frames_in"] == 90
    assert s["cloud_used"] >= 10, "the cloud answered before it was killed"
    assert s["fallbacks"] > 0, "frames after the kill fell back to edge-only"
    assert s["cloud_used"] + s["fallbacks"] == 90


def _advertised_modes():
    from dvfo_ros.core.policies import live_policy_names
    return live_policy_names()


@pytest.mark.slow
@pytest.mark.parametrize("mode", _advertised_modes())
def test_every_advertised_mode_answers_every_frame_in_the_composed_pipeline(mode):
    """The issue's bar: `dvfo-pipeline --set policy.policy_mode=X` answers all 20 frames for every advertised X
    (learnt ones untrained here: what they choose is not the point, that the pipeline runs them is)."""
    from dvfo_ros.cli.pipeline import run
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    params = _params(endpoint, 0.25)
    params["executor"]["input_size"] = 32
    params["policy"] = {"policy_mode": mode, "offload_ratio": 0.25, "input_size": 32}
    s = run(params, frames=20, timeout_s=240, log=lambda *_: None)
    assert s["results_out"] == s["frames_in"] == 20 and s["errors"] == 0, s
    assert s["policy"] == mode
