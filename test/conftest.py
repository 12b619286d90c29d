"""Test-wide settings: DDS stays on loopback, each run gets its own ROS domain, torch uses one thread."""
import os
import random

# Before rclpy is imported anywhere: localhost discovery over shared memory only (0 packets off loopback).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "SHM")
# A domain of our own so parallel runs (and other sessions) do not cross-talk.
os.environ["ROS_DOMAIN_ID"] = str(random.Random(os.getpid()).randint(1, 100))
# Governors on fake sysfs trees record original clocks in a state file: keep those out of /run.
# The directory is this run's own and goes when the run ends (it used to stay behind in /tmp, one per run).
if "DVFO_STATE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile
    os.environ["DVFO_STATE_DIR"] = tempfile.mkdtemp(prefix="dvfo-state-")
    atexit.register(shutil.rmtree, os.environ["DVFO_STATE_DIR"], True)

import torch  # noqa: E402

torch.set_num_threads(1)

# A shell that starts pytest in the background (`cmd &`, nohup, some CI runners) leaves SIGINT ignored,
# and child processes inherit that, so the Ctrl-C tests would wait forever. Handle it here: on exec a
# handled signal goes back to the default, so every child starts like one run from a terminal.
import signal  # noqa: E402

signal.signal(signal.SIGINT, signal.default_int_handler)


# mypy takes ~30 s from a cold cache on one core. When test_lint.py is selected it starts as soon as
# collection ends, on the other core, beside the rest of the suite; the test then waits for its report.
def pytest_collection_finish(session):
    if any(item.nodeid.startswith("test/test_lint.py::test_mypy") for item in session.items):
        from test_lint import start_mypy
        start_mypy()
