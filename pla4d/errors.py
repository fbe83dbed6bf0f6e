"""Errors a user can fix, shared by the engine and the command line (kept free of heavy imports)."""


class MissingWeightsError(RuntimeError):
    """A model's weights are not installed; the message names what is missing and how to install it."""
