"""The 4D asset (canonical Gaussians + per-frame arrays + metadata) and its exports.

See ``docs/asset-format.md`` for the on-disk contract shared by the engine, the backend and the Blender add-on.
"""

from pla4d.asset.export import (
    export_glb,
    export_ply_sequence,
    write_contact_sheet,
    write_preview_video,
)
from pla4d.asset.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    AnimatedMesh,
    Asset4D,
    AssetError,
    asset_from_models,
    frame_byte_range,
    frame_model,
    read_asset,
    read_meta,
    write_asset,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "AnimatedMesh",
    "Asset4D",
    "AssetError",
    "asset_from_models",
    "export_glb",
    "export_ply_sequence",
    "frame_byte_range",
    "frame_model",
    "read_asset",
    "read_meta",
    "write_asset",
    "write_contact_sheet",
    "write_preview_video",
]
