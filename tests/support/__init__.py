"""Test and demo tooling: a real control plane as local processes, a local node, PostgreSQL."""
