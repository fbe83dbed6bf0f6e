"""pla4d's file formats, numpy only: the 4D asset (docs/asset-format.md), 3DGS PLY (through ``plyfile``), sRGB
and SH colour, and the change to Blender's axes.

This package imports nothing but the standard library, numpy and plyfile (``khr_gltf.py`` also pygltflib, which the
add-on bundles; ``spz.py`` also gsply, inside its functions, for SPZ files), and its modules import each other
relatively: ``build_addon.py`` copies it unchanged into the Blender add-on as ``pla4d_formats`` (no torch, no pla4d
there), so the engine and the add-on read and write the same bytes with the same code. The engine wraps it for tensors
in ``pla4d.asset.format`` and ``pla4d.gaussians.ply``. Import from the modules: ``asset`` (the 4D asset folder), ``ply``
(3DGS PLY files and sequences), ``colour`` (sRGB, SH colour), ``axes`` (Blender's axes), ``khr_gltf`` / ``spz`` /
``sequences`` / ``exports`` (open splat formats: docs/asset-format.md section 7.1).
"""
