"""Declared, described and validated ROS parameters for every dvfo_ros node.

Each node lists its parameters once as ``Param`` rows; this module declares them with a
ParameterDescriptor (type, range, description) and refuses a bad run-time change with a reason
(``ros2 param set /executor offload_ratio 2.0`` -> "offload_ratio=2.0 is outside [0.0, 1.0]").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.node import Node
from rclpy.parameter import Parameter


@dataclass
class Param:
    name: str
    default: Any
    description: str
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Optional[Sequence[str]] = None
    read_only: bool = False
    # value -> the one-line reason it is refused, or None (checked before `choices`, so a name that
    # exists but cannot be used here is refused with why, not just "is not one of ...")
    validator: Optional[Callable[[Any], Optional[str]]] = None


def coerce(p: Param, value: Any) -> Any:
    """An integer where a float is declared is that float (`offload_ratio: 0` in a params file)."""
    if isinstance(p.default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def check(p: Param, value: Any) -> Optional[str]:
    """The reason a value is refused, or None when it is fine."""
    if type(value) is not type(p.default):
        return f"{p.name}={value!r} must be a {type(p.default).__name__}"
    if p.validator is not None:
        reason = p.validator(value)
        if reason:
            return f"{p.name}={value!r}: {reason}"
    if p.choices is not None and value not in p.choices:
        return f"{p.name}={value!r} is not one of {', '.join(map(str, p.choices))}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if p.low is not None and value < p.low:
            return f"{p.name}={value} is outside [{p.low}, {p.high}]"
        if p.high is not None and value > p.high:
            return f"{p.name}={value} is outside [{p.low}, {p.high}]"
    return None


def _descriptor(p: Param) -> ParameterDescriptor:
    # dynamic_typing: a wrong type reaches our check (one clear reason) instead of raising in rclpy.
    d = ParameterDescriptor(description=p.description, read_only=p.read_only, dynamic_typing=True)
    if p.choices is not None:
        d.additional_constraints = "one of: " + ", ".join(map(str, p.choices))
    if p.low is not None and p.high is not None:
        if isinstance(p.default, bool):
            pass
        elif isinstance(p.default, int):
            d.integer_range = [IntegerRange(from_value=int(p.low), to_value=int(p.high), step=0)]
        elif isinstance(p.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(p.low),
                                                         to_value=float(p.high), step=0.0)]
    return d


class ParamSet:
    """Declares ``params`` on ``node``; ``values`` always holds the current, validated values."""

    def __init__(self, node: Node, params: List[Param],
                 on_change: Optional[Callable[[Dict[str, Any]], Optional[str]]] = None) -> None:
        self._node = node
        self._params = {p.name: p for p in params}
        self._on_change = on_change
        self.values: Dict[str, Any] = {}
        for p in params:
            value = coerce(p, node.declare_parameter(p.name, p.default, _descriptor(p)).value)
            reason = check(p, value)
            if reason:
                raise ValueError(f"{node.get_name()}: {reason}")
            self.values[p.name] = value
        node.add_on_set_parameters_callback(self._validate)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def _validate(self, changes: List[Parameter]) -> SetParametersResult:
        update: Dict[str, Any] = {}
        for c in changes:
            p = self._params.get(c.name)
            if p is None:
                continue
            value = coerce(p, c.value)
            reason = check(p, value)
            if reason:
                self._node.get_logger().warning(f"refused: {reason}")
                return SetParametersResult(successful=False, reason=reason)
            update[c.name] = value
        if self._on_change is not None and update:
            reason = self._on_change(dict(self.values, **update))
            if reason:
                self._node.get_logger().warning(f"refused: {reason}")
                return SetParametersResult(successful=False, reason=reason)
        self.values.update(update)
        return SetParametersResult(successful=True)

