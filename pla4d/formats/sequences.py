"""Per-frame file sequences: one file per frame (``frame_000.ply``, ``frame_001.spz``, ``frame_002.glb``, ...), as
4DGS tools read and write them (Mediastorm's 4DGS viewer reads per-frame PLY files; KIRI exports PLY sequences).

Writing: :func:`write_sequence` names the files ``{prefix}{t:0Wd}{suffix}`` with at least three digits (more past
1000 frames), the names :func:`pla4d_formats.ply.write_ply_sequence` uses. Reading: :func:`find_sequence` takes
one file of a sequence (or its folder) and finds its siblings by the frame-index pattern: the last run of digits
in the name, with everything before and after it the same (``bird_0007.ply``, ``scan.12.spz``, ``7.ply``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .ply import sequence_frames

__all__ = ["SequenceError", "find_sequence", "sequence_name", "write_sequence"]

_INDEX = re.compile(r"^(?P<head>.*?)(?P<index>\d+)(?P<tail>\D*)$")


class SequenceError(ValueError):
    """No per-frame sequence at a path; the message says what was looked for."""


def sequence_name(prefix: str, t: int, frame_count: int, suffix: str) -> str:
    """File name of frame ``t`` of a ``frame_count``-frame sequence."""
    width = max(3, len(str(max(frame_count - 1, 0))))
    return f"{prefix}{t:0{width}d}{suffix}"


def write_sequence(
    out_dir: str | os.PathLike[str],
    frame_count: int,
    gaussians_at: Callable[[int], dict[str, np.ndarray]],
    write_one: Callable[..., Path],
    suffix: str,
    frames: Sequence[int] | None = None,
    prefix: str = "frame_",
) -> list[Path]:
    """``write_one(path, **gaussians_at(t))`` for each chosen frame t (default all) into ``out_dir``; returns the
    paths in frame order."""
    out = Path(out_dir)
    chosen = sequence_frames(frame_count, frames)
    return [write_one(out / sequence_name(prefix, t, frame_count, suffix), **gaussians_at(t)) for t in chosen]


def find_sequence(path: str | os.PathLike[str], suffixes: Sequence[str] = (".ply",)) -> list[tuple[int, Path]]:
    """The frames of the sequence ``path`` belongs to, as (frame index, file) sorted by index.

    ``path`` is one file of the sequence (its name's last run of digits is the frame index; the files beside it
    with the same text around the digits and the same suffix are its frames) or a folder (the largest such group
    of files with one of ``suffixes`` in it). A file with no digits in its name is a sequence of one."""
    p = Path(path).expanduser()
    wanted = {s.lower() for s in suffixes}
    if p.is_dir():
        groups: dict[tuple[str, str, str], list[tuple[int, Path]]] = {}
        for child in p.iterdir():
            match = _INDEX.match(child.stem)
            if child.is_file() and child.suffix.lower() in wanted and match:
                key = (match["head"], match["tail"], child.suffix.lower())
                groups.setdefault(key, []).append((int(match["index"]), child))
        if not groups:
            raise SequenceError(f"{p} holds no numbered {'/'.join(sorted(wanted))} files")
        return sorted(max(groups.values(), key=len))
    if not p.is_file():
        raise SequenceError(f"{p} does not exist")
    match = _INDEX.match(p.stem)
    if not match:
        return [(0, p)]
    found = []
    for sibling in p.parent.iterdir():
        other = _INDEX.match(sibling.stem)
        if (sibling.is_file() and sibling.suffix.lower() == p.suffix.lower() and other
                and other["head"] == match["head"] and other["tail"] == match["tail"]):  # fmt: skip
            found.append((int(other["index"]), sibling))
    return sorted(found)
