"""Infrastructure at the edge: the Kubernetes API client, the PostgreSQL history, Prometheus metrics."""
