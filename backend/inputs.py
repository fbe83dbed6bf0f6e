"""Checks on uploaded job inputs that need no engine: a frames zip and PNG images, read without decoding pixels.

The server runs them at submit (a bad input is refused with INVALID_INPUT before the job is queued) and the worker
again before it extracts anything. Messages name files by their names inside the upload, never by server paths.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

MAX_FRAMES = 1024
MAX_FRAMES_BYTES = 4 << 30  # uncompressed, all frames together
MAX_FRAME_PIXELS = 4096 * 4096  # per image (the engine decodes each frame in full)
MAX_DECODED_BYTES = 4 << 30  # all frames decoded as RGBA bytes together
PNG_HEAD_BYTES = 4096  # a PNG's signature and IHDR chunk are its first 33 bytes


def png_size(head: bytes, name: str) -> tuple[int, int]:
    """(width, height) a PNG's header declares, read by Pillow without decoding; ValueError when it is not a PNG
    or declares more than :data:`MAX_FRAME_PIXELS` pixels."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(head), formats=["PNG"]) as image:
            width, height = image.size
    except Image.DecompressionBombError:  # Pillow read the header and refused its size: IHDR holds it
        width, height = struct.unpack(">II", head[16:24])
    except Exception as exc:  # Pillow raises several types for a file that is not a PNG
        raise ValueError(f"{name} is not a PNG image ({type(exc).__name__})") from None
    if width <= 0 or height <= 0 or width * height > MAX_FRAME_PIXELS:
        raise ValueError(f"{name} declares {width}x{height} pixels; at most {MAX_FRAME_PIXELS} pixels per image")
    return width, height


def check_png(path: Path, name: str) -> tuple[int, int]:
    with open(path, "rb") as handle:
        return png_size(handle.read(PNG_HEAD_BYTES), name)


def frame_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The zip's members when they are 2..1024 uniquely named PNG files of bounded total size; ValueError else."""
    members = [m for m in zf.infolist() if not m.is_dir()]
    names = [Path(m.filename).name for m in members]
    bad = [m.filename[:128] for m in members if not m.filename.lower().endswith(".png")]
    if bad:
        raise ValueError(f"the frames zip may hold PNG files only; found {bad[:3]}")
    if len(members) < 2 or len(members) > MAX_FRAMES:
        raise ValueError(f"the frames zip holds {len(members)} PNGs; give 2 to {MAX_FRAMES}")
    if len(set(names)) != len(names):
        raise ValueError("the frames zip holds two frames with the same file name")
    if sum(m.file_size for m in members) > MAX_FRAMES_BYTES:
        raise ValueError(f"the frames zip unpacks to more than {MAX_FRAMES_BYTES >> 30} GiB")
    return members


def check_frames_zip(archive: Path) -> int:
    """Check an uploaded frames zip in full without writing anything: its members (:func:`frame_members`), every
    member's CRC (each is decompressed once, bounded by the sizes checked first) and each PNG's declared size.
    Returns the bytes it unpacks to; ValueError naming the problem otherwise."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"the frames upload is not a zip file: {exc}") from None
    with zf:
        members = frame_members(zf)
        try:
            broken = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError) as exc:
            raise ValueError(f"the frames zip cannot be read: {type(exc).__name__}: {exc}") from None
        if broken is not None:
            raise ValueError(f"the frames zip is damaged: {broken[:128]!r} fails its CRC check")
        decoded = 0
        for member in members:
            with zf.open(member) as src:
                width, height = png_size(src.read(PNG_HEAD_BYTES), repr(member.filename[:128]))
            decoded += 4 * width * height
        if decoded > MAX_DECODED_BYTES:
            raise ValueError(f"the frames decode to {decoded >> 20} MiB of pixels; at most {MAX_DECODED_BYTES >> 20}")
        return sum(m.file_size for m in members)
