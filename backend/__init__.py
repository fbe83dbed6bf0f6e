"""pla4d backend: the ZeroMQ job server, job store, worker and client library (see docs/protocol.md).

Importing this package is cheap (no torch, no pla4d): the Blender add-on imports :mod:`backend.client`.
"""

__version__ = "0.1.0"
