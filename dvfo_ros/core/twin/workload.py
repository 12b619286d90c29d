"""Per-stage work of a zoo model, counted from the REAL network with forward hooks.

The device twin prices a frame from these numbers, so they must come from the same stage list
the executor cuts (``models.backbone_stages``), not from a hand-written table. One forward pass
at the chosen input size visits every leaf module once; each hook adds that leaf's arithmetic
and memory traffic to the stage it belongs to.

Conventions (say them once, here):
- ``flops`` are multiply-accumulates (MACs), the convention torchvision's model docs use
  ("resnet18: 1.81 GFLOPS" at 224 px). Elementwise layers (BN, activations, pools) add one
  op per output element so they are not free.
- ``bytes`` are fp32 DRAM traffic with no cache reuse between layers: read the input, read the
  weights, write the output. The profile's ``emc_efficiency`` absorbs fp16/caching on a board.
- ``kernels`` counts GPU kernel launches (conv/linear/pool/elementwise leaves), the CPU-side cost
  that makes small layers launch-bound at high GPU clocks.
- Attention (``nn.MultiheadAttention``, vit_b_16) is one leaf: Q/K/V and output projections plus the
  two L x S x D products (QK^T, softmax . V); its traffic adds the Q/K/V tensors and the score maps.
- The "feature map" at a split is (C, h, w) for a CNN; for a transformer it is (tokens, dim, 1): the
  offloadable units are tokens (``Workload.units``), as channels are for a CNN.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

BYTES_PER_ELEM = 4  # fp32 activations and weights as the zoo runs them


@dataclass
class Workload:
    """What one frame of ``model`` costs when cut at ``split`` (head = stages[:split])."""

    model: str
    split: int
    input_size: int
    head_flops: int
    head_bytes: int
    tail_flops: int
    tail_bytes: int
    feature_shape: Tuple[int, int, int]          # (C, h, w) of the feature map at the split
    layers: List[Dict] = field(default_factory=list)  # per stage: name, flops, bytes, kernels, where

    @property
    def total_flops(self) -> int:
        return self.head_flops + self.tail_flops

    @property
    def units(self) -> int:
        """Offloadable units at the split (channels of a CNN map, tokens of a transformer's)."""
        return int(self.feature_shape[0])

    @property
    def feature_elems(self) -> int:
        c, h, w = self.feature_shape
        return c * h * w


def _leaf_cost(module, inputs, output) -> Tuple[int, int, int]:
    """(MACs, bytes, kernels) of one leaf module for one forward call."""
    from torch import nn  # local: importing this module must stay cheap for the twin's users

    x = inputs[0] if inputs else None
    in_elems = int(x.numel()) if x is not None and hasattr(x, "numel") else 0
    if isinstance(output, tuple):          # nn.MultiheadAttention: (output, weights or None)
        output = output[0]
    out_elems = int(output.numel()) if hasattr(output, "numel") else 0
    params = sum(int(p.numel()) for p in module.parameters(recurse=False))
    nbytes = (in_elems + out_elems + params) * BYTES_PER_ELEM
    if isinstance(module, nn.MultiheadAttention):
        return _attention_cost(module, inputs, in_elems, out_elems, params)
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        macs = out_elems * (module.in_channels // module.groups) * kh * kw
        return macs, nbytes, 1
    if isinstance(module, nn.Linear):
        return out_elems * module.in_features, nbytes, 1
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        return out_elems * k * k, nbytes, 1
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return in_elems, nbytes, 1
    if isinstance(module, (nn.Flatten, nn.Identity, nn.Dropout)) or out_elems == 0:
        return 0, 0, 0  # views / no-ops at inference: no arithmetic, no traffic
    # BatchNorm, ReLU/ReLU6/SiLU/Sigmoid/Hardswish, stochastic depth...: elementwise
    return out_elems, nbytes, 1


def _attention_cost(module, inputs, in_elems: int, out_elems: int, params: int) -> Tuple[int, int, int]:
    """(MACs, bytes, kernels) of one attention call: projections 4·L·D² (S = L, self-attention) and
    the two score products 2·L·S·D; traffic adds Q/K/V (written, read) and the score maps (written,
    soft-maxed in place, read)."""
    q, k = inputs[0], inputs[1] if len(inputs) > 1 else inputs[0]
    seq_dim = 1 if module.batch_first else 0
    n = int(q.numel()) // (int(q.shape[seq_dim]) * module.embed_dim)
    length, src, d = int(q.shape[seq_dim]), int(k.shape[seq_dim]), module.embed_dim
    macs = n * (length * d * d + 2 * src * d * d + 2 * length * src * d + length * d * d)
    distinct_in = in_elems if all(t is q for t in inputs[:3]) else in_elems + 2 * int(k.numel())
    traffic = distinct_in + out_elems + params + 2 * 3 * n * length * d + 4 * n * module.num_heads * length * src
    return macs, traffic * BYTES_PER_ELEM, 5


def _leaves(module) -> List:
    """Modules the hooks count: those with no children, and attention blocks as a whole (their
    projections are parameters called functionally, so no child module would see the work)."""
    from torch import nn

    if isinstance(module, nn.MultiheadAttention) or not list(module.children()):
        return [module]
    return [leaf for child in module.children() for leaf in _leaves(child)]


def _chw(shape: Tuple[int, ...]) -> Tuple[int, int, int]:
    """A stage's output shape as the (C, h, w) that travels: a vector [C] is (C, 1, 1), tokens (L, D) are (L, D, 1)."""
    return (int(shape[0]), int(shape[1]) if len(shape) > 1 else 1, int(shape[2]) if len(shape) > 2 else 1)


@functools.lru_cache(maxsize=64)
def _count(model: str, split: int, input_size: int, num_classes: int) -> Workload:
    import torch

    from dvfo_ros.core.inference import models

    net = models.build_twin_model(model, num_classes=num_classes, input_size=input_size)
    stages = models.backbone_stages(model, net)
    if not 1 <= split < len(stages):
        raise models.ModelError(f"split index {split} out of range for {model}: 1..{len(stages) - 1}")
    per_stage: List[Dict] = []
    handles = []
    current: Dict = {}

    def hook(module, inputs, output):
        macs, nbytes, kernels = _leaf_cost(module, inputs, output)
        current["flops"] += macs
        current["bytes"] += nbytes
        current["kernels"] += kernels

    for _, stage in stages:
        handles += [m.register_forward_hook(hook) for m in _leaves(stage)]
    shapes: List[Tuple[int, ...]] = []
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, input_size, input_size)
            for i, (name, stage) in enumerate(stages):
                current.clear()
                current.update(name=name, flops=0, bytes=0, kernels=0,
                               where="head" if i < split else "tail")
                x = stage(x)
                if current["kernels"] == 0 and name != "flatten":
                    current["kernels"] = 1  # a stage with no hooked leaf still launches work
                shapes.append(tuple(x.shape[1:]))
                per_stage.append(dict(current, out_shape=_chw(shapes[-1])))
    finally:
        for h in handles:
            h.remove()
    feature_shape = _chw(shapes[split - 1])
    head = [s for s in per_stage if s["where"] == "head"]
    tail = [s for s in per_stage if s["where"] == "tail"]
    return Workload(
        model=model, split=split, input_size=input_size,
        head_flops=sum(s["flops"] for s in head), head_bytes=sum(s["bytes"] for s in head),
        tail_flops=sum(s["flops"] for s in tail), tail_bytes=sum(s["bytes"] for s in tail),
        feature_shape=feature_shape, layers=per_stage)


def model_workload(model: str, split: int | None = None, input_size: int = 224,
                   num_classes: int = 1000) -> Workload:
    """Per-stage MACs/bytes of ``model`` (any of ``models.TWIN_MODELS``) at ``input_size`` px cut at
    ``split`` (cached).

    ``split=None`` takes ``models.DEFAULT_SPLIT``. Raises ``models.ModelError`` (a ValueError)
    for an unknown model or a split outside 1..num_stages-1.
    """
    from dvfo_ros.core.inference import models

    if model not in models.TWIN_MODELS:
        raise models.ModelError(f"unknown model '{model}'; choose one of {', '.join(models.TWIN_MODELS)}")
    if split is None:
        split = models.DEFAULT_SPLIT[model]
    if input_size < 32:
        raise models.ModelError(f"input_size {input_size} px is too small (>= 32)")
    w = _count(model, int(split), int(input_size), int(num_classes))
    # a fresh copy: callers may mutate layers without poisoning the cache
    return Workload(**{**w.__dict__, "layers": [dict(s) for s in w.layers]})


def partition_points(model: str) -> List[int]:
    """Every whole-layer cut of ``model`` a partitioning policy may pick (Neurosurgeon's choices):
    0 = send the input image to the server, 1..S-1 = cut after that many stages, S = all on the device."""
    from dvfo_ros.core.inference import models

    if model not in models.TWIN_MODELS:
        raise models.ModelError(f"unknown model '{model}'; choose one of {', '.join(models.TWIN_MODELS)}")
    return list(range(0, len(model_workload(model).layers) + 1))


def partition_workload(model: str, split: int, input_size: int = 224, num_classes: int = 1000) -> Workload:
    """``model_workload`` for any partition point: ``split`` 0 puts every stage in the tail with the
    (3, S, S) image as the map that travels; ``split`` S (= the stage count) puts every stage in the head
    (nothing can travel: the frame is local at any xi, ``feature_shape`` is then the logits')."""
    base = model_workload(model, None, input_size, num_classes)     # one count of the network serves every cut
    n, k = len(base.layers), int(split)
    if not 0 <= k <= n:
        raise ValueError(f"partition point {split} out of range for {model}: 0..{n}")
    layers = [dict(s, where="head" if i < k else "tail") for i, s in enumerate(base.layers)]
    head, tail = layers[:k], layers[k:]
    return Workload(model=model, split=k, input_size=input_size,
                    head_flops=sum(s["flops"] for s in head), head_bytes=sum(s["bytes"] for s in head),
                    tail_flops=sum(s["flops"] for s in tail), tail_bytes=sum(s["bytes"] for s in tail),
                    feature_shape=tuple(layers[k - 1]["out_shape"]) if k else (3, int(input_size), int(input_size)),
                    layers=layers)


# ImageNet-1K top-1 of each model's DEFAULT torchvision weights, as torchvision publishes it (the weights'
# meta["_metrics"]): what the twin charges a model variant in accuracy. Read from torchvision when it has the
# entry (no download: the metadata ships with the package); this copy is for a torchvision without it.
PUBLISHED_TOP1 = {"resnet18": 0.69758, "resnet50": 0.80858, "mobilenet_v2": 0.72154, "mobilenet_v3_large": 0.75274,
                  "efficientnet_b0": 0.77692, "vit_b_16": 0.81072}


def published_accuracy(model: str) -> float:
    """Top-1 (fraction) torchvision publishes for ``model``'s default ImageNet weights."""
    try:
        import torchvision.models as tvm
        return float(tvm.get_model_weights(model).DEFAULT.meta["_metrics"]["ImageNet-1K"]["acc@1"]) / 100.0
    except (ValueError, KeyError, AttributeError, ImportError):
        if model not in PUBLISHED_TOP1:
            raise ValueError(f"no published accuracy for model '{model}'") from None
        return PUBLISHED_TOP1[model]
