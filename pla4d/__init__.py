"""pla4d: PLA4D text-to-4D Gaussian splatting engine (pure PyTorch; no bpy, no zmq)."""

__version__ = "0.1.0"
