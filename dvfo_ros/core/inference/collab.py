"""DVFO collaborative inference for one zoo model: head, attention split, edge/cloud tails, fusion.

    x -> head -> X [C, h, w] -> attention ranks channels
                 keep (1 - xi) most important -> edge tail (slimmable, width 1 - xi) -> y_edge
                 offload xi least important   -> (int8 over ZeroMQ) -> cloud tail  -> y_cloud
    y = lambda * y_edge + (1 - lambda) * y_cloud,   lambda from a per-xi table chosen on validation

The edge tail is the torchvision tail made slimmable (models.make_slimmable): its compute really
shrinks with xi, and at xi = 0 it IS the original tail, so edge_tail(head(x)) equals the uncut
model. The cloud tail is a second copy, full width, that learns to work from the offloaded
channels. One artifact file (state_dict + metadata) holds all of it; the executor and the cloud
server load the same file and refuse a mismatch (model, split, version, artifact id).
"""
from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from dvfo_ros.core.errors import DvfoError, one_line
from dvfo_ros.core.inference import models
from dvfo_ros.core.inference.attention import SpatialChannelAttention, rank_channels, topk_mask

ARTIFACT_VERSION = 1
ARTIFACT_FORMAT = "dvfo_ros.collab"
LEVELS = 8  # xi grid the slimmable tails and their BN statistics are trained for: 0, 1/8, ..., 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
META_KEYS = ("model", "split", "num_classes", "input_size", "version", "artifact_id",
             "lambda_table", "dataset", "accuracy", "class_names")


class ArtifactError(ValueError, DvfoError):
    """A model artifact that is missing, corrupt, or does not match what the caller runs."""


