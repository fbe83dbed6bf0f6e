"""The engine's side of the 4D asset: ``format`` (tensors <-> the numpy format package, pla4d/formats) and ``export``
(GLB, PLY sequence, preview video, contact sheet). Import from the modules.

See ``docs/asset-format.md`` for the on-disk contract shared by the engine, the backend and the Blender add-on.
"""
