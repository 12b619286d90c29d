"""The action space and its ONE snapping rule, shared with every hardware backend's clamp.

Action: one discrete level per branch ``[cpu, gpu, emc, xi]`` (factorised, so a branching Q-net
learns four small heads instead of one head over thousands of joint combinations). Clock levels
are a subsample of the board's table, so every level the policy picks is a frequency the board
can set exactly.

Snapping (``snap_index``): a value that is not a level becomes **the highest level not above it**
(the lowest level when it is below the table). The governor's backends clamp a requested clock to
their table with the same rule (``hardware.clamp_to_table``), so a policy's recorded level and the
clock the governor applies can never disagree.
"""
from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

BRANCH_NAMES = ("cpu", "gpu", "emc", "xi")
COMMAND_KEYS = ("cpu_freq_hz", "gpu_freq_hz", "emc_freq_hz", "offload_ratio")
# A value within float32 precision of a level is that level (bags store Hz and xi as float32:
# 1907200000 Hz reads back as 1907199944, and 0.3 as 0.29999998).
_REL_TOLERANCE = 1e-6

# What an action parameter accepts: a list of levels, or the int array the policies and env produce.
ActionLike = Union[Sequence[int], np.ndarray]


def _tolerant(value: Any) -> Any:
    return value + np.maximum(np.abs(value) * _REL_TOLERANCE, 1e-9)


def snap_index(value: float, table: Sequence[float]) -> int:
    """Index of the highest entry of an ascending ``table`` not above ``value`` (0 below the table)."""
    if len(table) == 0:
        raise ValueError("empty table")
    i = bisect.bisect_right(list(table), float(_tolerant(float(value)))) - 1
    return max(i, 0)


def snap_indices(values: np.ndarray, table: Sequence[float]) -> np.ndarray:
    """``snap_index`` over an array of values (offline training maps whole bags at once)."""
    t = np.asarray(table, dtype=np.float64)
    idx = np.searchsorted(t, _tolerant(np.asarray(values, dtype=np.float64)), side="right") - 1
    return np.maximum(idx, 0).astype(np.int64)


def snap(value: float, table: Sequence[float]) -> float:
    """The table entry ``snap_index`` picks."""
    return table[snap_index(value, table)]


def _subsample(table: Sequence[int], n: Optional[int]) -> List[int]:
    """n levels spread evenly over an ascending table, always keeping its min and max."""
    table = [int(f) for f in table]
    if n is None or n >= len(table):
        return table
    if n < 1:
        raise ValueError("a branch needs at least one level")
    if n == 1:
        return [table[-1]]
    idx = sorted(set(int(round(i)) for i in np.linspace(0, len(table) - 1, n)))
    return [table[i] for i in idx]


