"""Safe reads and writes of sysfs/debugfs files under a configurable root.

Every real backend (jetson, linux) goes through these helpers so that:
- everything can run against a copied or fake tree (``root``), which is how the tests run;
- a read that fails returns None instead of raising (a missing rail must not kill the governor);
- a write that the kernel refuses becomes ONE line naming the path (never an exception);
- the value of every file is remembered before the first write to it, so ``restore()`` can put
  the board back exactly as it was found (the robot must never be left slow or hot by us).
"""
from __future__ import annotations

import errno
import os
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from dvfo_ros.core.hardware.base import LogFn


class SysfsTree:
    """Read-only view of a sysfs/debugfs/procfs tree rooted at ``root`` ('/' on a real board)."""

    def __init__(self, root: str = "/") -> None:
        self.root = os.path.abspath(root or "/")

    def path(self, abs_path: str) -> str:
        """Map an absolute board path ('/sys/...') to the file under this root."""
        return os.path.join(self.root, abs_path.lstrip("/"))

    def exists(self, abs_path: str) -> bool:
        return os.path.exists(self.path(abs_path))

    def isdir(self, abs_path: str) -> bool:
        return os.path.isdir(self.path(abs_path))

    def isfile(self, abs_path: str) -> bool:
        return os.path.isfile(self.path(abs_path))

    def listdir(self, abs_path: str) -> List[str]:
        try:
            return sorted(os.listdir(self.path(abs_path)))
        except OSError:
            return []

    def read_str(self, abs_path: str) -> Optional[str]:
        # device-tree strings end in NUL; sysfs values end in a newline
        try:
            with open(self.path(abs_path), "r", encoding="utf-8", errors="replace") as f:
                return f.read().replace("\x00", " ").strip()
        except OSError:
            return None

    def read_int(self, abs_path: str) -> Optional[int]:
        text = self.read_str(abs_path)
        if text is None:
            return None
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            return None

    def read_ints(self, abs_path: str) -> List[int]:
        """All integer tokens of a space-separated list file (other tokens, e.g. '(kHz)', skipped)."""
        text = self.read_str(abs_path) or ""
        out = []
        for tok in text.split():
            try:
                out.append(int(tok))
            except ValueError:
                continue
        return out

    def writable(self, abs_path: str) -> bool:
        """Best guess whether a write could succeed (root ignores modes, so this is a hint only)."""
        p = self.path(abs_path)
        return os.path.isfile(p) and os.access(p, os.W_OK)


def _describe(err: OSError) -> str:
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (run as root)"
    if err.errno == errno.EROFS:
        return "read-only file system"
    if err.errno == errno.ENOENT:
        return "no such file (node missing on this board/kernel)"
    if err.errno == errno.EISDIR:
        return "is a directory, not a settable file"
    if err.errno == errno.EINVAL:
        return "value rejected by the kernel (EINVAL)"
    if err.errno == errno.EBUSY:
        return "device busy (EBUSY)"
    return err.strerror or str(err)


class SysfsWriter:
    """Writes sysfs settings and remembers each file's original value before the first write.

    ``snapshot()`` records originals up front (the governor calls it at start, BEFORE any
    write); ``restore()`` writes back every file this writer changed, newest first, with a
    second pass for writes that an ordering constraint refused (min_freq > max_freq).
    """

    def __init__(self, tree: SysfsTree, log: Optional[LogFn] = None) -> None:
        self.tree = tree
        self.log = log
        self.originals: Dict[str, str] = {}
        self._changed: List[str] = []          # order of first write, for a reverse restore
        # state.py: with a state file, each file's original is persisted BEFORE the first write to it,
        # so a watchdog / the next start / `dvfo-hw --restore` can put it back after a SIGKILL
        self.state_file: Optional[str] = None
        self.backend_name = ""
        self._persisted: List[str] = []

    def persist_to(self, state_file: Optional[str], backend_name: str = "") -> None:
        """Record originals in ``state_file`` from now on (None: stop); writes what is changed already."""
        self.state_file, self.backend_name = state_file, backend_name or self.backend_name
        self._persisted = []
        if state_file and self._changed:
            self._persist(list(self._changed))

    def _persist(self, paths: List[str]) -> None:
        from dvfo_ros.core.hardware import state
        assert self.state_file is not None
        state.write_state(self.state_file, self.backend_name, self.tree.root,
                          {self.tree.path(p): self.originals[p] for p in paths})
        self._persisted = list(paths)

    def snapshot(self, paths: Iterable[str]) -> None:
        """Remember the current value of each readable path (first value wins)."""
        for p in paths:
            if p not in self.originals:
                val = self.tree.read_str(p)
                if val is not None:
                    self.originals[p] = val

    def write(self, abs_path: str, value: object) -> Optional[str]:
        """Write one value; None on success, else one line naming the path and the reason."""
        if abs_path not in self.originals:
            self.snapshot([abs_path])
        if self.state_file and abs_path in self.originals and abs_path not in self._persisted:
            try:
                self._persist(self._persisted + [abs_path])
            except OSError as e:   # no state dir: the write goes ahead, the in-process restore still works
                if self.log:
                    self.log(f"cannot record original clocks in {self.state_file}: {e}")
                self.state_file = None
        err = self._raw_write(abs_path, value)
        if err is None and abs_path in self.originals and abs_path not in self._changed:
            self._changed.append(abs_path)
        return err

    def _raw_write(self, abs_path: str, value: object) -> Optional[str]:
        # O_WRONLY without O_CREAT: like sysfs, a missing node is ENOENT, never a new file
        try:
            fd = os.open(self.tree.path(abs_path), os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, f"{value}\n".encode())
            finally:
                os.close(fd)
            return None
        except OSError as e:
            return f"write {value} to {abs_path} refused: {_describe(e)}"

    @property
    def changed(self) -> List[str]:
        return list(self._changed)

    def restore(self) -> List[str]:
        """Put back every changed file; returns one line per file that could not be restored."""
        from dvfo_ros.core.hardware.state import write_back
        errors = write_back(self._changed, self.originals, self._raw_write)
        self._changed = [p for p in self._changed if p in errors]
        if self.state_file:
            from dvfo_ros.core.hardware import state
            try:
                if self._changed:
                    self._persist(list(self._changed))
                else:
                    state.remove_state(self.state_file)
                    self._persisted = []
            except OSError:
                pass
        lines = [f"restore: {e}" for e in errors.values()]
        if self.log:
            for line in lines:
                self.log(line)
        return lines


