"""Cluster mode: the pieces that let several nodes serve one set of tasks (docs/cluster.md)."""
