"""Attention ranks channels; the split hands the least important share to the cloud."""
import pytest
import torch

from dvfo_ros.core.inference.attention import SpatialChannelAttention, rank_channels, topk_mask


def test_planted_high_energy_channel_ranks_first():
    torch.manual_seed(0)
    att = SpatialChannelAttention(64)
    feat = torch.rand(1, 64, 8, 8) * 0.1
    feat[0, 37] += 5.0
    imp = att(feat)[0]
    assert int(imp.argmax()) == 37
    keep, off = rank_channels(imp, 0.9)
    assert 37 in keep.tolist() and 37 not in off.tolist()


def test_split_offloads_round_xi_c_least_important_channels():
    imp = torch.arange(16, dtype=torch.float32).flip(0)  # channel 15 least important
    keep, off = rank_channels(imp, 0.25)
    assert off.tolist() == [12, 13, 14, 15]
    assert sorted(keep.tolist() + off.tolist()) == list(range(16))


@pytest.mark.parametrize("xi", [0.0, 1.0])
def test_extreme_ratios(xi):
    keep, off = rank_channels(torch.rand(10), xi)
    assert len(off) == round(xi * 10) and len(keep) == 10 - len(off)


def test_bad_ratio_is_refused():
    with pytest.raises(ValueError, match="offload_ratio"):
        rank_channels(torch.rand(4), 1.5)


def test_mask_is_hard_forward_and_passes_gradient_to_scores():
    scores = torch.rand(3, 16, requires_grad=True)
    mask = topk_mask(scores, 0.5)
    assert set(mask.detach().unique().tolist()) == {0.0, 1.0}
    assert mask.detach().sum(1).tolist() == [8.0, 8.0, 8.0]
    (mask * torch.arange(16.0)).sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
