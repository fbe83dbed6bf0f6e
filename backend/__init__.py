"""pla4d backend: the ZeroMQ job server, job store and client library (filled in by the backend issue)."""
