"""Errors a user can fix, shared by the engine and the command line (kept free of heavy imports)."""

from __future__ import annotations

from collections.abc import Callable


class MissingWeightsError(RuntimeError):
    """A model's weights are not installed; the message names what is missing and how to install it."""


class Cancelled(Exception):  # noqa: N818 - reads as what happened, like KeyboardInterrupt
    """A run was cancelled by its caller (raised between iterations; files written so far stay valid)."""


def raise_if_cancelled(should_cancel: Callable[[], bool] | None, before: str) -> None:
    """Stage boundaries: :class:`Cancelled` when the caller asks to stop, so a cancel during a short stage takes
    effect before the next one starts."""
    if should_cancel is not None and should_cancel():
        raise Cancelled(f"cancelled before {before}")
