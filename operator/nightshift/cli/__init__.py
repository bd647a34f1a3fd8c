"""The `nightshift` CLI (also `kubectl nightshift`)."""
