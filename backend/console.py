"""The ``pla4d`` console script: ``submit``, ``jobs``, ``fetch`` and ``cancel`` go to the backend client
(:mod:`backend.client_cli`, no torch); every other command goes to the engine's CLI (:func:`pla4d.cli.main`).

It lives here because the engine (``pla4d/``) may not import the backend (BRIEF section 2).
"""

from __future__ import annotations

import sys

CLIENT_COMMANDS = ("submit", "jobs", "fetch", "cancel")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in CLIENT_COMMANDS:
        from backend.client_cli import main as client_main

        return client_main(argv)
    from pla4d.cli import main as engine_main

    try:
        return engine_main(argv)
    finally:
        if argv[:1] in ([], ["-h"], ["--help"]):  # the engine's usage does not list these
            print("\nbackend client commands: " + ", ".join(CLIENT_COMMANDS) + " (e.g. `pla4d submit --help`)")


if __name__ == "__main__":
    sys.exit(main())
