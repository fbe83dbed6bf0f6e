"""The names of the file exports of a 4D asset, shared by ``pla4d export``, the exports stage (setting
``exports.formats``) and the docs; the writers are in ``pla4d.asset.export`` (engine) and the add-on's exporter.
Standard library only, so the command line can list them without importing torch."""

from __future__ import annotations

__all__ = ["EXPORT_FORMATS", "parse_formats"]

# name -> (what it writes, its default name inside an exports folder, whether it is a folder of per-frame files)
EXPORT_FORMATS: dict[str, tuple[str, str, bool]] = {
    "ply-sequence": ("one standard 3DGS PLY per frame", "ply_sequence", True),
    "khr-glb": ("KHR_gaussian_splatting GLB: canonical splats + POSITION morph targets per frame", "splats_khr.glb",
                False),
    "khr-glb-sequence": ("one static KHR_gaussian_splatting GLB per frame", "khr_glb_sequence", True),
    "spz": ("the canonical splats as SPZ", "canonical.spz", False),
    "spz-sequence": ("one SPZ per frame", "spz_sequence", True),
    "mesh-glb": ("the animated mesh as glTF 2.0 binary with morph targets", "animated_mesh.glb", False),
}  # fmt: skip


def parse_formats(text: str) -> list[str]:
    """A comma-separated list of export names (``"khr-glb,spz"``; empty or ``none`` for none), checked."""
    names = [] if text.strip().lower() in ("", "none") else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(unknown)}; choose from {', '.join(EXPORT_FORMATS)}")
    return list(dict.fromkeys(names))