class CollaborativeModel(nn.Module):
    """A zoo model cut at `split` with DVFO's attention, slimmable edge tail and cloud tail."""

    pixel_mean: Tensor   # buffers (register_buffer in __init__), declared for the type checker
    pixel_std: Tensor

    def __init__(self, model: str, split: Optional[int] = None, num_classes: int = 1000,
                 input_size: int = 224, seed: int = 0, pretrained: bool | str = False) -> None:
        super().__init__()
        split = models.DEFAULT_SPLIT.get(model, -1) if split is None else int(split)
        if model in models.ZOO and split not in models.collab_splits(model):
            raise models.ModelError(
                f"split {split} of {model} cannot take a channel subset (the next block adds its "
                f"input back or starts per-channel); choose one of {models.collab_splits(model)}")
        net = models.build_model(model, num_classes=num_classes, seed=seed, pretrained=pretrained)
        head, tail = models.split_model(model, net, split)
        self.head_net = head
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            feat = self.head_net(torch.zeros(1, 3, input_size, input_size))
        self.feature_shape: Tuple[int, int, int] = tuple(int(v) for v in feat.shape[1:])  # type: ignore
        self.channels = self.feature_shape[0]
        self.attention = SpatialChannelAttention(self.channels)
        self.cloud_net = copy.deepcopy(tail)
        self.edge_net = tail
        self.edge_state = models.make_slimmable(self.edge_net, self.feature_shape, LEVELS, True)
        self.cloud_state = models.make_slimmable(self.cloud_net, self.feature_shape, LEVELS, False)
        self._edge_lock = threading.Lock()
        self._cloud_lock = threading.Lock()
        self._flops_cache: Dict[int, int] = {}
        self.meta: Dict[str, Any] = {
            "model": model, "split": split, "num_classes": int(num_classes),
            "input_size": int(input_size), "version": ARTIFACT_VERSION,
            "artifact_id": f"zoo:{model}:{split}:{num_classes}:{seed}",
            "lambda_table": [[0.0, 1.0], [1.0, 0.0]], "dataset": "", "accuracy": [],
            "class_names": [str(i) for i in range(num_classes)], "levels": LEVELS,
        }
        self.eval()

    # ----------------------------------------------------------------- construction / artifacts
    @classmethod
    def from_zoo(cls, model: str, split: Optional[int] = None, num_classes: int = 1000,
                 input_size: int = 224, seed: int = 0, pretrained: bool | str = False) -> "CollaborativeModel":
        """Untrained (or ImageNet-pretrained, if cached locally) zoo model; lambda = 1 - xi."""
        return cls(model, split, num_classes, input_size, seed, pretrained)

    @classmethod
    def from_artifact(cls, path: str) -> "CollaborativeModel":
        """Load a trained artifact (weights_only: no code runs from the file)."""
        if not os.path.isfile(path):
            raise ArtifactError(f"model artifact not found: {path}")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many exception types for a damaged file
            raise ArtifactError(f"cannot read model artifact {path}: {one_line(exc)}") from None
        if not isinstance(blob, dict) or blob.get("format") != ARTIFACT_FORMAT:
            raise ArtifactError(f"{path} is not a dvfo_ros model artifact")
        meta, state = blob.get("meta"), blob.get("state")
        if not isinstance(meta, dict) or not isinstance(state, dict):
            raise ArtifactError(f"{path}: artifact lacks meta or state")
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise ArtifactError(f"{path}: artifact metadata lacks {', '.join(missing)}")
        if meta["version"] != ARTIFACT_VERSION:
            raise ArtifactError(f"{path}: artifact version {meta['version']}, this code reads "
                                f"version {ARTIFACT_VERSION}; retrain (scripts/train_artifacts.py)")
        if int(meta.get("levels", LEVELS)) != LEVELS:
            raise ArtifactError(f"{path}: artifact trained for {meta.get('levels')} xi levels, code has {LEVELS}")
        try:
            obj = cls(str(meta["model"]), int(meta["split"]), int(meta["num_classes"]), int(meta["input_size"]))
            obj.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: artifact does not fit {meta.get('model')}: {one_line(exc)}") from None
        obj.meta = dict(meta)
        return obj.eval()

    def save_artifact(self, path: str, **extra_meta: Any) -> None:
        """Write weights (fp16) + metadata atomically; the artifact id is a hash of the content."""
        state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous()
                 for k, v in self.state_dict().items()}
        meta = dict(self.meta)
        meta.update(extra_meta)
        if "artifact_id" not in extra_meta:
            digest = hashlib.sha256()
            for k in sorted(state):
                digest.update(k.encode())
                digest.update(state[k].numpy().tobytes())
            meta["artifact_id"] = f"{meta['model']}-s{meta['split']}-{digest.hexdigest()[:12]}"
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".artifact-", suffix=".tmp", dir=directory)
        os.close(fd)
        try:
            torch.save({"format": ARTIFACT_FORMAT, "meta": meta, "state": state}, tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cloud server may run as another user
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.meta = meta

    # -------------------------------------------------------------------------------- the pass
    def head(self, x: Tensor) -> Tensor:
        """[B, 3, S, S] RGB in [0, 1] -> the feature map at the split [B, C, h, w]."""
        return self.head_net((x - self.pixel_mean) / self.pixel_std)

    def importance(self, feat: Tensor) -> Tensor:
        """[B, C] attention score per channel (higher = keep on the edge)."""
        return self.attention(feat)

    def split_channels(self, feat: Tensor, offload_ratio: float) -> Tuple[Tensor, Tensor]:
        """(keep_idx, off_idx) for ONE frame: off = the round(xi * C) least important channels."""
        if feat.dim() != 4 or feat.shape[0] != 1:
            raise ValueError(f"split_channels takes one frame [1, C, h, w], got {list(feat.shape)}")
        with torch.no_grad():
            return rank_channels(self.importance(feat)[0], offload_ratio)

    def _edge_level(self, kept: int) -> int:
        return min(max(int(round((1.0 - kept / self.channels) * LEVELS)), 0), LEVELS - 1)

    def _cloud_level(self, sent: int) -> int:
        return min(max(int(round(sent / self.channels * LEVELS)), 1), LEVELS)

    def _check_idx(self, feat: Tensor, idx: Tensor, what: str) -> Tensor:
        idx = torch.as_tensor(idx, dtype=torch.long).flatten()
        if feat.dim() != 4 or feat.shape[1] != idx.numel():
            raise ValueError(f"{what}: feature map {list(feat.shape)} does not hold {idx.numel()} channels")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.channels):
            raise ValueError(f"{what}: channel index out of 0..{self.channels - 1}")
        if torch.unique(idx).numel() != idx.numel():
            raise ValueError(f"{what}: repeated channel index")
        return idx

    def edge_tail(self, feat_keep: Tensor, keep_idx: Tensor) -> Optional[Tensor]:
        """[B, k_e, h, w] kept channels -> logits [B, K]; runs at width k_e / C. None if k_e = 0."""
        idx = self._check_idx(feat_keep, keep_idx, "edge_tail")
        if idx.numel() == 0:
            return None
        with self._edge_lock:
            self.edge_state.level = self._edge_level(idx.numel())
            self.edge_state.keep_idx = idx
            try:
                return self.edge_net(feat_keep)
            finally:
                self.edge_state.keep_idx = None

    def edge_tail_full(self, feat: Tensor) -> Tensor:
        """[B, C, h, w] every channel, in order -> logits [B, K]: ``edge_tail(feat, arange(C))`` (xi = 0, the
        original tail at full width) without the index checks and the entry convs' weight gather."""
        if feat.dim() != 4 or feat.shape[1] != self.channels:
            raise ValueError(f"edge_tail_full: feature map {list(feat.shape)} does not hold {self.channels} channels")
        with self._edge_lock:
            self.edge_state.level = 0
            self.edge_state.keep_idx = None
            return self.edge_net(feat)

    def cloud_tail(self, feat_off: Tensor, off_idx: Tensor) -> Optional[Tensor]:
        """[B, k_c, h, w] offloaded channels -> logits [B, K] (full width). None if k_c = 0."""
        idx = self._check_idx(feat_off, off_idx, "cloud_tail")
        if idx.numel() == 0:
            return None
        with self._cloud_lock:
            self.cloud_state.level = self._cloud_level(idx.numel())
            self.cloud_state.keep_idx = idx
            try:
                return self.cloud_net(feat_off)
            finally:
                self.cloud_state.keep_idx = None

    # ------------------------------------------------------------------ whole-layer partitions
    @property
    def num_stages(self) -> int:
        """Stages of the all-local network (head + edge tail): partition points run 0..num_stages."""
        return len(self.head_net) + len(self.edge_net)

    def run_stages(self, x: Tensor, lo: int, hi: int) -> Tensor:
        """Stages ``lo``..``hi`` - 1 of the all-local network (the head, then the edge tail at full width:
        the xi = 0 model). ``lo`` = 0 takes the normalised image; ``hi`` = num_stages gives logits. The
        edge runs 0..k and the server k..num_stages of the same weights: a whole-layer partition at k."""
        n = self.num_stages
        if not 0 <= lo <= hi <= n:
            raise ValueError(f"stages {lo}..{hi} out of range 0..{n}")
        stages = list(self.head_net) + list(self.edge_net)
        with self._edge_lock:
            self.edge_state.level = 0
            self.edge_state.keep_idx = None
            for stage in stages[lo:hi]:
                x = stage(x)
        return x

    def stage_inputs(self) -> Dict[int, Tuple[int, ...]]:
        """Shape (without the batch) of what stage k takes, for every cut k in 0..num_stages - 1; a
        vector [C] travels on the wire as (C, 1, 1). Probed once with a zero frame."""
        if not hasattr(self, "_stage_inputs"):
            w = next(self.parameters())
            size = int(self.meta["input_size"])
            x = torch.zeros(1, 3, size, size, device=w.device, dtype=w.dtype)
            shapes: Dict[int, Tuple[int, ...]] = {}
            with torch.no_grad():
                for k in range(self.num_stages):
                    shapes[k] = tuple(int(v) for v in x.shape[1:])
                    x = self.run_stages(x, k, k + 1)
            self._stage_inputs = shapes
        return self._stage_inputs

    def fusion_weight(self, offload_ratio: float) -> float:
        """lambda for this xi from the stored table (linear interpolation between its rows)."""
        table = np.asarray(self.meta.get("lambda_table") or [[0.0, 1.0], [1.0, 0.0]], dtype=float)
        order = np.argsort(table[:, 0])
        lam = float(np.interp(float(offload_ratio), table[order, 0], table[order, 1]))
        return min(max(lam, 0.0), 1.0)

    @staticmethod
    def fuse(y_edge: Optional[Tensor], y_cloud: Optional[Tensor], lam: float) -> Tensor:
        """y = lam * y_edge + (1 - lam) * y_cloud; a missing side means the other alone."""
        if y_edge is None and y_cloud is None:
            raise ValueError("fuse needs at least one of y_edge, y_cloud")
        if y_cloud is None:
            return y_edge  # type: ignore[return-value]
        if y_edge is None:
            return y_cloud
        return float(lam) * y_edge + (1.0 - float(lam)) * y_cloud

    def tails_masked(self, feat: Tensor, offload_ratio: float,
                     offloaded_feat: Optional[Tensor] = None,
                     keep_mask: Optional[Tensor] = None) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """(y_edge, y_cloud) for a batch, each frame split by its own attention ranking.

        Dropped channels are zeroed instead of gathered: the same function as edge_tail /
        cloud_tail on gathered channels (a zero input channel adds nothing to any conv), but one
        batched pass, with a straight-through gradient to the attention while training.
        `offloaded_feat` replaces what the cloud sees (e.g. the int8-dequantised map). `keep_mask`
        ([B, C], from ``topk_mask``) is the split when the caller already computed it.
        """
        n_off = int(round(float(offload_ratio) * self.channels))
        if keep_mask is None:
            keep_mask = topk_mask(self.importance(feat), offload_ratio)
        mask = keep_mask[:, :, None, None]
        y_edge = y_cloud = None
        if n_off < self.channels:
            self.edge_state.level = self._edge_level(self.channels - n_off)
            y_edge = self.edge_net(feat * mask)
        if n_off > 0:
            self.cloud_state.level = self._cloud_level(n_off)
            src = feat if offloaded_feat is None else offloaded_feat
            y_cloud = self.cloud_net(src * (1.0 - mask))
        return y_edge, y_cloud

    def forward(self, x: Tensor, offload_ratio: float = 0.0) -> Tensor:  # type: ignore[override]
        """The whole collaborative pass in-process (no codec): fused logits [B, K]."""
        y_edge, y_cloud = self.tails_masked(self.head(x), offload_ratio)
        return self.fuse(y_edge, y_cloud, self.fusion_weight(offload_ratio))

    def edge_tail_flops(self, offload_ratio: float) -> int:
        """Multiply-accumulates of the edge tail at this xi for one input_size frame (0 at xi=1)."""
        kept = self.channels - int(round(float(offload_ratio) * self.channels))
        if kept not in self._flops_cache:
            if kept == 0:
                self._flops_cache[kept] = 0
            else:
                w = next(self.edge_net.parameters())      # counted where the tail lives (CPU or CUDA)
                feat = torch.zeros(1, kept, *self.feature_shape[1:], device=w.device, dtype=w.dtype)
                with self._edge_lock:
                    self.edge_state.level = self._edge_level(kept)
                    self.edge_state.keep_idx = torch.arange(kept, device=w.device)
                    was_training = self.edge_net.training
                    try:
                        self._flops_cache[kept] = models.count_macs(self.edge_net.eval(), feat)
                    finally:
                        self.edge_state.keep_idx = None
                        self.edge_net.train(was_training)
        return self._flops_cache[kept]


