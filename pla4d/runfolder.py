"""Writing a run folder: every file lands whole (written to a temporary name, then renamed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# One implementation of whole-file writes and digests, shared with the format package the add-on vendors.
from pla4d.formats.files import atomic_write_bytes, file_digest, json_default, sha256_of

__all__ = ["JsonLines", "atomic_write_bytes", "file_digest", "sha256_of", "write_json"]


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(data, indent=1, default=json_default) + "\n").encode())


class JsonLines:
    """Append-only JSON lines, flushed per record so a crash keeps every finished iteration."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "w")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, default=json_default) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
