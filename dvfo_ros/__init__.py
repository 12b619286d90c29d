"""dvfo_ros: energy-aware edge-cloud collaborative DNN inference for ROS 2 (after DVFO, IEEE TMC 2024).

The generated message modules (``dvfo_ros.msg``) live in the ament install tree, next to a copy of
this package on a robot and in ``install/`` of a source checkout; extending ``__path__`` lets a
source checkout import them while its own modules stay live.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
