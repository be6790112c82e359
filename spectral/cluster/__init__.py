"""Cluster mode (SPEC §15): nodes that forward each request to its task's home node."""
