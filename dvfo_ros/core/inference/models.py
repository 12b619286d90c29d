"""Model zoo (torchvision definitions) and the cut of a model into a head and a tail.

Every zoo model is flattened into an ordered list of named *stages* such that running the stages
one after another is exactly the model's forward pass. A split index k puts stages[:k] on the
edge (the head) and stages[k:] after it (the tail). The twin, the executor and the cloud all cut
models through this one function, so they always agree on what "split 5" means.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Tuple, cast

import torch
from torch import nn
import torchvision

from dvfo_ros.core.errors import DvfoError, one_line
from dvfo_ros.core.inference.vit import vit_stages

ZOO = ("resnet18", "mobilenet_v2", "efficientnet_b0")
# Models the device twin prices but the executor does not run (no slimmable tail, no artifacts): their
# FLOPs and bytes come from the torchvision definitions with untrained weights (``build_twin_model``).
TWIN_ONLY = ("resnet50", "mobilenet_v3_large", "vit_b_16")
TWIN_MODELS = ZOO + TWIN_ONLY

# Default split per model: after a mid-network block whose feature map is small enough to send,
# and before a block that starts with a projection (no identity shortcut), so a tail can take any
# subset of the channels (see `collab_splits`). mobilenet_v2: features.7 (32 -> 64 ch, stride 2).
# Twin-only: resnet50 after layer2 (512 x 28 x 28, as resnet18's cut), mobilenet_v3_large before
# features.7 (40 x 28 x 28, stride-2 block), vit_b_16 after encoder block 3 (197 tokens x 768: every
# block's output has that size, so the cut only sets how much of the encoder the edge always runs).
DEFAULT_SPLIT: Dict[str, int] = {"resnet18": 6, "mobilenet_v2": 7, "efficientnet_b0": 5,
                                 "resnet50": 6, "mobilenet_v3_large": 7, "vit_b_16": 4}


class ModelError(ValueError, DvfoError):
    """Unknown model, bad split index, or an artifact that does not match."""


def _resnet_stages(m: nn.Module) -> List[Tuple[str, nn.Module]]:
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
    return ([(name, m.get_submodule(name)) for name in names]
            + [("flatten", nn.Flatten(1)), ("fc", m.get_submodule("fc"))])


def _features_stages(m: nn.Module) -> List[Tuple[str, nn.Module]]:
    # mobilenet_v2 pools with adaptive_avg_pool2d((1, 1)) then flattens; efficientnet has avgpool.
    features = cast(nn.Sequential, m.get_submodule("features"))
    stages = [(f"features.{i}", block) for i, block in enumerate(features)]
    pool = getattr(m, "avgpool", None) or nn.AdaptiveAvgPool2d((1, 1))
    return stages + [("avgpool", pool), ("flatten", nn.Flatten(1)), ("classifier", m.get_submodule("classifier"))]


_BUILDERS: Dict[str, Callable[..., nn.Module]] = {
    "resnet18": torchvision.models.resnet18,
    "mobilenet_v2": torchvision.models.mobilenet_v2,
    "efficientnet_b0": torchvision.models.efficientnet_b0,
}
_TWIN_BUILDERS: Dict[str, Callable[..., nn.Module]] = {
    "resnet50": torchvision.models.resnet50,
    "mobilenet_v3_large": torchvision.models.mobilenet_v3_large,
    "vit_b_16": torchvision.models.vit_b_16,
}


# torchvision's ImageNet checkpoints, by the file name torch.hub caches them under.
PRETRAINED_FILES: Dict[str, str] = {
    "resnet18": "resnet18-f37072fd.pth",
    "mobilenet_v2": "mobilenet_v2-b0353104.pth",
    "efficientnet_b0": "efficientnet_b0_rwightman-7f5810bc.pth",
}


def local_pretrained_path(name: str) -> str:
    """Where torch.hub would have cached the ImageNet weights of `name` (it may not exist)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", PRETRAINED_FILES[name])