@dataclass
class ActionSpace:
    """The discrete levels each branch can pick: clocks in Hz (ascending), offload ratio xi in [0, 1]."""

    cpu_hz: List[int]
    gpu_hz: List[int]
    emc_hz: List[int]
    offload_ratios: List[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])

    def __post_init__(self) -> None:
        for name in ("cpu_hz", "gpu_hz", "emc_hz"):
            table = [int(f) for f in getattr(self, name)]
            if not table or any(b <= a for a, b in zip(table, table[1:])) or table[0] <= 0:
                raise ValueError(f"ActionSpace.{name} must be positive, ascending and non-empty")
            setattr(self, name, table)
        xis = [float(x) for x in self.offload_ratios]
        if not xis or any(b <= a for a, b in zip(xis, xis[1:])) or xis[0] < 0 or xis[-1] > 1:
            raise ValueError("ActionSpace.offload_ratios must be ascending values in [0, 1]")
        self.offload_ratios = xis

    @classmethod
    def from_profile(cls, profile: Any, cpu_levels: Optional[int] = 5, gpu_levels: Optional[int] = 8,
                     emc_levels: Optional[int] = 4, offload_levels: int = 11) -> "ActionSpace":
        """Sub-sample a device's big tables (25 CPU levels x ...) into a learnable grid; None keeps all."""
        xis = [round(float(x), 4) for x in np.linspace(0.0, 1.0, max(offload_levels, 1))] \
            if offload_levels > 1 else [0.0]
        return cls(_subsample(profile.cpu_hz, cpu_levels), _subsample(profile.gpu_hz, gpu_levels),
                   _subsample(profile.emc_hz, emc_levels), xis)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ActionSpace":
        return cls(list(d["cpu_hz"]), list(d["gpu_hz"]), list(d["emc_hz"]), list(d["offload_ratios"]))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def tables(self) -> Tuple[List[int], List[int], List[int], List[float]]:
        return self.cpu_hz, self.gpu_hz, self.emc_hz, self.offload_ratios

    @property
    def branches(self) -> Tuple[int, int, int, int]:
        """Number of levels per branch (cpu, gpu, emc, xi)."""
        return tuple(len(t) for t in self.tables())  # type: ignore[return-value]

    @property
    def size(self) -> int:
        """Joint action count: what a flat Q-head would have to cover."""
        return int(np.prod(self.branches))

    def level_fraction(self, level: int, branch: str) -> float:
        """Level index -> [0, 1] position in that branch's table (what the state carries)."""
        n = self.branches[BRANCH_NAMES.index(branch)]
        return level / (n - 1) if n > 1 else 1.0

    def level_of(self, branch: str, value: float) -> int:
        """The level a value (Hz, or xi) snaps to on one branch: the one rule, ``snap_index``."""
        return snap_index(value, self.tables()[BRANCH_NAMES.index(branch)])

    def validate(self, action: ActionLike) -> np.ndarray:
        a = np.asarray(action, dtype=np.int64).reshape(-1)
        if a.shape != (4,) or np.any(a < 0) or np.any(a >= np.asarray(self.branches)):
            raise ValueError(f"action {list(a)} outside the action space {self.branches}")
        return a

    def to_command(self, action: ActionLike) -> Dict[str, Union[int, float]]:
        """Discrete levels -> the command the governor and executor apply."""
        a = self.validate(action)
        return {"cpu_freq_hz": self.cpu_hz[a[0]], "gpu_freq_hz": self.gpu_hz[a[1]],
                "emc_freq_hz": self.emc_hz[a[2]], "offload_ratio": self.offload_ratios[a[3]]}

    def from_command(self, cmd: Dict[str, Any]) -> np.ndarray:
        """A command (any Hz / xi values) -> levels by the snapping rule; missing keys pick the top level / xi=0."""
        defaults = (self.cpu_hz[-1], self.gpu_hz[-1], self.emc_hz[-1], 0.0)
        out = []
        tables: Tuple[Sequence[float], ...] = self.tables()
        for key, table, default in zip(COMMAND_KEYS, tables, defaults):
            value = cmd.get(key)
            out.append(snap_index(float(default if value is None else value), table))
        return np.asarray(out, dtype=np.int64)

    def snap_command(self, cmd: Dict[str, Any]) -> Dict[str, Union[int, float]]:
        """The command the governor will really apply for a request: its snapped levels, as values."""
        return self.to_command(self.from_command(cmd))

    def max_action(self, offload_ratio: float = 0.0) -> np.ndarray:
        """All clocks at the top level (jetson_clocks) with the given xi."""
        b = self.branches
        return np.asarray([b[0] - 1, b[1] - 1, b[2] - 1,
                           self.from_command({"offload_ratio": offload_ratio})[3]], dtype=np.int64)

    def all_actions(self) -> np.ndarray:
        """Every joint action, shape [size, 4] (the oracle's search space)."""
        grids = np.meshgrid(*[np.arange(n) for n in self.branches], indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return np.asarray([rng.integers(n) for n in self.branches], dtype=np.int64)


@dataclass(frozen=True)
class ActionExtras:
    """What a seed policy decides beyond ``[cpu, gpu, emc, xi]``: DvfoAction's optional fields.

    The neutral value of each (-1 / '') leaves that choice as the executor has it. ``split_index`` is a
    whole-layer partition point (``twin.partition_points``): 0 = the image goes to the server,
    1..S-1 = the device runs that many stages and the server the rest, S = all on the device.
    """

    split_index: int = -1
    exit_point: int = -1
    model_variant: str = ""
    target: str = ""


NO_EXTRAS = ActionExtras()
