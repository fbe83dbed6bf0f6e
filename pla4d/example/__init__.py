"""The built-in example: an animated creature made in code, standing in for the video and mesh models."""
