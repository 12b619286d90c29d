"""governor node: applies the policy's clocks on a hardware backend and reports what applies.

    ros2 run dvfo_ros governor --ros-args -p backend:=sim -p profile:=xavier_nx
Subscribes dvfo/action; publishes dvfo/device_state at ``rate_hz`` (and at once when an action changes what
applies) and /diagnostics once a second ("governor: clocks": ERROR while a refused write is in the window).
Every setting it changes is put back when it exits (normal exit, SIGINT, SIGTERM, exception); after a
SIGKILL its watchdog process does it from the state file (core/hardware/state.py), else its next start.
"""
from __future__ import annotations

import signal
from typing import Any, Dict, Optional

from rclpy.node import Node
from rclpy.qos import QoSProfile

from dvfo_ros.core.diag import ERROR, WARN, EventWindow, Status, hardware_id
from dvfo_ros.core.hardware import BACKENDS, guard_clocks, open_backend, recover_leftover_clocks, thermal_cap
from dvfo_ros.msg import DeviceState, DvfoAction
from dvfo_ros.nodes import qos
from dvfo_ros.nodes.diagnostics import WINDOW, Diagnostics, monotonic
from dvfo_ros.nodes.params import Param, ParamSet
from dvfo_ros.nodes.spin import run

PARAMS = [
    Param("backend", "auto", "hardware backend (auto: jetson -> linux -> sim, one log line says which and why)",
          choices=BACKENDS, read_only=True),
    Param("profile", "xavier_nx", "device table / twin profile (nano, tx2, xavier_nx, orin_nx or a YAML path)",
          read_only=True),
    Param("sysfs_root", "/", "root of the sysfs/debugfs tree (a copy or fake tree for tests)", read_only=True),
    Param("rate_hz", 10.0, "DeviceState publishing rate", 0.1, 1000.0),
    Param("thermal_limit_c", 85.0, "above this temperature clocks are capped whatever the policy says",
          30.0, 110.0),
    WINDOW,
]


class GovernorNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("governor", **kwargs)
        self.params = ParamSet(self, PARAMS, on_change=self._on_change)
        p = self.params.values
        # clocks a SIGKILLed governor left changed (its watchdog did not run either): put them back first
        recover_leftover_clocks(p["sysfs_root"], log=self.get_logger().warning)
        self.backend = open_backend(p["backend"], root=p["sysfs_root"], profile=p["profile"],
                                    log=self.get_logger().info)
        # originals go to a state file before the first write; a watchdog process restores them if we die
        self.watchdog = guard_clocks(self.backend, p["sysfs_root"])
        self.table = self.backend.table()
        self.last_error = ""
        self.thermal_capped = False
        self.actions_applied = 0
        self.actions = EventWindow(p["diagnostic_window_s"])   # applied actions, "refused" when a write failed
        self._last_request: Optional[tuple] = None   # the last action's clocks, capped, and its outcome
        self.state_pub = qos.publisher(self, DeviceState, "dvfo/device_state", QoSProfile(depth=10))
        self.diagnostics = Diagnostics(self, hardware_id(self.backend.name, str(getattr(self.backend, "profile", "")),
                                                         p["sysfs_root"]))
        self.diagnostics.add("clocks", self._clock_status)
        qos.subscription(self, DvfoAction, "dvfo/action", self._on_action, QoSProfile(depth=10))
        self.timer = self.create_timer(1.0 / p["rate_hz"], self._publish_state)
        self.get_logger().info(f"backend {self.backend.name} ({getattr(self.backend, 'profile', '')}); "
                               f"levels cpu {len(self.table.cpu)} gpu {len(self.table.gpu)} emc {len(self.table.emc)}")

    def _on_change(self, new: Dict[str, Any]) -> Optional[str]:
        if new["rate_hz"] != self.params["rate_hz"]:
            self.timer.timer_period_ns = int(1e9 / new["rate_hz"])
        return None

    def _on_action(self, msg: DvfoAction) -> None:
        want = {"cpu": int(msg.cpu_freq_hz), "gpu": int(msg.gpu_freq_hz), "emc": int(msg.emc_freq_hz)}
        temp = self.backend.read().temperature_c
        caps = thermal_cap(self.table, temp, self.params["thermal_limit_c"])
        capped = False
        for d, cap in caps.items():
            if cap and want.get(d, 0) and want[d] > cap:
                want[d], capped = cap, True
        if capped and not self.thermal_capped:
            self.get_logger().warning(f"thermal guard: {temp:.1f} C > {self.params['thermal_limit_c']} C, "
                                      "capping clocks")
        self.thermal_capped = capped
        # A domain this backend cannot set (empty table) is left alone, not reported on every action.
        settable = {d: (want[d] or None) if self.table.levels(d) else None for d in want}
        result = self.backend.apply(settable["cpu"], settable["gpu"], settable["emc"])
        self.actions_applied += 1
        self.actions.add(monotonic(), *(("refused",) if result.errors else ()), reason="; ".join(result.errors))
        if result.errors:
            self.last_error = "; ".join(result.errors)
            self.get_logger().error(f"refused: {self.last_error}")
        else:
            self.last_error = ""
        request = (settable["cpu"], settable["gpu"], settable["emc"], capped, self.last_error)
        if request != self._last_request or self.last_error:
            self._publish_state()     # what now applies, at once; the same command again changes nothing
        self._last_request = request

    def _publish_state(self) -> None:
        r = self.backend.read()
        msg = DeviceState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.backend = self.backend.name
        msg.profile = str(getattr(self.backend, "profile", ""))
        msg.cpu_freq_hz, msg.gpu_freq_hz, msg.emc_freq_hz = int(r.cpu_freq_hz), int(r.gpu_freq_hz), int(r.emc_freq_hz)
        msg.cpu_util, msg.gpu_util, msg.emc_util = float(r.cpu_util), float(r.gpu_util), float(r.emc_util)
        msg.rail_names = list(r.rails_w.keys())
        msg.rail_power_w = [float(v) for v in r.rails_w.values()]
        msg.power_w = float(r.power_w)
        msg.energy_j = float(r.energy_j)
        msg.temperature_c = float(r.temperature_c)
        msg.thermal_capped = self.thermal_capped
        msg.error = self.last_error
        self.state_pub.publish(msg)
        self._last_state = msg

    def _clock_status(self, now: float) -> Status:
        """ERROR while a refused write is in the window, WARN while the thermal guard caps, else OK."""
        w, span = self.actions, f"{self.actions.window_s:g} s"
        refused, n = w.count(now, "refused"), w.count(now)
        st = Status(message=f"clocks applied ({n} actions in the last {span})")
        if refused:
            st.level, st.message = ERROR, f"{refused} of {n} actions refused in the last {span}: " \
                f"{w.last_reason.get('refused', '')}"
        elif self.thermal_capped:
            st.level, st.message = WARN, "thermal guard capping clocks"
        s = getattr(self, "_last_state", None)
        st.add(backend=self.backend.name, actions_applied=self.actions_applied, window_refused=refused)
        if s is not None:
            st.add(cpu_freq_hz=s.cpu_freq_hz, gpu_freq_hz=s.gpu_freq_hz, emc_freq_hz=s.emc_freq_hz,
                   power_w=round(s.power_w, 3), energy_j=round(s.energy_j, 3), temperature_c=round(s.temperature_c, 1))
        return st

    def destroy_node(self) -> None:
        try:
            self.backend.restore()
        finally:
            if self.watchdog is not None:
                self.watchdog.stop()
            super().destroy_node()


def _governor() -> "GovernorNode":
    from dvfo_ros.core.hardware import install_restore_handlers
    node = GovernorNode()
    # SIGINT and interpreter exit put the clocks back whatever else happens; SIGTERM stays rclpy's (a clean
    # shutdown: spin returns and run()'s cleanup restores), so `ros2 launch` sees exit code 0 for both.
    install_restore_handlers(node.backend, signals=(signal.SIGINT,))
    return node


def main(args=None) -> int:
    return run(_governor, args, cleanup=lambda node: node.backend.restore())


if __name__ == "__main__":
    raise SystemExit(main())
