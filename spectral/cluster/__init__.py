"""Cluster mode (SPEC §15): nodes sharing PostgreSQL and Redis. Imported only in cluster mode."""
