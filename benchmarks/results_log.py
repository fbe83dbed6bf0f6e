"""One JSON line per benchmark record: printed, and appended to the benchmark's results file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def append_result(path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(line + "\n")
