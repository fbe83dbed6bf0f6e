"""The 4D stage's deformation field (HexPlane + MLP)."""

from pla4d.deform.hexplane import DeformationField, Deltas, frame_time

__all__ = ["DeformationField", "Deltas", "frame_time"]
