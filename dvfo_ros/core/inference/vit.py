"""vit_b_16 as stages (``models.backbone_stages``): torchvision's VisionTransformer cut where a split can go.

embed (patchify by ``conv_proj``, the class token prepended, the position embedding added), the 12
encoder blocks, the encoder's final LayerNorm with the class token taken, the head. Between blocks the
map is (tokens, dim): 197 x 768 at 224 px, so a split offloads tokens where a CNN's offloads channels.
Running the stages one after another is the model's forward pass (test/test_grid.py checks it).
"""
from __future__ import annotations

from typing import List, Tuple, cast

import torch
from torch import nn


class _VitEmbed(nn.Module):
    """vit stage 0: patchify (conv_proj), tokens (N, S, D), class token prepended, position embedding
    added: torchvision's ``_process_input`` + the first lines of ``forward`` and ``Encoder.forward``."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.conv_proj = vit.get_submodule("conv_proj")
        self.class_token = cast(nn.Parameter, vit.class_token)
        self.pos_embedding = cast(nn.Parameter, vit.get_submodule("encoder").pos_embedding)
        self.dropout = vit.get_submodule("encoder.dropout")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class _VitClassToken(nn.Module):
    """vit: the encoder's final LayerNorm, then the class token alone (what the head reads)."""

    def __init__(self, ln: nn.Module) -> None:
        super().__init__()
        self.ln = ln

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x)[:, 0]


def vit_stages(m: nn.Module) -> List[Tuple[str, nn.Module]]:
    layers = cast(nn.Sequential, m.get_submodule("encoder.layers"))
    return ([("embed", _VitEmbed(m))] + [(f"encoder.{name}", block) for name, block in layers.named_children()]
            + [("encoder.ln", _VitClassToken(m.get_submodule("encoder.ln"))), ("heads", m.get_submodule("heads"))])
