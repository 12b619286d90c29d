"""Joint training of a CollaborativeModel (head, attention, slimmable edge tail, cloud tail).

One step, readable top to bottom (CleanRL style):
    feat = head(x)
    L_full  = CE(edge_tail_at_width_1(feat))                        # the whole model on the edge
    xi      ~ U{1/8, ..., 1}                                         # a random offload share
    y_e, y_c = tails on the attention-ranked split at xi             # straight-through top-k mask
    L_xi    = CE(y_e) + CE(y_c) + CE((1 - xi) * y_e + xi * y_c)      # each side alone and fused
    L       = L_full + L_xi + sparsity * mean|feat|                  # sparse maps compress better
              + offload_sparsity * mean|feat on the xi share sent| / xi  # ... above all what is sent
Then: per-level BN statistics are calibrated on training images (slimmable nets need one set per
width), and lambda is chosen per xi on the validation split, with the cloud seeing the int8
codec's dequantised channels exactly as it will in deployment.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dvfo_ros.core.inference import models
from dvfo_ros.core.inference.attention import topk_mask
from dvfo_ros.core.inference.collab import LEVELS, CollaborativeModel
from dvfo_ros.core.io.datasets import load_dataset

XI_GRID = [i / LEVELS for i in range(LEVELS + 1)]
LAMBDA_GRID = [i / 20 for i in range(21)]


@dataclass
class TrainConfig:
    model: str = "resnet18"
    dataset: str = "scenes"
    split: Optional[int] = None          # None: models.DEFAULT_SPLIT
    input_size: int = 32                 # px; small so a CPU trains it in minutes
    epochs: float = 8.0
    steps: Optional[int] = None          # total optimiser steps (overrides epochs when given)
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    sparsity: float = 1e-3               # L1 on the split feature map: more zeros -> fewer wire bytes
    offload_sparsity: float = 0.0        # L1 on the channels offloaded at this step's xi only
    time_budget_s: Optional[float] = None  # stop early (cosine schedule compressed to fit)
    max_train: Optional[int] = None      # use only the first N training images
    calib_images: int = 512
    max_val: Optional[int] = None        # choose lambda on the first N validation images
    seed: int = 0
    pretrained: bool = False
    init_artifact: Optional[str] = None  # continue from this artifact's weights (same model/split)
    class_order: Optional[List[str]] = None  # the model's class names by output index (a user's labels file):
    #                                      the data set's labels are mapped onto it (its folders sort by name)


def reorder_classes(labels: np.ndarray, classes: List[str], order: List[str]) -> np.ndarray:
    """Labels of a data set whose classes are ``classes`` as indices into ``order`` (the same names)."""
    if sorted(classes) != sorted(order):
        missing, extra = sorted(set(order) - set(classes)), sorted(set(classes) - set(order))
        raise ValueError(f"the data set's classes do not match the labels: missing {missing or '-'}, "
                         f"not in the labels {extra or '-'}")
    index = np.array([order.index(c) for c in classes], dtype=np.int64)
    return index[np.asarray(labels, dtype=np.int64)]


def to_tensor(images: np.ndarray) -> Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1] (what CollaborativeModel.head takes)."""
    return torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float().div_(255.0)


def _augment(x: Tensor, flip: bool, gen: torch.Generator) -> Tensor:
    """Random shift (pad 2, crop) and, where the classes allow it, horizontal flip."""
    b, _, h, w = x.shape
    pad = F.pad(x, (2, 2, 2, 2), mode="replicate")
    dy, dx = torch.randint(0, 5, (2,), generator=gen).tolist()
    x = pad[:, :, dy:dy + h, dx:dx + w]
    if flip:
        sel = torch.rand(b, generator=gen) < 0.5
        x = torch.where(sel[:, None, None, None], x.flip(3), x)
    return x


def quantize_like_codec(feat: Tensor) -> Tensor:
    """What the cloud receives: per (frame, channel) asymmetric int8 with 0 exact (codec.py)."""
    flat = feat.flatten(2)
    lo = flat.amin(2, keepdim=True).clamp(max=0.0)
    hi = flat.amax(2, keepdim=True).clamp(min=0.0)
    scale = torch.where(hi - lo > 0, (hi - lo) / 255.0, torch.ones_like(hi))
    zp = (-128 - torch.round(lo / scale)).clamp(-128, 127)
    q = (torch.round(flat / scale) + zp).clamp(-128, 127)
    return ((q - zp) * scale).view_as(feat)