def build_model(name: str, num_classes: int = 1000, seed: int = 0,
                pretrained: bool | str = False) -> nn.Module:
    """A torchvision zoo model with deterministic initial weights (same seed -> same weights).

    `pretrained`: True loads torchvision's ImageNet weights from the local torch.hub cache, a str
    loads that checkpoint file. Nothing is ever downloaded; a missing file is a ModelError. With
    num_classes != 1000 the classifier keeps its fresh (seeded) weights.
    """
    if name in TWIN_ONLY:
        raise ModelError(f"'{name}' is a twin-only model (the device twin prices it; the executor runs "
                         f"{', '.join(ZOO)})")
    if name not in _BUILDERS:
        raise ModelError(f"unknown model '{name}'; choose one of {', '.join(ZOO)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _BUILDERS[name](weights=None, num_classes=num_classes)
    if pretrained:
        path = local_pretrained_path(name) if pretrained is True else str(pretrained)
        if not os.path.isfile(path):
            raise ModelError(f"no local pretrained weights for {name} at {path} (nothing is downloaded)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many exception types for a truncated or foreign file
            raise ModelError(f"cannot read pretrained weights {path}: {one_line(exc)}") from None
        own = model.state_dict()
        keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if len(keep) < len(own) // 2:
            raise ModelError(f"{path} does not look like {name} weights")
        model.load_state_dict(keep, strict=False)
    return model.eval()


def build_twin_model(name: str, num_classes: int = 1000, input_size: int = 224) -> nn.Module:
    """Any of ``TWIN_MODELS`` with untrained weights, for counting its work (``twin.workload``): a zoo
    model as ``build_model`` makes it, a twin-only one from its torchvision definition (vit_b_16 built
    for ``input_size``, a multiple of its 16-px patch)."""
    if name in ZOO:
        return build_model(name, num_classes=num_classes)
    if name not in _TWIN_BUILDERS:
        raise ModelError(f"unknown model '{name}'; choose one of {', '.join(TWIN_MODELS)}")
    kw: Dict[str, int] = {"num_classes": num_classes}
    if name == "vit_b_16":
        if input_size % 16:
            raise ModelError(f"vit_b_16 needs an input size that is a multiple of 16 px, got {input_size}")
        kw["image_size"] = input_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _TWIN_BUILDERS[name](weights=None, **kw).eval()


def backbone_stages(name: str, model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The model as an ordered list of (stage_name, module); their composition is the model.
    vit_b_16: embed (patchify + class token + position), the 12 encoder blocks, the final LayerNorm
    with the class token taken, the head; the map between blocks is (tokens, dim)."""
    if name in ("resnet18", "resnet50"):
        return _resnet_stages(model)
    if name in ("mobilenet_v2", "efficientnet_b0", "mobilenet_v3_large"):
        return _features_stages(model)
    if name == "vit_b_16":
        return vit_stages(model)
    raise ModelError(f"unknown model '{name}'; choose one of {', '.join(TWIN_MODELS)}")


def split_model(name: str, model: nn.Module, split: int) -> Tuple[nn.Sequential, nn.Sequential]:
    """(head, tail) with head = stages[:split], tail = stages[split:]; shares the model's weights."""
    stages = backbone_stages(name, model)
    if not 1 <= split < len(stages):
        raise ModelError(f"split index {split} out of range for {name}: 1..{len(stages) - 1}")
    head = nn.Sequential(*[m for _, m in stages[:split]])
    tail = nn.Sequential(*[m for _, m in stages[split:]])
    return head.eval(), tail.eval()


def num_stages(name: str) -> int:
    return len(backbone_stages(name, build_model(name, num_classes=10)))


def _starts_with_projection(stage: nn.Module) -> bool:
    """True when the stage's input goes only into dense (groups=1) convs: no identity shortcut
    adds it back and no BN/depthwise conv touches it per channel, so a tail can take any subset."""
    first = stage
    while isinstance(first, nn.Sequential) and len(first) > 0 and not hasattr(first, "use_res_connect"):
        first = first[0]
    if hasattr(first, "downsample") and first.downsample is None:      # resnet identity block
        return False
    if getattr(first, "use_res_connect", False):                        # inverted residual with add
        return False
    leaves = [m for m in first.modules() if len(list(m.children())) == 0]
    return bool(leaves) and isinstance(leaves[0], nn.Conv2d) and leaves[0].groups == 1


def collab_splits(name: str) -> List[int]:
    """Split indices where a channel-subset tail is exact: the first tail block must not add its
    input back (an identity shortcut would need the channels that were sent away)."""
    stages = backbone_stages(name, build_model(name, num_classes=10))
    return [k for k in range(1, len(stages) - 2) if _starts_with_projection(stages[k][1])]


# ---------------------------------------------------------------------------------------------
# Slimmable tails: the same torchvision modules, run at a fraction of their width.
#
# DVFO's edge keeps (1 - xi) of the channels; for that to take work OFF the edge, every layer of
# the edge tail runs at width w = 1 - xi (Yu et al., "Slimmable Neural Networks"): a conv uses its
# first round(w * out) filters and only the input channels it receives, BN uses per-width
# statistics (shared affine weights), the classifier reads only the features that exist. The
# modules are converted in place (class swap), so torchvision's own block code (residual adds,
# squeeze-excitation) runs unchanged and at width 1 the tail is bit-for-bit the original model.
# ---------------------------------------------------------------------------------------------
import torch.nn.functional as F  # noqa: E402


class SlimState:
    """What one slimmable tail runs at right now; shared by all its slim modules.

    level l in 0..levels: offload share xi_l = l / levels. width_scaled: whether the tail shrinks
    with xi (edge) or stays full width and only uses xi to pick its BN statistics (cloud).
    keep_idx: indices of the channels the tail's input holds (None = all C, masked).
    """

    def __init__(self, levels: int, width_scaled: bool) -> None:
        self.levels = levels
        self.width_scaled = width_scaled
        self.level = 0
        self.keep_idx: torch.Tensor | None = None
        self.calibrating = False

    @property
    def width(self) -> float:
        return 1.0 - self.level / self.levels if self.width_scaled else 1.0


def scaled_width(n: int, width: float) -> int:
    """Channels a layer of n channels runs with at `width`; at least 1, exactly n at width 1."""
    return n if width >= 1.0 else max(1, int(round(width * n)))


class SlimConv2d(nn.Conv2d):
    """A Conv2d that runs on whatever input channels arrive and emits round(w * out) channels."""

    slim: SlimState
    slim_entry: bool  # consumes the split feature map directly (input channels = keep_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # At full width the parameters themselves, not views of them: a conv on a fresh view of its
        # weight measured 2-4 % slower per call (CPU, oneDNN), which is what a slim tail at xi = 0 paid.
        cin = x.shape[1]
        bias = self.bias
        if self.groups > 1 and self.groups == self.in_channels:  # depthwise: width follows input
            if cin == self.in_channels:
                weight, groups = self.weight, cin
            else:
                weight, groups = self.weight[:cin], cin
                bias = bias[:cin] if bias is not None else None
        else:
            cout = scaled_width(self.out_channels, self.slim.width)
            weight, groups = (self.weight if cout == self.out_channels else self.weight[:cout]), 1
            if self.slim_entry and self.slim.keep_idx is not None:
                weight = weight.index_select(1, self.slim.keep_idx)
            elif cin < self.in_channels:
                weight = self._sliced(cout, cin)
            if bias is not None and cout < self.out_channels:
                bias = bias[:cout]
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def _sliced(self, cout: int, cin: int) -> torch.Tensor:
        """weight[:cout, :cin] as a contiguous tensor, cached at inference: slicing the input
        dimension is a strided view that conv2d would copy on every call (measured: it made a
        1/8-offloaded tail slower than the full one)."""
        if self.training or torch.is_grad_enabled():
            return self.weight[:cout, :cin]
        key = (cout, cin, self.weight._version, self.weight.data_ptr())
        cache = self.__dict__.setdefault("_slice_cache", {})
        if key not in cache:
            if len(cache) > 16:  # stale versions after training steps or a reload
                cache.clear()
            cache[key] = self.weight[:cout, :cin].detach().contiguous()
        return cache[key]


class SlimBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with shared affine weights and one set of running statistics per level.

    Training uses batch statistics (widths change every step); after training,
    `calibrate_bn` fills level_mean/level_var for each level from real data (US-Nets' recipe).
    """

    slim: SlimState
    # buffers (registered by make_slimmable) and calibration sums (start_calibration)
    level_mean: torch.Tensor
    level_var: torch.Tensor
    cal_sum: torch.Tensor
    cal_sqsum: torch.Tensor
    cal_count: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n = x.shape[1]
        full = n == self.num_features       # full width: the parameters themselves (see SlimConv2d)
        weight = self.weight if full or self.weight is None else self.weight[:n]
        bias = self.bias if full or self.bias is None else self.bias[:n]
        if self.slim.calibrating:
            with torch.no_grad():
                xs = x.detach().double()
                self.cal_sum[:n] += xs.sum((0, 2, 3))
                self.cal_sqsum[:n] += (xs * xs).sum((0, 2, 3))
                self.cal_count[:n] += xs.shape[0] * xs.shape[2] * xs.shape[3]
        if self.training or self.slim.calibrating:
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        mean, var = self._level_stats(self.slim.level, n)
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    def _level_stats(self, lvl: int, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(mean, var) of level ``lvl`` for ``n`` channels; at inference the same views every call (made
        once per level, width and buffer version) instead of two new ones per frame."""
        if torch.is_grad_enabled():
            return self.level_mean[lvl, :n], self.level_var[lvl, :n]
        key = (lvl, n, self.level_mean.data_ptr(), self.level_mean._version, self.level_var.data_ptr(),
               self.level_var._version)
        cache = self.__dict__.setdefault("_stats_cache", {})
        if key not in cache:
            if len(cache) > 64:    # stale versions after calibration or a reload
                cache.clear()
            cache[key] = (self.level_mean[lvl, :n], self.level_var[lvl, :n])
        return cache[key]

    def start_calibration(self) -> None:
        c = self.num_features
        self.cal_sum = torch.zeros(c, dtype=torch.float64)
        self.cal_sqsum = torch.zeros(c, dtype=torch.float64)
        self.cal_count = torch.zeros(c, dtype=torch.float64)

    def finish_calibration(self, level: int) -> None:
        seen = self.cal_count > 0
        mean = self.cal_sum / self.cal_count.clamp(min=1)
        var = self.cal_sqsum / self.cal_count.clamp(min=1) - mean * mean
        self.level_mean[level, seen] = mean[seen].float()
        self.level_var[level, seen] = var[seen].clamp(min=0).float()


class SlimLinear(nn.Linear):
    """The classifier reads only the features that exist at this width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n = x.shape[1]
        return F.linear(x, self.weight if n == self.in_features else self.weight[:, :n], self.bias)


def make_slimmable(tail: nn.Sequential, feature_shape: Tuple[int, int, int], levels: int,
                   width_scaled: bool) -> SlimState:
    """Convert `tail` in place into a slimmable tail; returns the state that drives it.

    The entry convs (those that read the split feature map itself) are found by tracing one
    forward pass, so the rule holds for resnet downsample branches and inverted residuals alike.
    """
    state = SlimState(levels, width_scaled)
    probe = torch.zeros(1, *feature_shape)
    entries: List[nn.Module] = []

    def hook(mod: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> None:
        if inputs[0] is probe:
            entries.append(mod)

    handles = [m.register_forward_pre_hook(hook) for m in tail.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        tail.eval()(probe)
    for h in handles:
        h.remove()
    for m in tail.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = SlimConv2d
            conv = cast(SlimConv2d, m)
            conv.slim, conv.slim_entry = state, any(m is e for e in entries)
        elif type(m) is nn.BatchNorm2d:
            running_mean, running_var = m.running_mean, m.running_var
            assert running_mean is not None and running_var is not None, "tail BatchNorm without running stats"
            m.__class__ = SlimBatchNorm2d
            cast(SlimBatchNorm2d, m).slim = state
            m.register_buffer("level_mean", running_mean.detach().clone().repeat(levels + 1, 1))
            m.register_buffer("level_var", running_var.detach().clone().repeat(levels + 1, 1))
        elif type(m) is nn.Linear:
            m.__class__ = SlimLinear
    return state


def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of conv and linear layers in one forward pass (the torchvision and
    workload.py convention: 'resnet18 1.81 GFLOPS' at 224 px), at the widths actually run."""
    total = [0]

    def conv_hook(mod: nn.Conv2d, inp: Tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        cin = inp[0].shape[1]
        groups = cin if (mod.groups > 1 and mod.groups == mod.in_channels) else mod.groups
        kh, kw = mod.kernel_size
        total[0] += int(out.numel() // out.shape[0]) * (cin // groups) * kh * kw

    def linear_hook(mod: nn.Linear, inp: Tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        total[0] += int(inp[0].shape[-1]) * int(out.shape[-1])

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total[0]