def set_min_max(writer: SysfsWriter, min_path: str, max_path: str, freq: int) -> List[str]:
    """Pin a clock by writing min = max = freq in the order the kernel accepts.

    cpufreq and devfreq refuse min > max (EINVAL on older kernels): raise max first when going
    up, lower min first when going down.
    """
    cur_max = writer.tree.read_int(max_path)
    order = (max_path, min_path) if cur_max is None or freq >= cur_max else (min_path, max_path)
    errors = []
    for p in order:
        err = writer.write(p, freq)
        if err:
            errors.append(err)
    return errors


# --- shared readers --------------------------------------------------------------------------

THERMAL_DIR = "/sys/class/thermal"   # == /sys/devices/virtual/thermal (jtop core/temperature.py)
TEMPERATURE_OFFLINE_MC = -256000      # jtop: zones reporting this are offline


def read_thermal_zones(tree: SysfsTree) -> Dict[str, float]:
    """{zone type: deg C} from thermal_zoneN/{type,temp} (temp in milli-degC).

    PMIC zones are skipped as jtop does (a fixed value on TX boards, not a die temperature)."""
    zones: Dict[str, float] = {}
    for item in tree.listdir(THERMAL_DIR):
        if not item.startswith("thermal_zone"):
            continue
        name = tree.read_str(f"{THERMAL_DIR}/{item}/type") or item
        milli = tree.read_int(f"{THERMAL_DIR}/{item}/temp")
        if milli is None or milli <= TEMPERATURE_OFFLINE_MC or "PMIC" in name:
            continue
        zones[name] = milli / 1000.0
    return zones


class CpuLoad:
    """CPU utilisation (0..1) from /proc/stat between two calls (the first call returns 0)."""

    def __init__(self, tree: SysfsTree) -> None:
        self.tree = tree
        self._last: Optional[Tuple[int, int]] = None

    def _sample(self) -> Optional[Tuple[int, int]]:
        text = self.tree.read_str("/proc/stat")
        if not text:
            return None
        fields = text.splitlines()[0].split()
        if not fields or fields[0] != "cpu":
            return None
        vals = [int(v) for v in fields[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)   # idle + iowait
        return sum(vals), idle

    def read(self) -> float:
        now = self._sample()
        if now is None:
            return 0.0
        last, self._last = self._last, now
        if last is None or now[0] <= last[0]:
            return 0.0
        busy = (now[0] - last[0]) - (now[1] - last[1])
        return max(0.0, min(1.0, busy / (now[0] - last[0])))


class EnergyMeter:
    """Cumulative energy (J) from power samples, trapezoid rule over the caller's clock.

    The INA3221 gives power, not energy; the governor reads at its publish rate, so the
    integral is as good as that rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.energy_j = 0.0
        self._last: Optional[Tuple[float, float]] = None

    def add(self, power_w: float) -> float:
        t = self.clock()
        if self._last is not None:
            t0, p0 = self._last
            if t > t0:
                self.energy_j += 0.5 * (p0 + power_w) * (t - t0)
        self._last = (t, power_w)
        return self.energy_j