# --------------------------------------------------------------------------- compatibility
def check_compatible(meta: Dict[str, Any], model: str, split: int, version: int,
                     artifact_id: Optional[str] = None) -> None:
    """Refuse (ArtifactError, one line) when two sides would run different networks."""
    if meta.get("version") != version:
        raise ArtifactError(f"artifact version mismatch: {meta.get('version')} vs {version}")
    if meta.get("model") != model:
        raise ArtifactError(f"model mismatch: artifact is {meta.get('model')}, peer runs {model}")
    if int(meta.get("split", -1)) != int(split):
        raise ArtifactError(f"split mismatch: artifact is split {meta.get('split')}, peer runs {split}")
    if artifact_id and meta.get("artifact_id") != artifact_id:
        raise ArtifactError(f"artifact mismatch: {meta.get('artifact_id')} vs {artifact_id}")


def user_artifact_dir() -> str:
    """The per-user artifact location every install searches: $DVFO_ARTIFACT_DIR, else the XDG
    cache dir ($XDG_CACHE_HOME/dvfo_ros/artifacts, default ~/.cache/dvfo_ros/artifacts)."""
    if os.environ.get("DVFO_ARTIFACT_DIR"):
        return os.environ["DVFO_ARTIFACT_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "dvfo_ros", "artifacts")


def artifact_dirs() -> List[str]:
    """Where trained artifacts are looked for, first hit wins: $DVFO_ARTIFACT_DIR, the XDG cache
    dir (what ``dvfo-artifact train`` and setup write), a source checkout's artifacts/cache (older
    developer setups), the package's own."""
    here = os.path.dirname(os.path.abspath(__file__))          # dvfo_ros/core/inference
    pkg = os.path.dirname(os.path.dirname(here))               # dvfo_ros
    repo = os.path.dirname(pkg)
    dirs = []
    if os.environ.get("DVFO_ARTIFACT_DIR"):
        dirs.append(os.environ["DVFO_ARTIFACT_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    dirs.append(os.path.join(cache, "dvfo_ros", "artifacts"))
    if os.path.isfile(os.path.join(repo, "package.xml")):
        dirs.append(os.path.join(repo, "artifacts", "cache"))
    dirs.append(os.path.join(pkg, "artifacts"))
    return list(dict.fromkeys(dirs))


def artifact_name(model: str, dataset: str) -> str:
    return f"{model}_{os.path.basename(os.path.normpath(dataset))}.pt"


def default_artifact(model: str = "resnet18", dataset: str = "digits") -> Optional[str]:
    """Path of the trained artifact for (model, dataset), or None when none has been trained."""
    for d in artifact_dirs():
        path = os.path.join(d, artifact_name(model, dataset))
        if os.path.isfile(path):
            return path
    return None


def default_artifact_dir() -> str:
    """Where training writes: the per-user location (user_artifact_dir), else the first writable
    of the other search locations."""
    for d in [user_artifact_dir()] + artifact_dirs()[:-1]:
        try:
            os.makedirs(d, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    return artifact_dirs()[-1]
