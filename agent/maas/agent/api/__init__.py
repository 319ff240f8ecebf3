"""The agent's outward faces: the HTTP API on its socket, the status report, Prometheus metrics."""
