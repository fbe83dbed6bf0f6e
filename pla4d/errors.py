"""Errors a user can fix, shared by the engine and the command line (kept free of heavy imports)."""


class MissingWeightsError(RuntimeError):
    """A model's weights are not installed; the message names what is missing and how to install it."""


class Cancelled(Exception):  # noqa: N818 - reads as what happened, like KeyboardInterrupt
    """A run was cancelled by its caller (raised between iterations; files written so far stay valid)."""
