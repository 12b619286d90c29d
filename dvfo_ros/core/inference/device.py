"""Where the edge network runs: ``device`` cpu | cuda | auto and the ``fp16`` option, resolved once.

    placement = resolve_device("auto", fp16=True)   # CUDA when torch sees one, else the CPU
    placement.note                                  # one line for the log ("cpu, fp32: fp16 needs CUDA")

``cuda`` on a machine without CUDA is refused (DeviceError, one line): asking for the GPU and silently
getting the CPU would make every latency the policy tunes a CPU latency. fp16 is half precision on CUDA
only; on the CPU the network stays fp32 and the note says so (the caller logs it once).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from dvfo_ros.core.errors import DvfoError

DEVICES = ("cpu", "cuda", "auto")


class DeviceError(ValueError, DvfoError):
    """A device that is unknown or not present on this machine."""


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype
    note: str              # what was asked and what runs, one line

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def cuda_missing_reason() -> Optional[str]:
    """Why ``device=cuda`` cannot run here, or None when it can."""
    if torch.cuda.is_available():
        return None
    built = torch.version.cuda
    return (f"CUDA is not available (torch {torch.__version__} "
            + (f"built for CUDA {built}, but no GPU is visible" if built else "is a CPU-only build")
            + "); use device cpu or auto")


def resolve_device(name: str = "cpu", fp16: bool = False) -> Placement:
    if name not in DEVICES:
        raise DeviceError(f"unknown device '{name}'; choose one of {', '.join(DEVICES)}")
    if name == "cuda":
        reason = cuda_missing_reason()
        if reason:
            raise DeviceError(f"device cuda: {reason}")
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    if use_cuda:
        dev = torch.device("cuda")
        gpu = torch.cuda.get_device_name(dev)
        dtype = torch.float16 if fp16 else torch.float32
        return Placement(dev, dtype, f"cuda ({gpu}), {'fp16' if fp16 else 'fp32'}"
                         + (" (device auto)" if name == "auto" else ""))
    why = " (device auto: no CUDA here)" if name == "auto" else ""
    if fp16:
        return Placement(torch.device("cpu"), torch.float32, f"cpu, fp32{why}: fp16 applies on CUDA only")
    return Placement(torch.device("cpu"), torch.float32, f"cpu, fp32{why}")


def synchronize(placement: Placement) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; timing needs it finished)."""
    if placement.is_cuda:
        torch.cuda.synchronize(placement.device)
