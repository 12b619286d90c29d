"""The zoo cut and the slimmable tails: exact at full width, cheaper at every smaller width."""
import pytest
import torch

from dvfo_ros.core.inference import models


@pytest.mark.parametrize("name", models.ZOO)
def test_default_split_takes_a_channel_subset(name):
    # A split whose next block adds its input back could not run on part of the channels.
    assert models.DEFAULT_SPLIT[name] in models.collab_splits(name)


def test_identity_block_splits_are_refused_for_collaboration():
    assert 4 not in models.collab_splits("resnet18")  # layer1 adds its input back
    assert 8 not in models.collab_splits("mobilenet_v2")  # features.8 is a residual block


def test_unknown_model_is_a_clear_error():
    with pytest.raises(models.ModelError, match="unknown model"):
        models.build_model("vgg_nonexistent")


def test_missing_local_pretrained_weights_is_an_error_not_a_download(tmp_path):
    with pytest.raises(models.ModelError, match="no local pretrained weights"):
        models.build_model("resnet18", pretrained=str(tmp_path / "absent.pth"))


def test_local_pretrained_checkpoint_is_loaded(tmp_path):
    donor = models.build_model("resnet18", num_classes=1000, seed=7)
    path = tmp_path / "r18.pth"
    torch.save(donor.state_dict(), path)
    got = models.build_model("resnet18", num_classes=10, seed=0, pretrained=str(path))
    assert torch.equal(got.layer3[0].conv1.weight, donor.layer3[0].conv1.weight)
    assert got.fc.out_features == 10  # classifier of another size keeps its own weights


def test_slim_tail_is_exact_at_full_width_and_shrinks_below():
    net = models.build_model("resnet18", num_classes=10)
    head, tail = models.split_model("resnet18", net, 6)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feat = head(x)
        ref = tail(feat)
        state = models.make_slimmable(tail, tuple(feat.shape[1:]), 8, True)
        assert torch.allclose(tail(feat), ref, atol=1e-5)
        full = models.count_macs(tail, feat)
        state.level = 4  # width 1/2
        half = models.count_macs(tail, feat[:, :64])
    assert half < 0.35 * full  # conv cost scales ~ width^2
