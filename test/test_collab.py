"""CollaborativeModel: exact edge-only pass, edge cost falling with xi, fusion, artifacts."""
import os

import pytest
import torch

from dvfo_ros.core.inference import models
from dvfo_ros.core.inference.collab import (ARTIFACT_VERSION, ArtifactError, CollaborativeModel,
                                  check_compatible, default_artifact)

SIZE = 64


@pytest.fixture(scope="module")
def r18():
    return CollaborativeModel.from_zoo("resnet18", num_classes=10, input_size=SIZE)


@pytest.mark.parametrize("name", models.ZOO)
def test_edge_only_equals_uncut_torchvision_model(name):
    m = CollaborativeModel.from_zoo(name, num_classes=10, input_size=SIZE, seed=3)
    ref = models.build_model(name, num_classes=10, seed=3)
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        got = m.edge_tail(m.head(x), torch.arange(m.channels))
        want = ref((x - m.pixel_mean) / m.pixel_std)
        fwd = m(x, offload_ratio=0.0)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(fwd, want, atol=1e-5)


@pytest.mark.parametrize("name", models.ZOO)
def test_edge_tail_flops_fall_strictly_with_xi(name):
    m = CollaborativeModel.from_zoo(name, num_classes=10, input_size=SIZE)
    flops = [m.edge_tail_flops(xi) for xi in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in zip(flops, flops[1:])), flops
    assert flops[-1] == 0
    assert flops[2] < 0.5 * flops[0]  # half the channels offloaded takes more than half the work off


def test_split_then_gathered_tails_equal_the_batched_pass(r18):
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        feat = r18.head(x)
        keep, off = r18.split_channels(feat, 0.5)
        assert len(off) == round(0.5 * r18.channels)
        y_e = r18.edge_tail(feat[:, keep], keep)
        y_c = r18.cloud_tail(feat[:, off], off)
        b_e, b_c = r18.tails_masked(feat, 0.5)
    assert torch.allclose(y_e, b_e, atol=1e-4) and torch.allclose(y_c, b_c, atol=1e-4)
    lam = r18.fusion_weight(0.5)
    assert torch.allclose(r18.fuse(y_e, y_c, lam), r18(x, 0.5), atol=1e-4)


def test_fuse_at_lambda_one_is_edge_only_and_missing_side_falls_back():
    y_e, y_c = torch.randn(2, 10), torch.randn(2, 10)
    assert torch.equal(CollaborativeModel.fuse(y_e, y_c, 1.0), y_e)
    assert torch.equal(CollaborativeModel.fuse(y_e, y_c, 0.0), y_c)
    assert torch.equal(CollaborativeModel.fuse(None, y_c, 0.7), y_c)
    assert torch.equal(CollaborativeModel.fuse(y_e, None, 0.3), y_e)


def test_fusion_weight_interpolates_the_stored_table(r18):
    r18.meta["lambda_table"] = [[0.0, 1.0], [0.5, 0.6], [1.0, 0.0]]
    assert r18.fusion_weight(0.25) == pytest.approx(0.8)
    assert r18.fusion_weight(0.5) == pytest.approx(0.6)
    assert r18.fusion_weight(1.0) == 0.0


def test_all_channels_offloaded_leaves_nothing_on_the_edge(r18):
    feat = r18.head(torch.rand(1, 3, SIZE, SIZE))
    keep, off = r18.split_channels(feat, 1.0)
    assert len(keep) == 0 and r18.edge_tail(feat[:, keep], keep) is None
    assert r18.cloud_tail(feat[:, off], off).shape == (1, 10)


def test_tails_refuse_inconsistent_channels(r18):
    feat = torch.rand(1, 5, 8, 8)
    with pytest.raises(ValueError, match="does not hold"):
        r18.cloud_tail(feat, torch.arange(4))
    with pytest.raises(ValueError, match="out of"):
        r18.cloud_tail(feat, torch.tensor([0, 1, 2, 3, 999]))


def test_artifact_round_trip_and_mismatch_refused(tmp_path, r18):
    path = str(tmp_path / "a.pt")
    r18.save_artifact(path, dataset="scenes", lambda_table=[[0.0, 1.0], [1.0, 0.0]])
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    m2 = CollaborativeModel.from_artifact(path)
    assert m2.meta["artifact_id"] == r18.meta["artifact_id"] and m2.meta["dataset"] == "scenes"
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(m2(x, 0.25), r18.half().float()(x, 0.25), atol=1e-3)
    check_compatible(m2.meta, "resnet18", r18.meta["split"], ARTIFACT_VERSION, r18.meta["artifact_id"])
    with pytest.raises(ArtifactError, match="split mismatch"):
        check_compatible(m2.meta, "resnet18", 7, ARTIFACT_VERSION)
    with pytest.raises(ArtifactError, match="model mismatch"):
        check_compatible(m2.meta, "mobilenet_v2", r18.meta["split"], ARTIFACT_VERSION)
    with pytest.raises(ArtifactError, match="artifact mismatch"):
        check_compatible(m2.meta, "resnet18", r18.meta["split"], ARTIFACT_VERSION, "other-id")


def test_corrupt_or_foreign_artifact_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(ArtifactError, match="cannot read") as info:
        CollaborativeModel.from_artifact(str(bad))
    assert "\n" not in str(info.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ArtifactError, match="not a dvfo_ros model artifact"):
        CollaborativeModel.from_artifact(str(foreign))
    with pytest.raises(ArtifactError, match="not found"):
        CollaborativeModel.from_artifact(str(tmp_path / "absent.pt"))


def test_default_artifact_found_through_env(tmp_path, monkeypatch, r18):
    monkeypatch.setenv("DVFO_ARTIFACT_DIR", str(tmp_path))
    assert default_artifact("resnet18", "nothing_trained_here") is None
    r18.save_artifact(str(tmp_path / "resnet18_scenes.pt"))
    assert default_artifact("resnet18", "scenes") == str(tmp_path / "resnet18_scenes.pt")
