"""Inputs and outputs: rosbags and their types, camera sources and image conversion, data sets,
network traces, run summaries, user YAML files read with one-line errors.
"""
