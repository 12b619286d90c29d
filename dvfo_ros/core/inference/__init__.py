"""The DNN side: model zoo and cuts, channel attention, the collaborative model and its training,
edge inference, ModelSpec.
"""
