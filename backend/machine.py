"""What this machine can run (``pla4d doctor``'s facts) for the hello, so the Blender panel can show it.

Gathered once, in a child process started with the server: the server itself never imports torch, and a first
gsplat kernel build (minutes on a GPU box) never holds up the socket loop. Until the child answers, the hello
carries no facts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

PROBE_TIMEOUT_S = 900.0  # gsplat's first kernel build


class MachineFacts:
    def __init__(self, timeout: float = PROBE_TIMEOUT_S) -> None:
        self._facts: dict[str, Any] | None = None
        self._timeout = timeout
        self._thread = threading.Thread(target=self._gather, name="machine-facts", daemon=True)
        self._thread.start()

    def _gather(self) -> None:
        cmd = [sys.executable, "-m", "pla4d.doctor", "--json", "--kernel-timeout", str(self._timeout)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self._timeout + 120)
            # doctor exits 1 when the preset cannot run; its JSON is the answer either way
            self._facts = json.loads(done.stdout)["facts"]
        except (OSError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
            self._facts = {"error": f"pla4d doctor did not answer: {type(exc).__name__}: {exc}"[:500]}

    def get(self) -> dict[str, Any] | None:
        return self._facts
