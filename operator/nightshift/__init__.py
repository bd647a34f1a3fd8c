"""nightshift: a Kubernetes operator for scheduled background jobs."""

__version__ = "0.1.0"
