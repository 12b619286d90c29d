"""One interface for every hardware backend the governor can drive (sim, jetson, linux, nvml).

The governor node only talks to this interface, so a policy is tested in the twin and deployed
on a board with the same code. Frequencies are in Hz everywhere.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from dvfo_ros.core.errors import DvfoError
from dvfo_ros.core.mdp.actions import snap

DOMAINS = ("cpu", "gpu", "emc")

# Where a backend sends one-line notes: print, a ROS logger's info (which returns a bool), ...
LogFn = Callable[[str], object]


class HardwareError(RuntimeError, DvfoError):
    """A backend could not read or apply something; the message is one line a user can act on."""


def clamp_to_table(freq_hz: int, table: Sequence[int]) -> int:
    """The highest table entry <= freq_hz (the lowest entry if freq_hz is below the table): the
    MDP's one snapping rule (``mdp.actions.snap``), so a policy's level is what the board applies."""
    if not table:
        raise HardwareError("empty frequency table")
    return int(snap(int(freq_hz), sorted(int(f) for f in table)))


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

    def restore(self) -> Optional[List[str]]:
        """Put back every setting this backend changed since it was opened. Idempotent.

        Returns one line per setting that could not be put back (backends that cannot fail: None)."""

    def close(self) -> None:
        self.restore()
