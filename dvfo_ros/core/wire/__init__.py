"""The cloud wire: the feature-map codec and the ZeroMQ link the edge offloads through."""
