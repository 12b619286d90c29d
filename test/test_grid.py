"""dvfo-bench grid: the twin-only models, the back-to-back workload, and the grid end to end (tiny)."""
import json
import os

import numpy as np
import pytest
import torch

from dvfo_ros.cli.bench_grid import main as grid_main
from dvfo_ros.core.inference import models
from dvfo_ros.core.io.traces import NetworkTrace
from dvfo_ros.core.mdp import SimEnv
from dvfo_ros.core.twin import model_workload


def test_twin_only_models_cost_what_torchvision_says():
    r18, r50 = model_workload("resnet18"), model_workload("resnet50")
    assert r50.total_flops > 2 * r18.total_flops                      # torchvision: 4.09 vs 1.81 GFLOPS
    assert 16.6e9 < model_workload("vit_b_16").total_flops < 18.4e9   # torchvision: 17.56 GFLOPS (MACs)
    assert 0.20e9 < model_workload("mobilenet_v3_large").total_flops < 0.24e9   # torchvision: 0.22


def test_vit_offloads_tokens_and_its_stages_are_the_model():
    w = model_workload("vit_b_16")
    assert w.feature_shape == (197, 768, 1) and w.units == 197        # 14 x 14 patches + the class token
    env = SimEnv("orin_nx", "vit_b_16", "dvfo", seed=0)
    assert env.channels == 197
    full = env.action_space.from_command({"offload_ratio": 1.0})
    _, _, _, info = env.step(full)
    assert info["bytes_sent"] > 0.3 * 197 * 768                        # every token's 768 values, compressed
    net = models.build_twin_model("vit_b_16", num_classes=10, input_size=32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        staged = x
        for _, stage in models.backbone_stages("vit_b_16", net):
            staged = stage(staged)
        assert torch.allclose(staged, net(x), atol=1e-5)


def test_the_executor_refuses_a_twin_only_model():
    with pytest.raises(models.ModelError, match="twin-only"):
        models.build_model("resnet50")


def _two_bandwidths() -> NetworkTrace:
    # 1 Mbps for the first 5 ms, then 8 Mbps
    return NetworkTrace(np.array([0.0, 0.005]), np.array([1.0, 8.0]), np.array([20.0, 20.0]), name="step")


def test_back_to_back_frames_last_their_latency_and_move_the_trace_clock():
    with pytest.raises(ValueError, match="latency_slo_ms"):
        SimEnv("xavier_nx", "resnet18", _two_bandwidths(), arrival="back_to_back")
    b2b = SimEnv("xavier_nx", "resnet18", _two_bandwidths(), arrival="back_to_back", latency_slo_ms=100.0)
    cam = SimEnv("xavier_nx", "resnet18", _two_bandwidths())
    top = b2b.action_space.max_action(0.0)
    for env in (b2b, cam):
        env.reset(3)
        env.t_s = 0.0
    _, _, _, i_b = b2b.step(top)
    _, _, _, i_c = cam.step(top)
    assert i_b["interval_ms"] == pytest.approx(i_b["latency_ms"])
    assert b2b.t_s == pytest.approx(i_b["latency_ms"] / 1e3)         # the next frame starts when this one ends
    assert i_c["interval_ms"] == pytest.approx(1000 / 30) and cam.t_s == pytest.approx(1 / 30)
    assert i_b["energy_j"] < 0.6 * i_c["energy_j"]                     # no idle tail to the next camera frame
    _, _, _, nxt = b2b.step(top)
    assert nxt["bandwidth_mbps"] == 8.0                                # 7.5 ms later: past the 5 ms step


TINY = ["--profiles", "xavier_nx", "--models", "resnet18", "--bandwidths", "1,8", "--workloads", "back_to_back",
        "--etas", "0.8", "--steps", "150", "--eval-seeds", "2", "--eval-frames", "20", "--workers", "1",
        "--no-progress"]


def test_tiny_grid_writes_every_number_and_reruns_from_the_cache(tmp_path, capsys):
    out, png = tmp_path / "grid.json", tmp_path / "grid.png"
    args = TINY + ["--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--plot", str(png)]
    assert grid_main(args) == 0
    printed = capsys.readouterr().out
    assert "DVFO " in printed and "on average against edge_only" in printed and "Where DVFO does not help" in printed
    first = json.loads(out.read_text())
    assert {"config", "groups", "cells", "headline"} <= set(first)
    assert [c["bandwidth_mbps"] for c in first["cells"]] == [1.0, 8.0]
    cell = first["cells"][0]
    assert set(cell["policies"]) == {"dvfo", "edge_only", "cloud_only", "ondemand", "max_freq", "dvfs_only",
                                     "offload_only", "autoscale", "neurosurgeon", "oracle"}
    assert set(cell["dvfo_vs"]) == set(cell["policies"]) - {"dvfo", "oracle"}
    for key in ("dvfo_objective_vs_oracle", "dvfo_cost_vs_oracle", "oracle_energy_saving_vs_edge_only",
                "dvfo_energy_saving_vs_edge_only"):
        assert set(cell[key]) == {"mean", "ci95", "n"} and cell[key]["n"] == 2
    assert cell["dvfo_objective_vs_oracle"]["mean"] > -0.02             # the oracle is the bound
    assert cell["policies"]["cloud_only"]["offload_ratio_mean"]["mean"] == 1.0
    assert sorted(first["groups"][0]["trained"]) == ["autoscale", "dvfo", "dvfs_only", "offload_only"]
    for path in (png, tmp_path / "grid_oracle_gap.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert grid_main(args) == 0
    again = json.loads(out.read_text())
    assert again["groups"][0]["trained"] == [] and len(again["groups"][0]["loaded"]) == 4
    assert again["cells"] == first["cells"]                             # a rerun only evaluates, the same frames
    assert all(os.path.isfile(p) for p in again["groups"][0]["checkpoints"].values())


@pytest.mark.parametrize("flag, value, word", [("--models", "vgg99", "vgg99"), ("--profiles", "tx9", "tx9"),
                                               ("--workloads", "bursty", "bursty")])
def test_a_bad_name_is_one_line(flag, value, word, tmp_path, capsys):
    args = [a if a != TINY[TINY.index(flag) + 1] else value for a in TINY] + ["--cache-dir", str(tmp_path)]
    assert grid_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dvfo-bench grid: error:") and word in err and "\n" not in err
    assert not os.listdir(tmp_path)                                    # nothing trained


def test_replay_ratio_reaches_every_learnt_policy_and_a_bad_one_is_one_line(tmp_path, capsys):
    from dvfo_ros.cli.bench_grid import build_parser, config_from_args
    cfg = config_from_args(build_parser().parse_args(["--replay-ratio", "4"]))
    assert cfg.agent.replay_ratio == 4.0                                # dvfo-train's budget, for a check cell
    assert config_from_args(build_parser().parse_args([])).agent.replay_ratio == 0.5
    assert grid_main(TINY + ["--cache-dir", str(tmp_path), "--replay-ratio", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "replay-ratio" in err and "\n" not in err
    assert not os.listdir(tmp_path)


def test_a_slow_groups_training_trace_holds_each_bandwidth_for_many_frames():
    """The state's bandwidth is what the last frame met: the training trace must hold a bandwidth for
    many frames, or a Nano running the ViT back to back learns from a bandwidth feature that says
    nothing about the link its next frame meets. Bandwidths are drawn log-uniformly, like the grid's."""
    from dvfo_ros.core.policies import grid
    cfg = grid.GridConfig()
    fast = grid.group_train_setup(cfg, ("orin_nx", "resnet18", "camera", 0.5))
    slow = grid.group_train_setup(cfg, ("nano", "vit_b_16", "back_to_back", 0.5))
    assert grid.train_hold_s(cfg, fast) == 1.0
    assert grid.train_hold_s(cfg, slow) > 4.0                      # 25 frames of ~180 ms
    bw = slow.trace.bandwidth_mbps
    assert 0.5 <= bw.min() and bw.max() <= 8.0 and 1.5 < np.median(bw) < 2.7       # log-uniform: median ~2
    env = slow.make_env(5)
    state = env.reset(5)
    same = []
    for _ in range(200):
        state, _, _, info = env.step(env.action_space.max_action(0.0))
        same.append(info["bandwidth_mbps"])
    seen = [round(float(b), 6) for b in same]
    meets = [round(float(b), 6) for b in same[1:]]
    assert np.mean([a == b for a, b in zip(seen, meets)]) > 0.9    # what the state says is what the next frame meets


@pytest.mark.parametrize("workload", ["camera", "back_to_back"])
def test_a_slow_groups_training_trace_changes_bandwidth_every_few_dozen_frames(workload):
    """A camera frame moves the env's clock by one period, however long it takes: a hold counted at the
    edge's pace kept each bandwidth for 131 of the Nano's ViT frames, so 3000 training frames met 23
    bandwidths and the policy forgot the ones it met first."""
    from dvfo_ros.core.policies import grid
    setup = grid.group_train_setup(grid.GridConfig(), ("nano", "vit_b_16", workload, 0.5))
    env = setup.make_env(3)
    env.reset(3)
    bws = []
    for _ in range(600):                                   # two 300-frame episodes
        _, _, done, info = env.step(env.action_space.max_action(0.0))
        bws.append(round(float(info["bandwidth_mbps"]), 6))
        if done:
            env.reset()
    changes = sum(a != b for a, b in zip(bws, bws[1:]))
    assert 600 / 45 < changes + 1 < 600 / 15                 # ~25 frames per bandwidth, on both workloads
