"""`nvml` backend: an NVIDIA GPU's clocks, power and energy through NVML (nvidia-ml-py).

The cloud side uses it read-only to report the server's energy per request (the total energy
counter nvmlDeviceGetTotalEnergyConsumption, mJ since the driver loaded, Volta+). Setting clocks
is opt-in (``allow_set=True``, root): gpu -> nvmlDeviceSetGpuLockedClocks, emc (the memory
clock) -> nvmlDeviceSetMemoryLockedClocks; restore resets both locks to the driver default.
API: NVML reference, "Device Queries" and "Device Commands" (docs.nvidia.com/deploy/nvml-api).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from dvfo_ros.core.hardware.base import ApplyResult, FrequencyTable, HardwareBackend, HardwareError, LogFn, \
    Reading, clamp_to_table

MHZ = 1_000_000


class NvmlBackend(HardwareBackend):
    """GPU ``index`` through NVML; read-only unless ``allow_set``."""

    name = "nvml"

    def __init__(self, index: int = 0, allow_set: bool = False, log: Optional[LogFn] = None,
                 nvml: Any = None) -> None:
        if nvml is None:
            try:
                import pynvml  # nvidia-ml-py
            except ImportError:
                raise HardwareError("nvml: nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
            nvml = pynvml
        self.nvml, self.allow_set, self.log = nvml, allow_set, log
        try:
            nvml.nvmlInit()
            self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as e:   # noqa: BLE001 - NVMLError_LibraryNotFound / DriverNotLoaded / ...
            raise HardwareError(f"nvml: no NVIDIA GPU {index} usable ({e})") from None
        name = self._try(nvml.nvmlDeviceGetName, self.handle)
        self.profile = name.decode() if isinstance(name, bytes) else str(name or f"gpu{index}")
        self._energy0_mj = self._try(nvml.nvmlDeviceGetTotalEnergyConsumption, self.handle)
        self._locked: List[str] = []
        self._table = self._read_table()

    def _try(self, fn: Callable, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:   # noqa: BLE001 - unsupported query on this GPU: report nothing
            return None

    def _read_table(self) -> FrequencyTable:
        mem = sorted(self._try(self.nvml.nvmlDeviceGetSupportedMemoryClocks, self.handle) or [])
        gfx: List[int] = []
        if mem:
            gfx = sorted(set(self._try(self.nvml.nvmlDeviceGetSupportedGraphicsClocks, self.handle, mem[-1]) or []))
        return FrequencyTable(gpu=[int(f) * MHZ for f in gfx], emc=[int(f) * MHZ for f in mem])

    def describe(self) -> str:
        mode = "clocks settable" if self.allow_set else "read-only"
        return (f"{self.profile}: {len(self._table.gpu)} graphics / {len(self._table.emc)} memory clock levels, "
                f"{mode}")

    def table(self) -> FrequencyTable:
        return FrequencyTable(gpu=list(self._table.gpu), emc=list(self._table.emc))

    def read(self) -> Reading:
        n, h = self.nvml, self.handle
        gfx = self._try(n.nvmlDeviceGetClockInfo, h, getattr(n, "NVML_CLOCK_GRAPHICS", 0)) or 0
        mem = self._try(n.nvmlDeviceGetClockInfo, h, getattr(n, "NVML_CLOCK_MEM", 2)) or 0
        util = self._try(n.nvmlDeviceGetUtilizationRates, h)
        power_mw = self._try(n.nvmlDeviceGetPowerUsage, h) or 0
        energy_mj = self._try(n.nvmlDeviceGetTotalEnergyConsumption, h)
        temp = self._try(n.nvmlDeviceGetTemperature, h, getattr(n, "NVML_TEMPERATURE_GPU", 0)) or 0
        energy_j = (energy_mj - self._energy0_mj) / 1e3 if energy_mj is not None and self._energy0_mj is not None \
            else 0.0
        return Reading(gpu_freq_hz=int(gfx) * MHZ, emc_freq_hz=int(mem) * MHZ,
                       gpu_util=(util.gpu / 100.0) if util is not None else 0.0,
                       emc_util=(util.memory / 100.0) if util is not None else 0.0,
                       rails_w={"GPU": power_mw / 1e3}, power_w=power_mw / 1e3, energy_j=energy_j,
                       temperature_c=float(temp))

    def apply(self, cpu_hz: Optional[int] = None, gpu_hz: Optional[int] = None,
              emc_hz: Optional[int] = None) -> ApplyResult:
        requested = {d: int(v) for d, v in (("cpu", cpu_hz), ("gpu", gpu_hz), ("emc", emc_hz)) if v}
        res = ApplyResult(requested=requested, clamped={}, applied={})
        if "cpu" in requested:
            res.errors.append("cpu: the nvml backend has no CPU clock (use linux or jetson)")
        setters: Dict[str, str] = {"gpu": "nvmlDeviceSetGpuLockedClocks", "emc": "nvmlDeviceSetMemoryLockedClocks"}
        for d in ("gpu", "emc"):
            if d not in requested:
                continue
            levels = self._table.levels(d)
            if not levels:
                res.errors.append(f"{d}: NVML reports no supported {d} clocks on {self.profile}")
                continue
            res.clamped[d] = clamp_to_table(requested[d], levels)
            if not self.allow_set:
                res.errors.append(f"{d}: nvml backend is read-only (open it with allow_set=True, as root)")
                continue
            mhz = res.clamped[d] // MHZ
            try:
                getattr(self.nvml, setters[d])(self.handle, mhz, mhz)
                if d not in self._locked:
                    self._locked.append(d)
                res.applied[d] = res.clamped[d]
            except Exception as e:   # noqa: BLE001 - NVMLError_NoPermission / NotSupported
                res.errors.append(f"{d}: {setters[d]}({mhz} MHz) refused: {e}")
        return res

    def restore(self) -> List[str]:
        errors = []
        resets = {"gpu": "nvmlDeviceResetGpuLockedClocks", "emc": "nvmlDeviceResetMemoryLockedClocks"}
        for d in list(self._locked):
            try:
                getattr(self.nvml, resets[d])(self.handle)
                self._locked.remove(d)
            except Exception as e:   # noqa: BLE001
                errors.append(f"restore: {resets[d]} failed: {e}")
        if self.log:
            for line in errors:
                self.log(line)
        return errors

    def close(self) -> None:
        try:
            self.restore()
        finally:
            self._try(self.nvml.nvmlShutdown)
