"""The edge half of collaborative inference for one frame: head, attention split, offload, edge
tail, wait for the cloud until the frame's deadline, fuse. ROS-free; the executor node is a shell.

Timing: measured on this machine. When a device twin is given (the `sim` backend), the edge
compute time and energy are the twin's at the clocks that apply, because this machine's CPU is
not the robot's board; transfer and cloud times stay measured on the real ZeroMQ link.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from dvfo_ros.core.inference.attention import rank_channels
from dvfo_ros.core.inference.device import Placement, resolve_device, synchronize
from dvfo_ros.core.mdp.energy import frame_energy_j, frame_interval_ms
from dvfo_ros.core.mdp.features import importance_summary
from dvfo_ros.core.wire.codec import CodecError, encode_features

if TYPE_CHECKING:   # link imports zmq, which only a configured cloud link needs
    from dvfo_ros.core.wire.link import CurveKeys


@dataclass
class Clocks:
    cpu_freq_hz: int = 0
    gpu_freq_hz: int = 0
    emc_freq_hz: int = 0
    power_w: float = 0.0


@dataclass
class FrameOutcome:
    top_classes: List[int]
    top_scores: List[float]
    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    total_ms: float
    energy_j: float
    offload_ratio: float
    fusion_weight: float
    bytes_sent: int
    raw_bytes: int
    cloud_used: bool
    fallback: bool
    fallback_reason: str = ""
    importance: Dict[str, float] = field(default_factory=dict)
    split_index: int = -1          # the whole-layer cut the frame ran at (-1: DVFO's channel split)
    target: str = ""               # where it ran (mdp.TARGETS), '' = DVFO's channel split


def curve_client_keys(server_key_file: str, client_secret_file: str) -> CurveKeys:
    """CloudLink keyword arguments for CurveZMQ from dvfo-keygen files ({} when not configured)."""
    if not server_key_file:
        return {}
    import zmq.auth
    server_public, _ = zmq.auth.load_certificate(server_key_file)
    if not client_secret_file:   # CloudLink makes a throwaway client key pair
        return {"curve_server_public": server_public}
    public, secret = zmq.auth.load_certificate(client_secret_file)
    if secret is None:
        raise ValueError(f"{client_secret_file} holds no secret key (use the .key_secret file)")
    return {"curve_server_public": server_public, "curve_public": public, "curve_secret": secret}


def preprocess(rgb: np.ndarray, input_size: int) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> float [1, 3, S, S] in [0, 1] (the model normalises inside)."""
    import cv2
    if rgb.shape[0] != input_size or rgb.shape[1] != input_size:
        rgb = cv2.resize(rgb, (input_size, input_size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).float().div_(255.0)[None]


RESIZE_MODES = ("stretch", "keep_aspect", "crop")


def resize_mode(keep_aspect: bool = False, crop: bool = False) -> str:
    """The executor's two options as one mode; both at once is refused (letterbox or crop, not both)."""
    if keep_aspect and crop:
        raise ValueError("keep_aspect and crop exclude each other: letterbox the whole frame, or crop its centre")
    return "keep_aspect" if keep_aspect else "crop" if crop else "stretch"


def letterbox_layout(h: int, w: int, size: int) -> Tuple[int, int, int, int]:
    """(top, left, rows, cols) of an h x w frame scaled to fit a size x size square, centred."""
    scale = size / max(h, w)
    rows, cols = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    return (size - rows) // 2, (size - cols) // 2, rows, cols


def center_square(rgb: np.ndarray) -> np.ndarray:
    """The centred min(h, w) square of a frame: a view, no copy."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return rgb[top:top + side, left:left + side]


class InputBuffer:
    """RGB uint8 [H, W, 3] -> the head's normalised input [1, 3, S, S] in one preallocated tensor.

    ``mode``: stretch (resize to S x S, today's behaviour), keep_aspect (scale the long side to S and pad
    the rest with the normalisation mean, ~0 after normalising: a letterbox), crop (the centred
    square, then resize). The same arithmetic as ``model.head(preprocess(rgb))`` in stretch mode (/255,
    - mean, / std: the same values, bit for bit), done in place: one cast-and-transpose copy into the
    buffer, no per-frame allocation (the letterbox canvas is refilled only when the frame size changes).
    On CUDA the frame is copied into a preallocated device tensor (fp16 with ``dtype``) and normalised
    there. Not for concurrent use: the next frame overwrites it.
    """

    def __init__(self, input_size: int, mean: torch.Tensor, std: torch.Tensor, mode: str = "stretch",
                 device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> None:
        if mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode '{mode}'; choose one of {', '.join(RESIZE_MODES)}")
        self.size = int(input_size)
        self.mode = mode
        self._array = np.empty((3, self.size, self.size), np.float32)
        self._tensor = torch.from_numpy(self._array)[None]
        self._resized = np.empty((self.size, self.size, 3), np.uint8)
        mean_px = mean.detach().reshape(3).cpu().numpy() * 255.0
        self._pad = np.round(mean_px).clip(0, 255).astype(np.uint8)
        self._layout: Optional[Tuple[int, int, int, int]] = None
        self.device = torch.device("cpu") if device is None else device
        on_device = self.device.type != "cpu" or dtype != torch.float32
        self._out = torch.empty((1, 3, self.size, self.size), device=self.device, dtype=dtype) if on_device \
            else self._tensor
        self._mean = mean.detach().reshape(1, 3, 1, 1).to(self.device, dtype)
        self._std = std.detach().reshape(1, 3, 1, 1).to(self.device, dtype)

    def square(self, rgb: np.ndarray) -> np.ndarray:
        """The frame as the S x S uint8 RGB picture the network sees (before normalising)."""
        import cv2
        s = self.size
        if self.mode == "crop":
            rgb = center_square(rgb)
        if self.mode != "keep_aspect" or rgb.shape[0] == rgb.shape[1]:
            if rgb.shape[0] == s and rgb.shape[1] == s:
                return rgb
            self._layout = None             # the whole canvas is overwritten: a letterbox must repaint
            return cv2.resize(rgb, (s, s), dst=self._resized, interpolation=cv2.INTER_AREA)
        layout = letterbox_layout(rgb.shape[0], rgb.shape[1], s)
        if layout != self._layout:          # a new frame size: repaint the borders once
            self._resized[:] = self._pad
            self._layout = layout
        top, left, rows, cols = layout
        view = self._resized[top:top + rows, left:left + cols]
        out = cv2.resize(rgb, (cols, rows), dst=view, interpolation=cv2.INTER_AREA)
        if out is not view:
            np.copyto(view, out)
        return self._resized

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        np.copyto(self._array, self.square(rgb).transpose(2, 0, 1))
        if self._out is not self._tensor:
            self._out.copy_(self._tensor)
        return self._out.div_(255.0).sub_(self._mean).div_(self._std)


class EdgeInference:
    """Runs frames through a CollaborativeModel, offloading through a CloudLink when xi > 0."""

    def __init__(self, model, link=None, deadline_ms: float = 200.0, top_k: int = 5,
                 twin=None, workload=None, placement: Optional[Placement] = None, resize: str = "stretch") -> None:
        self.model = model
        self.link = link
        self.deadline_ms = deadline_ms
        self.top_k = top_k
        self.twin = twin
        self.workload = workload
        self._full_tail_flops = max(1, int(model.edge_tail_flops(0.0)))
        # head, attention and edge tail on the chosen device (the offloaded channels go to CPU for the wire)
        self.placement = placement or resolve_device("cpu")
        if self.placement.is_cuda:
            model.to(self.placement.device, self.placement.dtype)
        self._input = InputBuffer(int(model.meta["input_size"]), model.pixel_mean, model.pixel_std, resize,
                                  self.placement.device, self.placement.dtype)
        self._cpu: Optional[Tuple[Any, InputBuffer]] = None     # the local-CPU target's copy, on CUDA only

    @property
    def resize(self) -> str:
        """How a frame becomes the square input: stretch, keep_aspect (letterbox) or crop."""
        return self._input.mode

    @resize.setter
    def resize(self, mode: str) -> None:
        if mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode '{mode}'; choose one of {', '.join(RESIZE_MODES)}")
        for buffer in (self._input,) + ((self._cpu[1],) if self._cpu is not None else ()):
            buffer.mode = mode
            buffer._layout = None

    @torch.inference_mode()
    def process(self, rgb: np.ndarray, seq: int, offload_ratio: float, fusion_weight: float = -1.0,
                clocks: Optional[Clocks] = None, frame_period_ms: Optional[float] = None,
                importance: bool = True) -> FrameOutcome:
        """One frame. ``frame_period_ms`` (time since the previous camera frame): with the twin, the
        frame's energy then also covers the board's idle power until the next frame, as in training.
        ``importance=False``: a frame that offloads nothing skips the attention (its outcome then has
        no importance summary); a frame that offloads ranks its channels with it and reports it anyway."""
        m = self.model
        t0 = time.perf_counter()
        deadline = t0 + self.deadline_ms / 1000.0
        feat = m.head_net(self._input(rgb))
        xi = float(min(max(offload_ratio, 0.0), 1.0)) if self.link is not None else 0.0
        n_off = int(round(xi * m.channels))
        scores = m.importance(feat)[0] if importance or n_off > 0 else None
        keep_idx: Optional[torch.Tensor] = None    # None: every channel stays, in order (xi = 0); the tail
        off_idx: Optional[torch.Tensor] = None     # then runs as the original model, with no gather
        if n_off > 0 and scores is not None:
            keep_idx, off_idx = rank_channels(scores, xi)
        sent = raw = 0
        offloaded = off_idx is not None and off_idx.numel() > 0
        reason = ""
        t_sent = time.perf_counter()
        if offloaded and off_idx is not None:
            try:
                frames = encode_features(
                    feat[0, off_idx].float().cpu().numpy(), off_idx.cpu().numpy(), model=m.meta["model"],
                    split=int(m.meta["split"]), seq=seq, deadline=time.time() + self.deadline_ms / 1000.0,
                    total_channels=int(m.channels), artifact_id=str(m.meta.get("artifact_id", "")))
                raw = int(off_idx.numel() * feat.shape[2] * feat.shape[3] * 4)
                sent = self.link.submit(frames, seq)
                if not sent:   # link down: do not wait for an answer that cannot come
                    offloaded, reason = False, "cloud link down"
            except CodecError as e:
                offloaded, reason = False, f"encode failed: {e}"
            t_sent = time.perf_counter()
        if keep_idx is None:
            y_edge = m.edge_tail_full(feat)
        else:
            y_edge = m.edge_tail(feat[:, keep_idx], keep_idx) if keep_idx.numel() > 0 else None
        synchronize(self.placement)
        t_edge = time.perf_counter()
        y_cloud = None
        cloud_ms = transfer_ms = 0.0
        waited_ms = 0.0
        if offloaded:
            answer, cloud_ms, waited_ms, reason = self._await_cloud(seq, deadline, t_sent)
            if answer is not None:
                y_cloud = torch.from_numpy(answer).reshape(1, -1).to(self.placement.device, self.placement.dtype)
                transfer_ms = max(0.0, waited_ms - cloud_ms)
        fallback = offloaded and y_cloud is None or bool(reason)
        t_fb = time.perf_counter()
        if y_edge is None and y_cloud is None:
            # Everything was offloaded and nothing came back: run the whole tail here.
            y_edge = m.edge_tail_full(feat)
        fb_ms = (time.perf_counter() - t_fb) * 1000.0
        if y_cloud is None:
            lam = 1.0
        elif y_edge is None:
            lam = 0.0
        else:
            lam = float(fusion_weight) if fusion_weight >= 0.0 else float(m.fusion_weight(xi))
        logits = m.fuse(y_edge, y_cloud, lam)
        top_classes, top_scores = self._top(logits)
        total_ms = (time.perf_counter() - t0) * 1000.0
        edge_ms = ((t_sent - t0) + (t_edge - t_sent)) * 1000.0 + fb_ms
        energy = 0.0
        if self.twin is not None and self.workload is not None and clocks is not None and clocks.gpu_freq_hz:
            frac = m.edge_tail_flops(xi if not fallback else 0.0) / self._full_tail_flops
            cost = self.twin.frame_cost(self.workload, clocks.cpu_freq_hz, clocks.gpu_freq_hz, clocks.emc_freq_hz,
                                        xi if offloaded else 0.0, bandwidth_mbps=1e4, rtt_ms=0.0,
                                        edge_tail_fraction=frac)
            edge_ms = float(cost.edge_ms)
            total_ms = max(edge_ms, transfer_ms + cloud_ms) if y_cloud is not None else edge_ms + waited_ms
            busy_j = float(cost.power_w) * total_ms / 1000.0 if cost.power_w else float(cost.energy_j)
            energy = self._over_period(busy_j, total_ms, clocks, frame_period_ms)
        elif clocks is not None:
            energy = clocks.power_w * total_ms / 1000.0
        return FrameOutcome(
            top_classes=top_classes, top_scores=top_scores,
            edge_ms=edge_ms, transfer_ms=transfer_ms, cloud_ms=cloud_ms, total_ms=total_ms, energy_j=energy,
            offload_ratio=xi if offloaded else 0.0, fusion_weight=lam, bytes_sent=int(sent), raw_bytes=raw,
            cloud_used=y_cloud is not None, fallback=bool(fallback), fallback_reason=reason,
            importance=importance_summary(scores.float().cpu().numpy()) if scores is not None else {})

    def _await_cloud(self, seq: int, deadline: float, t_sent: float,
                     link: Any = None) -> Tuple[Optional[np.ndarray], float, float, str]:
        """(logits or None, cloud_ms, ms waited since ``t_sent``, why there are none) for an offloaded frame:
        its reply on ``link`` (default: this engine's), waited for until the frame's deadline."""
        link = self.link if link is None else link
        assert link is not None
        reply = link.wait(seq, max(0.0, deadline - time.perf_counter()))
        waited_ms = (time.perf_counter() - t_sent) * 1000.0
        if reply is None:
            return None, 0.0, waited_ms, f"no cloud answer within {self.deadline_ms:.0f} ms"
        if reply.error or reply.logits is None:
            return None, 0.0, waited_ms, f"cloud error: {reply.error}"
        return np.asarray(reply.logits, dtype=np.float32), float(reply.cloud_ms), waited_ms, ""

    def _top(self, logits: torch.Tensor) -> Tuple[List[int], List[float]]:
        """The frame's top-k classes and their softmax scores."""
        probs = torch.softmax(logits[0].float(), dim=0).cpu()
        top = torch.topk(probs, min(self.top_k, probs.numel()))
        return [int(i) for i in top.indices], [float(v) for v in top.values]

    def _idle_w(self, clocks: Clocks) -> float:
        assert self.twin is not None
        return float(self.twin.idle_power_w(clocks.cpu_freq_hz, clocks.gpu_freq_hz, clocks.emc_freq_hz))

    def _over_period(self, busy_j: float, total_ms: float, clocks: Clocks, frame_period_ms: Optional[float]) -> float:
        """The frame's twin energy over its interval: busy energy plus idle power until the next frame."""
        interval_ms = frame_interval_ms(frame_period_ms, total_ms)
        return float(frame_energy_j(busy_j, total_ms, self._idle_w(clocks), interval_ms))

    def _on_cpu(self) -> Tuple[Any, Any]:
        """(model, input buffer) on the CPU for the local-CPU target: this engine's own on a CPU placement,
        else an fp32 copy made once."""
        if not self.placement.is_cuda:
            return self.model, self._input
        if self._cpu is None:
            import copy
            cpu_model = copy.deepcopy(self.model).to(torch.device("cpu"), torch.float32)
            self._cpu = (cpu_model, InputBuffer(int(cpu_model.meta["input_size"]), cpu_model.pixel_mean,
                                                cpu_model.pixel_std, self._input.mode))
        return self._cpu

    @torch.inference_mode()
    def process_partition(self, rgb: np.ndarray, seq: int, split: int, offload: bool = True,
                          clocks: Optional[Clocks] = None, frame_period_ms: Optional[float] = None, *,
                          link: Any = None, target: str = "") -> FrameOutcome:
        """One frame cut at a whole-layer partition point (Neurosurgeon's decision): stages 0..split-1 of
        the all-local network here, the whole map after them to the server, which runs the rest (split 0
        sends the normalised image; split >= num_stages, no link, or ``offload`` False: all here). A dead
        or late server means the remaining stages run here: the frame is still answered.
        ``link``: the server to use (None: this engine's; the LAN edge server's for target edge).
        ``target`` cpu: every stage on the CPU cores (the twin prices it on the CPU too)."""
        on_cpu = target == "cpu"
        m, to_input = self._on_cpu() if on_cpu else (self.model, self._input)
        link = self.link if link is None else link
        n = m.num_stages
        k = n if on_cpu else min(max(int(split), 0), n)
        t0 = time.perf_counter()
        deadline = t0 + self.deadline_ms / 1000.0
        x = m.run_stages(to_input(rgb), 0, k)
        logits = None
        reason = ""
        sent = raw = 0
        cloud_ms = transfer_ms = wait_ms = 0.0
        t_sent = time.perf_counter()
        if offload and k < n and link is not None:
            c = int(x.shape[1])
            wire = x[0].float().cpu().numpy().reshape(c, *(list(x.shape[2:]) + [1, 1])[:2])
            try:
                frames = encode_features(wire, np.arange(c), model=m.meta["model"], split=k, seq=seq,
                                         deadline=time.time() + self.deadline_ms / 1000.0, total_channels=c,
                                         artifact_id=str(m.meta.get("artifact_id", "")), kind="partition")
                raw = int(wire.size * 4)
                sent = link.submit(frames, seq)
                reason = "" if sent else "cloud link down"
            except CodecError as e:
                reason = f"encode failed: {e}"
            t_sent = time.perf_counter()
            if sent:
                answer, cloud_ms, wait_ms, reason = self._await_cloud(seq, deadline, t_sent, link)
                if answer is not None:
                    logits = torch.from_numpy(answer).reshape(1, -1)
                    transfer_ms = max(0.0, wait_ms - cloud_ms)
        cloud_used = logits is not None
        t_local = time.perf_counter()
        if logits is None:                      # all local, or the server did not answer: finish here
            logits = m.run_stages(x, k, n)
        synchronize(self.placement)
        local_ms = (time.perf_counter() - t_local) * 1000.0
        top_classes, top_scores = self._top(logits)
        edge_ms = (t_sent - t0) * 1000.0 + local_ms
        total_ms = (time.perf_counter() - t0) * 1000.0
        energy = 0.0
        if self.twin is not None and clocks is not None and clocks.gpu_freq_hz:
            from dvfo_ros.core.twin import partition_workload
            work = partition_workload(m.meta["model"], n if not cloud_used else k, int(m.meta["input_size"]),
                                      int(m.meta["num_classes"]))
            cost = self.twin.frame_cost(work, clocks.cpu_freq_hz, clocks.gpu_freq_hz, clocks.emc_freq_hz,
                                        1.0 if cloud_used else 0.0, bandwidth_mbps=1e4, rtt_ms=0.0, on_cpu=on_cpu)
            edge_ms = float(cost.edge_ms)
            total_ms = edge_ms + wait_ms
            busy_j = float(cost.power_w) * edge_ms / 1000.0 + self._idle_w(clocks) * wait_ms / 1000.0
            energy = self._over_period(busy_j, total_ms, clocks, frame_period_ms)
        elif clocks is not None:
            energy = clocks.power_w * total_ms / 1000.0
        return FrameOutcome(
            top_classes=top_classes, top_scores=top_scores,
            edge_ms=edge_ms, transfer_ms=transfer_ms, cloud_ms=cloud_ms, total_ms=total_ms, energy_j=energy,
            offload_ratio=1.0 if cloud_used else 0.0, fusion_weight=0.0 if cloud_used else 1.0,
            bytes_sent=int(sent), raw_bytes=raw, cloud_used=cloud_used, fallback=bool(reason),
            fallback_reason=reason, split_index=k, target=target)

