"""diagnostic_updater's conventions without ROS: windowed counters, a frequency check, a stale-input check,
status aggregation (worst level wins) and the board a status is about (``hardware_id``). The nodes'
publishing shell (nodes/diagnostics.py) turns these into diagnostic_msgs/DiagnosticArray once a second."""
from dvfo_ros.core.diag.board import board_model, hardware_id  # noqa: F401
from dvfo_ros.core.diag.status import (ERROR, OK, STALE, WARN, EventWindow, FrequencyCheck,  # noqa: F401
                                       StaleCheck, Status, StreamHealth, merge)
