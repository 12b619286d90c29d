"""A board's profile: its clock tables, voltages, roofline and power numbers (the YAML schema, 1:1), and
where the shipped ones live (``profiles/*.yaml``). ``device.DeviceTwin`` prices frames with one."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Union

import numpy as np
import yaml

from dvfo_ros.core.errors import DvfoError
from dvfo_ros.core.io.yaml_file import read_yaml
from dvfo_ros.core.twin.switching import SwitchCost

DOMAINS = ("cpu", "gpu", "emc")
PROFILE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles")

_SCALARS = ("static_w", "gpu_macs_per_cycle", "gpu_efficiency", "emc_bytes_per_cycle", "emc_efficiency",
            "cpu_macs_per_cycle", "cpu_efficiency", "cpu_pre_cycles", "cpu_post_cycles", "cpu_fuse_cycles",
            "cpu_cycles_per_kernel")


class ProfileError(ValueError, DvfoError):
    """A profile name/file that cannot be loaded or whose numbers make no physical sense."""


@dataclass
class DeviceProfile:
    """One edge device's frequency tables and latency/power model (the YAML schema, 1:1).

    Keys (all frequencies in Hz, ascending; see ``profiles/xavier_nx.yaml`` for a commented one):

    - ``name``, ``description``
    - ``cpu_hz``, ``gpu_hz``, ``emc_hz``: the settable levels of each clock domain
    - ``voltage_v``: per domain, V(f). Either ``{v_min, v_max, knee_hz}`` (flat at v_min up to
      knee_hz, then linear to v_max at the top level: the shape of a Tegra DVFS table) or a list
      with one voltage per table level.
    - ``c_eff_nf``: per domain, effective switched capacitance (nF): P_dyn = c*1e-9*a*f*V^2
    - ``leak_w``: per domain, leakage (W) at v_max, scaled by V/v_max
    - ``idle_activity``: per domain, activity factor a when the domain is idle but clocked
    - ``static_w``: board power that no clock changes (regulators, carrier, DRAM refresh)
    - ``gpu_macs_per_cycle``, ``gpu_efficiency``: GPU peak MAC/cycle and achieved fraction
    - ``emc_bytes_per_cycle``, ``emc_efficiency``: DRAM bytes per EMC clock and achieved fraction
    - ``cpu_macs_per_cycle``, ``cpu_efficiency``: FP32 MACs per CPU clock over all cores (NEON) and the
      achieved fraction, for a network run on the CPU alone (the local-CPU target)
    - ``cpu_pre_cycles``, ``cpu_post_cycles``, ``cpu_fuse_cycles``, ``cpu_cycles_per_kernel``
    - ``thermal``: ``{r_c_per_w, c_j_per_c, ambient_c}`` first-order RC model of the module
    - ``rails``: INA3221 rail name -> list of domains it carries (``static`` = the static share,
      ``all`` = the whole board), so the sim reports power the way tegrastats names it
    - ``switch_cost``: ``{stall_us: {cpu, gpu, emc}, settle_ms: {cpu, gpu, emc}}``, what a clock change
      costs a frame (``switching.py``); absent (the shipped profiles): switching is free
    """

    name: str
    cpu_hz: List[int]
    gpu_hz: List[int]
    emc_hz: List[int]
    description: str = ""
    # per domain: a V per table level, or a knee fit {v_min, v_max, knee_hz}
    voltage_v: Dict[str, Union[List[float], Dict[str, float]]] = field(default_factory=dict)
    c_eff_nf: Dict[str, float] = field(default_factory=dict)
    leak_w: Dict[str, float] = field(default_factory=dict)
    idle_activity: Dict[str, float] = field(default_factory=dict)
    static_w: float = 1.0
    gpu_macs_per_cycle: float = 256.0
    gpu_efficiency: float = 0.4
    emc_bytes_per_cycle: float = 16.0
    emc_efficiency: float = 0.6
    cpu_macs_per_cycle: float = 32.0
    cpu_efficiency: float = 0.25
    cpu_pre_cycles: float = 2.0e6
    cpu_post_cycles: float = 0.5e6
    cpu_fuse_cycles: float = 0.3e6
    cpu_cycles_per_kernel: float = 2.0e4
    thermal: Dict[str, float] = field(default_factory=lambda: {"r_c_per_w": 3.0, "c_j_per_c": 40.0,
                                                               "ambient_c": 25.0})
    rails: Dict[str, List[str]] = field(default_factory=lambda: {"VDD_IN": ["all"]})
    switch_cost: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # PyYAML reads "3.0e6" as a string (YAML 1.1 wants "3.0e+6"): coerce every scalar knob
        for key in _SCALARS:
            try:
                setattr(self, key, float(getattr(self, key)))
            except (TypeError, ValueError):
                raise ProfileError(f"profile {self.name}: {key} must be a number") from None
        for key in ("c_eff_nf", "leak_w", "idle_activity", "thermal"):
            try:
                setattr(self, key, {k: float(v) for k, v in dict(getattr(self, key)).items()})
            except (TypeError, ValueError):
                raise ProfileError(f"profile {self.name}: {key} values must be numbers") from None
        for d in DOMAINS:
            table = [int(f) for f in getattr(self, f"{d}_hz")]
            if not table:
                raise ProfileError(f"profile {self.name}: {d}_hz is empty")
            if any(b <= a for a, b in zip(table, table[1:])) or table[0] <= 0:
                raise ProfileError(f"profile {self.name}: {d}_hz must be positive and strictly ascending")
            setattr(self, f"{d}_hz", table)
            for key in ("c_eff_nf", "leak_w", "idle_activity"):
                getattr(self, key).setdefault(d, 0.0)
                if getattr(self, key)[d] < 0:
                    raise ProfileError(f"profile {self.name}: {key}.{d} must be >= 0")
            self.voltage_v.setdefault(d, {"v_min": 1.0, "v_max": 1.0, "knee_hz": table[-1]})
            v = self.voltage_v[d]
            if isinstance(v, list) and len(v) != len(table):
                raise ProfileError(f"profile {self.name}: voltage_v.{d} has {len(v)} values for "
                                   f"{len(table)} levels")
            if isinstance(v, dict) and not {"v_min", "v_max"} <= set(v):
                raise ProfileError(f"profile {self.name}: voltage_v.{d} needs v_min and v_max")
        try:
            self.switch_cost = SwitchCost.from_dict(self.switch_cost).to_dict() if self.switch_cost else {}
        except ValueError as exc:
            raise ProfileError(f"profile {self.name}: {exc}") from None
        for key in ("gpu_macs_per_cycle", "gpu_efficiency", "emc_bytes_per_cycle", "emc_efficiency",
                    "cpu_macs_per_cycle", "cpu_efficiency"):
            if not getattr(self, key) > 0:
                raise ProfileError(f"profile {self.name}: {key} must be > 0")

    def table(self, domain: str) -> List[int]:
        return list(getattr(self, f"{domain}_hz"))

    def volts(self, domain: str, freq_hz: float) -> float:
        """V(f) of a domain: the table value (interpolated) or the knee fit."""
        table = self.table(domain)
        v = self.voltage_v[domain]
        if isinstance(v, list):
            return float(np.interp(freq_hz, table, [float(x) for x in v]))
        v_min, v_max = float(v["v_min"]), float(v["v_max"])
        knee = float(v.get("knee_hz", table[0]))
        top = float(table[-1])
        if freq_hz <= knee or top <= knee:
            return v_min
        return v_min + (v_max - v_min) * min(1.0, (freq_hz - knee) / (top - knee))

    def v_max(self, domain: str) -> float:
        return self.volts(domain, self.table(domain)[-1])

    def to_yaml(self, path: str) -> None:
        """Write this profile in the schema ``load_profile`` reads (what ``dvfo-profile`` emits)."""
        data = asdict(self)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"# dvfo_ros device profile '{self.name}'; schema: see DeviceProfile docstring\n")
            yaml.safe_dump(data, fh, sort_keys=False, default_flow_style=None)


def list_profiles() -> List[str]:
    """Names of the profiles shipped with the package."""
    return sorted(f[:-5] for f in os.listdir(PROFILE_DIR) if f.endswith(".yaml"))


def load_profile(name_or_path: "str | DeviceProfile") -> DeviceProfile:
    """A shipped profile by name ("nano", "tx2", "xavier_nx", "orin_nx") or a YAML file path."""
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    path = str(name_or_path)
    if not (path.endswith((".yaml", ".yml")) or os.sep in path):
        path = os.path.join(PROFILE_DIR, f"{name_or_path}.yaml")
        if not os.path.isfile(path):
            raise ProfileError(f"unknown profile '{name_or_path}'; choose one of "
                               f"{', '.join(list_profiles())} or give a YAML path")
    data = read_yaml(path, "profile", ProfileError)
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path} must be a mapping")
    known = set(DeviceProfile.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"profile {path}: unknown keys {', '.join(unknown)}")
    missing = [k for k in ("name", "cpu_hz", "gpu_hz", "emc_hz") if k not in data]
    if missing:
        raise ProfileError(f"profile {path}: missing keys {', '.join(missing)}")
    try:
        return DeviceProfile(**data)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"profile {path}: {exc}") from None