def train_collab(cfg: TrainConfig, progress: bool = True,
                 log: Callable[[str], None] = print) -> Tuple[CollaborativeModel, Dict[str, Any]]:
    """Train, calibrate, choose lambda; returns the model (meta filled) and a training report."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_tr, y_tr, classes = load_dataset(cfg.dataset, "train", cfg.input_size, 0)
    x_va, y_va, _ = load_dataset(cfg.dataset, "val", cfg.input_size, 0)
    if cfg.class_order:
        y_tr, y_va = reorder_classes(y_tr, classes, cfg.class_order), reorder_classes(y_va, classes, cfg.class_order)
        classes = list(cfg.class_order)
    if cfg.max_train:
        x_tr, y_tr = x_tr[:cfg.max_train], y_tr[:cfg.max_train]
    if cfg.init_artifact:
        model = CollaborativeModel.from_artifact(cfg.init_artifact)
        if model.meta["model"] != cfg.model or int(model.meta["num_classes"]) != len(classes):
            raise ValueError(f"{cfg.init_artifact} is not a {cfg.model} with {len(classes)} classes")
    else:
        model = CollaborativeModel.from_zoo(cfg.model, cfg.split, len(classes), cfg.input_size,
                                            cfg.seed, cfg.pretrained)
    xt, yt = to_tensor(x_tr), torch.from_numpy(np.array(y_tr, copy=True))
    flip = cfg.dataset != "digits"
    batch = max(1, min(cfg.batch_size, len(xt)))   # a set smaller than one batch: one batch of all of it
    steps_per_epoch = max(1, math.ceil(len(xt) / batch))
    total_steps = max(1, int(cfg.steps) if cfg.steps else int(cfg.epochs * steps_per_epoch))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    t0 = time.monotonic()
    step, history = 0, []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total_steps, desc=f"train {cfg.model}/{cfg.dataset}", unit="step", leave=False)
    model.train()
    while step < total_steps:
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt) - batch + 1, batch):
            elapsed = time.monotonic() - t0
            if cfg.time_budget_s and step > 10:
                # shrink the schedule so the cosine decay ends inside the time budget
                projected = elapsed / step * total_steps
                if projected > cfg.time_budget_s:
                    total_steps = max(step + 1, int(cfg.time_budget_s / (elapsed / step)))
            if step >= total_steps:
                break
            frac = step / total_steps
            warmup = max(1, min(50, total_steps // 10))
            lr = cfg.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[i:i + batch]
            x, y = _augment(xt[idx], flip, gen), yt[idx]
            feat = model.head(x)
            y_full, _ = model.tails_masked(feat, 0.0)
            assert y_full is not None  # xi = 0: the whole map goes through the edge tail
            loss_full = F.cross_entropy(y_full, y)
            level = int(torch.randint(1, LEVELS + 1, (1,), generator=gen))
            xi = level / LEVELS
            keep = topk_mask(model.importance(feat), xi)      # one attention pass serves the split and the L1
            y_e, y_c = model.tails_masked(feat, xi, keep_mask=keep)
            assert y_c is not None  # xi >= 1 / LEVELS: some channels go to the cloud tail
            loss_xi = F.cross_entropy(y_c, y)
            if y_e is not None:
                loss_xi = loss_xi + F.cross_entropy(y_e, y) + F.cross_entropy((1 - xi) * y_e + xi * y_c, y)
            loss = loss_full + loss_xi + cfg.sparsity * feat.abs().mean()
            if cfg.offload_sparsity > 0:
                # the least important channels are the ones on the wire: zeros there compress to nothing
                sent = 1.0 - keep.detach()[:, :, None, None]
                loss = loss + cfg.offload_sparsity * (feat * sent).abs().mean() / xi
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if bar is not None:
                bar.total = total_steps
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", xi=f"{xi:.2f}")
            if step % 50 == 0:
                history.append({"step": step, "loss": float(loss.item()), "s": round(time.monotonic() - t0, 1)})
                if bar is None:
                    log(f"step {step}/{total_steps} loss {loss.item():.3f} ({time.monotonic() - t0:.0f} s)")
    if bar is not None:
        bar.close()
    train_s = time.monotonic() - t0
    model.eval()
    calibrate_bn(model, xt[:cfg.calib_images])
    if cfg.max_val:
        x_va, y_va = x_va[:cfg.max_val], y_va[:cfg.max_val]
    lam_rows = choose_lambda(model, to_tensor(x_va), torch.from_numpy(np.array(y_va, copy=True)))
    model.meta.update({
        "dataset": cfg.dataset, "class_names": list(classes),
        "lambda_table": [[r["xi"], r["lambda"]] for r in lam_rows],
        "accuracy": [{"xi": r["xi"], "val_accuracy": r["accuracy"]} for r in lam_rows],
        "train": {**asdict(cfg), "steps": step, "train_s": round(train_s, 1)},
    })
    report = {"steps": step, "train_s": train_s, "history": history, "lambda": lam_rows}
    log(f"trained {cfg.model}/{cfg.dataset}: {step} steps in {train_s:.0f} s; val accuracy "
        + ", ".join(f"xi={r['xi']:.2f}:{r['accuracy']:.3f}" for r in lam_rows[::2]))
    return model, report


@torch.no_grad()
def calibrate_bn(model: CollaborativeModel, x: Tensor, batch: int = 128) -> None:
    """Per-level BN statistics of both tails from training images (US-Nets' post-hoc recipe)."""
    bns = [m for m in model.modules() if isinstance(m, models.SlimBatchNorm2d)]
    feats = head_features(model, x, batch)
    for state in (model.edge_state, model.cloud_state):
        state.calibrating = True
    try:
        for level in range(LEVELS + 1):
            for bn in bns:
                bn.start_calibration()
            for i in range(0, len(feats), batch):
                model.tails_masked(feats[i:i + batch], level / LEVELS)
            for bn in bns:
                if bn.slim is model.edge_state and level < LEVELS:
                    bn.finish_calibration(level)
                if bn.slim is model.cloud_state and level > 0:
                    bn.finish_calibration(level)
    finally:
        for state in (model.edge_state, model.cloud_state):
            state.calibrating = False


@torch.no_grad()
def head_features(model: CollaborativeModel, x: Tensor, batch: int = 256) -> Tensor:
    """The split feature maps of a whole set (computed once, reused for every xi)."""
    return torch.cat([model.head(x[i:i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def tail_logits(model: CollaborativeModel, feats: Tensor, xi: float, quantize: bool = True,
                batch: int = 256) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """(y_edge, y_cloud) over a set's feature maps at one xi; the cloud sees int8-dequantised maps."""
    outs_e, outs_c = [], []
    for i in range(0, len(feats), batch):
        feat = feats[i:i + batch]
        y_e, y_c = model.tails_masked(feat, xi, quantize_like_codec(feat) if quantize else None)
        outs_e.append(y_e)
        outs_c.append(y_c)
    cat = (lambda ys: None if ys[0] is None else torch.cat(ys))  # noqa: E731
    return cat(outs_e), cat(outs_c)


@torch.no_grad()
def choose_lambda(model: CollaborativeModel, x: Tensor, y: Tensor) -> List[Dict[str, float]]:
    """Per xi level, the lambda in LAMBDA_GRID with the best validation accuracy (ties: lower NLL)."""
    rows = []
    feats = head_features(model, x)
    for xi in XI_GRID:
        y_e, y_c = tail_logits(model, feats, xi)
        if y_e is None or y_c is None:
            fused = y_c if y_e is None else y_e
            assert fused is not None  # at any xi at least one tail runs
            lam = 0.0 if y_e is None else 1.0
            rows.append({"xi": xi, "lambda": lam, "accuracy": float((fused.argmax(1) == y).float().mean())})
            continue
        best = None
        for lam in LAMBDA_GRID:
            fused = lam * y_e + (1 - lam) * y_c
            acc = float((fused.argmax(1) == y).float().mean())
            nll = float(F.cross_entropy(fused, y))
            if best is None or (acc, -nll) > (best[1], -best[2]):
                best = (lam, acc, nll)
        assert best is not None  # LAMBDA_GRID is not empty
        rows.append({"xi": xi, "lambda": best[0], "accuracy": best[1]})
    return rows
