"""Spatial-channel attention at the split: how much each feature-map channel matters for THIS frame.

DVFO offloads the least important share xi of the channels, so the ranking decides what the edge
keeps. The module is CBAM-like (Woo et al., 2018): a spatial map says where in the frame the
evidence is, then a shared MLP over avg- and max-pooled statistics of the spatially weighted map
gives a per-channel gate. The importance of channel c is gate_c x (spatially weighted energy of c).

Both learnt parts are zero-initialised, so an untrained module scores channels by their energy
(gate = 0.5 everywhere): a sensible prior, and why a planted high-energy channel ranks first.
Training (see `training.py`) moves the gates with a straight-through top-k mask, so channels whose
removal costs the edge tail accuracy learn high scores.
"""
from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn


class SpatialChannelAttention(nn.Module):
    """[B, C, h, w] feature map -> [B, C] non-negative channel importance."""

    def __init__(self, channels: int, reduction: int = 8, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.channels = channels
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)
        # Sequential[i] is typed as Module; mlp[2] is the second Conv2d
        for layer in (cast(nn.Conv2d, self.mlp[2]), self.spatial):  # untrained = pure energy ranking
            nn.init.zeros_(layer.weight)
            assert layer.bias is not None  # both convs are built with a bias
            nn.init.zeros_(layer.bias)

    def spatial_map(self, feat: Tensor) -> Tensor:
        """[B, 1, h, w] in (0, 1): where the frame's evidence lies."""
        stats = torch.cat([feat.mean(1, keepdim=True), feat.amax(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial(stats))

    def channel_gate(self, weighted: Tensor) -> Tensor:
        """[B, C] in (0, 1) from pooled statistics of the spatially weighted map."""
        avg = weighted.mean((2, 3), keepdim=True)
        mx = weighted.amax((2, 3), keepdim=True)
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx)).flatten(1)

    def forward(self, feat: Tensor) -> Tensor:
        if feat.dim() != 4 or feat.shape[1] != self.channels:
            raise ValueError(f"attention expects [B, {self.channels}, h, w], got {list(feat.shape)}")
        weighted = feat * self.spatial_map(feat)
        energy = weighted.abs().mean((2, 3))
        return self.channel_gate(weighted) * energy


def rank_channels(importance: Tensor, offload_ratio: float) -> tuple[Tensor, Tensor]:
    """(keep_idx, off_idx) for one frame's [C] importance: off = the round(xi*C) least important.

    Both index lists are sorted ascending so edge and cloud gather channels in a fixed order;
    ties break by channel index (stable sort) so the same frame always splits the same way.
    """
    if importance.dim() != 1:
        raise ValueError(f"rank_channels expects [C] importance, got {list(importance.shape)}")
    if not 0.0 <= float(offload_ratio) <= 1.0:
        raise ValueError(f"offload_ratio must be in [0, 1], got {offload_ratio}")
    c = importance.shape[0]
    n_off = int(round(float(offload_ratio) * c))
    order = torch.argsort(importance.detach().float(), stable=True)
    off_idx = torch.sort(order[:n_off]).values
    keep_idx = torch.sort(order[n_off:]).values
    return keep_idx.long(), off_idx.long()


def topk_mask(importance: Tensor, offload_ratio: float, temperature: float = 0.5) -> Tensor:
    """[B, C] keep-mask (1 = stays on the edge) with a straight-through gradient to the scores.

    Forward: exactly the hard split of `rank_channels` per frame. Backward: the gradient of a
    sigmoid around the per-frame threshold, so training can learn which channels to keep.
    """
    b, c = importance.shape
    n_off = int(round(float(offload_ratio) * c))
    if n_off == 0:
        return torch.ones_like(importance)
    if n_off == c:
        return torch.zeros_like(importance)
    order = torch.argsort(importance.detach(), dim=1, stable=True)
    hard = torch.ones_like(importance)
    hard.scatter_(1, order[:, :n_off], 0.0)
    logimp = torch.log(importance + 1e-6)
    lo = logimp.gather(1, order[:, n_off - 1:n_off])
    hi = logimp.gather(1, order[:, n_off:n_off + 1])
    thresh = 0.5 * (lo + hi).detach()
    spread = logimp.detach().std(1, keepdim=True) + 1e-3
    soft = torch.sigmoid((logimp - thresh) / (spread * temperature))
    return hard + (soft - soft.detach())  # exactly hard forward, soft backward
