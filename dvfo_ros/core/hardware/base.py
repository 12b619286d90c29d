"""One interface for every hardware backend the governor can drive (sim, jetson, linux, nvml).

The governor node only talks to this interface, so a policy is tested in the twin and deployed
on a board with the same code. Frequencies are in Hz everywhere.
"""
from __future__ import annotations

import abc
import bisect
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

DOMAINS = ("cpu", "gpu", "emc")


class HardwareError(RuntimeError):
    """A backend could not read or apply something; the message is one line a user can act on."""


def clamp_to_table(freq_hz: int, table: Sequence[int]) -> int:
    """The highest table entry <= freq_hz (the lowest entry if freq_hz is below the table)."""
    if not table:
        raise HardwareError("empty frequency table")
    levels = sorted(int(f) for f in table)
    i = bisect.bisect_right(levels, int(freq_hz)) - 1
    return levels[max(i, 0)]


@dataclass
class FrequencyTable:
    """Available frequencies per clock domain, ascending, in Hz."""

    cpu: List[int] = field(default_factory=list)
    gpu: List[int] = field(default_factory=list)
    emc: List[int] = field(default_factory=list)

    def levels(self, domain: str) -> List[int]:
        return list(getattr(self, domain))

    def clamp(self, domain: str, freq_hz: int) -> int:
        return clamp_to_table(freq_hz, self.levels(domain))

    def as_dict(self) -> Dict[str, List[int]]:
        return {d: self.levels(d) for d in DOMAINS}


@dataclass
class Reading:
    """What the device reports right now."""

    cpu_freq_hz: int = 0
    gpu_freq_hz: int = 0
    emc_freq_hz: int = 0
    cpu_util: float = 0.0
    gpu_util: float = 0.0
    emc_util: float = 0.0
    rails_w: Dict[str, float] = field(default_factory=dict)
    power_w: float = 0.0
    energy_j: float = 0.0          # cumulative since the backend was opened
    temperature_c: float = 0.0


@dataclass
class ApplyResult:
    """What a set request became: the clamped targets, what applies now, and refusals."""

    requested: Dict[str, int]
    clamped: Dict[str, int]
    applied: Dict[str, int]
    errors: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class HardwareBackend(abc.ABC):
    """Read clocks/power and set clocks on one device. Implementations must never raise from
    ``apply`` for a refused write: they report it in ``ApplyResult.errors``."""

    name: str = "base"
    profile: str = ""

    @abc.abstractmethod
    def table(self) -> FrequencyTable:
        """Available frequencies of each domain this backend can set (empty list: cannot set)."""

    @abc.abstractmethod
    def read(self) -> Reading:
        """Current clocks, utilisation, power per rail, cumulative energy, temperature."""

    @abc.abstractmethod
    def apply(self, cpu_hz: Optional[int] = None, gpu_hz: Optional[int] = None,
              emc_hz: Optional[int] = None) -> ApplyResult:
        """Clamp each given frequency to the table and apply it; None or 0 leaves a domain alone."""

    def restore(self) -> None:
        """Put back every setting this backend changed since it was opened. Idempotent."""

    def close(self) -> None:
        self.restore()
