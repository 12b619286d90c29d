"""pip install of the dvfo_ros Python library and its console scripts.

On a cloud server `pip install .` needs no ROS: the cloud server, codec and link import no rclpy.
On a robot, colcon builds the package with CMakeLists.txt (messages + these same sources).
"""
from setuptools import find_packages, setup

CONSOLE_SCRIPTS = [
    "dvfo-pipeline = dvfo_ros.cli.pipeline:main",
    "dvfo-cloud = dvfo_ros.cli.cloud:main",
    "dvfo-keygen = dvfo_ros.cli.keygen:main",
    "dvfo-accuracy = dvfo_ros.cli.accuracy:main",
    "dvfo-train = dvfo_ros.cli.train:main",
    "dvfo-bench = dvfo_ros.cli.bench:main",
    "dvfo-hw = dvfo_ros.cli.hw:main",
    "dvfo-profile = dvfo_ros.cli.profile:main",
    "dvfo-record = dvfo_ros.cli.record:main",
    "dvfo-bag = dvfo_ros.cli.bag:main",
    "dvfo-artifact = dvfo_ros.cli.artifact:main",
]

setup(
    name="dvfo_ros",
    version="0.1.0",
    description="Energy-aware edge-cloud collaborative DNN inference for ROS 2 (after DVFO)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["dvfo_ros", "dvfo_ros.*"]),
    package_data={"dvfo_ros": ["core/twin/profiles/*.yaml", "core/twin/profiles/servers/*.yaml", "traces/*.csv",
                               "artifacts/*.pt", "config/*.yaml"]},
    include_package_data=True,
    install_requires=["numpy", "pyzmq", "pyyaml", "tqdm", "tabulate"],
    extras_require={
        # the edge/cloud compute: torch + torchvision (the cloud server needs these too)
        "torch": ["torch", "torchvision"],
        "edge": ["opencv-python-headless", "matplotlib", "rosbags", "jetson-stats", "nvidia-ml-py"],
        # many robots, many GPU servers: dvfo-cloud --backend ray (Ray Serve behind the ZeroMQ front)
        "fleet": ["ray[serve]==2.60.0", "psutil"],
    },
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    zip_safe=False,
)
