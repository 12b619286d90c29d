"""The reliability figures (cloud kill/restart, fuzzing, CURVE, load, soak): `python -m
dvfo_ros.testing.reliability` or `make reliability`.
"""
